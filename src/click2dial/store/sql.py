"""The SQL both backends share, written once.

Statements are written with ``?`` placeholders; :class:`Sql` renders them for
one backend and converts values on the way in and out.  The two differences
it hides:

* placeholders: SQLite takes ``?`` in order, asyncpg takes ``$1``, ``$2``...
  (``numbered=True``); no statement here has a literal ``?``.
* JSON columns: SQLite keeps JSON as text, so values are encoded and decoded
  here (``json_text=True``); asyncpg's JSONB codec does it for PostgreSQL.

What only one engine can do (``FOR UPDATE SKIP LOCKED``, ``ON CONFLICT ...
RETURNING``) stays in that backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from click2dial.store.base import OutboxStats
from click2dial.store.model import (
    BINDING_COLUMNS,
    CALL_COLUMNS,
    DIALOG_COLUMNS,
    NODE_COLUMNS,
    NOTIFICATION_COLUMNS,
    Binding,
    CallRecord,
    NodeRecord,
    Notification,
)

JSON_COLUMNS: Final = frozenset({"warnings", "payload", "agent_dialog", "callee_dialog"})
"""Columns of type JSON (TEXT in SQLite, JSONB in PostgreSQL)."""

CALL_LIST: Final = ", ".join(CALL_COLUMNS)
NOTIFICATION_LIST: Final = ", ".join(NOTIFICATION_COLUMNS)
LIVE: Final = "state <> 'ended'"
_DROP_DIALOGS: Final = "".join(f", {column} = NULL" for column in DIALOG_COLUMNS.values())

_CALL_SELECT: Final = f"SELECT {CALL_LIST} FROM calls"
_LIVE_ORDER: Final = " ORDER BY created_at, call_ref"
_STATS: Final = (
    "SELECT"
    " COUNT(*) FILTER (WHERE delivered_at IS NULL),"
    " COUNT(*) FILTER (WHERE delivered_at IS NOT NULL),"
    " COUNT(*) FILTER (WHERE delivered_at IS NULL AND attempts > 0),"
    " MIN(created_at) FILTER (WHERE delivered_at IS NULL)"
    " FROM notifications"
)


class Row(Protocol):
    """A result row by column name: ``sqlite3.Row`` or ``asyncpg.Record``."""

    def __getitem__(self, key: str, /) -> Any: ...


Statement = tuple[str, tuple[Any, ...]]
"""SQL text and its parameters, in placeholder order."""


def _values(n: int) -> str:
    return ", ".join("?" * n)


@dataclass(frozen=True, slots=True)
class Sql:
    numbered: bool
    """``$1, $2...`` placeholders (asyncpg) instead of ``?`` (sqlite3)."""
    json_text: bool
    """JSON columns travel as text (sqlite3) rather than as objects."""

    def render(self, sql: str) -> str:
        """``sql`` with this backend's placeholders."""
        if not self.numbered:
            return sql
        parts = sql.split("?")
        out = [parts[0]]
        for i, part in enumerate(parts[1:], start=1):
            out.append(f"${i}{part}")
        return "".join(out)

    def _stmt(self, sql: str, params: Iterable[Any] = ()) -> Statement:
        return self.render(sql), tuple(params)

    # -- values ---------------------------------------------------------------

    def encode(self, column: str, value: Any) -> Any:
        if self.json_text and column in JSON_COLUMNS and value is not None:
            return json.dumps(value)
        return value

    def decode(self, column: str, value: Any) -> Any:
        if self.json_text and column in JSON_COLUMNS and isinstance(value, str):
            return json.loads(value)
        return value

    def call_params(self, call: CallRecord) -> tuple[Any, ...]:
        return tuple(self.encode(name, getattr(call, name)) for name in CALL_COLUMNS)

    def call_from(self, row: Row) -> CallRecord:
        return CallRecord(**{name: self.decode(name, row[name]) for name in CALL_COLUMNS})

    def notification_params(self, n: Notification) -> tuple[Any, ...]:
        return tuple(self.encode(name, getattr(n, name)) for name in NOTIFICATION_COLUMNS)

    def notification_from(self, row: Row) -> Notification:
        return Notification(**{name: self.decode(name, row[name]) for name in NOTIFICATION_COLUMNS})

    # -- calls ----------------------------------------------------------------

    @property
    def call_insert(self) -> str:
        return self.render(f"INSERT INTO calls ({CALL_LIST}) VALUES ({_values(len(CALL_COLUMNS))})")

    def call_by_key(self, integrator: str, key: str) -> Statement:
        return self._stmt(
            f"{_CALL_SELECT} WHERE integrator = ? AND idempotency_key = ?", (integrator, key)
        )

    def call_by_ref(self, call_ref: str, integrator: str | None = None) -> Statement:
        if integrator is None:
            return self._stmt(f"{_CALL_SELECT} WHERE call_ref = ?", (call_ref,))
        return self._stmt(
            f"{_CALL_SELECT} WHERE call_ref = ? AND integrator = ?", (call_ref, integrator)
        )

    def live_call_of_agent(self, integrator: str, agent: str) -> Statement:
        return self._stmt(
            f"SELECT call_ref FROM calls WHERE integrator = ? AND agent = ? AND {LIVE}",
            (integrator, agent),
        )

    def is_live(self, call_ref: str) -> Statement:
        return self._stmt(f"SELECT 1 FROM calls WHERE call_ref = ? AND {LIVE}", (call_ref,))

    def update_call(self, call_ref: str, fields: Mapping[str, Any]) -> Statement:
        """``fields`` must have been checked (``check_update``): the names
        become SQL."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [self.encode(name, value) for name, value in fields.items()]
        return self._stmt(
            f"UPDATE calls SET {assignments} WHERE call_ref = ? AND {LIVE}", (*values, call_ref)
        )

    def finish_call(
        self,
        call_ref: str,
        end: tuple[Any, ...],
        *,
        returning: bool,
        fields: Mapping[str, Any] | None = None,
    ) -> Statement:
        """``end`` is ``(ended_at, end_reason, end_code, sip_status,
        sip_reason, hangup_side)``; ``fields`` (checked by ``check_update``)
        are set in the same statement, so that the times and leg states the
        call reached are written with its end even if an earlier
        ``update_call`` never landed."""
        extra = dict(fields or {})
        assignments = "".join(f", {name} = ?" for name in extra)
        values = [self.encode(name, value) for name, value in extra.items()]
        sql = (
            "UPDATE calls SET state = 'ended', ended_at = ?, end_reason = ?,"
            f" end_code = ?, sip_status = ?, sip_reason = ?, hangup_side = ?{_DROP_DIALOGS}"
            f"{assignments}"
            f" WHERE call_ref = ? AND {LIVE}"
        )
        if returning:
            sql += f" RETURNING {CALL_LIST}"
        return self._stmt(sql, (*end, *values, call_ref))

    def save_dialog(self, call_ref: str, column: str, state: Mapping[str, Any]) -> Statement:
        """``column`` comes from ``check_dialog``: it becomes SQL."""
        return self._stmt(
            f"UPDATE calls SET {column} = ? WHERE call_ref = ? AND {LIVE}",
            (self.encode(column, dict(state)), call_ref),
        )

    def dialogs_of(self, call_ref: str) -> Statement:
        return self._stmt(
            f"SELECT {', '.join(DIALOG_COLUMNS.values())} FROM calls WHERE call_ref = ? AND {LIVE}",
            (call_ref,),
        )

    def dialogs_from(self, row: Row | None) -> dict[str, dict[str, Any]]:
        """The legs' dialogs in a ``dialogs_of`` row (legs never saved left out)."""
        if row is None:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for leg, column in DIALOG_COLUMNS.items():
            state = self.decode(column, row[column])
            if state is not None:
                found[leg] = state
        return found

    def list_calls(
        self,
        integrator: str,
        *,
        contact_ref: str | None,
        agent: str | None,
        since: float | None,
        before: tuple[float, str] | None,
        limit: int,
    ) -> Statement:
        """Newest first; ``before`` is a decoded cursor."""
        where = ["integrator = ?"]
        params: list[Any] = [integrator]
        if contact_ref is not None:
            where.append("contact_ref = ?")
            params.append(contact_ref)
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if before is not None:
            where.append("(created_at, call_ref) < (?, ?)")
            params.extend(before)
        params.append(limit)
        sql = (
            f"{_CALL_SELECT} WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, call_ref DESC LIMIT ?"
        )
        return self._stmt(sql, params)

    def live_calls(self, node_id: str | None) -> Statement:
        if node_id is None:
            return self._stmt(f"{_CALL_SELECT} WHERE {LIVE}{_LIVE_ORDER}")
        return self._stmt(f"{_CALL_SELECT} WHERE {LIVE} AND node_id = ?{_LIVE_ORDER}", (node_id,))

    def created_since(self, integrator: str, since: float) -> Statement:
        """How many calls the integrator created after ``since``, and the
        first of them (on the index ``calls_by_time``)."""
        return self._stmt(
            "SELECT COUNT(*), MIN(created_at) FROM calls WHERE integrator = ? AND created_at > ?",
            (integrator, since),
        )

    def count_live(
        self, integrator: str, ending: Sequence[str] = (), *, indexed_by: str = ""
    ) -> Statement:
        """The integrator's live calls, less the ``ending`` ones.
        ``indexed_by``: the index SQLite must read (``INDEXED BY``)."""
        besides = f" AND call_ref NOT IN ({_values(len(ending))})" if ending else ""
        table = f"calls INDEXED BY {indexed_by}" if indexed_by else "calls"
        return self._stmt(
            f"SELECT COUNT(*) FROM {table} WHERE integrator = ? AND {LIVE}{besides}",
            (integrator, *ending),
        )

    # -- outbox ---------------------------------------------------------------

    @property
    def notification_insert(self) -> str:
        return self.render(
            f"INSERT INTO notifications ({NOTIFICATION_LIST})"
            f" VALUES ({_values(len(NOTIFICATION_COLUMNS))})"
        )

    def claimable(self, now: float, limit: int, *, lock: str = "") -> Statement:
        """The ``seq`` of up to ``limit`` rows a worker may claim at ``now``,
        oldest first: due, and older than every undelivered row of their
        ``(integrator, target)`` that is not due (claimed by a worker until
        its lease ends, or in back-off).  A group is thus in one worker's
        hands at a time, and its rows go out in outbox order across nodes.
        Both scans read only undelivered rows (``notifications_due``).
        ``lock`` is appended to the select (PostgreSQL's row locks)."""
        return self._stmt(
            "WITH held AS ("
            " SELECT integrator, target, MIN(seq) AS seq FROM notifications"
            " WHERE delivered_at IS NULL AND next_attempt_at > ?"
            " GROUP BY integrator, target)"
            " SELECT n.seq FROM notifications n"
            " LEFT JOIN held h ON h.integrator = n.integrator AND h.target = n.target"
            " WHERE n.delivered_at IS NULL AND n.next_attempt_at <= ?"
            " AND (h.seq IS NULL OR n.seq < h.seq)"
            f" ORDER BY n.seq LIMIT ?{lock}",
            (now, now, limit),
        )

    def mark_delivered(self, id: str, at: float) -> Statement:
        return self._stmt(
            "UPDATE notifications SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
            (at, id),
        )

    def mark_failed(self, id: str, error: str, next_attempt_at: float) -> Statement:
        return self._stmt(
            "UPDATE notifications SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_at = ? WHERE id = ? AND delivered_at IS NULL",
            (error, next_attempt_at, id),
        )

    def redeliver(self, integrator: str, id: str, now: float) -> Statement:
        return self._stmt(
            "UPDATE notifications SET delivered_at = NULL, next_attempt_at = ?,"
            " attempts = 0, last_error = NULL WHERE id = ? AND integrator = ?",
            (now, id, integrator),
        )

    def undelivered(self, integrator: str, limit: int) -> Statement:
        return self._stmt(
            f"SELECT {NOTIFICATION_LIST} FROM notifications"
            " WHERE integrator = ? AND delivered_at IS NULL ORDER BY seq LIMIT ?",
            (integrator, limit),
        )

    def outbox_stats(self, integrator: str | None) -> Statement:
        if integrator is None:
            return self._stmt(_STATS)
        return self._stmt(f"{_STATS} WHERE integrator = ?", (integrator,))


def stats_from(row: Sequence[Any], now: float) -> OutboxStats:
    """The :class:`OutboxStats` of an ``outbox_stats`` row."""
    pending, delivered, retries, oldest = row
    return OutboxStats(
        pending=int(pending),
        delivered=int(delivered),
        retries=int(retries),
        oldest_pending_age=0.0 if oldest is None else max(0.0, now - float(oldest)),
    )


SQLITE: Final = Sql(numbered=False, json_text=True)
POSTGRES: Final = Sql(numbered=True, json_text=False)


# -- bindings -------------------------------------------------------------------

_BINDING_LIST: Final = ", ".join(BINDING_COLUMNS)


def binding_params(b: Binding) -> tuple[Any, ...]:
    return tuple(getattr(b, name) for name in BINDING_COLUMNS)


def binding_from(row: Row) -> Binding:
    return Binding(**{name: row[name] for name in BINDING_COLUMNS})


def binding_upsert(sql: Sql) -> str:
    updates = ", ".join(f"{name} = excluded.{name}" for name in BINDING_COLUMNS[2:])
    return sql.render(
        f"INSERT INTO bindings ({_BINDING_LIST}) VALUES ({_values(len(BINDING_COLUMNS))})"
        f" ON CONFLICT (agent, contact) DO UPDATE SET {updates}"
    )


def binding_delete(sql: Sql, agent: str, contact: str) -> Statement:
    return sql._stmt("DELETE FROM bindings WHERE agent = ? AND contact = ?", (agent, contact))


def bindings_of(sql: Sql, agent: str | None, now: float) -> Statement:
    if agent is None:
        return sql._stmt(
            f"SELECT {_BINDING_LIST} FROM bindings WHERE expires_at > ? ORDER BY agent, contact",
            (now,),
        )
    return sql._stmt(
        f"SELECT {_BINDING_LIST} FROM bindings WHERE agent = ? AND expires_at > ? ORDER BY contact",
        (agent, now),
    )


def bindings_purge(sql: Sql, now: float) -> Statement:
    return sql._stmt("DELETE FROM bindings WHERE expires_at <= ?", (now,))


# -- node liveness --------------------------------------------------------------

_NODE_LIST: Final = ", ".join(NODE_COLUMNS)
# The takeover marker belongs to the silence it ended: once the node has been
# seen again after it, the node can be claimed again.
_NOT_CLAIMED: Final = "(taken_over_at IS NULL OR taken_over_at < last_seen)"


def node_from(row: Row) -> NodeRecord:
    return NodeRecord(**{name: row[name] for name in NODE_COLUMNS})


def node_started(sql: Sql, node_id: str, now: float) -> Statement:
    """A new life: the takeover marker of the last one is dropped."""
    return sql._stmt(
        "INSERT INTO nodes (node_id, started_at, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET started_at = excluded.started_at,"
        " last_seen = excluded.last_seen, taken_over_by = NULL, taken_over_at = NULL",
        (node_id, now, now),
    )


def node_heartbeat(sql: Sql, node_id: str, now: float) -> Statement:
    return sql._stmt(
        "INSERT INTO nodes (node_id, started_at, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen",
        (node_id, now, now),
    )


def node_by_id(sql: Sql, node_id: str) -> Statement:
    return sql._stmt(f"SELECT {_NODE_LIST} FROM nodes WHERE node_id = ?", (node_id,))


def nodes_all(sql: Sql) -> Statement:
    return sql._stmt(f"SELECT {_NODE_LIST} FROM nodes ORDER BY node_id")


def silent_nodes(sql: Sql, now: float, silence: float, exclude: str) -> Statement:
    """Nodes silent for more than ``silence`` seconds, not claimed since they
    were last seen, that still own live calls; never ``exclude`` (the asker)."""
    return sql._stmt(
        "SELECT node_id FROM nodes n"
        f" WHERE node_id <> ? AND last_seen < ? AND {_NOT_CLAIMED}"
        f" AND EXISTS (SELECT 1 FROM calls c WHERE c.node_id = n.node_id AND c.{LIVE})"
        " ORDER BY node_id",
        (exclude, now - silence),
    )


def node_claim(sql: Sql, node_id: str, by: str, now: float, silence: float) -> Statement:
    """Mark ``node_id`` taken over by ``by`` if it is still silent and
    unclaimed; one row changed for the one claimer that wins."""
    return sql._stmt(
        "UPDATE nodes SET taken_over_by = ?, taken_over_at = ?"
        f" WHERE node_id = ? AND node_id <> ? AND last_seen < ? AND {_NOT_CLAIMED}",
        (by, now, node_id, by, now - silence),
    )


def calls_move(sql: Sql, node_id: str, to: str) -> Statement:
    """Give ``node_id``'s live calls to ``to`` (returns nothing)."""
    return sql._stmt(f"UPDATE calls SET node_id = ? WHERE node_id = ? AND {LIVE}", (to, node_id))
