"""The service over TLS and WebSocket (issue 9, build item 2 and the TLS
acceptance point).

The peers are Click2Dial's own SIP user agent (sipp has no TLS in this
build) and a ``websockets`` client as the browser; the test makes a
self-signed certificate that the service and the peers trust.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from click2dial.app import Click2Dial
from click2dial.config import parse_config
from click2dial.sip.aio import Call, Listen, ListenerError, UserAgent, UserAgentConfig
from click2dial.sip.auth import DigestClient
from click2dial.sip.headers import Address
from click2dial.sip.message import Response, parse_message
from click2dial.sip.sdp import build_offer
from click2dial.sip.transaction import TimerConfig
from click2dial.sip.uri import parse_uri
from tests.certs import self_signed
from tests.e2e.support import config_text, running
from tests.e2e.test_calls import stored_cdr
from tests.sip.test_tls_ws import ws_options
from tests.sipp.harness import free_port


def run(coro: Any, timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def tls_keys(cert: tuple[str, str]) -> str:
    return (
        f'tls_certificate = "{cert[0]}"\ntls_private_key = "{cert[1]}"\ntls_ca_file = "{cert[0]}"\n'
    )


def test_options_and_register_over_tls_get_answers_from_the_service(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    port = free_port("tcp")

    async def main() -> None:
        client = UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)], tls_ca_file=cert[0]))
        async with (
            running(tmp_path, agent_port=None, trunk_port=None, sip=tls_keys(cert),
                    listen=(f"tls:127.0.0.1:{port}",)) as env,
            client,
        ):  # fmt: skip
            status, response = await client.request(
                "OPTIONS", f"sip:127.0.0.1:{port};transport=tls"
            )
            assert status == 200 and response is not None
            assert response.via[0].transport == "TLS"
            status, response = await client.request(
                "REGISTER",
                f"sip:127.0.0.1:{port};transport=tls",
                headers=[("Expires", "60")],
            )
            # An answer over TLS (the registrar decides which: 501 without it).
            assert response is not None and status >= 200
            assert response.via[0].transport == "TLS"
            assert env.service.ua is not None
            assert env.service.ua.listening() == {"udp": True, "tcp": True, "tls": True}

    run(main())


def test_rest_call_reaches_an_agent_over_tls_and_ends_with_its_cdr(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    got: list[Call] = []

    async def phone(call: Call) -> None:
        got.append(call)
        call.answer(build_offer("127.0.0.1", 40100).to_bytes())

    async def trunk(call: Call) -> None:
        call.answer(build_offer("127.0.0.1", 40200).to_bytes())

    async def main() -> None:
        phone_ua = UserAgent(
            UserAgentConfig(
                [Listen("udp", "127.0.0.1", 0), Listen("tls", "127.0.0.1", 0)],
                tls_certificate=cert[0],
                tls_private_key=cert[1],
            ),
            on_invite=phone,
        )
        trunk_ua = UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)]), on_invite=trunk)
        async with phone_ua, trunk_ua:
            tls_port = phone_ua.address("tls")[1]
            async with running(
                tmp_path,
                agent_port=None,
                agent=f'contact = "sip:1001@127.0.0.1:{tls_port};transport=tls"',
                trunk_port=trunk_ua.address()[1],
                sip=f'tls_ca_file = "{cert[0]}"',
            ) as env:
                ref = (await env.place()).json()["call_ref"]
                await env.wait_state(ref, {"talking"})
                [invite] = got
                assert invite.request is not None
                assert invite.request.via[0].transport == "TLS"
                assert invite.request.headers.get("X-Teleforge-Call-Ref") == ref
                assert (await env.acme.delete(f"/click2dial/calls/{ref}")).status_code < 300
                call = await env.wait_ended(ref)
                assert call["status"] == "ended"
                cdr = await stored_cdr(env, ref)
                assert cdr["call_ref"] == ref and cdr["extension"] == "1001"
                assert (cdr["end_reason"], cdr["hangup_side"]) == ("hungup", "api"), cdr

    run(main())


def test_call_to_an_agent_whose_tls_port_is_closed_ends_at_once_as_error(
    tmp_path: Path,
) -> None:
    cert = self_signed(tmp_path)
    closed = free_port("tcp")

    async def main() -> None:
        async with running(
            tmp_path,
            agent_port=None,
            agent=f'contact = "sip:1001@127.0.0.1:{closed};transport=tls"',
            trunk_port=None,
            sip=f'tls_ca_file = "{cert[0]}"',
        ) as env:
            loop = asyncio.get_running_loop()
            started = loop.time()
            ref = (await env.place()).json()["call_ref"]
            await env.wait_ended(ref, timeout=5)
            assert loop.time() - started < 3
            cdr = await stored_cdr(env, ref)
            assert cdr["end_reason"] == "error", cdr

    run(main())


def test_trunk_over_tls_carries_the_callee_leg(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    seen: list[str] = []

    async def phone(call: Call) -> None:
        call.answer(build_offer("127.0.0.1", 40100).to_bytes())

    async def trunk(call: Call) -> None:
        assert call.request is not None
        seen.append(call.request.via[0].transport)
        call.answer(build_offer("127.0.0.1", 40200).to_bytes())

    async def main() -> None:
        phone_ua = UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)]), on_invite=phone)
        trunk_ua = UserAgent(
            UserAgentConfig(
                [Listen("udp", "127.0.0.1", 0), Listen("tls", "127.0.0.1", 0)],
                tls_certificate=cert[0],
                tls_private_key=cert[1],
            ),
            on_invite=trunk,
        )
        async with (
            phone_ua,
            trunk_ua,
            running(
                tmp_path,
                agent_port=phone_ua.address()[1],
                trunk_port=trunk_ua.address("tls")[1],
                trunk_transport="tls",
                sip=f'tls_ca_file = "{cert[0]}"',
            ) as env,
        ):
            ref = (await env.place()).json()["call_ref"]
            await env.wait_state(ref, {"talking"})
            assert seen == ["TLS"]
            await env.acme.delete(f"/click2dial/calls/{ref}")
            await env.wait_ended(ref)
            cdr = await stored_cdr(env, ref)
            assert (cdr["end_reason"], cdr["hangup_side"]) == ("hungup", "api"), cdr

    run(main())


def test_unreachable_tls_trunk_ends_the_call_at_once_as_error(tmp_path: Path) -> None:
    """The agent answers; the trunk's TLS port is closed: the callee leg
    fails at once (503), not after a SIP time-out."""
    cert = self_signed(tmp_path)

    async def phone(call: Call) -> None:
        call.answer(build_offer("127.0.0.1", 40100).to_bytes())

    async def main() -> None:
        phone_ua = UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)]), on_invite=phone)
        async with (
            phone_ua,
            running(
                tmp_path,
                agent_port=phone_ua.address()[1],
                trunk_port=free_port("tcp"),
                trunk_transport="tls",
                sip=f'tls_ca_file = "{cert[0]}"',
            ) as env,
        ):
            loop = asyncio.get_running_loop()
            started = loop.time()
            ref = (await env.place()).json()["call_ref"]
            await env.wait_ended(ref, timeout=5)
            assert loop.time() - started < 3
            cdr = await stored_cdr(env, ref)
            assert cdr["end_reason"] == "error" and cdr["sip_status"] == 503, cdr

    run(main())


def test_websocket_and_tls_listeners_of_the_service_answer_and_readyz_names_a_closed_one(
    tmp_path: Path,
) -> None:
    cert = self_signed(tmp_path)
    ws_port, tls_port = free_port("tcp"), free_port("tcp")

    async def main() -> None:
        async with running(
            tmp_path,
            agent_port=None,
            trunk_port=None,
            sip=tls_keys(cert),
            listen=(f"ws:127.0.0.1:{ws_port}", f"tls:127.0.0.1:{tls_port}"),
        ) as env:
            async with connect(
                f"ws://127.0.0.1:{ws_port}/ws", subprotocols=[Subprotocol("sip")]
            ) as ws:
                await ws.send(ws_options("e1"))
                data = await asyncio.wait_for(ws.recv(), 5)
                response = parse_message(data.encode() if isinstance(data, str) else data)
                assert isinstance(response, Response) and response.status == 200
            async with httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous:
                assert (await anonymous.get("/readyz")).status_code == 200
                ua = env.service.ua
                assert ua is not None and ua._transport is not None
                # The fault (no peer causes it): the WebSocket listener closes.
                ua._transport._listeners["ws"].close()
                down = await anonymous.get("/readyz")
                assert down.status_code == 503, down.text
                assert down.json()["checks"]["sip"] == "not listening on ws", down.text

    run(main())


@pytest.mark.parametrize("kind", ["tls", "ws", "wss"])
def test_a_listener_that_cannot_bind_stops_start_naming_it(tmp_path: Path, kind: str) -> None:
    cert = self_signed(tmp_path)

    async def main() -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = config_text(
            database=f"sqlite:///{tmp_path}/c2d.db",
            agent_port=None,
            trunk_port=None,
            sip=tls_keys(cert),
            listen=(f"{kind}:127.0.0.1:{port}",),
            spool=f"{tmp_path}/ends.jsonl",
        )
        service = Click2Dial(parse_config(text, "e2e.toml"), timers=TimerConfig(t1=0.1))
        try:
            with pytest.raises(ListenerError) as failed:
                await service.start()
            assert f"SIP listener {kind}:127.0.0.1:{port} cannot start" in str(failed.value)
            assert "in use" in str(failed.value)
        finally:
            await service.stop()
            taken.close()

    run(main())


def test_register_over_tls_binds_and_a_rest_call_reaches_the_agent_over_tls(
    tmp_path: Path,
) -> None:
    """Issue 9 acceptance: REGISTER over TLS with a certificate the test
    generates gets a binding, and a REST call reaches that agent over TLS,
    on the connection it registered from."""
    cert = self_signed(tmp_path)
    port = free_port("tcp")
    got: list[Call] = []

    async def phone(call: Call) -> None:
        got.append(call)
        call.answer(build_offer("127.0.0.1", 40300).to_bytes())

    async def trunk(call: Call) -> None:
        call.answer(build_offer("127.0.0.1", 40400).to_bytes())

    async def main() -> None:
        phone_ua = UserAgent(
            UserAgentConfig([Listen("udp", "127.0.0.1", 0)], tls_ca_file=cert[0]),
            on_invite=phone,
        )
        trunk_ua = UserAgent(UserAgentConfig([Listen("udp", "127.0.0.1", 0)]), on_invite=trunk)
        async with (
            phone_ua,
            trunk_ua,
            running(
                tmp_path,
                agent_port=None,
                agent='password = "tls-phone-secret-1001"',
                trunk_port=trunk_ua.address()[1],
                sip=tls_keys(cert),
                listen=(f"tls:127.0.0.1:{port}",),
            ) as env,
        ):
            aor = Address(parse_uri("sip:1001@127.0.0.1"))
            status, response = await phone_ua.request(
                "REGISTER",
                f"sip:127.0.0.1:{port};transport=tls",
                from_=aor,
                to=aor,
                headers=[("Expires", "120")],
                credentials=DigestClient("1001", "tls-phone-secret-1001"),
            )
            assert status == 200, response
            assert response is not None and response.via[0].transport == "TLS"
            assert response.contact, "the 200 lists the binding"

            ref = (await env.place()).json()["call_ref"]
            await env.wait_state(ref, {"talking"})
            [invite] = got
            assert invite.request is not None
            assert invite.request.via[0].transport == "TLS"  # over the registered flow
            assert invite.request.headers.get("X-Teleforge-Call-Ref") == ref
            assert (await env.acme.delete(f"/click2dial/calls/{ref}")).status_code < 300
            await env.wait_ended(ref)
            cdr = await stored_cdr(env, ref)
            assert cdr["call_ref"] == ref and cdr["extension"] == "1001"

    run(main())
