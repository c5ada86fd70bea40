"""Admission control: whether this node takes one more call right now.

SPEC §4 "Beyond capacity the server says so": when one more call would
endanger the calls already in progress, a new request is refused at once
with 503 and ``Retry-After``, before anything is written or dialled, so the
refusal costs little: a fifth of a call's CPU, which the rate's bucket
counts (:data:`REFUSAL_COST`).  The node is over capacity when any of these
holds (``[admission]``, 0 turns one off):

* more than ``max_calls_per_second`` new calls in the last second (a token
  bucket over the whole node, whatever integrator asks; the workers of a
  node share one, :class:`SharedBucket`);
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
import fcntl
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import Final

from ..config import AdmissionConfig

#: The calls-per-second bucket holds this many seconds' worth of calls: the
#: jitter of a steady load passes, a flood does not.  A full second's worth
#: let a node offered 1,000 calls a second take twice its rate for most of
#: a second, a backlog it then needed seconds to work off while every
#: request, refused or not, waited behind it (docs/benchmarks.md).
BURST_SECONDS: Final = 0.2

#: What a refusal by the rate takes from the bucket, in calls.  Refusing
#: is not free: offered 1,000 POSTs a second, the two workers of a 2-core
#: node spent about 0.6 ms of CPU on each refusal against about 3 ms on each
#: call it took, and a node that took its full rate besides saturated the
#: machine, so that every answer came late (clean in 1 of 9 runs at 420
#: calls/s; in 7 of 9 with a cost of 0.1, in 4 of 4 with 0.15,
#: docs/benchmarks.md).  The node takes its rate while it refuses nothing,
#: less as it refuses more, and nothing once the refusals alone would cost
#: its rate (6.7 times the rate refused per second): they alone fill the
#: machine then.
REFUSAL_COST: Final = 0.15

#: Seconds between two looks at the event loop's lateness.
LAG_PERIOD = 0.05
#: Weight of the newest look in the lag average: a lone stall (a garbage
#: collection, a burst of requests) is smoothed away; lateness that lasts a
#: few hundred milliseconds is what saturation looks like.
LAG_WEIGHT = 0.2


#: The environment variable that gives a worker the descriptor of its node's
#: :class:`SharedBucket` (set by the supervisor, :mod:`click2dial.workers`).
BUCKET_FD_ENV: Final = "CLICK2DIAL_ADMISSION_FD"

# tokens, stamp (monotonic seconds, shared by every process of the machine);
# a stamp of 0: not used yet, the bucket is full.
_BUCKET: Final = struct.Struct("dd")


class Bucket:
    """The calls-per-second token bucket of one process (:class:`SharedBucket`
    is the one a node's workers share).  A stamp of 0: not used yet, full."""

    def __init__(self) -> None:
        self._state = (0.0, 0.0)

    def take(self, rate: float, now: float) -> bool:
        full = capacity(rate)
        with self._locked():
            tokens, stamp = self._load()
            tokens = full if stamp == 0.0 else min(full, tokens + max(0.0, now - stamp) * rate)
            taken = tokens >= 1
            self._store(_after(tokens, taken), now)
        return taken

    def give_back(self, rate: float) -> None:
        with self._locked():
            tokens, stamp = self._load()
            self._store(min(capacity(rate), tokens + 1), stamp)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _load(self) -> tuple[float, float]:
        return self._state

    def _store(self, tokens: float, stamp: float) -> None:
        self._state = (tokens, stamp)


class SharedBucket(Bucket):
    """The node's calls-per-second token bucket, in memory its workers share
    (a ``memfd`` the supervisor creates and hands to each worker).

    With a bucket per worker the kernel's spreading of connections decided
    the node's rate: a worker given more connections than its share refused
    calls the node could take, so each worker's share needed a margin, and
    offered 1,000 calls a second the node took that margin too and fell
    behind.  Each take holds a ``flock`` for a few microseconds.

    ``flock``, not ``fcntl`` record locks: those belong to the process, so
    the kernel's deadlock check saw a cycle (worker A's loop waiting here
    for B, B's store thread waiting for A's on the SQLite file's lock) that
    two threads would have untangled, and failed the take with EDEADLK.
    A ``flock`` belongs to an open file description: each process opens
    the memory afresh (the inherited descriptor shares one description)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        if os.fstat(fd).st_size < mmap.PAGESIZE:
            os.ftruncate(fd, mmap.PAGESIZE)
        self._map = mmap.mmap(fd, mmap.PAGESIZE)
        self._lock = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)

    @classmethod
    def create(cls) -> SharedBucket:
        """A new bucket, its descriptor inheritable by the workers."""
        fd = os.memfd_create("click2dial-admission", 0)
        return cls(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _load(self) -> tuple[float, float]:
        tokens, stamp = _BUCKET.unpack_from(self._map)
        return tokens, stamp

    def _store(self, tokens: float, stamp: float) -> None:
        _BUCKET.pack_into(self._map, 0, tokens, stamp)


def _after(tokens: float, taken: bool) -> float:
    """The bucket after a call taken, or refused (:data:`REFUSAL_COST`)."""
    return tokens - 1 if taken else max(0.0, tokens - REFUSAL_COST)


def capacity(rate: float) -> float:
    """The most calls the bucket holds (at least one)."""
    return max(1.0, rate * BURST_SECONDS)


def inherited_bucket() -> SharedBucket | None:
    """In a worker: the node's bucket its supervisor handed down."""
    fd = os.environ.pop(BUCKET_FD_ENV, None)
    return SharedBucket(int(fd)) if fd else None


class Admission:
    """The node's admission decision; :meth:`check` on every new call.
    ``bucket``: the rate's token bucket shared with the node's other
    workers (else one of this process's own)."""

    def __init__(
        self,
        config: AdmissionConfig,
        *,
        live_calls: Callable[[], int],
        transactions: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
        bucket: Bucket | None = None,
    ) -> None:
        self.config = config
        self.live_calls = live_calls
        self.transactions = transactions
        self.monotonic = monotonic
        self.bucket = bucket if bucket is not None else Bucket()
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
            self.bucket.give_back(rate)

    def _take(self) -> bool:
        return self.bucket.take(float(self.config.max_calls_per_second), self.monotonic())

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
