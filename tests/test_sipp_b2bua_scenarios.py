"""Self-tests of the agent scenarios written for the B2BUA end-to-end tests
(tests/e2e/test_b2bua.py): agent_relay.xml and agent_hold.xml, each against
a sipp UAC in tests/sipp/scenarios/selftest/ that behaves like Click2Dial on
the agent leg, over UDP and TCP.

These two compute their answers (codec, direction, o= version) or send
requests of their own, so they are checked here, independently of
Click2Dial: both exit codes (each companion checks every answer it gets
with check_it) and the log lines the end-to-end tests read.  The trunk
scenarios of those tests answer with fixed messages and are exercised by the
end-to-end tests themselves.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_b2bua import log_records
from tests.sipp.harness import Transport
from tests.test_sipp_c2d_scenarios import TRANSPORTS, run_pair


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_relay_answers_each_offer_with_its_first_codec_and_direction(
    transport: Transport,
) -> None:
    logs = run_pair("agent_relay", "c2d_agent_relay", transport, peer_vars={"ring_ms": 20})
    offers = log_records(logs.peer, "REINVITE-OFFER")
    assert [(o["m"], o["fmt"], o["o"], o["dir"]) for o in offers] == [
        ("7090", "8 101", "2", "sendonly"),
        ("7092", "0 8", "3", "recvonly"),
        ("7094", "8 0", "4", "inactive"),
        ("7096", "0 8 101", "5", ""),
    ]
    assert all(o["ctype"] == "application/sdp" and o["c"] == "127.0.0.1" for o in offers)
    answered = log_records(logs.peer, "REINVITE-ANSWERED")
    assert [(a["fmt"], a["dir"]) for a in answered] == [
        ("8", "recvonly"),
        ("0", "sendonly"),
        ("8", "inactive"),
        ("0", "sendrecv"),
    ]
    assert len(log_records(logs.peer, "OPTIONS")) == 1
    assert len(log_records(logs.peer, "BYE")) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_hold_holds_resumes_and_logs_the_answers(transport: Transport) -> None:
    logs = run_pair(
        "agent_hold",
        "c2d_agent_hold",
        transport,
        peer_vars={"ring_ms": 20, "hold_after_ms": 50, "held_ms": 50},
    )
    (hold,) = log_records(logs.peer, "HOLD-ANSWER")
    (resume,) = log_records(logs.peer, "RESUME-ANSWER")
    for answer in (hold, resume):
        assert answer["ctype"] == "application/sdp" and int(answer["clen"]) > 0
        assert (answer["c"], answer["m"], answer["fmt"]) == ("127.0.0.1", "7078", "0 101")
    assert (hold["o"], hold["dir"]) == ("3", "recvonly")
    assert (resume["o"], resume["dir"]) == ("4", "sendrecv")
    assert len(log_records(logs.peer, "REINVITE")) == 1
    assert len(log_records(logs.peer, "BYE")) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trunk_reinvite_retries_once_after_491(transport: Transport) -> None:
    logs = run_pair(
        "trunk_reinvite",
        "c2d_trunk_glare",
        transport,
        peer_vars={"ring_ms": 20, "hold_ms": 50, "talk_ms": 50},
    )
    assert len(log_records(logs.peer, "GLARE")) == 1
    (answer,) = log_records(logs.peer, "REINVITE-ANSWER")
    assert (answer["ctype"], answer["m"], answer["fmt"]) == ("application/sdp", "40000", "8")
