"""Our user agent against real sipp peers, over UDP and over TCP.

Each test starts sipp with a scenario from tests/sipp/scenarios; sipp's exit
code (0 only when the peer saw exactly the messages its scenario expects) is
the main assertion, alongside what our UA reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from click2dial.sip.aio import (
    Acked,
    Answered,
    Call,
    CallEvent,
    Ended,
    Failed,
    Listen,
    Progress,
    UserAgent,
    UserAgentConfig,
)
from click2dial.sip.auth import DigestClient
from click2dial.sip.transaction import TimerConfig
from tests.sipp.harness import Sipp

SDP = (
    b"v=0\r\no=click2dial 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)

TRANSPORTS = ["udp", "tcp"]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def config(t1: float = 0.5) -> UserAgentConfig:
    return UserAgentConfig(
        [Listen("udp", "127.0.0.1", 0), Listen("tcp", "127.0.0.1", 0)],
        timers=TimerConfig(t1=t1),
    )


async def sipp_done(peer: Sipp, timeout: float = 20) -> None:
    await asyncio.to_thread(peer.assert_success, timeout)


async def events_until_final(call: Call, timeout: float = 15) -> list[CallEvent]:
    seen: list[CallEvent] = []
    while True:
        event = await call.next_event(timeout)
        seen.append(event)
        if isinstance(event, Answered | Failed | Ended):
            return seen


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_call_invite_100_180_200_ack_bye(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_basic", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                seen = await events_until_final(call)
                assert [type(e) for e in seen] == [Progress, Answered]
                assert isinstance(seen[0], Progress) and seen[0].status == 180
                answered = seen[-1]
                assert isinstance(answered, Answered)
                assert answered.sdp is not None and b"m=audio" in answered.sdp
                assert await call.bye() == 200
                await sipp_done(peer)

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_late_offer_ack_carries_the_sdp_answer(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_late_offer", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri())
                assert call.request is not None and call.request.body == b""
                answered = await call.wait_for(Answered, 15)
                assert isinstance(answered, Answered)
                assert answered.sdp is not None and b"m=audio" in answered.sdp  # the offer
                call.ack(SDP)
                assert await call.bye() == 200
                await sipp_done(peer)

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reinvite_in_an_established_call(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_reinvite", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                status, response = await call.reinvite(SDP.replace(b" 1 1 ", b" 1 2 "))
                assert status == 200
                assert response is not None and response.sdp is not None
                assert response.cseq.seq == 2
                assert await call.bye() == 200
                await sipp_done(peer)

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_of_a_ringing_call_and_the_487_is_acked(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_cancel", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                ringing = await call.wait_for(Progress, 15)
                assert isinstance(ringing, Progress) and ringing.status == 180
                call.cancel()
                failed = await call.wait_for(Failed, 15)
                assert isinstance(failed, Failed) and failed.status == 487
                await sipp_done(peer)  # sipp checks that the 487 was ACKed

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_401_challenge_answered_with_correct_credentials(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_auth_401", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP, credentials=DigestClient("alice", "secret"))
                answered = await call.wait_for(Answered, 15)
                assert isinstance(answered, Answered)
                assert answered.response.cseq.seq == 2
                assert await call.bye() == 200
                await sipp_done(peer)  # sipp's verifyauth checked the credentials

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_407_challenge_answered_with_correct_credentials(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_auth_407", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP, credentials=DigestClient("alice", "secret"))
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                assert await call.bye() == 200
                await sipp_done(peer)
            logged = peer.logged_auth()
            assert len(logged) == 1, peer.logs()
            # Verified independently of our digest code (hashlib in the harness).
            assert logged[0].credentials.is_valid("secret", "INVITE")
            assert not logged[0].credentials.is_valid("wrong", "INVITE")

    run(main())


def test_first_invite_dropped_retransmission_recovers() -> None:
    async def main() -> None:
        with Sipp("uas_drop_first", transport="udp") as peer:
            async with UserAgent(config(t1=0.1)) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                assert await call.bye() == 200
                await sipp_done(peer)
            assert peer.messages_log().count("INVITE sip:") >= 2

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_peer_that_never_answers_times_out_with_timer_b(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_no_answer", transport=transport) as peer:
            t1 = 0.05  # timer B = 64*T1 = 3.2 s
            async with UserAgent(config(t1=t1)) as ua:
                loop = asyncio.get_running_loop()
                started = loop.time()
                call = ua.invite(peer.uri(), sdp=SDP)
                failed = await call.wait_for(Failed, 15)
                elapsed = loop.time() - started
                assert isinstance(failed, Failed) and failed.timed_out
                assert 64 * t1 - 0.1 <= elapsed < 64 * t1 + 1.0
                await sipp_done(peer)
            invites = peer.messages_log().count("INVITE sip:")
            if transport == "udp":
                assert invites >= 5  # timer A retransmissions
            else:
                assert invites == 1  # none over TCP

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retransmitted_200_is_re_acked(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_retrans_200", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                # sipp sends its 200 again and waits for a second ACK before BYE
                # can go through: wait for that ACK on the wire, then hang up.
                await wait_until(lambda: peer.messages_log().count("ACK sip:") >= 2)
                assert await call.bye() == 200
                await sipp_done(peer)

    run(main())


async def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_reinvite_and_bye_from_the_called_peer_are_answered(transport: str) -> None:
    async def main() -> None:
        with Sipp("uas_peer_requests", transport=transport) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                ended = await asyncio.wait_for(call.ended, 15)
                assert ended.by == "remote" and ended.reason == "bye"
                await sipp_done(peer)  # sipp got 200s to OPTIONS, re-INVITE (with SDP), BYE

    run(main())


async def answering_ua(handler: Callable[[Call], Awaitable[None]], t1: float = 0.5) -> UserAgent:
    ua = UserAgent(config(t1), on_invite=handler)
    await ua.start()
    return ua


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_incoming_call_with_options_reinvite_and_bye_from_the_caller(transport: str) -> None:
    async def main() -> None:
        calls: list[Call] = []

        async def on_invite(call: Call) -> None:
            calls.append(call)
            call.ring()
            call.answer(SDP)

        ua = await answering_ua(on_invite)
        try:
            port = ua.address(transport)[1]
            with Sipp("uac_call", transport=transport, remote_port=port) as peer:
                await sipp_done(peer)
            assert len(calls) == 1
            call = calls[0]
            assert call.remote_sdp is not None
            ended = await asyncio.wait_for(call.ended, 5)
            assert ended.by == "remote" and ended.reason == "bye"
            assert any(isinstance(e, Acked) for e in drain(call))
        finally:
            await ua.close()

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_incoming_call_cancelled_by_the_caller(transport: str) -> None:
    async def main() -> None:
        calls: list[Call] = []

        async def on_invite(call: Call) -> None:
            calls.append(call)
            call.ring()

        ua = await answering_ua(on_invite)
        try:
            port = ua.address(transport)[1]
            with Sipp("uac_cancel", transport=transport, remote_port=port) as peer:
                await sipp_done(peer)  # sipp got 200 for CANCEL and 487 for INVITE
            ended = await asyncio.wait_for(calls[0].ended, 5)
            assert ended.reason == "cancelled"
        finally:
            await ua.close()

    run(main())


def drain(call: Call) -> list[CallEvent]:
    out: list[CallEvent] = []
    while not call.events.empty():
        out.append(call.events.get_nowait())
    return out


# ------------------------------------------ RFC 3262 and RFC 4028 peers


def test_reliable_183_is_pracked_then_the_call_completes() -> None:
    async def main() -> None:
        with Sipp("uas_100rel", transport="udp") as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                seen = await events_until_final(call)
                # sipp retransmits its 183 until the PRACK: reported once.
                assert [type(e) for e in seen] == [Progress, Answered]
                progress = seen[0]
                assert isinstance(progress, Progress) and progress.status == 183
                assert progress.sdp is not None and b"m=audio" in progress.sdp
                assert await call.bye() == 200
                await sipp_done(peer)  # sipp checked the RAck
            assert peer.messages_log().count("PRACK sip:") == 1

    run(main())


def test_421_is_retried_with_require_100rel_then_pracked() -> None:
    async def main() -> None:
        with Sipp("uas_421", transport="udp") as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                seen = await events_until_final(call)
                assert [type(e) for e in seen] == [Progress, Answered]  # no 421
                answered = seen[-1]
                assert isinstance(answered, Answered) and answered.response.cseq.seq == 2
                assert await call.bye() == 200
                await sipp_done(peer)

    run(main())


def test_422_is_retried_with_the_min_se_and_the_call_completes() -> None:
    async def main() -> None:
        with Sipp("uas_422", transport="udp") as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                seen = await events_until_final(call)
                assert [type(e) for e in seen] == [Answered]  # no 422
                assert call.dialog is not None
                assert call.dialog.session_interval == 1800
                assert call.dialog.session_refresher == "local"
                assert await call.bye() == 200
                await sipp_done(peer)  # sipp checked Session-Expires >= 1800

    run(main())


@pytest.mark.parametrize("scenario", ["trunk_100rel", "trunk_421", "trunk_422"])
def test_trunk_scenarios_answer_then_hang_up(scenario: str) -> None:
    """The trunk variants the end-to-end tests use: the call completes and
    the trunk's BYE ends it."""

    async def main() -> None:
        with Sipp(scenario, transport="udp", variables={"talk_ms": "300"}) as peer:
            async with UserAgent(config()) as ua:
                call = ua.invite(peer.uri(), sdp=SDP)
                seen = await events_until_final(call)
                assert [type(e) for e in seen] == [Progress, Answered]
                ended = await asyncio.wait_for(call.ended, 15)
                assert (ended.by, ended.reason) == ("remote", "bye")
                await sipp_done(peer)

    run(main())


def test_session_refresh_by_update_is_sent_at_half_the_interval_and_unreported() -> None:
    async def main() -> None:
        variables = {"se": "2", "refresher": "uac"}
        with Sipp("uas_session_timer", transport="udp", variables=variables) as peer:
            async with UserAgent(config()) as ua:
                loop = asyncio.get_running_loop()
                call = ua.invite(peer.uri(), sdp=SDP)
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                answered_at = loop.time()
                await wait_until(lambda: "UPDATE sip:" in peer.messages_log())
                assert 0.8 <= loop.time() - answered_at < 2.0  # due at se/2 = 1 s
                assert call.events.empty()  # the refresh is invisible
                assert call.dialog is not None and call.dialog.established
                assert await call.bye() == 200
                await sipp_done(peer)  # sipp checked the UPDATE's Session-Expires

    run(main())


def test_missing_refresh_from_the_peer_ends_the_call_with_bye() -> None:
    async def main() -> None:
        variables = {"se": "3", "refresher": "uas"}
        with Sipp("uas_session_timer", transport="udp", variables=variables) as peer:
            async with UserAgent(config()) as ua:
                loop = asyncio.get_running_loop()
                call = ua.invite(peer.uri(), sdp=SDP)
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                answered_at = loop.time()
                ended = await asyncio.wait_for(call.ended, 10)
                # Expiry minus min(32, 3/3) seconds.
                assert 1.8 <= loop.time() - answered_at < 3.0
                assert (ended.by, ended.reason) == ("local", "session-expired")
                await sipp_done(peer)  # sipp got the BYE and answered it
            assert "UPDATE sip:" not in peer.messages_log()

    run(main())


def test_peer_update_without_sdp_is_a_refresh_answered_without_sdp() -> None:
    """Two of our UAs over real UDP: the called one sends a body-less UPDATE
    (a session refresh); the caller's default handling answers 200 without
    SDP, with the session interval restated."""

    async def main() -> None:
        answered: list[Call] = []

        async def on_invite(call: Call) -> None:
            answered.append(call)
            call.answer(SDP)

        callee = await answering_ua(on_invite)
        try:
            async with UserAgent(config()) as caller:
                port = callee.address("udp")[1]
                call = caller.invite(f"sip:bob@127.0.0.1:{port}", sdp=SDP)
                assert isinstance(await call.wait_for(Answered, 15), Answered)
                await wait_until(lambda: bool(answered) and answered[0].established)
                status, response = await answered[0]._in_dialog("UPDATE")
                assert status == 200 and response is not None
                assert response.body == b"" and "Content-Type" not in response.headers
                # The caller refreshes: it is the UAS of this UPDATE, so "uas".
                assert response.headers.get("Session-Expires") == "1800;refresher=uas"
                assert call.dialog is not None and call.dialog.session_refresher == "local"
                assert await call.bye() == 200
        finally:
            await callee.close()

    run(main())
