"""Timers as data: the core's schedule of "call me at time T".

The sans-IO core never sleeps.  It puts callbacks on a :class:`TimerQueue`
and the I/O adapter asks :meth:`TimerQueue.next_deadline` when to come back
and calls :meth:`TimerQueue.fire` at that time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class TimerOwner(Protocol):
    """What a timer scheduled with :meth:`TimerQueue.schedule_for` calls."""

    def on_timer(self, name: str) -> None: ...


@dataclass(slots=True, eq=False)
class Timer:
    """A scheduled callback, or ``owner.on_timer(name)``; its deadline and
    order live in the queue's heap."""

    callback: Callable[[], None]
    name: str = ""
    cancelled: bool = False
    owner: TimerOwner | None = None

    def cancel(self) -> None:
        self.cancelled = True
        # A cancelled timer can sit in the heap until its deadline (a session
        # timer: half an hour); it must not keep its dialog alive that long.
        self.callback = _nothing
        self.owner = None


def _nothing() -> None:
    pass


#: Heap size below which cancelled timers are only dropped when they reach
#: the top.
_COMPACT_FLOOR = 1024


class TimerQueue:
    """A heap of :class:`Timer`; cancelled timers are dropped lazily, and
    all at once when they could make up half of the heap.

    The heap holds ``(deadline, seq, timer)``: tuples compare in C, where a
    dataclass's generated ``__lt__`` was a Python call per comparison
    (about a hundred per call placed)."""

    __slots__ = ("_compact_at", "_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._compact_at = _COMPACT_FLOOR

    def schedule(self, deadline: float, callback: Callable[[], None], name: str = "") -> Timer:
        return self._push(deadline, Timer(callback, name))

    def schedule_for(self, deadline: float, owner: TimerOwner, name: str) -> Timer:
        """``owner.on_timer(name)`` at ``deadline``.  No callback object per
        timer: a transaction's timers (M and J wait 32 s after its end)
        were a partial and a bound method each for the collector to walk."""
        return self._push(deadline, Timer(_nothing, name, False, owner))

    def _push(self, deadline: float, timer: Timer) -> Timer:
        heap = self._heap
        if len(heap) >= self._compact_at:
            # Amortised O(1): the heap has doubled since the last pass.
            heap = self._heap = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._compact_at = max(_COMPACT_FLOOR, 2 * len(heap))
        heapq.heappush(heap, (deadline, next(self._counter), timer))
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire(self, now: float) -> int:
        """Run every timer due at ``now``; returns how many ran."""
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.cancelled:
                continue
            timer.cancelled = True
            owner = timer.owner
            if owner is not None:
                timer.owner = None
                owner.on_timer(timer.name)
            else:
                timer.callback()
            ran += 1
        return ran

    def __len__(self) -> int:
        return sum(1 for entry in self._heap if not entry[2].cancelled)
