"""Writing the ends of calls: durably, oldest first, across store outages.

The moment the call flow decides a call's end (:class:`~.flow.Finish`), the
call leaves the live set and its agent is free, in memory.  Making that end
durable (the end fields, the times the call reached, its CDR outbox rows, in
one ``finish_call`` transaction) is this module's job, and it never gives up:

* one worker writes the pending ends in the order they happened, the
  oldest :data:`BATCH` at once (side by side, so that they share a group
  commit), retrying with a capped back-off while the store is unreachable
  (a PostgreSQL restart, a full disk), so that no end is lost and none is
  written twice (``finish_call`` is at most once per call);
* :meth:`EndWriter.close` waits a bounded time on shutdown, then keeps what
  is still unwritten in a JSON-lines *spool* file; the next start replays it
  (:func:`replay_spool`) with the recorded times before anything else, so a
  5-second call stays a 5-second call whatever the restart time.

An end is built once, with its notifications (their ids are the consumers'
deduplication keys), so a replay or a retry writes the very same documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import CallRecord, Notification, Store
from .outcome import Outcome

log = logging.getLogger(__name__)

#: Seconds between attempts while the store refuses: first, then doubling up to.
RETRY_FIRST = 0.1
RETRY_MAX = 2.0
#: Ends written side by side.  One at a time, the writer's pace was one end
#: per commit: near saturation the queue grew faster than it drained.
BATCH = 64


@dataclass
class PendingEnd:
    """One call's end, waiting for the store."""

    record: CallRecord
    outcome: Outcome
    ended_at: float
    fields: dict[str, Any]
    notifications: list[Notification]
    written: asyncio.Event = field(default_factory=asyncio.Event)
    final: CallRecord | None = None

    @property
    def call_ref(self) -> str:
        return self.record.call_ref

    async def write(self, store: Store, *, lazy: bool = False) -> CallRecord | None:
        """One ``finish_call`` transaction: the ended record, or None if
        the call was unknown or had ended already (at most once)."""
        return await store.finish_call(
            self.call_ref,
            ended_at=self.ended_at,
            end_reason=self.outcome.end_reason,
            end_code=self.outcome.end_code,
            sip_status=self.outcome.sip_status,
            sip_reason=self.outcome.sip_reason,
            hangup_side=self.outcome.hangup_side,
            notifications=self.notifications,
            fields=self.fields,
            lazy=lazy,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "record": dataclasses.asdict(self.record),
                "outcome": dataclasses.asdict(self.outcome),
                "ended_at": self.ended_at,
                "fields": self.fields,
                "notifications": [dataclasses.asdict(n) for n in self.notifications],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> PendingEnd:
        data = json.loads(line)
        return cls(
            record=CallRecord(**data["record"]),
            outcome=Outcome(**data["outcome"]),
            ended_at=float(data["ended_at"]),
            fields=dict(data["fields"]),
            notifications=[Notification(**n) for n in data["notifications"]],
        )


OnWritten = Callable[[PendingEnd], Awaitable[None]]


class EndWriter:
    """The single writer of call ends for this node."""

    def __init__(self, store: Store, *, on_written: OnWritten | None = None) -> None:
        self.store = store
        self.on_written = on_written
        self._queue: deque[PendingEnd] = deque()
        self._by_ref: dict[str, PendingEnd] = {}
        # The queries below run for every new call: indexed, not scans of
        # the queue (which is long exactly when the node is busiest).
        self._by_agent: dict[tuple[str, str], PendingEnd] = {}
        self._by_integrator: dict[str, dict[str, None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        """Attempts the store refused (a metric: an outage shows here)."""

    # ------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._queue)

    def pending(self, call_ref: str) -> PendingEnd | None:
        return self._by_ref.get(call_ref)

    def pending_agent(self, integrator: str, agent: str) -> PendingEnd | None:
        """The unwritten end of this agent's last call, if any: the store
        still holds it live, so a new call for the agent must wait for it."""
        return self._by_agent.get((integrator, agent))

    def pending_of(self, integrator: str) -> int:
        """How many unwritten ends belong to this integrator (the store
        still counts those calls as live)."""
        return len(self._by_integrator.get(integrator, ()))

    def pending_refs(self, integrator: str) -> tuple[str, ...]:
        """The calls of :meth:`pending_of`, by ``call_ref``."""
        return tuple(self._by_integrator.get(integrator, ()))

    # ----------------------------------------------------------- commands
    def submit(self, end: PendingEnd) -> None:
        self._queue.append(end)
        self._by_ref[end.call_ref] = end
        record = end.record
        self._by_agent[record.integrator, record.agent] = end
        self._by_integrator.setdefault(record.integrator, {})[end.call_ref] = None
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="end-writer")

    async def flush(self, call_ref: str, timeout: float) -> bool:
        """Wait up to ``timeout`` for this call's end to be written."""
        end = self._by_ref.get(call_ref)
        if end is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(end.written.wait(), timeout)
        return end.written.is_set()

    async def close(self, timeout: float, spool: Path | None = None) -> list[PendingEnd]:
        """Give the worker up to ``timeout`` to write what is pending, then
        stop it; what is left is appended to ``spool`` and returned."""
        if self._queue:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = list(self._queue)
        if left and spool is not None:
            write_spool(spool, left)
            log.warning("%d call end(s) not stored yet: kept in %s for the next start",
                        len(left), spool)  # fmt: skip
        return left

    async def _drained(self) -> None:
        while self._queue:
            await self._queue[-1].written.wait()

    # ------------------------------------------------------------- worker
    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._write_batch(first_refusal=delay == RETRY_FIRST):
                self.failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if delay != RETRY_FIRST:
                log.warning("store is back: writing %d pending call end(s)", len(self._queue))
            delay = RETRY_FIRST

    async def _write_batch(self, *, first_refusal: bool) -> bool:
        """Write the oldest ends side by side (they share the store's group
        commit); whether the store refused some, which stay queued, oldest
        first.  A method of its own so that nothing of the batch stays
        referenced while :meth:`_run` waits for the next ends."""
        # Only this task takes ends off the queue, so the batch is still its
        # head when the writes come back.
        batch = [self._queue[i] for i in range(min(len(self._queue), BATCH))]
        results = await asyncio.gather(
            *(end.write(self.store, lazy=True) for end in batch), return_exceptions=True
        )
        done: list[PendingEnd] = []
        retry: list[PendingEnd] = []
        refusal: BaseException | None = None
        for end, result in zip(batch, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result  # the batch is still queued: close() spools it
            if isinstance(result, ValueError):
                # A bug in what we wrote, not an outage: retrying cannot help.
                log.error("the end of call %s cannot be stored", end.call_ref,
                          exc_info=result)  # fmt: skip
            elif isinstance(result, BaseException):
                refusal = refusal or result
                retry.append(end)
                continue
            else:
                end.final = result
            done.append(end)
        for _ in batch:
            self._queue.popleft()
        self._queue.extendleft(reversed(retry))  # still the oldest, in order
        for end in done:
            self._forget(end)
        if retry and first_refusal:
            log.warning("store refused the end of %d call(s), first %s (%s): retrying",
                        len(retry), retry[0].call_ref, refusal)  # fmt: skip
        # Every end is off the queue or back at its head before the hooks
        # run, so a cancellation in a hook loses none.
        for end in done:
            if self.on_written is not None:
                try:
                    await self.on_written(end)
                except Exception:
                    log.exception("call-ended hook failed for %s", end.call_ref)
        return bool(retry)

    def _forget(self, end: PendingEnd) -> None:
        """``end`` is written: off the indexes, and its waiters told."""
        del self._by_ref[end.call_ref]
        record = end.record
        if self._by_agent.get((record.integrator, record.agent)) is end:
            del self._by_agent[record.integrator, record.agent]
        refs = self._by_integrator[record.integrator]
        del refs[end.call_ref]
        if not refs:
            del self._by_integrator[record.integrator]
        end.written.set()


def write_spool(path: Path, ends: list[PendingEnd]) -> None:
    """Append ``ends`` to the spool, durably (fsync) before returning."""
    with path.open("a", encoding="utf-8") as out:
        for end in ends:
            out.write(end.to_json() + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_spool(path: Path) -> list[PendingEnd]:
    """The ends kept in the spool (an unreadable line is logged and skipped:
    the call is then closed by crash recovery instead)."""
    if not path.exists():
        return []
    ends: list[PendingEnd] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            ends.append(PendingEnd.from_json(line))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("%s line %d is not a call end (%s): skipped", path, number, exc)
    return ends


async def replay_spool(store: Store, path: Path) -> list[CallRecord]:
    """Write the spooled ends with their recorded times; the calls that this
    ended (a call already ended in the store is skipped: at most once).  The
    file is removed only once every end in it is stored."""
    written: list[CallRecord] = []
    for end in read_spool(path):
        final = await end.write(store)
        if final is not None:
            written.append(final)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return written
