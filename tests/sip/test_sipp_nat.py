"""A phone behind NAT, played by real sipp: its Contact names a port where
it does not listen while its packets come from its own port.

The test holds the Contact's port (a bound socket nobody serves: what a NAT
does with a packet to a port it never mapped), so that it can also tell what
arrived there.  sipp's exit code says whether the ACK and the in-dialog
requests reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from click2dial.sip.aio import Answered, Ended, Listen, Progress, UserAgent, UserAgentConfig
from click2dial.sip.message import Request, parse_message
from click2dial.sip.transaction import TimerConfig
from tests.sipp.harness import Sipp

SDP = (
    b"v=0\r\no=click2dial 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)
TRANSPORTS = ["udp", "tcp"]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def config() -> UserAgentConfig:
    return UserAgentConfig(
        [Listen("udp", "127.0.0.1", 0), Listen("tcp", "127.0.0.1", 0)],
        timers=TimerConfig(t1=0.1),
    )


@contextlib.contextmanager
def held_port(transport: str) -> Iterator[socket.socket]:
    """A port bound and never served.  Over TCP, bound without listen():
    a connection to it is refused."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def nothing_arrived(sock: socket.socket) -> bool:
    if sock.type != socket.SOCK_DGRAM:
        return True  # unconnectable: nothing can have arrived
    try:
        sock.recv(65535)
    except BlockingIOError:
        return True
    return False


async def sipp_done(peer: Sipp, timeout: float = 20) -> None:
    await asyncio.to_thread(peer.assert_success, timeout)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nat_invite_sends_ack_reinvite_options_and_bye_where_the_responses_came_from(
    transport: str,
) -> None:
    async def main() -> None:
        with held_port(transport) as contact:
            contact_port = contact.getsockname()[1]
            with Sipp("uas_nat", transport=transport,
                      variables={"contact_port": contact_port}) as peer:  # fmt: skip
                async with UserAgent(config()) as ua:
                    call = ua.invite(peer.uri(), sdp=SDP, nat=True)
                    assert isinstance(await call.wait_for(Answered, 15), Answered)
                    status, _ = await call.reinvite(SDP.replace(b" 1 1 ", b" 1 2 "))
                    assert status == 200
                    status, _ = await call.options()
                    assert status == 200
                    assert await call.bye() == 200
                    await sipp_done(peer)  # got the ACKs, re-INVITE, OPTIONS and BYE
                # The Request-URIs still name the Contact.
                requests = [line for line in peer.logs().splitlines() if "REQ " in line]
                assert len(requests) == 3, peer.logs()
                assert all(f":{contact_port};" in line for line in requests), requests
            assert nothing_arrived(contact)

    run(main())


def test_without_nat_the_ack_goes_to_the_contact() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with held_port("udp") as contact:
            contact_port = contact.getsockname()[1]
            with Sipp("uas_nat", transport="udp",
                      variables={"contact_port": contact_port}) as peer:  # fmt: skip
                async with UserAgent(config()) as ua:
                    call = ua.invite(peer.uri(), sdp=SDP, nat=False)
                    assert isinstance(await call.wait_for(Answered, 15), Answered)
                    data = await asyncio.wait_for(loop.sock_recv(contact, 65535), 5)
                    ack = parse_message(data)
                    assert isinstance(ack, Request) and ack.method == "ACK"
                    assert ack.call_id == call.request.call_id  # type: ignore[union-attr]
                    assert "ACK sip:" not in peer.messages_log()
                peer.stop()

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_nat_scenario_late_offer_ack_reinvite_then_the_agent_hangs_up(
    transport: str,
) -> None:
    async def main() -> None:
        with held_port(transport) as contact:
            contact_port = contact.getsockname()[1]
            variables = {"contact_port": contact_port, "talk_ms": 200, "ring_ms": 50}
            with Sipp("agent_nat", transport=transport, variables=variables) as peer:
                async with UserAgent(config()) as ua:
                    call = ua.invite(peer.uri("agent"), nat=True)
                    ringing = await call.wait_for(Progress, 15)
                    assert isinstance(ringing, Progress) and ringing.status == 180
                    answered = await call.wait_for(Answered, 15)
                    assert isinstance(answered, Answered)
                    assert answered.sdp is not None and b"m=audio" in answered.sdp
                    call.ack(SDP)
                    status, response = await call.reinvite(SDP.replace(b" 1 1 ", b" 1 2 "))
                    assert status == 200
                    assert response is not None and response.sdp is not None
                    ended = await asyncio.wait_for(call.ended, 15)
                    assert isinstance(ended, Ended)
                    assert ended.by == "remote" and ended.reason == "bye"
                    await sipp_done(peer)
                assert "ACK sdp=yes" in peer.logs()
            assert nothing_arrived(contact)

    run(main())
