"""Self-tests of the Click2Dial peer scenarios (tests/sipp/scenarios/agent_*.xml, trunk_*.xml).

The end-to-end tests run two sipp UAS peers against Click2Dial: one plays the
agent's phone (agent_*.xml), the other the SIP trunk of the callee
(trunk_*.xml).  Here each of those scenarios runs against a small sipp UAC in
tests/sipp/scenarios/selftest/c2d_*.xml that behaves like Click2Dial on that
leg, over UDP and TCP.  The verdict is both exit codes (0 only when each side
saw exactly its scenario) plus the ``<log>`` lines the scenarios write for
the end-to-end tests to assert on; the parsers for those lines live here.

Log lines of the agent_*/trunk_* scenarios (-trace_logs, one per event)::

    INVITE ruri=.. from=.. pai=.. callref=.. contactref=.. callee=..
           outboundid=.. answermode=.. callinfo=.. alertinfo=.. sdp=yes|no
    INVITE-SDP c=<addr> m=<port>      after every INVITE line (empty: no SDP)
    ACK sdp=yes|no                    agent_answer*: the ACK of the 200 offer
    REINVITE c=<addr> m=<port>        agent_answer*: one per re-INVITE
    CANCEL ruri=.. matches_invite=true|false
    BYE ruri=..                       a BYE received
    AUTH method=INVITE ruri=.. header=..   trunk_auth_*: see LoggedAuth
    GAVE-UP                           trunk_auth_reject: no further INVITE
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.sipp.harness import SCENARIO_DIR, LoggedAuth, Sipp, Transport

SELFTEST_DIR: Final = SCENARIO_DIR / "selftest"
TRANSPORTS: Final[list[Transport]] = ["udp", "tcp"]
CALLEE: Final = "+4930999888"
TIMEOUT: Final = 10.0

# --------------------------------------------------------------------------
# Parsers for the scenarios' log lines (usable by the end-to-end tests)
# --------------------------------------------------------------------------

INVITE_FIELDS: Final = (
    "ruri",
    "from",
    "pai",
    "callref",
    "contactref",
    "callee",
    "outboundid",
    "answermode",
    "callinfo",
    "alertinfo",
)
# Values may contain blanks (a From with a display name): the field names,
# always present and in this order, delimit them.
_INVITE_LINE: Final = re.compile(
    "^INVITE "
    + " ".join(f"{name}=(?P<{name}>.*?)" for name in INVITE_FIELDS)
    + " sdp=(?P<sdp>yes|no)$",
    re.MULTILINE,
)
_MEDIA_LINE: Final = re.compile(r"^(?P<kind>INVITE-SDP|REINVITE) c=(\S*) m=(\d*)$", re.MULTILINE)


@dataclass(frozen=True)
class LoggedInvite:
    """One ``INVITE ...`` line: what a dialog-creating INVITE carried ("" = header absent)."""

    ruri: str
    from_: str
    pai: str
    callref: str
    contactref: str
    callee: str
    outboundid: str
    answermode: str
    callinfo: str
    alertinfo: str
    sdp: bool

    @classmethod
    def parse_all(cls, log_text: str) -> list[LoggedInvite]:
        """All INVITE lines of a -trace_logs file, in order."""
        found: list[LoggedInvite] = []
        for match in _INVITE_LINE.finditer(log_text):
            found.append(
                cls(
                    ruri=match.group("ruri"),
                    from_=match.group("from"),
                    pai=match.group("pai"),
                    callref=match.group("callref"),
                    contactref=match.group("contactref"),
                    callee=match.group("callee"),
                    outboundid=match.group("outboundid"),
                    answermode=match.group("answermode"),
                    callinfo=match.group("callinfo"),
                    alertinfo=match.group("alertinfo"),
                    sdp=match.group("sdp") == "yes",
                )
            )
        return found


@dataclass(frozen=True)
class LoggedMedia:
    """Connection address and audio port of an SDP body (``None``: no m=audio line)."""

    address: str
    port: int | None


def logged_media(log_text: str, kind: str) -> list[LoggedMedia]:
    """The ``INVITE-SDP`` or ``REINVITE`` lines of a log, in order."""
    if kind not in ("INVITE-SDP", "REINVITE"):
        raise ValueError(f"kind must be INVITE-SDP or REINVITE, not {kind!r}")
    return [
        LoggedMedia(m.group(2), int(m.group(3)) if m.group(3) else None)
        for m in _MEDIA_LINE.finditer(log_text)
        if m.group("kind") == kind
    ]


def log_lines(log_text: str, prefix: str) -> list[str]:
    """Lines that start with ``prefix`` (e.g. "BYE ", "CANCEL ", "ACK ")."""
    return [line for line in log_text.splitlines() if line.startswith(prefix)]


def log_fields(line: str) -> dict[str, str]:
    """``key=value`` pairs of a line whose values hold no blanks (BYE, CANCEL, ACK...)."""
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


# --------------------------------------------------------------------------
# Running a scenario against its Click2Dial-like companion
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PairLogs:
    peer: str  # the agent_*/trunk_* scenario's log
    c2d: str  # the companion's log


def companion(name: str) -> Path:
    return SELFTEST_DIR / f"{name}.xml"


def run_pair(
    scenario: str,
    c2d: str,
    transport: Transport,
    *,
    peer_vars: Mapping[str, str | int] | None = None,
    c2d_vars: Mapping[str, str | int] | None = None,
    peer_exit: int = 0,
) -> PairLogs:
    """Run ``scenario`` (UAS) against the companion ``c2d`` (UAC); assert both exit codes."""
    # The UAS must be bound before the UAC starts: the items enter in order.
    with (
        Sipp(scenario, transport=transport, variables=peer_vars, timeout=TIMEOUT) as peer,
        Sipp(
            companion(c2d),
            transport=transport,
            remote_port=peer.port,
            variables=c2d_vars,
            service=CALLEE,
            timeout=TIMEOUT,
        ) as uac,
    ):
        uac.assert_success(timeout=TIMEOUT + 5)
        peer.assert_exit(peer_exit, timeout=TIMEOUT + 5)
        return PairLogs(peer=peer.logs(), c2d=uac.logs())


def only(items: list[LoggedInvite]) -> LoggedInvite:
    assert len(items) == 1, items
    return items[0]


# --------------------------------------------------------------------------
# Agent leg
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_answer_logs_headers_and_each_reinvite(transport: Transport) -> None:
    logs = run_pair(
        "agent_answer",
        "c2d_agent_call",
        transport,
        peer_vars={"ring_ms": 20},
        c2d_vars={"reinvites": 2},
    )
    invite = only(LoggedInvite.parse_all(logs.peer))
    assert invite.ruri.startswith(f"sip:{CALLEE}@127.0.0.1:")
    assert invite.from_.startswith('"Click2Dial" <sip:+4930123456@click2dial.test>;tag=')
    assert invite.pai == "<sip:+4930123456@click2dial.test>"
    assert (invite.callref, invite.contactref) == ("call-0042", "contact-0007")
    assert (invite.callee, invite.outboundid) == ("+4930999888", "+4930123456")
    assert invite.answermode == "Auto"
    assert invite.callinfo == "<sip:click2dial.test>;answer-after=0"
    assert invite.alertinfo == ""  # header absent: empty, and the call still passed
    assert invite.sdp is False
    assert logged_media(logs.peer, "INVITE-SDP") == [LoggedMedia("", None)]
    assert log_lines(logs.peer, "ACK ") == ["ACK sdp=yes"]
    assert logged_media(logs.peer, "REINVITE") == [
        LoggedMedia("127.0.0.1", 7078),
        LoggedMedia("127.0.0.1", 7080),
    ]
    (bye,) = log_lines(logs.peer, "BYE ")
    assert log_fields(bye)["ruri"].startswith("sip:agent@127.0.0.1:")


def test_agent_answer_without_reinvite() -> None:
    logs = run_pair(
        "agent_answer", "c2d_agent_call", "udp", peer_vars={"ring_ms": 0}, c2d_vars={"reinvites": 0}
    )
    assert logged_media(logs.peer, "REINVITE") == []
    assert len(log_lines(logs.peer, "BYE ")) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_answer_hangup_sends_an_in_dialog_bye(transport: Transport) -> None:
    # The second re-INVITE arrives during the talk pause (optional="global").
    logs = run_pair(
        "agent_answer_hangup",
        "c2d_agent_call",
        transport,
        peer_vars={"ring_ms": 0, "talk_ms": 100},
        c2d_vars={"reinvites": 2, "hangup": "agent"},
    )
    assert len(logged_media(logs.peer, "REINVITE")) == 2
    assert log_lines(logs.peer, "BYE ") == []
    (got,) = log_lines(logs.c2d, "GOT-BYE ")
    assert "ruri=sip:c2d@127.0.0.1:" in got
    assert f";transport={transport.upper()} " in got
    assert re.search(r" from=<sip:\+4930999888@127\.0\.0\.1:\d+>;tag=\S+SIPpTag01\S* ", got)
    assert re.search(r' to="Click2Dial" <sip:\+4930123456@click2dial\.test>;tag=\S+C2D\S* ', got)
    assert got.endswith(" cseq=1 BYE")


@pytest.mark.parametrize(("scenario", "status", "reason"), [
    ("agent_busy", "486", "Busy Here"),
    ("agent_reject", "603", "Decline"),
])  # fmt: skip
def test_agent_refuses(scenario: str, status: str, reason: str) -> None:
    logs = run_pair(scenario, "c2d_reject", "tcp")
    assert log_lines(logs.c2d, "FINAL ") == [f"FINAL status={status} reason={reason}"]
    assert only(LoggedInvite.parse_all(logs.peer)).callref == "call-0042"


@pytest.mark.parametrize(("scenario", "transport"), [
    ("agent_no_answer", "udp"),
    ("trunk_ring_forever", "tcp"),
])  # fmt: skip
def test_ringing_leg_is_cancelled(scenario: str, transport: Transport) -> None:
    logs = run_pair(scenario, "c2d_cancel", transport)
    (cancel,) = log_lines(logs.peer, "CANCEL ")
    assert log_fields(cancel)["matches_invite"] == "true"
    assert log_fields(cancel)["ruri"] == only(LoggedInvite.parse_all(logs.peer)).ruri


def test_cancel_on_another_branch_fails_the_call(tmp_path: Path) -> None:
    text = companion("c2d_cancel").read_text(encoding="iso-8859-1")
    head, cancel = text.split("CANCEL sip:", 1)
    broken = tmp_path / "c2d_cancel_wrong_branch.xml"
    broken.write_text(head + "CANCEL sip:" + cancel.replace("-inv\n", "-other\n", 1), "iso-8859-1")
    with (
        Sipp("agent_no_answer", transport="udp", timeout=TIMEOUT) as peer,
        Sipp(broken, remote_port=peer.port, service=CALLEE, timeout=TIMEOUT) as uac,
    ):
        uac.assert_success(timeout=TIMEOUT + 5)  # it still gets its 200 and 487
        peer.assert_exit(1, timeout=TIMEOUT + 5)
        assert log_lines(peer.logs(), "CANCEL ")[0].endswith("matches_invite=false")


# --------------------------------------------------------------------------
# Callee leg (trunk)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trunk_answer_hangup_with_early_media(transport: Transport) -> None:
    logs = run_pair(
        "trunk_answer_hangup",
        "c2d_trunk_call",
        transport,
        peer_vars={"early_port": 9002, "ring_ms": 20, "talk_ms": 50},
        c2d_vars={"hangup": "trunk"},
    )
    invite = only(LoggedInvite.parse_all(logs.peer))
    assert invite.ruri.startswith(f"sip:{CALLEE}@127.0.0.1:")
    assert invite.from_.startswith("<sip:+4930123456@click2dial.test>;tag=")
    assert invite.pai == '"Teleforge" <sip:+4930123456@click2dial.test>'
    assert (invite.callee, invite.outboundid) == (CALLEE, "+4930123456")
    assert (invite.answermode, invite.callinfo) == ("", "")
    assert invite.alertinfo == "<http://click2dial.test/ring>;info=alert-normal"
    assert invite.sdp is True
    assert logged_media(logs.peer, "INVITE-SDP") == [LoggedMedia("127.0.0.1", 40000)]
    assert log_lines(logs.c2d, "183 ") + log_lines(logs.c2d, "200 ") == ["183 m=9002", "200 m=9002"]
    (got,) = log_lines(logs.c2d, "GOT-BYE ")
    assert got.endswith(" cseq=1 BYE") and "SIPpTag01" in got.split(" to=")[0]


def test_trunk_answer_defaults_then_bye_from_c2d() -> None:
    logs = run_pair("trunk_answer", "c2d_trunk_call", "udp")
    assert log_lines(logs.c2d, "183 ") + log_lines(logs.c2d, "200 ") == ["183 m=7078", "200 m=7078"]
    (bye,) = log_lines(logs.peer, "BYE ")
    assert log_fields(bye)["ruri"].startswith("sip:trunk@127.0.0.1:")


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, "FINAL status=486 reason=Busy Here"),
    ({"status": 404}, "FINAL status=404 reason=Not Found"),
    ({"status": 503, "reason": "Trunk Down"}, "FINAL status=503 reason=Trunk Down"),
])  # fmt: skip
def test_trunk_reject(variables: dict[str, str | int], expected: str) -> None:
    logs = run_pair("trunk_reject", "c2d_reject", "udp", peer_vars=variables)
    assert log_lines(logs.c2d, "FINAL ") == [expected]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trunk_auth_407_logs_checkable_credentials(transport: Transport) -> None:
    logs = run_pair("trunk_auth_407", "c2d_trunk_auth", transport, peer_vars={"ring_ms": 0})
    assert len(LoggedInvite.parse_all(logs.peer)) == 2
    (auth,) = LoggedAuth.parse_all(logs.peer)
    assert auth.method == "INVITE"
    assert auth.credentials.params["realm"] == "trunk.test"
    assert auth.credentials.params["username"] == "c2d"
    assert auth.credentials.is_valid("secret", "INVITE")
    assert not auth.credentials.is_valid("wrong", "INVITE")
    assert len(log_lines(logs.peer, "BYE ")) == 1


def test_trunk_auth_reject_challenges_the_retry_too() -> None:
    logs = run_pair("trunk_auth_reject", "c2d_trunk_auth", "tcp", c2d_vars={"expect": "reject"})
    assert len(LoggedInvite.parse_all(logs.peer)) == 2
    assert len(LoggedAuth.parse_all(logs.peer)) == 1
    assert log_lines(logs.peer, "GAVE-UP") == ["GAVE-UP"]
