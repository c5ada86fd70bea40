"""Click-to-dial calls end to end: the REST API, call control and the store,
with one real sipp peer as the agent's phone and one as the trunk.

Each test asserts what the integrator sees (API, stored CDR fields), what the
peers saw on the wire (their logged INVITE headers), and sipp's own verdict
(exit code 0: every message the scenario expected, and no other).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from click2dial.calls.cdr import cdr_from_record
from tests.e2e.support import CONTACT_REF, Env, running
from tests.sipp.harness import Sipp
from tests.test_sipp_c2d_scenarios import LoggedInvite, logged_media

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both stores (SPEC §6)."""
    value: str = request.param
    return value


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


async def sipp_ok(*peers: Sipp, timeout: float = 20) -> None:
    for peer in peers:
        await asyncio.to_thread(peer.assert_success, timeout)


async def stored_cdr(env: Env, call_ref: str) -> dict[str, Any]:
    assert env.service.store is not None
    record = await env.service.store.get_call("acme", call_ref)
    assert record is not None and not record.live
    return cdr_from_record(record)


def one_invite(peer: Sipp) -> LoggedInvite:
    invites = LoggedInvite.parse_all(peer.logs())
    assert len(invites) == 1, peer.logs()
    return invites[0]


async def wait_log(peer: Sipp, text: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while text not in peer.logs():
        if loop.time() > deadline:
            raise AssertionError(f"{peer.name} never logged {text!r}:\n{peer.logs()}")
        await asyncio.sleep(0.02)


def test_answered_call_agent_hangs_up(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with (
            Sipp("agent_answer_hangup", variables={"talk_ms": 2000}) as agent,
            Sipp("trunk_answer", variables={"ring_ms": 1000}) as trunk,
        ):
            async with running(
                tmp_path,
                backend=backend,
                agent_port=agent.port,
                trunk_port=trunk.port,
            ) as env:
                response = await env.place()
                assert response.status_code == 201, response.text
                call = response.json()
                ref = call["call_ref"]
                assert call["contact_ref"] == CONTACT_REF and call["status"] == "agent_ringing"
                # The callee's early media reaches the agent while the callee rings.
                await wait_log(agent, "REINVITE")
                assert (await env.state(ref))["status"] == "callee_ringing"
                ended = await env.wait_ended(ref)
                assert ended["end_reason"] == "agent_hungup" and ended["end_code"] == 16
                assert ended["hangup_side"] == "agent"
                await sipp_ok(agent, trunk)
                cdr = await stored_cdr(env, ref)
            reinvites = logged_media(agent.logs(), "REINVITE")
            assert reinvites[0].port == 7078  # the trunk's early-media port
            trunk_offer = logged_media(trunk.logs(), "INVITE-SDP")
            assert trunk_offer[0].port == agent.media_port  # the agent's media reached the trunk
            assert cdr["end_reason"] == "agent_hungup" and cdr["end_code"] == 16
            assert cdr["contact_ref"] == CONTACT_REF and cdr["call_ref"] == ref
            assert cdr["extension"] == "1001" and cdr["number"] == "0821234567"
            assert cdr["clid"] == "27110000001" and cdr["ref"] == "click-dial"
            assert 1 <= cdr["ring_time_number"] <= 5
            assert 0 <= cdr["call_time"] <= 5
            assert cdr["ring_time_extension"] <= 3

    run(main())


def test_answered_call_callee_hangs_up(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with (
            Sipp("agent_answer") as agent,
            Sipp("trunk_answer_hangup", variables={"talk_ms": 1200}) as trunk,
        ):
            async with running(
                tmp_path,
                backend=backend,
                agent_port=agent.port,
                trunk_port=trunk.port,
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                ended = await env.wait_ended(ref)
                assert ended["end_reason"] == "callee_hungup" and ended["end_code"] == 16
                assert ended["legs"]["callee"]["answered_at"] is not None
                await sipp_ok(agent, trunk)
                cdr = await stored_cdr(env, ref)
            assert 1 <= cdr["call_time"] <= 3  # talk_ms 1200 between answer and BYE

    run(main())


def test_the_peers_see_numbers_caller_id_and_teleforge_headers(
    tmp_path: Path, backend: str
) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer_hangup") as trunk:
            async with running(
                tmp_path, backend=backend, agent_port=agent.port, trunk_port=trunk.port
            ) as env:
                ref = (await env.place(outbound_id="27110000002")).json()["call_ref"]
                await env.wait_ended(ref)
                await sipp_ok(agent, trunk)
            at_trunk, at_agent = one_invite(trunk), one_invite(agent)
        assert at_trunk.ruri.startswith("sip:0821234567@")
        assert "<sip:27110000002@" in at_trunk.from_
        assert "sip:27110000002@" in at_trunk.pai
        assert at_trunk.contactref == CONTACT_REF
        assert at_trunk.callref == ref
        assert at_trunk.outboundid == "27110000002"
        assert at_agent.callee == "0821234567"
        assert at_agent.callref == ref and at_agent.contactref == CONTACT_REF
        assert "answer-after=0" in at_agent.callinfo  # agent 1001: auto_answer = "call-info"
        assert not at_agent.sdp  # late offer: the agent's phone makes the offer

    run(main())


def test_agent_does_not_answer_is_cancelled_with_timeout(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent:
            async with running(
                tmp_path,
                backend=backend, agent_port=agent.port, trunk_port=None,
                agent_ring_timeout=1,
            ) as env:  # fmt: skip
                ref = (await env.place()).json()["call_ref"]
                ended = await env.wait_ended(ref)
                await sipp_ok(agent)  # sipp saw the CANCEL and got its 487 ACKed
            assert ended["end_reason"] == "timeout" and ended["end_code"] == 19
            assert ended["legs"]["callee"]["dialed_at"] is None

    run(main())


def test_agent_busy(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with Sipp("agent_busy") as agent:
            async with running(
                tmp_path, backend=backend, agent_port=agent.port, trunk_port=None
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                ended = await env.wait_ended(ref)
                await sipp_ok(agent)
            assert ended["end_reason"] == "busy" and ended["end_code"] == 17
            assert ended["sip_status"] == 486

    run(main())


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [(486, "busy", 17), (603, "reject", 21), (404, "error", 1), (503, "error", 41)],
)
def test_callee_refusals(tmp_path: Path, backend: str, status: int, reason: str, code: int) -> None:
    async def main() -> None:
        with (
            Sipp("agent_answer") as agent,
            Sipp("trunk_reject", variables={"status": status}) as trunk,
        ):
            async with running(
                tmp_path, backend=backend, agent_port=agent.port, trunk_port=trunk.port
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                ended = await env.wait_ended(ref)
                await sipp_ok(agent, trunk)  # the agent got its BYE, the final was ACKed
            assert ended["end_reason"] == reason and ended["end_code"] == code
            assert ended["sip_status"] == status and ended["hangup_side"] == "callee"

    run(main())


def test_callee_rings_out(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_ring_forever") as trunk:
            async with running(
                tmp_path,
                backend=backend, agent_port=agent.port, trunk_port=trunk.port,
                callee_ring_timeout=1,
            ) as env:  # fmt: skip
                ref = (await env.place()).json()["call_ref"]
                ended = await env.wait_ended(ref)
                await sipp_ok(agent, trunk)  # CANCEL to the trunk, BYE to the agent
            assert ended["end_reason"] == "timeout" and ended["end_code"] == 19

    run(main())


def test_trunk_challenge_answered_with_the_configured_credentials(
    tmp_path: Path, backend: str
) -> None:
    async def main() -> None:
        with Sipp("agent_answer_hangup") as agent, Sipp("trunk_auth_407") as trunk:
            async with running(
                tmp_path,
                backend=backend, agent_port=agent.port, trunk_port=trunk.port,
                trunk_auth=("c2d", "trunk-secret"),
            ) as env:  # fmt: skip
                ref = (await env.place()).json()["call_ref"]
                ended = await env.wait_ended(ref)
                await sipp_ok(agent, trunk)
            assert ended["end_reason"] == "agent_hungup"
            logged = trunk.logged_auth()
            assert len(logged) == 1
            assert logged[0].credentials.is_valid("trunk-secret", "INVITE")

    run(main())


def test_trunk_challenge_with_wrong_credentials_fails_the_call(
    tmp_path: Path, backend: str
) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_auth_reject") as trunk:
            async with running(
                tmp_path,
                backend=backend, agent_port=agent.port, trunk_port=trunk.port,
                trunk_auth=("c2d", "wrong"),
            ) as env:  # fmt: skip
                ref = (await env.place()).json()["call_ref"]
                ended = await env.wait_ended(ref)
                await sipp_ok(agent, trunk)
            assert ended["sip_status"] == 407
            assert ended["end_reason"] == "reject" and ended["end_code"] == 21

    run(main())


def test_delete_while_the_agent_rings(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent:
            async with running(
                tmp_path, backend=backend, agent_port=agent.port, trunk_port=None
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                await wait_log(agent, "INVITE ruri")
                deleted = await env.acme.delete(f"/click2dial/calls/{ref}")
                assert deleted.status_code == 200
                assert deleted.json()["status"] == "ended"
                assert deleted.json()["hangup_side"] == "api"
                await sipp_ok(agent)

    run(main())


def test_delete_while_the_callee_rings(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_ring_forever") as trunk:
            async with running(
                tmp_path, backend=backend, agent_port=agent.port, trunk_port=trunk.port
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                await env.wait_state(ref, {"callee_ringing"})
                await wait_log(trunk, "INVITE ruri")
                deleted = await env.acme.delete(f"/click2dial/calls/{ref}")
                assert deleted.json()["status"] == "ended"
                await sipp_ok(agent, trunk)

    run(main())


def test_delete_while_talking(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer") as trunk:
            async with running(
                tmp_path,
                backend=backend,
                agent_port=agent.port,
                trunk_port=trunk.port,
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                await env.wait_state(ref, {"talking"})
                deleted = await env.acme.delete(f"/click2dial/calls/{ref}")
                body = deleted.json()
                assert body["status"] == "ended" and body["end_reason"] == "hungup"
                assert body["end_code"] == 16
                await sipp_ok(agent, trunk)  # both legs got their BYE

    run(main())


def test_internal_call_rings_the_other_extension_not_the_trunk(
    tmp_path: Path, backend: str
) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer_hangup") as other:
            async with running(
                tmp_path,
                backend=backend,
                agent_port=agent.port,
                trunk_port=None,
                extension_1002_port=other.port,
                acme='call_types = ["outbound", "internal"]',
            ) as env:
                response = await env.place(callee="1002")
                assert response.status_code == 201, response.text
                assert response.json()["call_type"] == "internal"
                ended = await env.wait_ended(response.json()["call_ref"])
                await sipp_ok(agent, other)
                at_other = one_invite(other)
            assert ended["end_reason"] == "callee_hungup"
            assert at_other.ruri.startswith("sip:1002@")
            # Auto-answer is for the agent's own phone, never for the person called.
            assert at_other.answermode == "" and at_other.callinfo == ""

    run(main())


def test_external_agent_is_rung_through_the_trunk_with_the_caller_id(
    tmp_path: Path, backend: str
) -> None:
    async def main() -> None:
        # The trunk's sipp plays the agent's mobile, ringing until cancelled.
        with Sipp("agent_no_answer") as mobile:
            async with running(
                tmp_path,
                backend=backend, agent_port=None, trunk_port=mobile.port,
                acme='call_types = ["external"]',
            ) as env:  # fmt: skip
                response = await env.place(agent="0831234567")
                assert response.status_code == 201, response.text
                assert response.json()["call_type"] == "external"
                ref = response.json()["call_ref"]
                await wait_log(mobile, "INVITE ruri")
                at_mobile = one_invite(mobile)
                await env.acme.delete(f"/click2dial/calls/{ref}")
                await sipp_ok(mobile)
            assert at_mobile.ruri.startswith("sip:0831234567@")
            assert "<sip:27110000001@" in at_mobile.from_
            assert "sip:27110000001@" in at_mobile.pai

    run(main())


def test_max_call_duration_hangs_up_both_legs(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer") as trunk:
            async with running(
                tmp_path,
                backend=backend,
                agent_port=agent.port,
                trunk_port=trunk.port,
                acme="max_call_duration = 1",
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                talking = await env.wait_state(ref, {"talking"})
                ended = await env.wait_ended(ref)
                await sipp_ok(agent, trunk)  # both got a BYE from Click2Dial
            assert ended["end_reason"] == "hungup" and ended["end_code"] == 16
            assert ended["hangup_side"] == "system"
            answered = talking["legs"]["callee"]["answered_at"]
            assert 0.9 <= ended["ended_at"] - answered < 3

    run(main())


def test_an_agent_nobody_can_reach_ends_at_once_as_error_20(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        async with running(tmp_path, backend=backend, agent_port=None, trunk_port=None) as env:
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await env.place(agent="1002")  # registrar mode, no contact, no binding
            assert response.status_code == 201, response.text
            ended = await env.wait_ended(response.json()["call_ref"])
            assert loop.time() - started < 2  # not after the agent ring timeout (10 s here)
            assert (ended["end_reason"], ended["end_code"]) == ("error", 20)
            assert ended["hangup_side"] == "agent"

    run(main())
