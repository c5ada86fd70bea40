"""The timer queue keeps neither cancelled callbacks nor an unbounded heap:
session timers are cancelled and re-armed long before their deadlines."""

from __future__ import annotations

import functools
import gc
import types
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


class Named:
    def __init__(self) -> None:
        self.fired: list[str] = []

    def on_timer(self, name: str) -> None:
        self.fired.append(name)


def test_an_owned_timer_calls_its_owner_by_name_and_holds_no_callback() -> None:
    """schedule_for: ``owner.on_timer(name)`` at the deadline, with no
    callback object of its own (a transaction's timers wait 32 s after its
    end; a partial and a bound method each were two more objects for the
    collector to walk); cancelled, it lets the owner go at once."""
    queue = TimerQueue()
    owner = Named()
    first = queue.schedule_for(1.0, owner, "M")
    queue.schedule_for(2.0, owner, "J")
    held = gc.get_referents(first)
    assert owner in held
    assert not any(isinstance(o, (functools.partial, types.MethodType)) for o in held)
    del held
    assert queue.fire(1.5) == 1 and owner.fired == ["M"]
    assert first.owner is None  # fired: not kept by the timer either
    ref = weakref.ref(owner)
    late = queue.schedule_for(3.0, owner, "K")
    del owner
    late.cancel()
    assert queue.fire(2.5) == 1  # "J" still ran: the queue held its owner
    gc.collect()
    assert ref() is None  # neither the fired nor the cancelled timers keep it
    assert queue.fire(10.0) == 0
