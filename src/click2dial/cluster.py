"""Node liveness and takeover: this module owns the heartbeat a node keeps in
the store and the ending of a dead node's calls by a survivor.

Theory of operation:

* At start a node records a new life (``Store.node_started``: the takeover
  marker of its previous life is cleared) and then beats every
  ``heartbeat_interval`` seconds (``Store.heartbeat``).  The heartbeat runs
  in a task of its own, so that a long takeover never delays it.
* Every ``heartbeat_interval`` a second task asks the store for nodes silent
  for more than ``takeover_after`` seconds that still own live calls, and
  takes each over: ``Store.take_over`` claims the node and moves its live
  calls to this node in one transaction, so of several survivors exactly one
  gets them, and a survivor that dies half-way leaves them to the next
  survivor as its own calls.  The calls it got are closed the way crash
  recovery closes them (the ``recover`` callback: BYE to each saved dialog,
  one ``failed`` CDR).
* A node never takes itself over; one that comes back after a takeover
  finds its calls ended and moved away, so it has nothing to recover.
* Takeover needs several nodes on one PostgreSQL.  On SQLite (one node only)
  the heartbeat is kept, harmlessly, and takeover is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from .store import CallRecord, Store

log = logging.getLogger(__name__)

Recover = Callable[[list[CallRecord], str], Awaitable[int]]
"""Close calls as crash recovery does, given why; how many it ended."""


class Cluster:
    def __init__(
        self,
        store: Store,
        node_id: str,
        *,
        heartbeat_interval: float,
        takeover_after: float,
        takeover: bool,
        recover: Recover,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.takeover_after = takeover_after
        self.takeover = takeover
        self.recover = recover
        self.taken_over_at: float | None = None
        """When another node last took this one over (seen by a heartbeat)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._beat_failing = False
        self._unfinished: dict[str, tuple[CallRecord, str]] = {}
        """Calls taken over whose closing failed (a store outage): they are
        this node's in the store now, so this node retries them."""

    async def start(self) -> None:
        """A new life in the store, and the heartbeat from now on.  Before
        crash recovery: a survivor must not claim this node while it
        recovers its own calls."""
        await self.store.node_started(self.node_id, time.time())
        self._tasks.append(asyncio.create_task(self._beat_forever(), name="heartbeat"))

    def start_takeovers(self) -> None:
        """Watch the other nodes (once this node can send BYEs)."""
        if not self.takeover:
            log.info(
                "node takeover is off: SQLite serves one node only (several nodes need PostgreSQL)"
            )
            return
        self._tasks.append(asyncio.create_task(self._watch_forever(), name="takeover"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def beat(self) -> None:
        """One heartbeat; a takeover of this node by another is logged."""
        row = await self.store.heartbeat(self.node_id, time.time())
        if row.taken_over_at is not None and row.taken_over_at != self.taken_over_at:
            self.taken_over_at = row.taken_over_at
            # This node was silent long enough (a stall, or the store out of
            # reach) for a survivor to end the calls it had then.
            log.error(
                "node %s was taken over by %s at %.3f: its calls live then were ended there",
                self.node_id, row.taken_over_by, row.taken_over_at,
            )  # fmt: skip

    async def sweep(self) -> int:
        """Take over every node found dead now; how many calls were ended."""
        dead = await self.store.silent_nodes(time.time(), self.takeover_after, exclude=self.node_id)
        ended = await self._retry_unfinished()
        for node_id in dead:
            ended += await self.take_over(node_id)
        return ended

    async def take_over(self, node_id: str) -> int:
        """Claim ``node_id`` and close its live calls; 0 if another survivor
        claimed it first (or it is alive, or it is this node)."""
        calls = await self.store.take_over(
            node_id, by=self.node_id, now=time.time(), silence=self.takeover_after
        )
        if not calls:
            return 0
        log.warning(
            "node %s silent for more than %g s: %s takes over its %d live call(s)",
            node_id, self.takeover_after, self.node_id, len(calls),
        )  # fmt: skip
        reason = f"Click2Dial node {node_id} stopped during the call; ended by {self.node_id}"
        for call in calls:
            self._unfinished[call.call_ref] = (call, reason)
        ended = await self.recover(calls, reason)
        for call in calls:
            del self._unfinished[call.call_ref]
        return ended

    async def _retry_unfinished(self) -> int:
        ended = 0
        for reason in {reason for _, reason in self._unfinished.values()}:
            calls = [call for call, why in self._unfinished.values() if why == reason]
            ended += await self.recover(calls, reason)
            for call in calls:
                del self._unfinished[call.call_ref]
        return ended

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.beat()
            except Exception as exc:
                # Logged once per outage; the store's health check says the rest.
                if not self._beat_failing:
                    log.warning("heartbeat of node %s not recorded: %s", self.node_id, exc)
                self._beat_failing = True
            else:
                if self._beat_failing:
                    log.info("heartbeat of node %s recorded again", self.node_id)
                self._beat_failing = False

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("takeover of dead nodes failed; trying again")
