"""Protocol hygiene and unreachable peers, on real sockets.

The user agent listens on 127.0.0.1; a raw UDP socket in the test plays the
odd peer (that is the wire: what it sends and reads are the real bytes), and
requests to ports where nothing listens fail with the kernel's own refusal
(TCP RST, ICMP port unreachable).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import Any

import pytest

from click2dial.sip.aio import Failed, Listen, UserAgent, UserAgentConfig
from click2dial.sip.message import Response, parse_message
from click2dial.sip.transaction import Target, TimerConfig

REQUEST = (
    "{method} sip:click2dial@127.0.0.1:{ua_port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:probe@127.0.0.1>;tag=probe{branch}\r\n"
    "To: <sip:click2dial@127.0.0.1>{to_tag}\r\n"
    "Call-ID: probe-{branch}@127.0.0.1\r\n"
    "CSeq: 1 {method}\r\n"
    "{extra}"
    "Content-Length: 0\r\n\r\n"
)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def make_ua(t1: float = 0.5) -> UserAgent:
    return UserAgent(
        UserAgentConfig(
            [Listen("udp", "127.0.0.1", 0), Listen("tcp", "127.0.0.1", 0)],
            timers=TimerConfig(t1=t1),
        )
    )


class Peer:
    """A raw UDP socket talking to the UA."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua_port = ua.address("udp")[1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.get_running_loop()

    async def send(self, data: bytes) -> None:
        # A plain sendto (a loopback datagram never blocks): uvloop has no
        # sock_sendto, and the product runs on uvloop.
        self.sock.sendto(data, ("127.0.0.1", self.ua_port))

    async def request(
        self, method: str, branch: str, *, to_tag: str = "", extra: str = ""
    ) -> Response:
        await self.send(
            REQUEST.format(
                method=method,
                ua_port=self.ua_port,
                port=self.port,
                branch=branch,
                to_tag=f";tag={to_tag}" if to_tag else "",
                extra=extra,
            ).encode()
        )
        return await self.response()

    async def response(self, timeout: float = 5) -> Response:
        data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65535), timeout)
        message = parse_message(data)
        assert isinstance(message, Response), data
        return message

    def close(self) -> None:
        self.sock.close()


def test_options_outside_a_dialog_gets_200_with_to_tag_allow_supported_accept() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            peer = Peer(ua)
            response = await peer.request("OPTIONS", "o1")
            assert response.status == 200
            assert response.to.tag
            allow = response.headers.get_all("Allow")
            assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE"} <= set(allow)
            assert {"100rel", "timer"} <= set(response.headers.get_all("Supported"))
            assert response.headers.get_all("Accept") == ["application/sdp"]
            peer.close()

    run(main())


def test_100_trying_has_no_to_tag_and_the_final_response_has_one() -> None:
    async def main() -> None:
        async with make_ua() as ua:  # no INVITE handler: 480
            peer = Peer(ua)
            trying = await peer.request("INVITE", "i1")
            assert trying.status == 100 and trying.to.tag is None
            final = await peer.response()
            assert final.status == 480 and final.to.tag
            peer.close()

    run(main())


def test_unknown_require_gets_420_with_unsupported() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            peer = Peer(ua)
            response = await peer.request("OPTIONS", "r1", extra="Require: foo, timer\r\n")
            assert response.status == 420
            assert response.headers.get_all("Unsupported") == ["foo"]
            assert response.to.tag
            # An INVITE too: no dialog, no application involved.
            response = await peer.request("INVITE", "r2", extra="Require: replaces\r\n")
            assert response.status == 420
            assert response.headers.get_all("Unsupported") == ["replaces"]
            assert not ua.endpoint.dialogs
            # A Require we support passes.
            response = await peer.request("OPTIONS", "r3", extra="Require: 100rel\r\n")
            assert response.status == 200
            peer.close()

    run(main())


@pytest.mark.parametrize("ping", [b"\r\n\r\n", b"\r\n"])
def test_udp_crlf_keepalive_is_ignored_and_no_parse_error(ping: bytes) -> None:
    async def main() -> None:
        async with make_ua() as ua:
            peer = Peer(ua)
            await peer.send(ping)
            # The next request's answer is the first thing that comes back:
            # nothing answered the keep-alive, and it was no parse error.
            response = await peer.request("OPTIONS", "k1")
            assert response.status == 200 and response.via[0].branch == "z9hG4bKk1"
            assert ua.endpoint.parse_errors == 0
            peer.close()

    run(main())


def test_bye_outside_a_dialog_gets_481_with_to_tag() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            peer = Peer(ua)
            response = await peer.request("BYE", "b1")
            assert response.status == 481
            assert response.to.tag
            peer.close()

    run(main())


@pytest.mark.parametrize("method", ["INFO", "UPDATE", "INVITE", "BYE"])
def test_request_with_unknown_to_tag_gets_481(method: str) -> None:
    async def main() -> None:
        async with make_ua() as ua:
            peer = Peer(ua)
            response = await peer.request(method, "t1" + method, to_tag="nosuchdialog")
            assert response.status == 481
            assert response.to.tag == "nosuchdialog"
            peer.close()

    run(main())


@pytest.mark.parametrize("method", ["INFO", "UPDATE", "PRACK"])
def test_in_dialog_only_method_without_to_tag_gets_481(method: str) -> None:
    async def main() -> None:
        async with make_ua() as ua:
            peer = Peer(ua)
            response = await peer.request(method, "n1" + method)
            assert response.status == 481
            assert response.to.tag
            peer.close()

    run(main())


def unused_port(kind: int) -> int:
    """A port nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def fails_fast(ua: UserAgent, uri: str) -> tuple[Failed, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = ua.invite(uri, sdp=b"v=0\r\n")
    event = await call.wait_for(Failed, 10)
    elapsed = loop.time() - started
    assert isinstance(event, Failed), event
    return event, elapsed


def test_refused_tcp_connection_fails_the_invite_at_once_with_503() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            port = unused_port(socket.SOCK_STREAM)
            failed, elapsed = await fails_fast(ua, f"sip:bob@127.0.0.1:{port};transport=tcp")
            assert failed.status == 503 and failed.response is None
            assert elapsed < 0.5

    run(main())


def test_refused_tcp_connection_to_a_host_name_fails_at_once_with_503() -> None:
    async def main() -> None:
        async with make_ua() as ua:
            port = unused_port(socket.SOCK_STREAM)
            failed, elapsed = await fails_fast(ua, f"sip:bob@localhost:{port};transport=tcp")
            assert failed.status == 503
            assert elapsed < 0.5

    run(main())


@pytest.mark.parametrize("transport", ["tls", "ws", "wss"])
def test_tls_refused_or_websocket_peer_not_connected_fails_at_once_with_503(
    transport: str,
) -> None:
    """TLS: nothing listens there (a refused connection, as for TCP);
    WebSocket: we never connect out, and no such peer is connected."""

    async def main() -> None:
        async with make_ua() as ua:
            port = unused_port(socket.SOCK_STREAM)
            uri = f"sip:trunk@127.0.0.1:{port};transport={transport}"
            failed, elapsed = await fails_fast(ua, uri)
            assert failed.status == 503
            assert elapsed < 0.5
            assert not ua.endpoint.transaction_count

    run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_udp_port_unreachable_fails_the_invite_at_once_with_503(host: str) -> None:
    async def main() -> None:
        async with make_ua() as ua:  # T1 0.5 s: a time-out would take 32 s
            port = unused_port(socket.SOCK_DGRAM)
            failed, elapsed = await fails_fast(ua, f"sip:bob@{host}:{port}")
            assert failed.status == 503 and failed.response is None
            assert elapsed < 1.0
            # The socket still works for everyone else.
            peer = Peer(ua)
            response = await peer.request("OPTIONS", "u1")
            assert response.status == 200
            peer.close()

    run(main())


def test_pending_icmp_error_does_not_swallow_the_next_datagram() -> None:
    """An ICMP error left on the socket fails the next sendto, whatever its
    destination; the UA must still deliver that datagram."""

    async def main() -> None:
        async with make_ua() as ua:
            peer = Peer(ua)
            dead = unused_port(socket.SOCK_DGRAM)
            transport = ua._transport
            assert transport is not None
            # Back to back in one loop callback: the ICMP for the datagram to
            # the dead port is on the socket (loopback answers within the
            # sendto) before the next one goes out to the live peer.
            for _ in range(50):
                transport._send(b"x", target_udp(dead))
                transport._send(b"hello", target_udp(peer.port))
                data = await asyncio.wait_for(peer.loop.sock_recv(peer.sock, 100), 5)
                assert data == b"hello"
            peer.close()

    run(main())


def target_udp(port: int) -> Target:
    return Target("udp", "127.0.0.1", port)
