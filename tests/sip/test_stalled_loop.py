"""A stalled event loop does not retransmit a request whose answer is
already waiting in the socket.

libuv (uvloop, the product's loop) handles the sockets that one poll found
ready, then runs the due timers, then polls again.  When the handling of
one socket stalls the loop past T1 (a long garbage collection, a burst of
load) and the answer arrives meanwhile, timer A or E fires before the next
poll reads it: a copy of a request the peer has already answered, which
sipp takes for a new request (a re-INVITE copy aborts the call).  The
transport reads UDP first when a SIP timer is that late.

The stall is the fault under test, made on purpose: another socket's
callback holds the loop past T1 while the peer's answer comes in.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import uvloop

from click2dial.sip.aio import Listen, UserAgent, UserAgentConfig
from click2dial.sip.message import Request, Response, parse_message
from click2dial.sip.transaction import Target, TimerConfig

T1 = 0.2


class Staller(asyncio.DatagramProtocol):
    """A socket whose datagram holds the loop (the fault): on it, the peer's
    answer is sent, then the loop is held past T1."""

    def __init__(self, answer: Callable[[], None]) -> None:
        self.answer = answer

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.answer()
        end = time.monotonic() + 2.5 * T1
        while time.monotonic() < end:
            pass


def test_an_answer_waiting_in_the_socket_is_read_before_a_retransmission() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__.startswith("uvloop")
        ua = UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)], timers=TimerConfig(t1=T1)))
        await ua.start()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        port = peer.getsockname()[1]
        try:
            sent = loop.create_task(
                ua.request(
                    "OPTIONS",
                    f"sip:peer@127.0.0.1:{port}",
                    target=Target("udp", "127.0.0.1", port),
                )
            )
            data = await asyncio.wait_for(loop.sock_recv(peer, 65535), 5)  # uvloop: no recvfrom
            request = parse_message(data)
            assert isinstance(request, Request) and request.method == "OPTIONS"
            answer = request.response(200, None, "peer").to_bytes()
            staller, _ = await loop.create_datagram_endpoint(
                lambda: Staller(lambda: peer.sendto(answer, ua.address("udp"))),
                local_addr=("127.0.0.1", 0),
            )
            peer.sendto(b"stall", staller.get_extra_info("sockname"))
            status, response = await asyncio.wait_for(sent, 5)
            assert status == 200 and isinstance(response, Response)
            try:
                copy = peer.recv(65535)
            except BlockingIOError:
                copy = b""
            assert copy == b"", "the OPTIONS was sent again although its 200 was waiting"
            staller.close()
        finally:
            peer.close()
            await ua.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
