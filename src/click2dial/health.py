"""Readiness: whether this node can serve calls now, part by part.

``/readyz`` is polled by load balancers, possibly many times a second, so
it never touches the database itself: :class:`StoreHealth` probes the store
once per interval in the background and is also told at once of every
"unavailable" error any store call meets (``Store.on_unavailable``), so an
outage shows at the first failed request, and recovery within one interval.

A Redis or webhook outage does not make a node unready: the outbox keeps
the notifications until their target is back (the outbox metrics show it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .store import Store, StoreUnavailableError

log = logging.getLogger(__name__)

#: Seconds between two store probes.
PROBE_INTERVAL = 1.0
#: Seconds a probe may take before the store counts as unreachable.
PROBE_TIMEOUT = 2.0


class StoreHealth:
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
        except (StoreUnavailableError, TimeoutError) as exc:
            self.mark_down(exc)
        except Exception as exc:  # any other failure: the store does not serve
            self.mark_down(exc)
        else:
            self.mark_up()
        return self.reachable

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
