"""Readiness: whether this node can serve calls now, part by part.

``/readyz`` is polled by load balancers, possibly many times a second, so
it never touches the database itself: :class:`StoreHealth` probes the store
once per interval in the background and is also told at once of every
"unavailable" error any store call meets (``Store.on_unavailable``), so an
outage shows at the first failed request, and recovery within one interval.

A Redis or webhook outage does not make a node unready: the outbox keeps
the notifications until their target is back (the outbox metrics show it).
An rtpengine outage does, when one is configured: calls that need media
relaying could not be placed.  :class:`RtpEngineHealth` pings it in the
background the same way and hears of every request that got no reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .media.rtpengine import RtpEngine, RtpEngineError
from .store import Store

log = logging.getLogger(__name__)

#: Seconds between two store probes.
PROBE_INTERVAL = 1.0
#: Seconds a probe may take before the store counts as unreachable.
PROBE_TIMEOUT = 2.0


class _Prober:
    """Runs :meth:`probe` once per ``interval`` in the background."""

    interval: float
    _task: asyncio.Task[None] | None

    async def probe(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class StoreHealth(_Prober):
    """The last known reachability of the store."""

    def __init__(
        self,
        store: Store,
        *,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.reachable = True
        self.down_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        store.on_unavailable = self.mark_down

    def mark_down(self, error: BaseException) -> None:
        if self.reachable:
            self.reachable = False
            self.down_since = self.clock()
            log.warning("store unreachable: %s; /readyz answers not ready", error)

    def mark_up(self) -> None:
        if not self.reachable:
            log.warning("store reachable again after %.1f s", self.clock() - (self.down_since or 0))
            self.reachable = True
            self.down_since = None

    async def probe(self) -> bool:
        """One probe: a trivial read, bounded by ``timeout``."""
        try:
            await asyncio.wait_for(self.store.schema_version(), self.timeout)
        except Exception as exc:  # unavailable, too slow, or failing: it does not serve
            self.mark_down(exc)
        else:
            self.mark_up()
        return self.reachable


class RtpEngineHealth(_Prober):
    """The last known reachability of rtpengine: a ping per interval, and
    every request of the call flow counts too (a reply is "up", a request
    that timed out after its retransmissions is "down")."""

    def __init__(
        self,
        client: RtpEngine,
        *,
        interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.interval = interval
        self.clock = clock
        #: None until the first probe has an answer or gives up.
        self.reachable: bool | None = None
        self.down_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        client.on_unreachable = self.mark_down
        client.on_reply = self.mark_up

    @property
    def state(self) -> str:
        """What ``/readyz`` shows for rtpengine."""
        if self.reachable is None:
            return "not probed yet"
        return "ok" if self.reachable else "unreachable"

    def mark_down(self, error: BaseException) -> None:
        if self.reachable is not False:
            self.reachable = False
            self.down_since = self.clock()
            log.warning("rtpengine %s: %s; /readyz answers not ready", self.client.address, error)

    def mark_up(self) -> None:
        if self.reachable is False:
            log.warning(
                "rtpengine %s reachable again after %.1f s",
                self.client.address,
                self.clock() - (self.down_since or 0),
            )
        self.reachable = True
        self.down_since = None

    async def probe(self) -> bool:
        """One ping (its retransmissions bound it to about 1.5 s)."""
        try:
            await self.client.ping()
        except RtpEngineError as exc:  # a timeout, or a reply that is not pong
            self.mark_down(exc)
        except OSError as exc:  # the socket itself failed (no route, ...)
            self.mark_down(exc)
        return bool(self.reachable)


@dataclass
class Readiness:
    """What ``/readyz`` answers: ready when every check is ``ok``."""

    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(state == "ok" for state in self.checks.values())

    def body(self) -> dict[str, object]:
        return {
            "status": "ready" if self.ready else "not ready",
            "checks": dict(self.checks),
            "not_ready": sorted(name for name, state in self.checks.items() if state != "ok"),
        }
