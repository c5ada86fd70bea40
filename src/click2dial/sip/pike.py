"""Per-source request rate limit, in the spirit of Kamailio's ``pike``: a
token bucket per source address, sans-IO (the caller passes the time).

The endpoint consults it for requests outside any known dialog only (new
INVITEs, OPTIONS, REGISTER... and requests naming a dialog we do not have);
retransmissions, ACKs, requests in known dialogs and responses never reach
it.  Over the limit a request is dropped without an answer: a 503 would
cost a response per request (the flood answered, our address confirmed to a
scanner), while a legitimate UDP client retransmits and gets through once
its bucket has refilled.
"""

from __future__ import annotations

#: Buckets kept at most; beyond, the full ones (sources quiet long enough to
#: have refilled) are forgotten, and all of them if that is not enough.
MAX_SOURCES = 65536


class Pike:
    """``rate`` requests a second per source, bursts of up to ``burst``;
    sources in ``exempt`` (the trunk) are never limited."""

    __slots__ = ("_buckets", "burst", "exempt", "rate")

    def __init__(self, rate: float, burst: int, exempt: frozenset[str] = frozenset()) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.exempt = exempt
        # source -> [tokens, time of the last update]
        self._buckets: dict[str, list[float]] = {}

    def allow(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if source in self.exempt:
                return True
            if len(self._buckets) >= MAX_SOURCES:
                self._prune(now)
            self._buckets[source] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        self._buckets = {
            source: bucket
            for source, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * rate < burst
        }
        if len(self._buckets) >= MAX_SOURCES:
            self._buckets.clear()
