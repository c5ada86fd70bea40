"""rtpengine in the signalling of a browser agent's call, with a real
rtpengine and sipp peers (the media itself, DTLS-SRTP with a real browser,
is tests/e2e/test_browser_calls.py's).

sipp's agent_webrtc.xml answers the late-offer INVITE with a browser's
offer (UDP/TLS/RTP/SAVPF, ICE, a DTLS fingerprint).  Every SDP the trunk
gets must then be plain RTP on rtpengine's ports, every SDP the agent gets
WebRTC on rtpengine's ports, across the first exchange, the media sync and
a trunk's re-INVITE; rtpengine forgets the call when it ends.  Without a
reachable rtpengine such a call ends at once as ``failed``, naming why, and
the trunk is never dialled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from click2dial.media.rtpengine import RtpEngine, UnknownCallError
from tests.e2e.test_b2bua import bed, logged, one, run, sipp_ok
from tests.media.harness import RunningRtpEngine, rtpengine
from tests.notify.support import wait_until
from tests.sipp.harness import Sipp, free_port


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RunningRtpEngine]:
    with rtpengine(tmp_path / "rtpengine") as running:
        yield running


def relayed(port: str, engine: RunningRtpEngine) -> bool:
    return engine.port_min <= int(port) <= engine.port_max


async def forgotten(engine: RunningRtpEngine, call_ref: str) -> None:
    """rtpengine no longer knows the call (it was deleted at its end)."""
    client = RtpEngine(engine.address)

    async def gone() -> bool:
        try:
            await client.query(call_ref)
        except UnknownCallError:
            return True
        return False

    try:
        await wait_until(gone, 10, f"rtpengine to forget {call_ref}")
    finally:
        await client.close()


def test_a_browser_agents_offers_and_answers_all_pass_through_rtpengine(
    tmp_path: Path, engine: RunningRtpEngine
) -> None:
    async def main() -> None:
        with (
            Sipp("agent_webrtc") as agent,
            Sipp("trunk_reinvite", variables={"hold_ms": 300}) as trunk,
        ):
            async with bed(tmp_path, agent, trunk, sip=f'rtpengine = "{engine.address}"') as b:
                ref = await b.place()
                ended = await b.env.wait_ended(ref)
                await sipp_ok(agent, trunk)
                cdr = await b.one_cdr(ref)
                await forgotten(engine, ref)
            assert ref in engine.log()  # its log names the call by our reference
            assert ended["end_reason"] == "callee_hungup", ended
            assert cdr["end_reason"] == "callee_hungup" and cdr["end_code"] == 16
            # The trunk was offered plain RTP on rtpengine's side, not the browser's.
            offer = one(logged(trunk, "INVITE-SDP"), "the trunk's INVITE")
            assert offer["c"] == "127.0.0.1" and relayed(offer["m"], engine), offer
            # Our answer in the ACK (ringback) reached the browser as WebRTC.
            ack = one(logged(agent, "ACK"), "the agent's ACK")
            assert ack["sdp"] == "yes" and ack["proto"] == "UDP/TLS/RTP/SAVPF", ack
            assert ack["fp"] == "yes" and ack["setup"] == "passive", ack
            assert relayed(ack["m"], engine), ack
            # The callee's answer, then the trunk's move to PCMA on a new port:
            # both re-INVITEs offered WebRTC on rtpengine's (stable) browser side.
            offers = logged(agent, "REINVITE-OFFER")
            assert len(offers) == 2, offers
            for seen in offers:
                assert seen["proto"] == "UDP/TLS/RTP/SAVPF" and seen["fp"] == "yes", seen
                assert seen["m"] == ack["m"], (seen, ack)
            assert offers[1]["fmt"].split()[0] == "8", offers
            # The browser's answer to the trunk's re-INVITE reached the trunk as
            # plain RTP on rtpengine's trunk side, the port the trunk was first given.
            answer = one(logged(trunk, "REINVITE-ANSWER"), "the trunk's re-INVITE answer")
            assert answer["ctype"] == "application/sdp", answer
            assert answer["c"] == "127.0.0.1" and answer["m"] == offer["m"], (answer, offer)
            assert answer["fmt"] == "8", answer

    run(main())


@pytest.mark.parametrize("configured", [True, False], ids=["unreachable", "not-configured"])
def test_a_browser_agent_without_a_media_relay_ends_at_once_naming_why(
    tmp_path: Path, configured: bool
) -> None:
    async def main() -> None:
        # Nothing listens on that port: every request to it times out.
        sip = f'rtpengine = "127.0.0.1:{free_port("udp")}"' if configured else ""
        with Sipp("agent_webrtc") as agent, Sipp("trunk_answer") as trunk:
            async with bed(tmp_path, agent, trunk, sip=sip) as b:
                ref = await b.place()
                ended = await b.env.wait_ended(ref, timeout=10)
                cdr = await b.one_cdr(ref)
            assert ended["end_reason"] == "failed" and ended["end_code"] == 41, ended
            assert cdr["end_reason"] == "failed", cdr
            reason = ended["sip_reason"] or ""
            assert "media relay" in reason, ended
            if not configured:
                assert "[sip] rtpengine" in reason, ended
            # At once (rtpengine's 1.5 s of retries at most), and nothing
            # reached the trunk.
            assert ended["ended_at"] - ended["created_at"] < 5, ended
            assert logged(trunk, "INVITE") == []
            assert logged(agent, "REINVITE") == []

    run(main())


def test_a_plain_rtp_agent_never_touches_rtpengine(
    tmp_path: Path, engine: RunningRtpEngine
) -> None:
    async def main() -> None:
        with Sipp("agent_relay") as agent, Sipp("trunk_answer_hangup") as trunk:
            async with bed(tmp_path, agent, trunk, sip=f'rtpengine = "{engine.address}"') as b:
                ref = await b.place()
                await b.env.wait_ended(ref)
                await asyncio.to_thread(trunk.assert_success, 20)
            offer = one(logged(trunk, "INVITE-SDP"), "the trunk's INVITE")
            assert offer["m"] == str(agent.media_port), offer  # direct, agent to trunk
            assert ref not in engine.log()  # rtpengine never heard of the call

    run(main())
