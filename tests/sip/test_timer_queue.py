"""The timer queue keeps neither cancelled callbacks nor an unbounded heap:
session timers are cancelled and re-armed long before their deadlines."""

from __future__ import annotations

import gc
import weakref

from click2dial.sip.timer import TimerQueue


class Owner:
    def fire(self) -> None:
        raise AssertionError("a cancelled timer ran")


def test_cancelled_timer_releases_its_callback_at_once() -> None:
    queue = TimerQueue()
    owner = Owner()
    ref = weakref.ref(owner)
    timer = queue.schedule(1800.0, owner.fire, "session-expiry")
    del owner
    gc.collect()
    assert ref() is not None  # held by the pending timer
    timer.cancel()
    gc.collect()
    assert ref() is None
    assert queue.fire(3600.0) == 0


def test_heap_of_cancelled_long_timers_stays_bounded() -> None:
    queue = TimerQueue()
    live = queue.schedule(10.0, lambda: None)
    for i in range(50_000):
        # One re-armed timer per refresh, as a long call's session timer.
        queue.schedule(1800.0 + i, lambda: None).cancel()
    assert len(queue) == 1
    assert len(queue._heap) <= 2048
    assert queue.next_deadline() == 10.0
    live.cancel()
    assert queue.next_deadline() is None
