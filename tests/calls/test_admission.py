"""Admission control (calls/admission.py): each node limit refuses the call
beyond it, and only that call; time is a number the test moves."""

from __future__ import annotations

import pytest

from click2dial.calls.admission import Admission
from click2dial.config import AdmissionConfig


class Node:
    def __init__(self, **limits: int) -> None:
        self.now = 100.0
        self.live = 0
        self.transactions = 0
        off = dict.fromkeys(
            ("max_calls_per_second", "max_live_calls", "max_loop_lag_ms", "max_sip_transactions"),
            0,
        )
        self.admission = Admission(
            AdmissionConfig(**(off | limits)),
            live_calls=lambda: self.live,
            transactions=lambda: self.transactions,
            monotonic=lambda: self.now,
        )


def test_no_limit_admits_everything() -> None:
    node = Node()
    assert all(node.admission.check() is None for _ in range(1000))


def test_calls_per_second_refuses_the_call_beyond_and_refills_with_time() -> None:
    node = Node(max_calls_per_second=3)
    assert [node.admission.check() for _ in range(4)] == [
        None,
        None,
        None,
        "calls per second at the node limit",
    ]
    node.now += 0.34  # a third of a second: one token back
    assert node.admission.check() is None
    assert node.admission.check() is not None
    node.admission.refund()  # a call refused later gives its token back
    assert node.admission.check() is None
    assert node.admission.refused == {"calls per second at the node limit": 2}


def test_live_calls_limit() -> None:
    node = Node(max_live_calls=2)
    node.live = 1
    assert node.admission.check() is None
    node.live = 2
    assert node.admission.check() == "live calls at the node limit"


def test_sip_transactions_limit() -> None:
    node = Node(max_sip_transactions=100)
    node.transactions = 99
    assert node.admission.check() is None
    node.transactions = 100
    assert node.admission.check() == "SIP transactions at the node limit"


def test_a_lasting_late_event_loop_refuses_a_lone_stall_does_not() -> None:
    node = Node(max_loop_lag_ms=100)
    node.admission.observe_lag(0.3)  # one stall of 300 ms
    assert node.admission.check() is None
    for _ in range(10):  # late look after look
        node.admission.observe_lag(0.3)
    assert node.admission.check() == "event loop overloaded"
    for _ in range(20):  # on time again
        node.admission.observe_lag(0.0)
    assert node.admission.check() is None


@pytest.mark.parametrize("limit", ["max_live_calls", "max_sip_transactions"])
def test_a_refusal_takes_no_rate_token(limit: str) -> None:
    node = Node(max_calls_per_second=1, **{limit: 1})
    node.live = node.transactions = 1
    assert node.admission.check() is not None
    node.live = node.transactions = 0
    assert node.admission.check() is None  # the one token was still there
