"""Admission control: whether this node takes one more call right now.

SPEC §4 "Beyond capacity the server says so": when one more call would
endanger the calls already in progress, a new request is refused at once
with 503 and ``Retry-After``, before anything is written or dialled, so the
refusal itself costs next to nothing.  The node is over capacity when any of
these holds (``[admission]``, 0 turns one off):

* more than ``max_calls_per_second`` new calls in the last second (a token
  bucket over the whole node, whatever integrator asks);
* ``max_live_calls`` calls are live on this node;
* the event loop runs late by more than ``max_loop_lag_ms`` (every call's
  timers and SIP retransmissions are late by as much: the node is saturated);
* ``max_sip_transactions`` SIP transactions are in flight.

Integrator limits (``max_cps``, ``max_concurrent``) are a contract with one
integrator and keep answering 429; these protect the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from ..config import AdmissionConfig

#: Seconds between two looks at the event loop's lateness.
LAG_PERIOD = 0.05
#: Weight of the newest look in the lag average: a lone stall (a garbage
#: collection, a burst of requests) is smoothed away; lateness that lasts a
#: few hundred milliseconds is what saturation looks like.
LAG_WEIGHT = 0.2


class Admission:
    """The node's admission decision; :meth:`check` on every new call."""

    def __init__(
        self,
        config: AdmissionConfig,
        *,
        live_calls: Callable[[], int],
        transactions: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.live_calls = live_calls
        self.transactions = transactions
        self.monotonic = monotonic
        rate = float(config.max_calls_per_second)
        self._tokens = rate
        self._stamp = monotonic()
        self.lag = 0.0
        """Recent event-loop lateness in seconds (a moving average)."""
        self.refused: dict[str, int] = {}
        """Refusals by reason (a metric)."""
        self._task: asyncio.Task[None] | None = None

    def check(self) -> str | None:
        """``None`` and one call admitted, or why the node refuses it (a
        refusal is counted in :attr:`refused` unless :meth:`forgive` takes
        it back: a replay of a request already taken is answered anyway)."""
        cfg = self.config
        reason: str | None = None
        if cfg.max_loop_lag_ms and self.lag * 1000 > cfg.max_loop_lag_ms:
            reason = "event loop overloaded"
        elif cfg.max_live_calls and self.live_calls() >= cfg.max_live_calls:
            reason = "live calls at the node limit"
        elif cfg.max_sip_transactions and self.transactions() >= cfg.max_sip_transactions:
            reason = "SIP transactions at the node limit"
        elif cfg.max_calls_per_second and not self._take():
            reason = "calls per second at the node limit"
        if reason is not None:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        return reason

    def forgive(self, reason: str) -> None:
        """Take back the count of a refusal that was not one after all."""
        left = self.refused.get(reason, 0) - 1
        if left > 0:
            self.refused[reason] = left
        else:
            self.refused.pop(reason, None)

    def refund(self) -> None:
        """Give back the token of an admitted call that was refused later
        (by an integrator limit, a busy agent): nothing was dialled."""
        rate = float(self.config.max_calls_per_second)
        if rate:
            self._tokens = min(rate, self._tokens + 1)

    def _take(self) -> bool:
        rate = float(self.config.max_calls_per_second)
        now = self.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def observe_lag(self, lateness: float) -> None:
        """One look at how late the loop woke up."""
        self.lag += (lateness - self.lag) * LAG_WEIGHT

    # ------------------------------------------------------- lag watcher
    def start(self) -> None:
        if self.config.max_loop_lag_ms and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="loop-lag")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_PERIOD
            await asyncio.sleep(LAG_PERIOD)
            self.observe_lag(max(0.0, loop.time() - expected))
