"""The embedded SQLite backend of :class:`~click2dial.store.base.Store`.

Theory of operation: one ``sqlite3`` connection lives on one dedicated worker
thread (a single-thread executor) and every method is a single job on that
thread.  The event loop never waits on disk, and because jobs run one after
another each job is a complete unit: a transaction is never interleaved with
another task's statements.  Writes use ``BEGIN IMMEDIATE`` so that, should a
second process open the same file, the write lock is taken up front and the
UNIQUE indexes still decide the races.

Durability: WAL journal with ``synchronous=FULL``.  ``NORMAL`` would survive a
process crash but a power cut could roll back the last commits, among them a
CDR whose notification has already been delivered; the call would then come
back "live", be closed again as ``failed`` at start-up, and the integrator
would get two CDRs for one call.  The cost, one fsync per commit, is small
next to the rate at which calls end.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from click2dial.store.base import (
    DEFAULT_LEASE,
    AgentBusyError,
    OutboxStats,
    Store,
    StoreError,
    check_finish,
    check_limit,
    check_notifications,
    check_update,
    decode_cursor,
    encode_cursor,
)
from click2dial.store.migrations import apply_sqlite
from click2dial.store.model import (
    CALL_COLUMNS,
    NOTIFICATION_COLUMNS,
    CallRecord,
    Notification,
)

T = TypeVar("T")

_CALL_SELECT = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls"
_CALL_INSERT = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({', '.join('?' for _ in CALL_COLUMNS)})"
)
_NOTIFICATION_SELECT = f"SELECT seq, {', '.join(NOTIFICATION_COLUMNS)} FROM notifications"
_NOTIFICATION_INSERT = (
    f"INSERT INTO notifications ({', '.join(NOTIFICATION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in NOTIFICATION_COLUMNS)})"
)
_MIN_SQLITE = (3, 30, 0)  # row values (keyset pagination), aggregate FILTER (stats)


def _call_row(call: CallRecord) -> tuple[Any, ...]:
    return tuple(
        json.dumps(call.warnings) if name == "warnings" else getattr(call, name)
        for name in CALL_COLUMNS
    )


def _call_from(row: sqlite3.Row) -> CallRecord:
    values = dict(zip(row.keys(), row, strict=True))
    values["warnings"] = json.loads(values["warnings"])
    return CallRecord(**values)


def _notification_row(n: Notification) -> tuple[Any, ...]:
    return tuple(
        json.dumps(n.payload) if name == "payload" else getattr(n, name)
        for name in NOTIFICATION_COLUMNS
    )


def _notification_from(row: sqlite3.Row) -> Notification:
    values = dict(zip(row.keys(), row, strict=True))
    del values["seq"]
    values["payload"] = json.loads(values["payload"])
    return Notification(**values)


class SQLiteStore(Store):
    """``path`` is a file name, or ``":memory:"`` for a throw-away database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched on the worker only

    # -- plumbing -------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- life cycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="click2dial-sqlite")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open(self) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old; 3.30 or newer needed")
        if self.path != ":memory:":
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise StoreError(f"cannot open database {self.path}: no folder {parent}")
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a
            # transaction is exactly what a job says it is.  timeout is the
            # busy wait for another process holding the write lock.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            apply_sqlite(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            # The queue is empty once _close has run, so this only joins an
            # idle thread.
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def schema_version(self) -> int:
        return await self._run(self._schema_version)

    def _schema_version(self) -> int:
        (version,) = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(version)

    # -- calls --------------------------------------------------------------------

    async def create_call(self, call: CallRecord) -> tuple[CallRecord, bool]:
        call.validate()
        return await self._run(self._create_call, replace(call, warnings=list(call.warnings)))

    def _create_call(self, call: CallRecord) -> tuple[CallRecord, bool]:
        with self._write() as conn:
            try:
                conn.execute(_CALL_INSERT, _call_row(call))
            except sqlite3.IntegrityError as exc:
                # The insert lost to a UNIQUE index; find out which, inside the
                # same transaction so the answer matches what blocked us.
                if call.idempotency_key is not None:
                    existing = self._by_key(call.integrator, call.idempotency_key)
                    if existing is not None:
                        return existing, False
                row = conn.execute(
                    "SELECT call_ref FROM calls"
                    " WHERE integrator = ? AND agent = ? AND state <> 'ended'",
                    (call.integrator, call.agent),
                ).fetchone()
                if row is not None:
                    raise AgentBusyError(row["call_ref"]) from None
                raise StoreError(f"cannot store call {call.call_ref}: {exc}") from exc
        return call, True

    async def find_by_idempotency_key(self, integrator: str, key: str) -> CallRecord | None:
        return await self._run(self._by_key, integrator, key)

    def _by_key(self, integrator: str, key: str) -> CallRecord | None:
        row = self._db.execute(
            f"{_CALL_SELECT} WHERE integrator = ? AND idempotency_key = ?", (integrator, key)
        ).fetchone()
        return None if row is None else _call_from(row)

    async def update_call(self, call_ref: str, /, **fields: Any) -> bool:
        check_update(fields)
        return await self._run(self._update_call, call_ref, fields)

    def _update_call(self, call_ref: str, fields: dict[str, Any]) -> bool:
        if not fields:
            row = self._db.execute(
                "SELECT 1 FROM calls WHERE call_ref = ? AND state <> 'ended'", (call_ref,)
            ).fetchone()
            return row is not None
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [json.dumps(v) if k == "warnings" else v for k, v in fields.items()]
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE calls SET {assignments} WHERE call_ref = ? AND state <> 'ended'",
                (*values, call_ref),
            )
            return cur.rowcount == 1

    async def get_call(self, integrator: str, call_ref: str) -> CallRecord | None:
        return await self._run(self._get_call, integrator, call_ref)

    def _get_call(self, integrator: str, call_ref: str) -> CallRecord | None:
        row = self._db.execute(
            f"{_CALL_SELECT} WHERE call_ref = ? AND integrator = ?", (call_ref, integrator)
        ).fetchone()
        return None if row is None else _call_from(row)

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
        if cursor is not None:
            where.append("(created_at, call_ref) < (?, ?)")
            params.extend(decode_cursor(cursor))
        # One row more than asked tells whether there is a next page.
        params.append(limit + 1)
        sql = (
            f"{_CALL_SELECT} WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, call_ref DESC LIMIT ?"
        )
        calls = await self._run(self._select_calls, sql, tuple(params))
        if len(calls) > limit:
            return calls[:limit], encode_cursor(calls[limit - 1])
        return calls, None

    def _select_calls(self, sql: str, params: tuple[Any, ...]) -> list[CallRecord]:
        return [_call_from(row) for row in self._db.execute(sql, params)]

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
    ) -> CallRecord | None:
        check_finish(end_reason, notifications)
        end = (ended_at, end_reason, end_code, sip_status, sip_reason, hangup_side)
        rows = [_notification_row(n) for n in notifications]
        return await self._run(self._finish_call, call_ref, end, rows)

    def _finish_call(
        self, call_ref: str, end: tuple[Any, ...], notifications: list[tuple[Any, ...]]
    ) -> CallRecord | None:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE calls SET state = 'ended', ended_at = ?, end_reason = ?,"
                " end_code = ?, sip_status = ?, sip_reason = ?, hangup_side = ?"
                " WHERE call_ref = ? AND state <> 'ended'",
                (*end, call_ref),
            )
            if cur.rowcount != 1:
                return None
            self._insert_notifications(conn, notifications)
            row = conn.execute(f"{_CALL_SELECT} WHERE call_ref = ?", (call_ref,)).fetchone()
        return _call_from(row)

    async def live_calls(self, node_id: str | None = None) -> list[CallRecord]:
        sql = f"{_CALL_SELECT} WHERE state <> 'ended'"
        params: tuple[Any, ...] = ()
        if node_id is not None:
            sql, params = sql + " AND node_id = ?", (node_id,)
        return await self._run(self._select_calls, sql + " ORDER BY created_at, call_ref", params)

    async def count_live(self, integrator: str) -> int:
        return await self._run(self._count_live, integrator)

    def _count_live(self, integrator: str) -> int:
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM calls WHERE integrator = ? AND state <> 'ended'", (integrator,)
        ).fetchone()
        return int(count)

    # -- outbox ------------------------------------------------------------------

    async def enqueue(self, notifications: Sequence[Notification]) -> None:
        check_notifications(notifications)
        await self._run(self._enqueue, [_notification_row(n) for n in notifications])

    def _enqueue(self, rows: list[tuple[Any, ...]]) -> None:
        with self._write() as conn:
            self._insert_notifications(conn, rows)

    @staticmethod
    def _insert_notifications(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        try:
            conn.executemany(_NOTIFICATION_INSERT, rows)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot queue notifications: {exc}") from exc

    async def due_notifications(
        self, now: float, limit: int = 100, *, lease: float = DEFAULT_LEASE
    ) -> list[Notification]:
        check_limit(limit)
        return await self._run(self._due, now, limit, now + lease)

    def _due(self, now: float, limit: int, until: float) -> list[Notification]:
        with self._write() as conn:
            rows = conn.execute(
                f"{_NOTIFICATION_SELECT} WHERE delivered_at IS NULL AND next_attempt_at <= ?"
                " ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE notifications SET next_attempt_at = ? WHERE seq = ?",
                [(until, row["seq"]) for row in rows],
            )
        return [replace(_notification_from(row), next_attempt_at=until) for row in rows]

    async def mark_delivered(self, id: str, at: float) -> bool:
        return await self._run(
            self._update_count,
            "UPDATE notifications SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
            (at, id),
        )

    async def mark_failed(self, id: str, error: str, next_attempt_at: float) -> bool:
        return await self._run(
            self._update_count,
            "UPDATE notifications SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_at = ? WHERE id = ? AND delivered_at IS NULL",
            (error, next_attempt_at, id),
        )

    async def redeliver(self, integrator: str, id: str, *, now: float | None = None) -> bool:
        return await self._run(
            self._update_count,
            "UPDATE notifications SET delivered_at = NULL, next_attempt_at = ?,"
            " attempts = 0, last_error = NULL WHERE id = ? AND integrator = ?",
            (time.time() if now is None else now, id, integrator),
        )

    def _update_count(self, sql: str, params: tuple[Any, ...]) -> bool:
        with self._write() as conn:
            return conn.execute(sql, params).rowcount == 1

    async def undelivered(self, integrator: str, limit: int = 100) -> list[Notification]:
        check_limit(limit)
        return await self._run(self._undelivered, integrator, limit)

    def _undelivered(self, integrator: str, limit: int) -> list[Notification]:
        rows = self._db.execute(
            f"{_NOTIFICATION_SELECT} WHERE integrator = ? AND delivered_at IS NULL"
            " ORDER BY seq LIMIT ?",
            (integrator, limit),
        )
        return [_notification_from(row) for row in rows]

    async def outbox_stats(
        self, *, now: float | None = None, integrator: str | None = None
    ) -> OutboxStats:
        return await self._run(self._stats, time.time() if now is None else now, integrator)

    def _stats(self, now: float, integrator: str | None) -> OutboxStats:
        sql = (
            "SELECT"
            " COUNT(*) FILTER (WHERE delivered_at IS NULL),"
            " COUNT(*) FILTER (WHERE delivered_at IS NOT NULL),"
            " COUNT(*) FILTER (WHERE delivered_at IS NULL AND attempts > 0),"
            " MIN(created_at) FILTER (WHERE delivered_at IS NULL)"
            " FROM notifications"
        )
        params: tuple[Any, ...] = ()
        if integrator is not None:
            sql, params = sql + " WHERE integrator = ?", (integrator,)
        pending, delivered, retries, oldest = self._db.execute(sql, params).fetchone()
        return OutboxStats(
            pending=int(pending),
            delivered=int(delivered),
            retries=int(retries),
            oldest_pending_age=0.0 if oldest is None else max(0.0, now - float(oldest)),
        )
