"""The delivery worker: :class:`Notifier` drains the outbox into Redis and
webhooks, and sends the agent-connection document on the call path.

Theory of operation
-------------------
* A dispatcher task claims due rows (``store.due_notifications``, a lease)
  whenever it is woken (:meth:`Notifier.wake`: rows were just committed), a
  retry falls due, or ``poll_interval`` passes.  It hands each row to the
  queue of its *group*, ``(integrator, target)``, and never waits for one.
* Each group has one task that delivers its rows one after another in
  outbox order: a Redis consumer ``BRPOP``-s the oldest CDR first, so the
  ``LPUSH`` order must be the commit order.  Groups run side by side, so a
  webhook that never answers delays nobody else.
* A failed row holds its group back until it is delivered: it is retried
  at ``now + min(backoff_max, backoff_base * 2**n) * uniform(0.5, 1.0)`` and
  every younger row of the group is put back (``mark_failed``, "not
  attempted") to fall due at that same moment, behind it, so nothing
  overtakes it (see :class:`_GroupState`).  ``n`` is the number of
  consecutive failed attempts at the group (bounded by the row's own
  ``attempts``, which also counts the rounds it spent held back).  Rows are
  never given up on.
* Nothing here raises into call handling, and the worker outlives any
  exception: it logs it and goes on.

Across a restart the in-memory state is rebuilt from the outbox: rows not
due yet (in back-off) hold back the younger ones as before.

Several nodes draining one outbox: the store hands out a group's rows only
while no older row of the group is claimed or in back-off
(``due_notifications``), so a group is in one worker's hands at a time and
order holds across nodes too.  The rows of a group committed while this
worker held it become claimable when it lets go, so a group that drains
wakes the dispatcher for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ..config import IntegratorConfig
from ..store import CallRecord, Notification, Store
from ..store.base import MAX_PAGE
from .documents import DeliveryError, agent_notifications
from .redis_target import MARKER_TTL, RedisLink
from .webhook_target import WebhookSender

log = logging.getLogger(__name__)

Group = tuple[str, str]
"""``(integrator, target)``: rows that must reach their target in order."""
MetricFamily = tuple[str, str, str, list[tuple[dict[str, str], float]]]

_ERROR_LIMIT: Final = 500
_MIN_WAIT: Final = 0.01
_FORGET_TIMEOUT: Final = 1.0


@dataclass
class NotifierCounters:
    """Attempts since this process started, per ``(integrator, target)``."""

    delivered: Counter[Group] = field(default_factory=Counter)
    failed: Counter[Group] = field(default_factory=Counter)
    """Failed attempts (a row failing three times counts three)."""


@dataclass
class _GroupState:
    """One group's rows as this worker knows them.

    Every row gets an ordinal when first seen (claims and the outbox listing
    return rows oldest first, so ordinals follow commit order) and keeps it
    until delivered.  Rows in hand are processed by ordinal; a row put back
    in the outbox (failed, or held back) is *waiting* until a claim returns
    it, and no younger row is attempted while an older one is waiting.
    """

    pending: list[tuple[int, str]] = field(default_factory=list)
    """Heap of (ordinal, id) of the rows in hand."""
    rows: dict[str, Notification] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, float] = field(default_factory=dict)
    """id → when the outbox makes it due again."""
    waiting_heap: list[tuple[int, str]] = field(default_factory=list)
    """(ordinal, id) of waiting rows; entries of rows no longer waiting are
    dropped when they reach the top."""
    task: asyncio.Task[None] | None = None
    streak: int = 0
    """Consecutive failed attempts; 0 after a success."""

    def wait_for(self, id: str, due: float) -> None:
        self.waiting[id] = due
        heapq.heappush(self.waiting_heap, (self.order[id], id))

    def oldest_waiting(self, now: float, grace: float) -> tuple[str, float] | None:
        """The oldest row put back, with its due time.  One that has not come
        back ``grace`` seconds after it was due was taken by another worker
        (or no longer exists): it is forgotten."""
        while self.waiting_heap:
            ordinal, id = self.waiting_heap[0]
            due = self.waiting.get(id)
            if due is None or self.order.get(id) != ordinal:
                heapq.heappop(self.waiting_heap)
                if id not in self.order:
                    self.waiting.pop(id, None)
            elif due + grace < now:
                heapq.heappop(self.waiting_heap)
                del self.waiting[id]
                self.order.pop(id, None)
            else:
                return id, due
        return None


class Notifier:
    """Delivers the outbox of every configured integrator.

    ``await start()`` runs the worker, ``await close()`` stops it; rows left
    undelivered stay in the outbox for the next start.  ``clock`` gives Unix
    seconds (the outbox's time); ``rng`` draws the back-off jitter.
    """

    def __init__(
        self,
        store: Store,
        integrators: Mapping[str, IntegratorConfig],
        *,
        clock: Callable[[], float] = time.time,
        http_timeout: float = 5.0,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        poll_interval: float = 1.0,
        lease: float = 30.0,
        rng: random.Random | None = None,
        inline_timeout: float = 0.3,
        batch: int = 100,
        marker_ttl: int = MARKER_TTL,
        webhook_allow_link_local: bool = False,
    ) -> None:
        self.store = store
        self.integrators = dict(integrators)
        self.clock = clock
        self.http_timeout = http_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.lease = lease
        self.rng = rng if rng is not None else random.Random()
        self.inline_timeout = inline_timeout
        self.batch = batch
        self.marker_ttl = marker_ttl
        self.counters = NotifierCounters()
        self._max_held = 10 * batch
        self._groups: dict[Group, _GroupState] = {}
        self._held: set[str] = set()
        self._ordinals = itertools.count()
        # (integrator, id) of rows an integrator asked to have again: pushed
        # even over a marker this process could not delete.
        self._forced: set[tuple[str, str]] = set()
        self._links: dict[str, RedisLink] = {}
        self._webhooks = WebhookSender(
            timeout=http_timeout, allow_link_local=webhook_allow_link_local
        )
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False
        self.on_webhook_attempt: Callable[[str, float, bool], None] | None = None
        """Told (integrator, seconds, delivered) after each webhook attempt."""

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Rebuild the groups' blocks from the outbox and run the worker."""
        try:
            await self.recover()
        except Exception:
            log.exception("notifications: could not read the outbox at start")
        self._dispatcher = asyncio.get_running_loop().create_task(
            self._dispatch(), name="click2dial-notifier"
        )

    async def recover(self) -> None:
        """Rebuild what the worker keeps in memory from the outbox (``start``
        does this): the order of the undelivered rows, and which of them are
        not due yet (in back-off, or claimed by a worker that died), so that
        younger rows do not overtake them."""
        now = self.clock()
        for name in self.integrators:
            for row in await self.store.undelivered(name, MAX_PAGE):
                state = self._groups.setdefault((name, row.target), _GroupState())
                if row.id not in state.order:
                    state.order[row.id] = next(self._ordinals)
                if row.next_attempt_at > now and row.id not in state.rows:
                    state.wait_for(row.id, row.next_attempt_at)

    async def close(self) -> None:
        """Stop delivering.  Rows being delivered stay claimed until their
        lease runs out, then the next worker sends them (the Redis marker
        keeps that from pushing twice)."""
        self._closed = True
        tasks = [g.task for g in self._groups.values() if g.task is not None]
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._webhooks.close()
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.close()
        self._links.clear()

    def wake(self) -> None:
        """New rows were committed: claim them now rather than at the next poll."""
        self._wake.set()

    def metric_families(self) -> list[MetricFamily]:
        """The counters, in the form :func:`click2dial.metrics.render` takes."""

        def samples(counter: Counter[Group]) -> list[tuple[dict[str, str], float]]:
            return [
                ({"integrator": integrator, "target": target}, float(count))
                for (integrator, target), count in sorted(counter.items())
            ]

        return [
            ("click2dial_notifications_delivered_total", "counter",
             "Notifications handed to their target by this node.",
             samples(self.counters.delivered)),
            ("click2dial_notification_failures_total", "counter",
             "Failed delivery attempts on this node.", samples(self.counters.failed)),
        ]  # fmt: skip

    # ----------------------------------------------------------- the API side
    async def undelivered(self, integrator: str, limit: int = 100) -> list[Notification]:
        """The integrator's rows not delivered yet, oldest first."""
        return await self.store.undelivered(integrator, limit)

    async def redeliver(self, integrator: str, id: str) -> bool:
        """Send a row (delivered or not) again, at once; False if the
        integrator has no such row."""
        forced = (integrator, id)
        self._forced.add(forced)
        config = self.integrators.get(integrator)
        if config is not None and config.redis:
            # The marker is deleted before the row comes due, so that another
            # node delivering it pushes too; failing that, the force flag
            # covers deliveries by this process.
            try:
                await asyncio.wait_for(self._link(config.redis).forget(id), _FORGET_TIMEOUT)
            except (DeliveryError, TimeoutError) as exc:
                log.warning("notifications: redeliver %s: marker not cleared: %s", id, exc)
        try:
            found = await self.store.redeliver(integrator, id, now=self.clock())
        except Exception:
            self._forced.discard(forced)
            raise
        if not found:
            self._forced.discard(forced)
            return False
        self.wake()
        return True

    # ---------------------------------------------------------- the call side
    async def agent_connected(self, record: CallRecord) -> None:
        """Queue the agent-connection document and send it to Redis at once.

        Returns within about ``inline_timeout`` seconds (plus two quick store
        writes) whatever Redis does, and never raises: a document that could
        not be sent inline stays in the outbox for the worker.
        """
        integrator = self.integrators.get(record.integrator)
        if integrator is None:
            return
        try:
            now = self.clock()
            rows = agent_notifications(record, integrator, now)
            inline = next((row for row in rows if row.target == "redis"), None)
            if inline is not None:
                # Claimed by us from the start, so the worker does not send it
                # at the same time.
                inline.next_attempt_at = now + self.lease
            if rows:
                await self.store.enqueue(rows)
        except Exception:
            log.exception("notifications: could not queue the agent document of %s",
                          record.call_ref)  # fmt: skip
            return
        if any(row.target != "redis" for row in rows):
            self.wake()
        if inline is not None:
            await self._deliver_inline(inline, integrator)

    async def _deliver_inline(self, row: Notification, integrator: IntegratorConfig) -> None:
        group = (row.integrator, row.target)
        assert integrator.redis is not None
        link = self._link(integrator.redis)
        error: str
        try:
            if not link.available():
                raise DeliveryError("redis: unavailable a moment ago, left to the worker")
            await asyncio.wait_for(link.deliver(row), self.inline_timeout)
        except (DeliveryError, TimeoutError) as exc:
            error = str(exc) or f"redis: no answer within {self.inline_timeout:g} s"
        except Exception as exc:
            log.exception("notifications: inline delivery of %s", row.id)
            error = f"{type(exc).__name__}: {exc}"
        else:
            self.counters.delivered[group] += 1
            try:
                await self.store.mark_delivered(row.id, self.clock())
            except Exception:
                # It comes due when the lease ends; the marker makes that a no-op.
                log.exception("notifications: could not mark %s delivered", row.id)
            return
        self.counters.failed[group] += 1
        try:
            await self.store.mark_failed(row.id, error[:_ERROR_LIMIT], self.clock())
        except Exception:
            log.exception("notifications: could not hand %s to the worker", row.id)
        self.wake()

    # ------------------------------------------------------------ the worker
    async def deliver_due(self) -> None:
        """One round, waited for: claim what is due and deliver it (tests and
        tools; the running worker does the same without waiting)."""
        # A group's younger rows become claimable once its rows in hand are
        # delivered (``due_notifications``): claim again until nothing comes.
        # One round: rows due at its start, not those falling due during it.
        now = self.clock()
        while await self._claim(now):
            while True:
                busy = [
                    g.task
                    for g in self._groups.values()
                    if g.task is not None and not g.task.done()
                ]
                if not busy:
                    break
                await asyncio.gather(*busy, return_exceptions=True)

    async def _dispatch(self) -> None:
        while not self._closed:
            self._wake.clear()
            try:
                await self._claim()
            except Exception:
                log.exception("notifications: could not claim due rows")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())

    def _next_wait(self) -> float:
        now = self.clock()
        wait = self.poll_interval
        for state in self._groups.values():
            oldest = state.oldest_waiting(now, self.lease)
            if oldest is not None and oldest[1] > now:
                wait = min(wait, oldest[1] - now)
        return max(_MIN_WAIT, wait)

    async def _claim(self, now: float | None = None) -> int:
        """Claim rows due at ``now`` into their groups; how many were claimed."""
        now = self.clock() if now is None else now
        claimed = 0
        while len(self._held) < self._max_held:
            rows = await self.store.due_notifications(now, self.batch, lease=self.lease)
            batch = {row.id for row in rows}
            for row in rows:
                self._accept(row, batch)
            claimed += len(rows)
            if len(rows) < self.batch:
                break
        return claimed

    def _accept(self, row: Notification, batch: set[str]) -> None:
        if row.id in self._held:
            return  # in hand already: the claim only renewed its lease
        self._held.add(row.id)
        key = (row.integrator, row.target)
        state = self._groups.setdefault(key, _GroupState())
        state.waiting.pop(row.id, None)
        ordinal = state.order.setdefault(row.id, next(self._ordinals))
        # The store hands out a row only when every older row of its group
        # is due (and then in the same claim) or delivered: an older row
        # this worker still waits for was delivered by another node.
        for id in [i for i in state.waiting if i not in batch and state.order[i] < ordinal]:
            del state.waiting[id]
            state.order.pop(id, None)
        state.rows[row.id] = row
        heapq.heappush(state.pending, (ordinal, row.id))
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(
                self._run_group(key, state), name=f"click2dial-notify-{key[0]}-{key[1]}"
            )

    async def _run_group(self, key: Group, state: _GroupState) -> None:
        try:
            await self._drain_group(key, state)
        finally:
            if not self._closed:
                self.wake()  # younger rows of the group can be claimed now

    async def _drain_group(self, key: Group, state: _GroupState) -> None:
        while state.pending:
            ordinal, id = heapq.heappop(state.pending)
            row = state.rows.pop(id)
            try:
                await self._process(key, state, row, ordinal)
            except Exception:
                # Most likely the store: the row stays claimed and comes back
                # when the lease it was claimed with ends; until then nothing
                # younger may overtake it.
                log.exception("notifications: row %s", row.id)
                state.order[row.id] = ordinal
                state.wait_for(row.id, row.next_attempt_at)
            finally:
                if row.id not in state.rows:
                    self._held.discard(row.id)

    async def _process(
        self, key: Group, state: _GroupState, row: Notification, ordinal: int
    ) -> None:
        # A row put back is let go of before the write that makes it due, so
        # that a claim returning it while the group goes on is not ignored.
        now = self.clock()
        oldest = state.oldest_waiting(now, self.lease)
        if oldest is not None and state.order[oldest[0]] < ordinal:
            # Due with the row it waits for (even if that time has passed),
            # so a claim returns the two together, oldest first.
            blocker, due = oldest
            state.wait_for(row.id, due)
            self._held.discard(row.id)
            await self.store.mark_failed(row.id, f"not attempted: waiting behind {blocker}", due)
            return
        try:
            await self._deliver(row)
        except Exception as exc:
            if not isinstance(exc, DeliveryError):
                log.exception("notifications: delivering %s", row.id)
            error = str(exc) or type(exc).__name__
            retry_at = self.clock() + self._backoff(state, row)
            state.streak += 1
            state.wait_for(row.id, retry_at)
            self._held.discard(row.id)
            self.counters.failed[key] += 1
            log.info("notifications: %s to %s/%s failed (%s); retry in %.1f s",
                     row.id, key[0], key[1], error, retry_at - now)  # fmt: skip
            await self.store.mark_failed(row.id, error[:_ERROR_LIMIT], retry_at)
            return
        state.streak = 0
        state.order.pop(row.id, None)
        state.waiting.pop(row.id, None)
        self.counters.delivered[key] += 1
        await self.store.mark_delivered(row.id, self.clock())

    def _backoff(self, state: _GroupState, row: Notification) -> float:
        exponent = min(state.streak, row.attempts)
        delay = min(self.backoff_max, self.backoff_base * 2.0**exponent)
        return delay * self.rng.uniform(0.5, 1.0)

    async def _deliver(self, row: Notification) -> None:
        integrator = self.integrators.get(row.integrator)
        if integrator is None:
            raise DeliveryError(f"integrator {row.integrator!r} is not configured")
        if row.target == "redis":
            if not integrator.redis:
                raise DeliveryError(f"integrator {row.integrator} has no redis configured")
            forced = (row.integrator, row.id)
            await self._link(integrator.redis).deliver(row, force=forced in self._forced)
            self._forced.discard(forced)
        elif row.target == "webhook":
            started = time.monotonic()
            delivered = False
            try:
                await self._webhooks.deliver(row, integrator, self.clock())
                delivered = True
            finally:
                if self.on_webhook_attempt is not None:
                    self.on_webhook_attempt(row.integrator, time.monotonic() - started, delivered)
        else:
            raise DeliveryError(f"unknown target {row.target!r}")

    def _link(self, url: str) -> RedisLink:
        link = self._links.get(url)
        if link is None:
            link = self._links[url] = RedisLink(
                url, timeout=self.http_timeout, marker_ttl=self.marker_ttl
            )
        return link
