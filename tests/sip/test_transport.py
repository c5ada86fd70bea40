"""The asyncio transports with real sockets: TCP framing and reuse, the
connection cap, idle time-outs, keep-alives, and malformed input."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import Any

from click2dial.sip.aio import Listen, UserAgent, UserAgentConfig

OPTIONS = (
    "OPTIONS sip:click2dial@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:probe@127.0.0.1>;tag=probe{branch}\r\n"
    "To: <sip:click2dial@127.0.0.1>\r\n"
    "Call-ID: probe-{branch}@127.0.0.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)


def options(transport: str, port: int, branch: str) -> bytes:
    return OPTIONS.format(transport=transport.upper(), port=port, branch=branch).encode()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def make_ua(**kwargs: Any) -> UserAgent:
    return UserAgent(
        UserAgentConfig([Listen("udp", "127.0.0.1", 0), Listen("tcp", "127.0.0.1", 0)], **kwargs)
    )


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head


def test_tcp_stream_split_and_coalesced_messages_are_framed() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            port = ua.address("tcp")[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            local_port = writer.get_extra_info("sockname")[1]
            one = options("tcp", local_port, "a1")
            two = options("tcp", local_port, "a2")
            # The first message in three pieces, then two messages in one write.
            for piece in (one[:10], one[10:80], one[80:] + two[:5]):
                writer.write(piece)
                await writer.drain()
            writer.write(two[5:])
            await writer.drain()
            first = await asyncio.wait_for(read_response(reader), 5)
            second = await asyncio.wait_for(read_response(reader), 5)
            assert first.startswith(b"SIP/2.0 200") and b"branch=z9hG4bKa1" in first
            assert second.startswith(b"SIP/2.0 200") and b"branch=z9hG4bKa2" in second
            writer.close()

    run(main())


def test_keepalive_ping_gets_a_pong_and_garbage_closes_the_connection() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            port = ua.address("tcp")[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            writer.write(b"X" * 20000)  # no end of headers within the limit
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            # The listener survives and serves the next connection.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(options("tcp", writer.get_extra_info("sockname")[1], "b1"))
            assert (await asyncio.wait_for(read_response(reader), 5)).startswith(b"SIP/2.0 200")
            writer.close()

    run(main())


def test_connection_cap_refuses_connections_beyond_it() -> None:
    async def main() -> None:
        async with make_ua(max_connections=2) as ua:
            port = ua.address("tcp")[1]
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            third_reader = conns[2][0]
            assert await asyncio.wait_for(third_reader.read(), 5) == b""  # dropped
            reader, writer = conns[0]
            writer.write(options("tcp", writer.get_extra_info("sockname")[1], "c1"))
            assert (await asyncio.wait_for(read_response(reader), 5)).startswith(b"SIP/2.0 200")
            for _, w in conns:
                w.close()

    run(main())


def test_idle_connections_are_closed() -> None:
    async def main() -> None:
        async with make_ua(idle_timeout=0.3) as ua:
            port = ua.address("tcp")[1]
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = loop.time()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert loop.time() - started >= 0.3
            writer.close()

    run(main())


def test_malformed_udp_datagrams_do_not_stop_the_agent() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            port = ua.address("udp")[1]
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            for junk in (b"", b"\xff\xfe\x00", b"INVITE sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 200\r\n"):
                sock.sendto(junk, ("127.0.0.1", port))
            sock.sendto(options("udp", sock.getsockname()[1], "d1"), ("127.0.0.1", port))
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
            assert data.startswith(b"SIP/2.0 200") and b"branch=z9hG4bKd1" in data
            assert ua.endpoint.parse_errors == 4
            sock.close()

    run(main())
