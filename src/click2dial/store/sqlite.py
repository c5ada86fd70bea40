"""The embedded SQLite backend of :class:`~click2dial.store.base.Store`.

Theory of operation: one ``sqlite3`` connection lives on one dedicated worker
thread and every method is a single job on that thread.  The event loop
never waits on disk.  Jobs run in *group commits*: whatever jobs are
queued when the worker comes round run one after another in one
``BEGIN IMMEDIATE`` transaction, each inside a savepoint of its own
(a job that fails, e.g. on a UNIQUE index, undoes only itself), and one
``COMMIT`` ends the group; no caller hears back before that commit.  Each
job is still a complete unit (its statements are never interleaved with
another job's), the write lock is taken up front should a second process
open the same file, and the UNIQUE indexes still decide the races.

Durability: WAL journal with ``synchronous=FULL``.  ``NORMAL`` would survive a
process crash but a power cut could roll back the last commits, among them a
CDR whose notification has already been delivered; the call would then come
back "live", be closed again as ``failed`` at start-up, and the integrator
would get two CDRs for one call.  The cost is one fsync per group, shared by
every call that changed at the same moment: under load the groups grow
instead of the queue.

Reads (one ``SELECT``: a replay's key lookup, GET, the list, counts) run
in a group before its transaction, on their own snapshot, without the
write lock.

The workers of one node (``[server] workers``) share the file
(``shared``): each one's writer takes the file's write lock in turns
(:meth:`SQLiteStore._writer`), the integrator's rate is counted in the
insert's transaction, and the cluster bus runs over :mod:`.local_bus`.

The hand-over between the loop and the thread is a ``queue.SimpleQueue``
(its put is one C call) and one ``call_soon_threadsafe`` per group that
settles every caller of the group.  A ``ThreadPoolExecutor`` cost a
``concurrent.futures.Future``, its chaining to an asyncio future and a
second wake-up of the loop per group: about 5 % of the event loop's time
at 100 calls/s (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from click2dial.store import local_bus, sql
from click2dial.store.base import (
    DEFAULT_LEASE,
    AgentBusyError,
    CallLimits,
    LimitExceededError,
    Listening,
    OutboxStats,
    Store,
    StoreError,
    check_dialog,
    check_finish,
    check_limit,
    check_notifications,
    check_update,
    decode_cursor,
    encode_cursor,
)
from click2dial.store.migrations import apply_sqlite
from click2dial.store.model import Binding, CallRecord, NodeRecord, Notification
from click2dial.store.sql import NOTIFICATION_LIST, SQLITE, Statement, stats_from

T = TypeVar("T")
log = logging.getLogger(__name__)

SQL = SQLITE
_NOTIFICATION_SELECT = f"SELECT seq, {NOTIFICATION_LIST} FROM notifications"
# 3.30: row values (keyset pagination), aggregate FILTER (stats); 3.35:
# RETURNING (finish_call).  Debian 12 has 3.40, Ubuntu 22.04 3.37.
_MIN_SQLITE = (3, 35, 0)


# Primary result codes of a database that cannot be used now but may be
# soon: busy or locked past the timeout, I/O error, disk full, cannot open.
_TRANSIENT = frozenset({5, 6, 10, 13, 14})

#: The longest a lazy job (:meth:`SQLiteStore._run`) waits for a group to
#: ride along with.  Under load the next call's creation comes sooner.
LAZY_COMMIT = 0.010


def count_live(integrator: str, ending: Sequence[str] = ()) -> Statement:
    """The integrator's live calls (less ``ending``), counted on the index of
    live calls.  Without statistics SQLite's planner took the index of every
    call the integrator ever had: the count, run for every new call, grew
    with the history (3 ms per call at 7,500 calls, 150 calls/s, against
    0.014 ms on the live index)."""
    return SQL.count_live(integrator, ending, indexed_by="calls_live_agent")


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in outcomes:
        if future.done():
            continue  # its caller gave up waiting
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


class SQLiteStore(Store):
    """``path`` is a file name, or ``":memory:"`` for a throw-away database.

    ``shared``: several processes of one node (``[server] workers``) use
    the file at once.  Each one's write lock is ``BEGIN IMMEDIATE``, so a
    limit counted inside the insert's job holds across them: the
    integrator's rate is then counted there too (as on PostgreSQL), and
    :meth:`notify`/:meth:`listen` carry the cluster bus between them
    (:mod:`.local_bus`)."""

    def __init__(self, path: str, *, shared: bool = False) -> None:
        if shared and path == ":memory:":
            raise StoreError(
                "an in-memory database cannot be shared by several workers: "
                "use a file (sqlite:///click2dial.db) or workers = 1"
            )
        self.path = path
        self.shared = shared
        self._lock_fd: int | None = None  # the writers' lock file, when shared
        self._thread: threading.Thread | None = None
        self._inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None  # touched on the worker only
        self._jobs: deque[tuple[Callable[[], Any], asyncio.Future[Any], bool]] = deque()
        self._group_due = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self.groups = 0
        """Group commits so far (each one transaction and one fsync)."""
        self.reruns = 0
        """Groups run a second time, with savepoints, after a job failed."""
        self._savepoints = True

    # -- plumbing -------------------------------------------------------------

    async def _run(
        self, fn: Callable[..., T], *args: Any, lazy: bool = False, read: bool = False
    ) -> T:
        """Run one job on the worker, in the next group commit (see
        :meth:`_run_group`); its result once that group is durable.

        A ``read`` job (one ``SELECT``) runs before the group's transaction,
        on its own snapshot, without the write lock: it never makes the
        other workers' writes wait (a replayed POST's lookup, once per
        request refused at capacity, took the lock and the turn of real
        writes).  It still waits for a group of this process that is
        already waiting for the lock: the thread is one.

        A ``lazy`` job starts no group of its own at once: it rides along
        with the next job that does, or goes on its own after
        :data:`LAZY_COMMIT`.  For writes nobody waits on to go on (a leg's
        dialog): a group commit costs about 0.2 ms of CPU whatever it
        carries, and at 100 calls/s most groups carried a single job."""
        if self._thread is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.append((functools.partial(fn, *args), future, read))
        if not self._group_due:
            if not lazy:
                self._start_group(loop)
            elif self._lazy_timer is None:
                self._lazy_timer = loop.call_later(LAZY_COMMIT, self._lazy_due, loop)
        try:
            result: T = await future
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _TRANSIENT:
                raise self._unavailable(f"SQLite: {exc}") from exc
            raise StoreError(f"SQLite: {exc}") from exc
        return result

    def _start_group(self, loop: asyncio.AbstractEventLoop) -> None:
        self._group_due = True
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        self._inbox.put(functools.partial(self._run_group, loop))

    def _lazy_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lazy_timer = None
        if self._jobs and not self._group_due:
            self._start_group(loop)

    async def _run_alone(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a job outside any group (opening and closing the connection)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            outcome: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
            try:
                outcome = [(future, fn(*args), None)]
            except BaseException as exc:
                outcome = [(future, None, exc)]
            loop.call_soon_threadsafe(_settle, outcome)

        self._inbox.put(job)
        try:
            return await future
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _TRANSIENT:
                raise self._unavailable(f"SQLite: {exc}") from exc
            raise StoreError(f"SQLite: {exc}") from exc

    def _run_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Group commit, on the worker: every job queued by now runs in one
        transaction and one COMMIT (one fsync) makes them all durable before
        any of their callers hears back.  Under load, calls that end or
        change at the same moment share the cost of the disk.

        A job that fails undoes only itself.  The group first runs without
        savepoints (two statements less per job, and each statement hands
        the GIL to the event loop and back); when a job of several fails,
        the group is rolled back and run again with a savepoint per job.
        Jobs only read and write the database, so running one again gives
        what it would have given the first time."""
        self._group_due = False  # before taking the jobs: a job queued from now gets a group
        jobs: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        read: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        while self._jobs:
            job, future, reads = self._jobs.popleft()
            if not reads:
                jobs.append((job, future))
                continue
            try:
                read.append((future, job(), None))
            except Exception as exc:
                read.append((future, None, exc))
        if read:  # answered now: the writes may wait for the lock
            loop.call_soon_threadsafe(_settle, read)
        if not jobs:
            return
        self.groups += 1
        with self._writer():
            outcomes = self._transaction(jobs, savepoints=False)
            if outcomes is None:
                self.reruns += 1
                outcomes = self._transaction(jobs, savepoints=True)
                assert outcomes is not None
        loop.call_soon_threadsafe(_settle, outcomes)

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """The write lock between the processes that share the file, taken
        before SQLite's own, and handed over in turn.

        SQLite's busy handler polls, sleeping up to 100 ms between tries: a
        process whose groups follow each other under load took the lock
        again before the sleeper woke, and the other worker's calls starved
        for seconds (measured: 8 s, until the other worker took it for
        dead).  A kernel lock (``fcntl``) wakes its waiter at once, but does
        not hand it over: on a saturated machine the releaser, whose next
        group is already queued, took it back first.  Hence a turnstile
        (byte 0) in front of the lock (byte 1): a waiter holds the
        turnstile while it waits, so the releaser queues behind it.
        Record locks belong to the process, and the kernel refuses a wait
        that closes a cycle between processes: only this thread may block
        on a record lock in a worker (SQLite's own never wait)."""
        lock = self._lock_fd
        if lock is None:
            yield
            return
        fcntl.lockf(lock, fcntl.LOCK_EX, 1, 0)
        try:
            fcntl.lockf(lock, fcntl.LOCK_EX, 1, 1)
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN, 1, 0)
        try:
            yield
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN, 1, 1)

    def _transaction(
        self, jobs: list[tuple[Callable[[], Any], asyncio.Future[Any]]], *, savepoints: bool
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]] | None:
        """Run ``jobs`` in one transaction; their outcomes, or None when a
        job failed without ``savepoints`` in a group of several (rolled back)."""
        try:
            conn = self._db
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            return [(future, None, exc) for _, future in jobs]
        self._savepoints = savepoints
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for job, future in jobs:
            try:
                outcomes.append((future, job(), None))
            except Exception as exc:
                if not savepoints:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    if len(jobs) > 1:
                        return None
                    return [(future, None, exc)]  # alone: undoing the group undid the job
                outcomes.append((future, None, exc))
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return [(future, None, exc) for future, _, _ in outcomes]
        return outcomes

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One job's writes: when its group runs with savepoints, a savepoint
        of the group's transaction, undone alone if the job fails; otherwise
        the failure undoes the group (:meth:`_run_group`)."""
        conn = self._db
        if not self._savepoints:
            yield conn
            return
        conn.execute("SAVEPOINT job")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            raise
        conn.execute("RELEASE job")

    # -- life cycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        # A daemon: a process that exits without close() is not held up by
        # it (SQLite's journal keeps the file whole whatever the thread was
        # doing).
        self._thread = threading.Thread(target=self._serve, name="click2dial-sqlite", daemon=True)
        self._thread.start()
        try:
            await self._run_alone(self._open)
        except BaseException:
            self._stop_thread()
            raise

    def _serve(self) -> None:
        """The worker thread: run what the loop hands over until ``None``."""
        inbox = self._inbox
        while (job := inbox.get()) is not None:
            try:
                job()
            except Exception:
                # A job's own errors go to its caller; this is the hand-back
                # failing (the loop closed under a running store).
                log.exception("SQLite worker: a job could not report back")

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._inbox.put(None)
            # Only the sentinel can be left in the inbox: this joins an idle thread.
            thread.join()

    def _open(self) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old; 3.35 or newer needed")
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
            if self.shared:
                try:
                    self._lock_fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
                except OSError as exc:
                    raise StoreError(f"cannot open the lock file of {self.path}: {exc}") from exc
            conn.row_factory = sqlite3.Row
            with self._writer():
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                apply_sqlite(conn)
        except BaseException:
            conn.close()
            self._close_lock()
            raise
        self._conn = conn

    def _close_lock(self) -> None:
        lock, self._lock_fd = self._lock_fd, None
        if lock is not None:
            os.close(lock)

    async def close(self) -> None:
        if self._thread is None:
            return
        if self._jobs and not self._group_due:
            self._start_group(asyncio.get_running_loop())  # lazy jobs go before the close
        try:
            await self._run_alone(self._close)
        finally:
            self._stop_thread()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._close_lock()

    async def schema_version(self) -> int:
        return await self._run(self._schema_version)

    def _schema_version(self) -> int:
        (version,) = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(version)

    # -- calls --------------------------------------------------------------------

    def _one(self, stmt: Statement) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(*stmt).fetchone()
        return row

    def _calls(self, stmt: Statement) -> list[CallRecord]:
        return [SQL.call_from(row) for row in self._db.execute(*stmt)]

    def _call(self, stmt: Statement) -> CallRecord | None:
        row = self._one(stmt)
        return None if row is None else SQL.call_from(row)

    def _changed(self, stmt: Statement) -> bool:
        with self._write() as conn:
            return conn.execute(*stmt).rowcount == 1

    async def create_call(
        self, call: CallRecord, limits: CallLimits | None = None
    ) -> tuple[CallRecord, bool]:
        # The concurrency is counted here, in the insert's job; the rate too
        # when several processes share the file (else the service keeps it
        # in memory).
        call.validate()
        copy = replace(call, warnings=list(call.warnings))
        return await self._run(self._create_call, copy, limits)

    def _create_call(
        self, call: CallRecord, limits: CallLimits | None = None
    ) -> tuple[CallRecord, bool]:
        with self._write() as conn:
            over = self._over_limits(call, limits) if limits is not None else None
            if over is not None:
                # A replay is never over a limit (a new call finds its
                # replay at the insert below, without this read).
                if call.idempotency_key is not None:
                    existing = self._call(SQL.call_by_key(call.integrator, call.idempotency_key))
                    if existing is not None:
                        return existing, False
                raise over
            try:
                conn.execute(SQL.call_insert, SQL.call_params(call))
            except sqlite3.IntegrityError as exc:
                # The insert lost to a UNIQUE index; find out which, inside the
                # same transaction so the answer matches what blocked us.
                if call.idempotency_key is not None:
                    existing = self._call(SQL.call_by_key(call.integrator, call.idempotency_key))
                    if existing is not None:
                        return existing, False
                row = self._one(SQL.live_call_of_agent(call.integrator, call.agent))
                if row is not None:
                    raise AgentBusyError(row["call_ref"]) from None
                raise StoreError(f"cannot store call {call.call_ref}: {exc}") from exc
        return call, True

    def _over_limits(self, call: CallRecord, limits: CallLimits) -> LimitExceededError | None:
        row = self._one(count_live(call.integrator, limits.ending))
        if row is not None and int(row[0]) >= limits.max_concurrent:
            return limits.over_concurrent()
        if self.shared:
            row = self._one(SQL.created_since(call.integrator, call.created_at - limits.window))
            if row is not None and int(row[0]) >= limits.per_window:
                return limits.over_rate(float(row[1]), call.created_at)
        return None

    async def find_by_idempotency_key(self, integrator: str, key: str) -> CallRecord | None:
        return await self._run(self._call, SQL.call_by_key(integrator, key), read=True)

    async def update_call(self, call_ref: str, /, **fields: Any) -> bool:
        check_update(fields)
        if not fields:
            return await self._run(self._one, SQL.is_live(call_ref)) is not None
        return await self._run(self._changed, SQL.update_call(call_ref, fields), lazy=True)

    async def get_call(self, integrator: str, call_ref: str) -> CallRecord | None:
        return await self._run(self._call, SQL.call_by_ref(call_ref, integrator), read=True)

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
        calls = await self._run(self._calls, stmt, read=True)
        if len(calls) > limit:
            return calls[:limit], encode_cursor(calls[limit - 1])
        return calls, None

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
        check_finish(end_reason, notifications, fields)
        end = (ended_at, end_reason, end_code, sip_status, sip_reason, hangup_side)
        stmt = SQL.finish_call(call_ref, end, returning=True, fields=fields)
        rows = [SQL.notification_params(n) for n in notifications]
        return await self._run(self._finish_call, stmt, rows, lazy=lazy)

    def _finish_call(
        self, stmt: Statement, notifications: list[tuple[Any, ...]]
    ) -> CallRecord | None:
        with self._write() as conn:
            # fetchall: the statement runs to its end before the next one.
            ended = conn.execute(*stmt).fetchall()
            if not ended:
                return None
            if notifications:
                self._insert_notifications(conn, notifications)
            return SQL.call_from(ended[0])

    async def save_dialog(self, call_ref: str, leg: str, state: dict[str, Any]) -> None:
        column = check_dialog(leg, state)
        await self._run(self._changed, SQL.save_dialog(call_ref, column, state), lazy=True)

    async def dialogs_of(self, call_ref: str) -> dict[str, dict[str, Any]]:
        return SQL.dialogs_from(await self._run(self._one, SQL.dialogs_of(call_ref)))

    async def live_calls(self, node_id: str | None = None) -> list[CallRecord]:
        return await self._run(self._calls, SQL.live_calls(node_id))

    async def count_live(self, integrator: str) -> int:
        row = await self._run(self._one, count_live(integrator), read=True)
        assert row is not None
        return int(row[0])

    # -- outbox ------------------------------------------------------------------

    async def enqueue(self, notifications: Sequence[Notification]) -> None:
        check_notifications(notifications)
        await self._run(self._enqueue, [SQL.notification_params(n) for n in notifications])

    def _enqueue(self, rows: list[tuple[Any, ...]]) -> None:
        with self._write() as conn:
            self._insert_notifications(conn, rows)

    @staticmethod
    def _insert_notifications(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        try:
            conn.executemany(SQL.notification_insert, rows)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot queue notifications: {exc}") from exc

    async def due_notifications(
        self, now: float, limit: int = 100, *, lease: float = DEFAULT_LEASE
    ) -> list[Notification]:
        check_limit(limit)
        return await self._run(self._due, now, limit, now + lease)

    def _due(self, now: float, limit: int, until: float) -> list[Notification]:
        with self._write() as conn:
            claimable, args = SQL.claimable(now, limit)
            rows = conn.execute(
                f"{_NOTIFICATION_SELECT} WHERE seq IN ({claimable}) ORDER BY seq", args
            ).fetchall()
            conn.executemany(
                "UPDATE notifications SET next_attempt_at = ? WHERE seq = ?",
                [(until, row["seq"]) for row in rows],
            )
        return [replace(SQL.notification_from(row), next_attempt_at=until) for row in rows]

    async def mark_delivered(self, id: str, at: float) -> bool:
        return await self._run(self._changed, SQL.mark_delivered(id, at))

    async def mark_failed(self, id: str, error: str, next_attempt_at: float) -> bool:
        return await self._run(self._changed, SQL.mark_failed(id, error, next_attempt_at))

    async def redeliver(self, integrator: str, id: str, *, now: float | None = None) -> bool:
        stmt = SQL.redeliver(integrator, id, time.time() if now is None else now)
        return await self._run(self._changed, stmt)

    async def undelivered(self, integrator: str, limit: int = 100) -> list[Notification]:
        check_limit(limit)
        return await self._run(self._notifications, SQL.undelivered(integrator, limit), read=True)

    def _notifications(self, stmt: Statement) -> list[Notification]:
        return [SQL.notification_from(row) for row in self._db.execute(*stmt)]

    async def outbox_stats(
        self, *, now: float | None = None, integrator: str | None = None
    ) -> OutboxStats:
        row = await self._run(self._one, SQL.outbox_stats(integrator), read=True)
        assert row is not None
        return stats_from(row, time.time() if now is None else now)

    # -- registrar bindings --------------------------------------------------------

    async def save_binding(self, binding: Binding) -> None:
        await self._run(self._save_binding, sql.binding_params(binding))

    def _save_binding(self, params: tuple[Any, ...]) -> None:
        with self._write() as conn:
            conn.execute(sql.binding_upsert(SQL), params)

    async def delete_binding(self, agent: str, contact: str) -> bool:
        return await self._run(self._changed, sql.binding_delete(SQL, agent, contact))

    async def bindings(self, agent: str | None = None, *, now: float) -> list[Binding]:
        return await self._run(self._bindings, sql.bindings_of(SQL, agent, now), read=True)

    def _bindings(self, stmt: Statement) -> list[Binding]:
        return [sql.binding_from(row) for row in self._db.execute(*stmt)]

    async def purge_bindings(self, now: float) -> int:
        return await self._run(self._purge, sql.bindings_purge(SQL, now))

    def _purge(self, stmt: Statement) -> int:
        with self._write() as conn:
            return int(conn.execute(*stmt).rowcount)

    # -- node to node ------------------------------------------------------------------

    async def notify(self, payload: str) -> None:
        if not self.shared:
            return await super().notify(payload)
        local_bus.notify(self.path, payload)

    async def listen(self, callback: Callable[[str], None]) -> Listening:
        if not self.shared:
            return await super().listen(callback)
        return local_bus.listen(self.path, callback)

    # -- node liveness ---------------------------------------------------------------

    async def node_started(self, node_id: str, now: float) -> None:
        await self._run(self._execute, sql.node_started(SQL, node_id, now))

    def _execute(self, stmt: Statement) -> None:
        with self._write() as conn:
            conn.execute(*stmt)

    async def heartbeat(self, node_id: str, now: float) -> NodeRecord:
        return await self._run(self._heartbeat, node_id, now)

    def _heartbeat(self, node_id: str, now: float) -> NodeRecord:
        with self._write() as conn:
            conn.execute(*sql.node_heartbeat(SQL, node_id, now))
            row = self._one(sql.node_by_id(SQL, node_id))
        assert row is not None
        return sql.node_from(row)

    async def nodes(self) -> list[NodeRecord]:
        return await self._run(self._nodes, read=True)

    def _nodes(self) -> list[NodeRecord]:
        return [sql.node_from(row) for row in self._db.execute(*sql.nodes_all(SQL))]

    async def silent_nodes(self, now: float, silence: float, *, exclude: str) -> list[str]:
        stmt = sql.silent_nodes(SQL, now, silence, exclude)
        return await self._run(self._node_ids, stmt, read=True)

    def _node_ids(self, stmt: Statement) -> list[str]:
        return [str(row["node_id"]) for row in self._db.execute(*stmt)]

    async def take_over(
        self, node_id: str, *, by: str, now: float, silence: float
    ) -> list[CallRecord]:
        return await self._run(self._take_over, node_id, by, now, silence)

    def _take_over(self, node_id: str, by: str, now: float, silence: float) -> list[CallRecord]:
        # One job: nothing else runs between the claim, the read and the move.
        with self._write() as conn:
            if conn.execute(*sql.node_claim(SQL, node_id, by, now, silence)).rowcount != 1:
                return []
            calls = self._calls(SQL.live_calls(node_id))
            conn.execute(*sql.calls_move(SQL, node_id, by))
        return [replace(call, node_id=by) for call in calls]
