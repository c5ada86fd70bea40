"""SIP over TLS and WebSocket with real sockets (issue 9, build item 2).

TLS: two of our user agents, the client trusting the test's self-signed
certificate; requests both ways over one connection, verification on by
default, a handshake that fails ends the request at once.  WebSocket
(RFC 7118): a ``websockets`` client as the browser, path ``/ws`` and
subprotocol ``sip``; requests from us reach the browser over the
connection it opened.  And a listener that cannot start is named.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from click2dial.sip.aio import Listen, ListenerError, UserAgent, UserAgentConfig
from click2dial.sip.message import Request, Response, parse_message
from click2dial.sip.transaction import ServerTransaction, Target
from tests.certs import self_signed

SIP = [Subprotocol("sip")]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def server_ua(
    cert: tuple[str, str], *listen: str, on_request: Any = None, **kwargs: Any
) -> UserAgent:
    listeners = [Listen("udp", "127.0.0.1", 0)] + [Listen(t, "127.0.0.1", 0) for t in listen]
    config = UserAgentConfig(listeners, tls_certificate=cert[0], tls_private_key=cert[1], **kwargs)
    return UserAgent(config, on_request=on_request)


def client_ua(ca_file: str | None) -> UserAgent:
    return UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)], tls_ca_file=ca_file))


def ws_options(branch: str, via: str = "WS") -> str:
    return (
        "OPTIONS sip:click2dial@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{via} df7jal23ls0d.invalid;branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1001@127.0.0.1>;tag=b{branch}\r\n"
        "To: <sip:click2dial@127.0.0.1>\r\n"
        f"Call-ID: ws-{branch}@df7jal23ls0d.invalid\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Contact: <sip:1001@df7jal23ls0d.invalid;transport=ws>\r\n"
        "Content-Length: 0\r\n\r\n"
    )


async def receive(ws: ClientConnection) -> Request | Response:
    data = await asyncio.wait_for(ws.recv(), 5)
    return parse_message(data.encode() if isinstance(data, str) else data, stream=True)


# ----------------------------------------------------------------- TLS


def test_options_and_register_over_tls_are_answered_over_one_connection(
    tmp_path: Path,
) -> None:
    cert = self_signed(tmp_path)

    async def main() -> None:
        seen: list[tuple[str, str]] = []
        async with server_ua(cert, "tls") as server, client_ua(cert[0]) as client:

            async def registrar(request: Request, tx: ServerTransaction) -> None:
                seen.append((request.method, tx.target.transport))
                if request.method == "REGISTER":
                    contact = f"{request.contact[0]};expires=60"
                    server.respond(tx, 200, headers=[("Contact", contact)])
                else:
                    server.respond(tx, 200)

            server.on_request = registrar
            port = server.address("tls")[1]
            status, response = await client.request(
                "OPTIONS", f"sip:click2dial@127.0.0.1:{port};transport=tls"
            )
            assert status == 200 and response is not None
            assert response.via[0].transport == "TLS"
            status, response = await client.request(
                "REGISTER", f"sip:127.0.0.1:{port};transport=tls", headers=[("Expires", "60")]
            )
            assert status == 200 and response is not None
            assert "expires=60" in str(response.contact[0])
            assert seen == [("OPTIONS", "tls"), ("REGISTER", "tls")]
            # One TLS connection carried both, and the server uses it back.
            assert [key[0] for key in connections(client)] == ["tls"]
            [(kind, host, client_port)] = connections(server)
            assert kind == "tls"
            status, _ = await server.request(
                "OPTIONS", "sip:click2dial@127.0.0.1", target=Target("tls", host, client_port)
            )
            assert status == 200
            assert len(connections(client)) == len(connections(server)) == 1

    run(main())


def connections(ua: UserAgent) -> list[tuple[str, str, int]]:
    transport = ua._transport
    assert transport is not None
    return list(transport._connections)


def test_outgoing_tls_verifies_the_certificate_by_default(tmp_path: Path) -> None:
    """Without the test's certificate as CA, the system store does not
    trust it: the handshake fails and the request ends at once (503)."""
    cert = self_signed(tmp_path)

    async def main() -> None:
        async with server_ua(cert, "tls") as server, client_ua(None) as client:
            port = server.address("tls")[1]
            loop = asyncio.get_running_loop()
            started = loop.time()
            call = client.invite(f"sip:1001@127.0.0.1:{port};transport=tls", sdp=b"v=0\r\n")
            failed = await call.next_event(5)
            assert getattr(failed, "status", None) == 503, failed
            assert loop.time() - started < 1.0
            assert not client.endpoint.transaction_count
            assert not connections(server)

    run(main())


def test_tls_certificate_must_name_the_host(tmp_path: Path) -> None:
    """Trusted, but the certificate names ``localhost`` only: the same
    listener addressed as 127.0.0.1 is refused (the name is checked before
    DNS resolves it)."""
    cert = self_signed(tmp_path, "DNS:localhost")

    async def main() -> None:
        async with server_ua(cert, "tls") as server, client_ua(cert[0]) as client:
            port = server.address("tls")[1]
            bad, response = await client.request("OPTIONS", f"sip:x@127.0.0.1:{port};transport=tls")
            assert bad == 503 and response is None
            good, _ = await client.request("OPTIONS", f"sip:x@localhost:{port};transport=tls")
            assert good == 200

    run(main())


# ----------------------------------------------------------- WebSocket


def ws_url(ua: UserAgent, kind: str = "ws", path: str = "/ws") -> str:
    return f"{kind}://127.0.0.1:{ua.address(kind)[1]}{path}"


def test_options_over_websocket_is_answered_on_the_same_socket(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)

    async def main() -> None:
        async with server_ua(cert, "ws") as server, connect(ws_url(server), subprotocols=SIP) as ws:
            assert ws.subprotocol == "sip"
            await ws.send(ws_options("w1"))  # text, as browsers send
            response = await receive(ws)
            assert isinstance(response, Response) and response.status == 200
            assert response.via[0].transport == "WS" and response.call_id.startswith("ws-w1")
            await ws.send(ws_options("w2").encode())  # and binary
            response = await receive(ws)
            assert isinstance(response, Response) and response.call_id.startswith("ws-w2")
            await ws.send("\r\n\r\n")  # RFC 5626 keep-alive ping
            assert await asyncio.wait_for(ws.recv(), 5) == "\r\n"

    run(main())


@pytest.mark.parametrize(
    ("path", "subprotocols", "status"),
    [("/ws", None, 400), ("/ws", [Subprotocol("chat")], 400), ("/other", SIP, 404)],
)
def test_websocket_handshake_without_sip_subprotocol_or_off_path_is_refused(
    tmp_path: Path, path: str, subprotocols: list[Subprotocol] | None, status: int
) -> None:
    cert = self_signed(tmp_path)

    async def main() -> None:
        async with server_ua(cert, "ws") as server:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(server, path=path), subprotocols=subprotocols):
                    pass
            assert refused.value.response.status_code == status
            assert not connections(server)

    run(main())


def test_secure_websocket_with_the_test_certificate(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)

    async def main() -> None:
        trust = ssl.create_default_context(cafile=cert[0])
        async with (
            server_ua(cert, "wss") as server,
            connect(ws_url(server, "wss"), subprotocols=SIP, ssl=trust) as ws,
        ):
            await ws.send(ws_options("s1", via="WSS"))
            response = await receive(ws)
            assert isinstance(response, Response) and response.status == 200
            assert response.via[0].transport == "WSS"
            assert [key[0] for key in connections(server)] == ["wss"]

    run(main())


def test_requests_to_a_websocket_peer_go_over_its_connection(tmp_path: Path) -> None:
    """The browser's connection is its flow: a request to Target("ws", its
    source address) reaches it, with the ``.invalid`` Contact it gave."""
    cert = self_signed(tmp_path)

    async def main() -> None:
        async with server_ua(cert, "ws") as server, connect(ws_url(server), subprotocols=SIP) as ws:
            await ws.send(ws_options("f1"))  # the browser speaks first
            assert isinstance(await receive(ws), Response)
            host, port = ws.local_address[:2]
            flow = Target("ws", host, port)
            pending = asyncio.ensure_future(
                server.request("OPTIONS", "sip:1001@df7jal23ls0d.invalid;transport=ws", target=flow)
            )
            request = await receive(ws)
            assert isinstance(request, Request) and request.method == "OPTIONS"
            assert request.uri.host == "df7jal23ls0d.invalid"
            assert request.via[0].transport == "WS"
            await ws.send(request.response(200, to_tag="browser").to_bytes().decode())
            status, _ = await asyncio.wait_for(pending, 5)
            assert status == 200
            # Nothing reaches a browser that is not connected: 503 at once.
            await ws.close()
            loop = asyncio.get_running_loop()
            while connections(server):
                await asyncio.sleep(0.01)
            started = loop.time()
            status, response = await server.request(
                "OPTIONS", "sip:1001@df7jal23ls0d.invalid;transport=ws", target=flow
            )
            assert status == 503 and response is None and loop.time() - started < 0.5

    run(main())


def test_websocket_connections_over_the_per_source_cap_are_refused(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)

    async def main() -> None:
        async with (
            server_ua(cert, "ws", max_connections_per_source=1) as server,
            connect(ws_url(server), subprotocols=SIP) as first,
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(server), subprotocols=SIP):
                    pass
            assert refused.value.response.status_code == 503
            await first.send(ws_options("c1"))  # the first still works
            assert isinstance(await receive(first), Response)

    run(main())


# ----------------------------------------------------------- listeners


def test_a_listener_that_cannot_bind_is_named(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)

    async def main() -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            ua = UserAgent(
                UserAgentConfig(
                    [Listen("udp", "127.0.0.1", 0), Listen("ws", "127.0.0.1", port)],
                    tls_certificate=cert[0],
                    tls_private_key=cert[1],
                )
            )
            with pytest.raises(ListenerError, match=f"SIP listener ws:127.0.0.1:{port} cannot"):
                await ua.start()
            assert ua.listening() == {"udp": False, "ws": False}
        finally:
            taken.close()

    run(main())


def test_a_tls_listener_with_an_unusable_certificate_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    bad = str(tmp_path / "bad.pem")

    async def main() -> None:
        ua = UserAgent(
            UserAgentConfig(
                [Listen("tls", "127.0.0.1", 0)], tls_certificate=bad, tls_private_key=bad
            )
        )
        with pytest.raises(ListenerError, match=r"SIP listener tls:127.0.0.1:0 cannot start: "
                           r"TLS certificate or key unusable"):  # fmt: skip
            await ua.start()

    run(main())
