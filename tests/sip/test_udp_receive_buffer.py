"""A burst that arrives while the event loop is busy waits in the UDP
socket, none of it lost (``[sip] udp_receive_buffer``).

The kernel's default receive buffer (about 208 KiB on Linux) holds a few
hundred datagrams.  At a few hundred calls a second, a loop held for a few
tens of milliseconds (a burst of POSTs, a garbage collection) overflows
it: the kernel drops what does not fit, every lost response comes back as
a retransmission of its request, and sipp aborts a call on a copy of an
INVITE it has already answered.

The held loop is the fault under test, made on purpose: a callback of
another socket sends the burst to the user agent and only then returns.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import uvloop

from click2dial.sip.aio import Listen, UserAgent, UserAgentConfig
from click2dial.sip.message import Request
from click2dial.sip.transaction import ServerTransaction

#: Far more than the kernel's default buffer holds (each small datagram is
#: accounted at about 1-2 KiB), far less than 4 MiB does.
BURST = 1500


def options(index: int, port: int) -> bytes:
    return (
        f"OPTIONS sip:ua@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-burst-{index}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:peer@127.0.0.1>;tag=p{index}\r\n"
        f"To: <sip:ua@127.0.0.1>\r\n"
        f"Call-ID: burst-{index}@127.0.0.1\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class Burster(asyncio.DatagramProtocol):
    """On its datagram, sends the whole burst to the user agent from the
    loop's own thread, so that the loop reads none of it before it ends."""

    def __init__(self, peer: socket.socket, target: tuple[str, int]) -> None:
        self.peer = peer
        self.target = target

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        port = self.peer.getsockname()[1]
        for index in range(BURST):
            self.peer.sendto(options(index, port), self.target)


def received_in_burst(receive_buffer: int) -> int:
    """How many of the burst's requests the user agent handed on."""
    seen: list[Request] = []

    async def on_request(request: Request, tx: ServerTransaction) -> None:
        seen.append(request)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        config = UserAgentConfig([Listen("udp", "127.0.0.1", 0)], udp_receive_buffer=receive_buffer)
        ua = UserAgent(config, on_request=on_request)
        await ua.start()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        try:
            burster, _ = await loop.create_datagram_endpoint(
                lambda: Burster(peer, ua.address("udp")), local_addr=("127.0.0.1", 0)
            )
            peer.sendto(b"go", burster.get_extra_info("sockname"))
            # Whatever the kernel kept is read within a few loop turns; a
            # count that has not grown for two seconds is all there will be.
            count, changed = 0, loop.time()
            while len(seen) < BURST and loop.time() - changed < 2:
                await asyncio.sleep(0.02)
                if len(seen) != count:
                    count, changed = len(seen), loop.time()
            burster.close()
            return len(seen)
        finally:
            peer.close()
            await ua.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_a_burst_during_a_held_loop_waits_in_the_socket_in_full() -> None:
    cap = Path("/proc/sys/net/core/rmem_max")
    assert received_in_burst(4 << 20) == BURST, (
        f"net.core.rmem_max is {cap.read_text().strip()}: `make sys-deps` raises it to 4194304"
        if cap.exists()
        else ""
    )


def test_the_kernels_default_buffer_loses_that_burst() -> None:
    # The test above is only worth something if the burst overflows the
    # buffer the socket has without the setting.
    assert received_in_burst(0) < BURST


def test_a_capped_buffer_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        asked = 1 << 30  # above any net.core.rmem_max
        ua = UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)], udp_receive_buffer=asked))
        await ua.start()
        await ua.close()

    with caplog.at_level(logging.WARNING, logger="click2dial.sip.aio.transport"):
        asyncio.run(main())
    warned = [r.getMessage() for r in caplog.records if "receive buffer" in r.getMessage()]
    assert warned and "udp_receive_buffer" in warned[0] and "net.core.rmem_max" in warned[0]
