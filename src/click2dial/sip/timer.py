"""Timers as data: the core's schedule of "call me at time T".

The sans-IO core never sleeps.  It puts callbacks on a :class:`TimerQueue`
and the I/O adapter asks :meth:`TimerQueue.next_deadline` when to come back
and calls :meth:`TimerQueue.fire` at that time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True, order=True)
class Timer:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    name: str = field(default="", compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class TimerQueue:
    """A heap of :class:`Timer`; cancelled timers are dropped lazily."""

    __slots__ = ("_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._counter = itertools.count()

    def schedule(self, deadline: float, callback: Callable[[], None], name: str = "") -> Timer:
        timer = Timer(deadline, next(self._counter), callback, name)
        heapq.heappush(self._heap, timer)
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].deadline if heap else None

    def fire(self, now: float) -> int:
        """Run every timer due at ``now``; returns how many ran."""
        heap = self._heap
        ran = 0
        while heap and heap[0].deadline <= now:
            timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            timer.cancelled = True
            timer.callback()
            ran += 1
        return ran

    def __len__(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)
