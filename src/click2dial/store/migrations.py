"""The database schema as numbered migrations, shared by both backends.

Each migration is a list of statements written once, with three placeholders
for the only places where SQLite and PostgreSQL differ:

=============  ===========================  ============================================
placeholder    SQLite                       PostgreSQL
=============  ===========================  ============================================
``{real}``     ``REAL``                     ``DOUBLE PRECISION``
``{json}``     ``TEXT`` (JSON text)         ``JSONB``
``{serial}``   ``INTEGER PRIMARY KEY``      ``BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY``
=============  ===========================  ============================================

Everything else (partial unique indexes, row-value comparisons,
``ON CONFLICT``) is syntax both engines accept.  The ``schema_version`` table
holds one row per applied migration.  The backends apply the pending ones at
``open()`` in a single transaction (PostgreSQL under an advisory lock, SQLite
under ``BEGIN IMMEDIATE``), so two nodes starting together do not race and a
failed migration leaves the previous schema intact.

Never edit a released migration; append a new one.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final

from click2dial.store.base import StoreError


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    real: str
    json: str
    serial: str


SQLITE: Final = Dialect(name="sqlite", real="REAL", json="TEXT", serial="INTEGER PRIMARY KEY")
POSTGRES: Final = Dialect(
    name="postgres",
    real="DOUBLE PRECISION",
    json="JSONB",
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    postgres_only: tuple[str, ...] = ()
    """Statements for PostgreSQL alone, as written (no placeholders)."""

    def render(self, dialect: Dialect) -> list[str]:
        shared = [
            s.format(real=dialect.real, json=dialect.json, serial=dialect.serial)
            for s in self.statements
        ]
        return shared + list(self.postgres_only) if dialect is POSTGRES else shared


SCHEMA_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at {real} NOT NULL
)
"""

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "calls and notification outbox",
        (
            """
            CREATE TABLE calls (
                call_ref              TEXT PRIMARY KEY,
                integrator            TEXT NOT NULL,
                agent                 TEXT NOT NULL,
                callee                TEXT NOT NULL,
                outbound_id           TEXT NOT NULL,
                outbound_id_requested TEXT NOT NULL,
                contact_ref           TEXT NOT NULL,
                call_type             TEXT NOT NULL,
                source                TEXT NOT NULL,
                state                 TEXT NOT NULL,
                created_at            {real} NOT NULL,
                agent_answered_at     {real},
                callee_dialed_at      {real},
                callee_answered_at    {real},
                ended_at              {real},
                end_reason            TEXT,
                end_code              INTEGER,
                sip_status            INTEGER,
                sip_reason            TEXT,
                hangup_side           TEXT,
                idempotency_key       TEXT,
                node_id               TEXT NOT NULL,
                warnings              {json} NOT NULL,
                agent_leg             TEXT,
                callee_leg            TEXT
            )
            """,
            # NULL keys are distinct in both engines: calls without an
            # Idempotency-Key never collide.
            "CREATE UNIQUE INDEX calls_idempotency ON calls (integrator, idempotency_key)",
            # One live call per agent, enforced by the database so concurrent
            # requests (or nodes) cannot both win.
            """
            CREATE UNIQUE INDEX calls_live_agent ON calls (integrator, agent)
            WHERE state <> 'ended'
            """,
            "CREATE INDEX calls_by_time ON calls (integrator, created_at, call_ref)",
            "CREATE INDEX calls_by_contact ON calls (integrator, contact_ref, created_at)",
            "CREATE INDEX calls_by_agent ON calls (integrator, agent, created_at)",
            "CREATE INDEX calls_live_by_node ON calls (node_id) WHERE state <> 'ended'",
            # seq gives "oldest first" an exact order; id is what consumers see.
            """
            CREATE TABLE notifications (
                seq             {serial},
                id              TEXT NOT NULL UNIQUE,
                integrator      TEXT NOT NULL,
                kind            TEXT NOT NULL,
                target          TEXT NOT NULL,
                call_ref        TEXT NOT NULL,
                payload         {json} NOT NULL,
                created_at      {real} NOT NULL,
                attempts        INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {real} NOT NULL,
                delivered_at    {real},
                last_error      TEXT
            )
            """,
            """
            CREATE INDEX notifications_due ON notifications (next_attempt_at)
            WHERE delivered_at IS NULL
            """,
            "CREATE INDEX notifications_by_integrator ON notifications (integrator, seq)",
            "CREATE INDEX notifications_by_call ON notifications (call_ref)",
        ),
    ),
    Migration(
        2,
        "saved SIP dialogs of live calls",
        (
            # Set when a leg's dialog is established, NULLed by the end of the
            # call: a crash leaves them only on calls that were live.
            "ALTER TABLE calls ADD COLUMN agent_dialog {json}",
            "ALTER TABLE calls ADD COLUMN callee_dialog {json}",
        ),
    ),
    Migration(
        3,
        "registrar bindings",
        (
            # One row per (agent, contact URI) (RFC 3261 §10.3); the flow is
            # where the REGISTER came from, and where requests to the agent go.
            """
            CREATE TABLE bindings (
                agent       TEXT NOT NULL,
                contact     TEXT NOT NULL,
                expires_at  {real} NOT NULL,
                transport   TEXT NOT NULL,
                host        TEXT NOT NULL,
                port        INTEGER NOT NULL,
                call_id     TEXT NOT NULL,
                cseq        INTEGER NOT NULL,
                node_id     TEXT NOT NULL,
                updated_at  {real} NOT NULL,
                PRIMARY KEY (agent, contact)
            )
            """,
            "CREATE INDEX bindings_by_expiry ON bindings (expires_at)",
        ),
    ),
    Migration(
        4,
        "node heartbeats and takeovers",
        (
            # One row per node: its heartbeat (last_seen), and who took over
            # its live calls after it fell silent.  A takeover stands for the
            # silence it ended: a later heartbeat (last_seen past
            # taken_over_at) makes the node claimable again.
            """
            CREATE TABLE nodes (
                node_id        TEXT PRIMARY KEY,
                started_at     {real} NOT NULL,
                last_seen      {real} NOT NULL,
                taken_over_by  TEXT,
                taken_over_at  {real}
            )
            """,
        ),
    ),
    Migration(
        5,
        "integrator limits decided in one statement",
        (),
        postgres_only=(
            # max_concurrent, max_cps and a replay in one server-side step:
            # create_call runs it and its INSERT as one autocommitted
            # statement, so the integrator's lock (taken only near a limit)
            # is held for the insert and its commit, never across round
            # trips to a busy node.  A VOLATILE function sees a fresh
            # snapshot in each statement: the counts after the lock see
            # every call committed before it was granted.
            """
            CREATE OR REPLACE FUNCTION click2dial_limits(
                p_integrator TEXT, p_key TEXT, p_since DOUBLE PRECISION, p_ending TEXT[],
                p_max_concurrent BIGINT, p_per_window BIGINT, p_pool BIGINT
            ) RETURNS TABLE (outcome TEXT, oldest DOUBLE PRECISION)
            LANGUAGE plpgsql VOLATILE AS $$
            DECLARE
                v_live BIGINT;
                v_recent BIGINT;
                v_oldest DOUBLE PRECISION;
                v_margin BIGINT;
            BEGIN
                -- Far below both limits no lock is needed: at most p_pool
                -- creates run at once on each node (its connection pool),
                -- so the calls this count cannot see yet are fewer than
                -- the margin.  Near a limit the lock decides, exactly.
                SELECT GREATEST(COUNT(*), 1) * p_pool INTO v_margin
                  FROM nodes WHERE last_seen > p_since - 600;
                SELECT COUNT(*) INTO v_live
                  FROM calls
                 WHERE integrator = p_integrator AND state <> 'ended'
                   AND NOT call_ref = ANY(p_ending);
                IF v_live + v_margin < p_max_concurrent THEN
                    SELECT COUNT(*) INTO v_recent
                      FROM calls WHERE integrator = p_integrator AND created_at > p_since;
                    IF v_recent + v_margin < p_per_window THEN
                        RETURN QUERY SELECT 'ok'::TEXT, NULL::DOUBLE PRECISION;
                        RETURN;
                    END IF;
                END IF;
                PERFORM pg_advisory_xact_lock(hashtext(
                    'click2dial.limits:' || COALESCE(current_schema(), '') || ':' || p_integrator));
                IF p_key IS NOT NULL AND EXISTS (
                    SELECT 1 FROM calls WHERE integrator = p_integrator AND idempotency_key = p_key
                ) THEN
                    RETURN QUERY SELECT 'replay'::TEXT, NULL::DOUBLE PRECISION;
                    RETURN;
                END IF;
                -- Two counts, each on an index that holds only what it
                -- counts (live calls: calls_live_agent; recent ones:
                -- calls_by_time), never the integrator's whole history.
                SELECT COUNT(*) INTO v_live
                  FROM calls
                 WHERE integrator = p_integrator AND state <> 'ended'
                   AND NOT call_ref = ANY(p_ending);
                IF v_live >= p_max_concurrent THEN
                    RETURN QUERY SELECT 'max_concurrent'::TEXT, NULL::DOUBLE PRECISION;
                    RETURN;
                END IF;
                SELECT COUNT(*), MIN(created_at) INTO v_recent, v_oldest
                  FROM calls
                 WHERE integrator = p_integrator AND created_at > p_since;
                IF v_recent >= p_per_window THEN
                    RETURN QUERY SELECT 'max_cps'::TEXT, v_oldest;
                ELSE
                    RETURN QUERY SELECT 'ok'::TEXT, NULL::DOUBLE PRECISION;
                END IF;
            END
            $$
            """,
        ),
    ),
)

LATEST: Final = MIGRATIONS[-1].version


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer Click2Dial than this one."""


def pending(current: int) -> list[Migration]:
    """Migrations newer than ``current``; refuses a database newer than us."""
    if current > LATEST:
        raise SchemaTooNewError(
            f"the database schema is at version {current}, newer than this "
            f"Click2Dial knows ({LATEST}); upgrade this node"
        )
    return [m for m in MIGRATIONS if m.version > current]


def _check_numbering() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n, got {versions}")


_check_numbering()


def apply_sqlite(conn: sqlite3.Connection) -> int:
    """Bring a SQLite database up to date; returns the schema version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so that the
    explicit ``BEGIN IMMEDIATE`` below is the only transaction: it takes the
    write lock first, so a second process opening the same file waits and then
    finds nothing left to do.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(SCHEMA_VERSION_TABLE.format(real=SQLITE.real))
        (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        version = int(current)
        for migration in pending(version):
            for statement in migration.render(SQLITE):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            version = migration.version
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version


# Scoped by schema so that separate Click2Dial installations (or test runs)
# in one PostgreSQL database do not wait for each other.
_PG_LOCK = (
    "SELECT pg_advisory_xact_lock("
    "hashtext('click2dial.migrations:' || COALESCE(current_schema(), '')))"
)


async def apply_postgres(conn: Any) -> int:
    """Bring a PostgreSQL schema up to date; returns the schema version.

    ``conn`` is an asyncpg connection.  The transaction-scoped advisory lock
    makes nodes starting together take turns; it is released by the commit.
    """
    async with conn.transaction():
        await conn.execute(_PG_LOCK)
        await conn.execute(SCHEMA_VERSION_TABLE.format(real=POSTGRES.real))
        version = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        for migration in pending(version):
            for statement in migration.render(POSTGRES):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
            version = migration.version
    return version
