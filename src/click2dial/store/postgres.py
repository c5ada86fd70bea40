"""The PostgreSQL backend of :class:`~click2dial.store.base.Store` (asyncpg).

Several Click2Dial nodes may share one database, so every rule is decided by
the database itself, never by a read followed by a write:

* ``create_call`` inserts with ``ON CONFLICT (integrator, idempotency_key) DO
  NOTHING``; the partial UNIQUE index on live ``(integrator, agent)`` turns a
  second live call into a unique violation, mapped to ``AgentBusyError``.
* ``finish_call`` is ``UPDATE ... WHERE state <> 'ended'``: a concurrent
  finisher waits for the row lock, re-reads the row, finds it ended and
  updates nothing.
* ``create_call`` given the integrator's limits counts its live and recent
  calls and inserts in one transaction under an advisory lock per
  integrator, so ``max_concurrent`` and ``max_cps`` hold across nodes.
* ``due_notifications`` claims rows with ``FOR UPDATE SKIP LOCKED`` and moves
  them a lease into the future, so nodes do not deliver the same row at once;
  claims take turns under an advisory lock, so that a group's rows are in
  one worker's hands at a time (outbox order across nodes).
* ``notify``/``listen`` are ``NOTIFY``/``LISTEN`` on one channel, the schema
  named in each message: the nodes' bus (:mod:`click2dial.cluster_bus`).
* ``take_over`` claims a node with an ``UPDATE ... WHERE`` unclaimed: a second
  claimer waits for the row lock, re-reads the row, finds it claimed and
  changes nothing; the calls move in the winner's transaction.

JSON columns are JSONB, decoded to Python objects by a codec set on every
pooled connection.  Statements run at READ COMMITTED, the server default.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

import asyncpg  # type: ignore[import-untyped]

from click2dial.store import sql
from click2dial.store.base import (
    DEFAULT_LEASE,
    AgentBusyError,
    CallLimits,
    Listening,
    OutboxStats,
    Store,
    StoreError,
    StoreUnavailableError,
    check_dialog,
    check_finish,
    check_limit,
    check_notifications,
    check_update,
    decode_cursor,
    encode_cursor,
)
from click2dial.store.migrations import apply_postgres
from click2dial.store.model import CALL_COLUMNS, Binding, CallRecord, NodeRecord, Notification
from click2dial.store.sql import (
    CALL_LIST,
    NOTIFICATION_LIST,
    POSTGRES,
    Statement,
    stats_from,
)

SQL = POSTGRES
_LIVE_AGENT_INDEX = "calls_live_agent"
# A lost connection surfaces as InterfaceError or OSError, a server-side
# failure as PostgresError; callers see one StoreError for all of them.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

P = ParamSpec("P")
R = TypeVar("R")


# The server cannot be reached now: refused or lost connections, a server
# shutting down or starting (class 57), out of connections (class 53).
_UNAVAILABLE = (
    asyncpg.InterfaceError,
    OSError,  # TimeoutError and ConnectionRefusedError among them
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # A pooled connection that lost its server mid-operation can be left in
    # a state asyncpg refuses to use ("another operation is in progress"):
    # seen during a PostgreSQL restart under load.
    asyncpg.exceptions.InternalClientError,
)


def _db_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except _UNAVAILABLE as exc:
            store = args[0]
            if isinstance(store, Store):
                raise store._unavailable(f"PostgreSQL unavailable: {exc}") from exc
            raise StoreUnavailableError(f"PostgreSQL unavailable: {exc}") from exc
        except _DB_ERRORS as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    return wrapper


_CREATE_ATTEMPTS = 3
# Advisory locks, scoped by schema so that separate installations (or test
# runs) in one database do not wait for each other.
_CLAIM_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('click2dial.outbox:' || COALESCE(current_schema(), '')))"
)
#: ``NOTIFY`` channel of the node-to-node messages; the payload names the
#: schema, since channels are per database.
BUS_CHANNEL = "click2dial_bus"


#: A new call under the integrator's limits, in one statement (migration 5,
#: ``click2dial_limits``): the checks run first (near a limit under the
#: integrator's lock, with fresh snapshots), and the row goes in only if
#: they pass.  Run outside a transaction, the statement commits at once,
#: which releases the lock; the count and the insert are one step for
#: every node.
_N_CALL_COLUMNS = len(CALL_COLUMNS)
_CREATE_LIMITED = (
    "WITH verdict AS MATERIALIZED ("
    f"SELECT * FROM click2dial_limits(${_N_CALL_COLUMNS + 1}, ${_N_CALL_COLUMNS + 2},"
    f" ${_N_CALL_COLUMNS + 3}, ${_N_CALL_COLUMNS + 4}::text[], ${_N_CALL_COLUMNS + 5},"
    f" ${_N_CALL_COLUMNS + 6}, ${_N_CALL_COLUMNS + 7})),"
    f" inserted AS (INSERT INTO calls ({CALL_LIST})"
    f" SELECT {', '.join(f'${n}' for n in range(1, _N_CALL_COLUMNS + 1))}"
    " FROM verdict WHERE verdict.outcome = 'ok'"
    " ON CONFLICT (integrator, idempotency_key) DO NOTHING RETURNING call_ref)"
    " SELECT verdict.outcome, verdict.oldest, (SELECT call_ref FROM inserted) FROM verdict"
)


def _limit_args(call: CallRecord, limits: CallLimits, pool: int) -> tuple[Any, ...]:
    since = call.created_at - limits.window
    return (
        call.integrator,
        call.idempotency_key,
        since,
        list(limits.ending),
        limits.max_concurrent,
        limits.per_window,
        pool,  # the most creates this node runs at once
    )


async def _init_connection(conn: Any) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _find_by_key(conn: Any, integrator: str, key: str) -> CallRecord | None:
    sql, args = SQL.call_by_key(integrator, key)
    row = await conn.fetchrow(sql, *args)
    return None if row is None else SQL.call_from(row)


async def _insert_notifications(conn: Any, notifications: Sequence[Notification]) -> None:
    if not notifications:
        return
    try:
        await conn.executemany(
            SQL.notification_insert, [SQL.notification_params(n) for n in notifications]
        )
    except asyncpg.UniqueViolationError as exc:
        # Raised inside the caller's transaction, which it rolls back.
        raise StoreError(f"cannot queue notifications: {exc}") from exc


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 1".
    return int(status.rsplit(" ", 1)[-1])


class _Subscription:
    """``LISTEN`` on :data:`BUS_CHANNEL` over one dedicated connection."""

    def __init__(self, conn: Any, schema: str, callback: Callable[[str], None]) -> None:
        self._conn = conn
        self._schema = schema
        self._callback = callback
        self._lost = asyncio.Event()

    @classmethod
    async def start(cls, conn: Any, schema: str, callback: Callable[[str], None]) -> _Subscription:
        sub = cls(conn, schema, callback)
        conn.add_termination_listener(lambda _conn: sub._lost.set())
        try:
            await conn.add_listener(BUS_CHANNEL, sub._on_notify)
        except BaseException:
            await conn.close()
            raise
        return sub

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, message: str) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("schema") == self._schema:
            body = data.get("body")
            if isinstance(body, str):
                self._callback(body)

    async def wait_closed(self) -> None:
        await self._lost.wait()

    async def close(self) -> None:
        self._lost.set()
        with contextlib.suppress(*_DB_ERRORS):
            await self._conn.close()


class PostgresStore(Store):
    """``dsn`` is a ``postgresql://`` URL; extra query parameters become
    server settings (``?search_path=click2dial`` selects a schema)."""

    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._server_settings = server_settings
        self._pool: Any = None
        self._current_schema: str | None = None

    @property
    def _p(self) -> Any:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    # -- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                init=_init_connection,
                server_settings=self._server_settings,
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await apply_postgres(conn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, _DB_ERRORS):
                raise StoreError(f"cannot migrate the PostgreSQL schema: {exc}") from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @_db_errors
    async def schema_version(self) -> int:
        version = await self._p.fetchval("SELECT MAX(version) FROM schema_version")
        return int(version)

    # -- calls --------------------------------------------------------------------

    @_db_errors
    async def create_call(
        self, call: CallRecord, limits: CallLimits | None = None
    ) -> tuple[CallRecord, bool]:
        call.validate()
        args = SQL.call_params(call)
        async with self._p.acquire() as conn:
            # Retried only when the live call that blocked us ended before we
            # could name it: then the agent is free and the insert may pass.
            for _ in range(_CREATE_ATTEMPTS):
                try:
                    if limits is None:
                        inserted = await conn.fetchval(
                            f"{SQL.call_insert} ON CONFLICT (integrator, idempotency_key)"
                            " DO NOTHING RETURNING call_ref",
                            *args,
                        )
                    else:
                        # One autocommitted statement: the integrator's lock
                        # is held for the checks, the insert and the commit.
                        # A replay inserts nothing and is found by its key
                        # below: it is never over a limit.
                        outcome, oldest, inserted = await conn.fetchrow(
                            _CREATE_LIMITED, *args, *_limit_args(call, limits, self._max_size)
                        )
                        if outcome == "max_concurrent":
                            raise limits.over_concurrent()
                        if outcome == "max_cps":
                            raise limits.over_rate(oldest, call.created_at)
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name != _LIVE_AGENT_INDEX:
                        raise StoreError(f"cannot store call {call.call_ref}: {exc}") from exc
                    # With a concurrent retry of the same request the agent
                    # index can trip before the idempotency index; the retry
                    # must still get the first call, not a 409.
                    existing = await self._by_key(conn, call)
                    if existing is not None:
                        return existing, False
                    sql, busy_args = SQL.live_call_of_agent(call.integrator, call.agent)
                    busy = await conn.fetchval(sql, *busy_args)
                    if busy is not None:
                        raise AgentBusyError(busy) from None
                    continue
                if inserted is not None:
                    return replace(call, warnings=list(call.warnings)), True
                existing = await self._by_key(conn, call)
                if existing is not None:
                    return existing, False
        raise StoreError(f"cannot store call {call.call_ref}: conflicts kept changing")

    @staticmethod
    async def _by_key(conn: Any, call: CallRecord) -> CallRecord | None:
        if call.idempotency_key is None:
            return None
        return await _find_by_key(conn, call.integrator, call.idempotency_key)

    async def _call(self, stmt: Statement) -> CallRecord | None:
        row = await self._p.fetchrow(stmt[0], *stmt[1])
        return None if row is None else SQL.call_from(row)

    async def _calls(self, stmt: Statement) -> list[CallRecord]:
        return [SQL.call_from(row) for row in await self._p.fetch(stmt[0], *stmt[1])]

    async def _changed(self, stmt: Statement) -> bool:
        return _rowcount(await self._p.execute(stmt[0], *stmt[1])) == 1

    @_db_errors
    async def find_by_idempotency_key(self, integrator: str, key: str) -> CallRecord | None:
        return await self._call(SQL.call_by_key(integrator, key))

    @_db_errors
    async def update_call(self, call_ref: str, /, **fields: Any) -> bool:
        check_update(fields)
        if not fields:
            sql, args = SQL.is_live(call_ref)
            return await self._p.fetchval(sql, *args) is not None
        return await self._changed(SQL.update_call(call_ref, fields))

    @_db_errors
    async def get_call(self, integrator: str, call_ref: str) -> CallRecord | None:
        return await self._call(SQL.call_by_ref(call_ref, integrator))

    @_db_errors
    async def list_calls(
        self,
        integrator: str,
        *,
        contact_ref: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[CallRecord], str | None]:
        check_limit(limit)
        # One row more than asked tells whether there is a next page.
        stmt = SQL.list_calls(
            integrator,
            contact_ref=contact_ref,
            agent=agent,
            since=since,
            before=None if cursor is None else decode_cursor(cursor),
            limit=limit + 1,
        )
        calls = await self._calls(stmt)
        if len(calls) > limit:
            return calls[:limit], encode_cursor(calls[limit - 1])
        return calls, None

    @_db_errors
    async def finish_call(
        self,
        call_ref: str,
        *,
        ended_at: float,
        end_reason: str,
        end_code: int | None,
        sip_status: int | None,
        sip_reason: str | None,
        hangup_side: str | None,
        notifications: Sequence[Notification] = (),
        fields: Mapping[str, Any] | None = None,
        lazy: bool = False,
    ) -> CallRecord | None:
        del lazy  # each call's transaction commits on its own connection
        check_finish(end_reason, notifications, fields)
        end = (ended_at, end_reason, end_code, sip_status, sip_reason, hangup_side)
        sql, args = SQL.finish_call(call_ref, end, returning=True, fields=fields)
        async with self._p.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql, *args)
            if row is None:
                return None
            await _insert_notifications(conn, notifications)
        return SQL.call_from(row)

    @_db_errors
    async def save_dialog(self, call_ref: str, leg: str, state: dict[str, Any]) -> None:
        column = check_dialog(leg, state)
        await self._changed(SQL.save_dialog(call_ref, column, state))

    @_db_errors
    async def dialogs_of(self, call_ref: str) -> dict[str, dict[str, Any]]:
        sql, args = SQL.dialogs_of(call_ref)
        return SQL.dialogs_from(await self._p.fetchrow(sql, *args))

    @_db_errors
    async def live_calls(self, node_id: str | None = None) -> list[CallRecord]:
        return await self._calls(SQL.live_calls(node_id))

    @_db_errors
    async def count_live(self, integrator: str) -> int:
        sql, args = SQL.count_live(integrator)
        return int(await self._p.fetchval(sql, *args))

    # -- node to node --------------------------------------------------------------

    @_db_errors
    async def notify(self, payload: str) -> None:
        message = json.dumps({"schema": await self._schema(), "body": payload})
        await self._p.execute("SELECT pg_notify($1, $2)", BUS_CHANNEL, message)

    @_db_errors
    async def listen(self, callback: Callable[[str], None]) -> Listening:
        # A connection of its own: LISTEN lasts as long as the session, and a
        # pooled connection goes back to the pool (and is reset) after use.
        conn = await asyncpg.connect(self.dsn, server_settings=self._server_settings)
        schema = await self._schema()
        return await _Subscription.start(conn, schema, callback)

    async def _schema(self) -> str:
        if self._current_schema is None:
            self._current_schema = str(await self._p.fetchval("SELECT current_schema()"))
        return self._current_schema

    # -- outbox ------------------------------------------------------------------

    @_db_errors
    async def enqueue(self, notifications: Sequence[Notification]) -> None:
        check_notifications(notifications)
        if notifications:
            async with self._p.acquire() as conn, conn.transaction():
                await _insert_notifications(conn, notifications)

    @_db_errors
    async def due_notifications(
        self, now: float, limit: int = 100, *, lease: float = DEFAULT_LEASE
    ) -> list[Notification]:
        check_limit(limit)
        claimable, args = SQL.claimable(now, limit, lock=" FOR UPDATE OF n SKIP LOCKED")
        n = len(args)
        async with self._p.acquire() as conn, conn.transaction():
            # Claims take turns: a claim running beside another would see the
            # other's rows still due (not committed yet), skip them as locked
            # and take the younger rows of the same group out of order.
            await conn.execute(_CLAIM_LOCK)
            rows = await conn.fetch(
                f"UPDATE notifications SET next_attempt_at = ${n + 1}"
                f" WHERE seq IN ({claimable}) RETURNING seq, {NOTIFICATION_LIST}",
                *args,
                now + lease,
            )
        return [SQL.notification_from(row) for row in sorted(rows, key=lambda r: int(r["seq"]))]

    @_db_errors
    async def mark_delivered(self, id: str, at: float) -> bool:
        return await self._changed(SQL.mark_delivered(id, at))

    @_db_errors
    async def mark_failed(self, id: str, error: str, next_attempt_at: float) -> bool:
        return await self._changed(SQL.mark_failed(id, error, next_attempt_at))

    @_db_errors
    async def redeliver(self, integrator: str, id: str, *, now: float | None = None) -> bool:
        return await self._changed(
            SQL.redeliver(integrator, id, time.time() if now is None else now)
        )

    @_db_errors
    async def undelivered(self, integrator: str, limit: int = 100) -> list[Notification]:
        check_limit(limit)
        sql, args = SQL.undelivered(integrator, limit)
        return [SQL.notification_from(row) for row in await self._p.fetch(sql, *args)]

    @_db_errors
    async def outbox_stats(
        self, *, now: float | None = None, integrator: str | None = None
    ) -> OutboxStats:
        sql, args = SQL.outbox_stats(integrator)
        row = await self._p.fetchrow(sql, *args)
        return stats_from(row, time.time() if now is None else now)

    # -- registrar bindings --------------------------------------------------------

    @_db_errors
    async def save_binding(self, binding: Binding) -> None:
        await self._p.execute(sql.binding_upsert(SQL), *sql.binding_params(binding))

    @_db_errors
    async def delete_binding(self, agent: str, contact: str) -> bool:
        return await self._changed(sql.binding_delete(SQL, agent, contact))

    @_db_errors
    async def bindings(self, agent: str | None = None, *, now: float) -> list[Binding]:
        text, args = sql.bindings_of(SQL, agent, now)
        return [sql.binding_from(row) for row in await self._p.fetch(text, *args)]

    @_db_errors
    async def purge_bindings(self, now: float) -> int:
        text, args = sql.bindings_purge(SQL, now)
        return _rowcount(await self._p.execute(text, *args))

    # -- node liveness --------------------------------------------------------------

    @_db_errors
    async def node_started(self, node_id: str, now: float) -> None:
        text, args = sql.node_started(SQL, node_id, now)
        await self._p.execute(text, *args)

    @_db_errors
    async def heartbeat(self, node_id: str, now: float) -> NodeRecord:
        text, args = sql.node_heartbeat(SQL, node_id, now)
        row = await self._p.fetchrow(f"{text} RETURNING *", *args)
        return sql.node_from(row)

    @_db_errors
    async def nodes(self) -> list[NodeRecord]:
        text, args = sql.nodes_all(SQL)
        return [sql.node_from(row) for row in await self._p.fetch(text, *args)]

    @_db_errors
    async def silent_nodes(self, now: float, silence: float, *, exclude: str) -> list[str]:
        text, args = sql.silent_nodes(SQL, now, silence, exclude)
        return [str(row["node_id"]) for row in await self._p.fetch(text, *args)]

    @_db_errors
    async def take_over(
        self, node_id: str, *, by: str, now: float, silence: float
    ) -> list[CallRecord]:
        claim, claim_args = sql.node_claim(SQL, node_id, by, now, silence)
        move, move_args = sql.calls_move(SQL, node_id, by)
        async with self._p.acquire() as conn, conn.transaction():
            if _rowcount(await conn.execute(claim, *claim_args)) != 1:
                return []
            rows = await conn.fetch(f"{move} RETURNING {CALL_LIST}", *move_args)
        calls = [SQL.call_from(row) for row in rows]
        return sorted(calls, key=lambda c: (c.created_at, c.call_ref))
