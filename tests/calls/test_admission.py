"""Admission control (calls/admission.py): each node limit refuses the call
beyond it, and only that call; time is a number the test moves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from click2dial.calls.admission import BURST_SECONDS, REFUSAL_COST, Admission, SharedBucket
from click2dial.config import AdmissionConfig


class Node:
    def __init__(self, bucket: SharedBucket | None = None, **limits: int) -> None:
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
            bucket=bucket,
        )


def test_no_limit_admits_everything() -> None:
    node = Node()
    assert all(node.admission.check() is None for _ in range(1000))


def test_calls_per_second_refuses_the_call_beyond_and_refills_with_time() -> None:
    # 20 a second, and a fifth of a second's worth at once (BURST_SECONDS).
    node = Node(max_calls_per_second=20)
    assert BURST_SECONDS == 0.2
    refused = "calls per second at the node limit"
    assert [node.admission.check() for _ in range(5)] == [None, None, None, None, refused]
    node.now += 0.06  # a twentieth of a second and a little: one token back
    assert node.admission.check() is None
    assert node.admission.check() is not None
    node.admission.refund()  # a call refused later gives its token back
    assert node.admission.check() is None
    assert node.admission.refused == {refused: 2}
    node.now += 60  # a quiet minute fills the bucket, no more
    assert [node.admission.check() for _ in range(5)].count(None) == 4
    # Below five a second, one call at a time.
    slow = Node(max_calls_per_second=3)
    assert [slow.admission.check() for _ in range(2)] == [None, refused]


def _admitted(node: Node, per_second: int, seconds: float) -> int:
    admitted = 0
    for _ in range(int(per_second * seconds)):
        node.now += 1 / per_second
        admitted += node.admission.check() is None
    return admitted


def test_refusals_cost_the_node_part_of_its_rate() -> None:
    """Offered below its rate a node takes everything; flooded, each
    refusal takes 0.15 of a call from the bucket (REFUSAL_COST), so the
    node takes less: the refusals' own CPU is part of its capacity."""
    assert REFUSAL_COST == 0.15
    steady = Node(max_calls_per_second=100)
    assert _admitted(steady, 95, 10) == 950
    flooded = Node(max_calls_per_second=100)
    _admitted(flooded, 1000, 1)  # the burst is spent
    # Taken a, refused r - a each second: a = 100 - 0.15 (r - a).  At twice
    # the rate, a is about 82; at ten times, 0.
    assert _admitted(flooded, 200, 10) in range(790, 860)
    assert _admitted(flooded, 1000, 10) < 20


def test_the_workers_of_a_node_share_one_bucket() -> None:
    """A bucket per worker let the kernel's spreading of connections decide
    the node's rate.  Two workers (here two admissions on one bucket) take
    from the same tokens; in the test's own process, and in another."""
    bucket = SharedBucket.create()
    first, second = (
        Node(max_calls_per_second=20, bucket=bucket),
        Node(max_calls_per_second=20, bucket=bucket),
    )
    second.now = first.now  # one clock, as CLOCK_MONOTONIC is for the machine
    taken = [node.admission.check() is None for _ in range(3) for node in (first, second)]
    assert taken.count(True) == 4  # the node's four, not four each
    first.admission.refund()
    assert second.admission.check() is None and first.admission.check() is not None
    # Another process, given the descriptor as a worker is, takes the next one.
    first.now = second.now = first.now + 0.06
    child = subprocess.run(
        [sys.executable, "-c", _OTHER_WORKER, str(bucket.fd), str(first.now)],
        pass_fds=(bucket.fd,),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.split() == ["True", "False"]
    assert first.admission.check() is not None and second.admission.check() is not None


_OTHER_WORKER = """
import sys
from click2dial.calls.admission import SharedBucket
bucket = SharedBucket(int(sys.argv[1]))
now = float(sys.argv[2])
print(bucket.take(20.0, now), bucket.take(20.0, now))
"""


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
