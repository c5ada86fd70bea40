"""The softphone page (issue 9, build item 6) end to end: the server serves
the page ``make phone`` built and tells it its own WebSocket listener; Debian's
headless Chromium (tests/browser) loads it, registers extension 1001 over
``ws://…/ws`` with SIP.js, shows a REST call's callee and contact ref from
the INVITE's X-Teleforge headers and rejects it, and places a call whose bad
outbound_id the server refuses before anything reaches the trunk.

Calls with media (rtpengine between the browser's DTLS-SRTP and the trunk's
RTP) are tested where rtpengine joins the call flow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.browser.harness import Browser
from tests.e2e.support import Env, running
from tests.e2e.test_registrar import wait_bound
from tests.sipp.harness import Sipp, free_port

PASSWORD = "s3cret-1001"
AGENT = f'password = "{PASSWORD}"'
PNG = b"\x89PNG\r\n\x1a\n"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def served(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Env, str, int]]:
    """The service with a ``ws:`` SIP listener; (env, HTTP base URL, ws port)."""
    ws_port = free_port("tcp")
    options.setdefault("trunk_port", None)
    async with running(
        tmp_path, agent_port=None, agent=AGENT, listen=(f"ws:127.0.0.1:{ws_port}",), **options
    ) as env:
        yield env, str(env.acme.base_url).rstrip("/"), ws_port


def contacts(env: Env, agent: str) -> list[Any]:
    registrar = env.service.registrar
    assert registrar is not None
    return list(registrar.contacts(agent))


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client normalises its dots)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_page_its_bundle_and_its_config_are_served_without_a_key(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (env, base, ws_port), httpx.AsyncClient() as anonymous:
            page = await anonymous.get(f"{base}/phone")
            assert page.status_code == 200, page.text
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert '<script type="module" src="phone/phone.js">' in page.text
            bundle = await anonymous.get(f"{base}/phone/phone.js")
            assert bundle.status_code == 200
            assert bundle.headers["content-type"] == "text/javascript; charset=utf-8"
            # SIP.js is inside, bundled: the page loads nothing from elsewhere.
            assert "sip.js" in bundle.text and len(bundle.content) > 50_000
            assert "http://" not in page.text and "https://" not in page.text
            style = await anonymous.get(f"{base}/phone/phone.css")
            assert style.status_code == 200
            assert style.headers["content-type"] == "text/css; charset=utf-8"

            config = (await anonymous.get(f"{base}/phone/config.json")).json()
            assert config["websocket_url"] == f"ws://127.0.0.1:{ws_port}/ws", config
            assert config["sip_domain"] == "127.0.0.1"
            # The listener is on loopback: the browser's own name for us is used.
            named = await anonymous.get(
                f"{base}/phone/config.json",
                headers={"Host": f"localhost:{env.service.http_port()}"},
            )
            assert named.json()["websocket_url"] == f"ws://localhost:{ws_port}/ws"

            port = env.service.http_port()
            for target in ("/phone/../pyproject.toml", "/phone/..%2f..%2fpyproject.toml",
                           "/phone/%2e%2e", "/phone/..", "/phone/index.html",
                           "/phone/.%2fphone.js"):  # fmt: skip
                status, body = await raw_get(port, target)
                assert status == 404, (target, status, body[:200])
                assert b'"error"' in body and b"[project]" not in body, target

    run(main())


def test_chromium_registers_over_websocket_and_the_page_says_so(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (env, base, ws_port), Browser() as browser:
            opened = await browser.open_phone(base)
            assert opened["registered"] is False
            # The page took the server's WebSocket URL and SIP domain.
            assert await browser.evaluate("document.querySelector('#server').value") == (
                f"ws://127.0.0.1:{ws_port}/ws"
            )
            assert await browser.evaluate("document.querySelector('#domain').value") == "127.0.0.1"

            state = await browser.login("1001", PASSWORD)
            assert state["registered"] is True, state["log"]
            await wait_bound(env, "1001")
            (binding,) = contacts(env, "1001")
            assert binding.transport == "ws", binding
            text = await browser.evaluate("document.querySelector('#reg-state').textContent")
            assert text == "Registered as 1001"

            shot = await browser.screenshot(tmp_path / "softphone-registered.png")
            data = shot.read_bytes()
            assert data.startswith(PNG) and len(data) > 1000

    run(main())


def test_a_wrong_password_fails_registration_and_binds_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (env, base, _), Browser() as browser:
            await browser.open_phone(base)
            state = await browser.login("1001", "not-the-password")
            assert state["registered"] is False and state["registration"] == "failed", state
            assert state["registrationError"].split()[0] in ("401", "403"), state
            text = await browser.evaluate("document.querySelector('#reg-state').textContent")
            assert text.startswith("Registration failed: "), text
            # The page had the final answer: no binding can come after it.
            assert contacts(env, "1001") == []

    run(main())


def test_a_rest_call_shows_its_callee_and_contact_ref_and_is_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (env, base, _), Browser() as browser:
            await browser.open_phone(base)
            assert (await browser.login("1001", PASSWORD, autoanswer=False))["registered"]
            await wait_bound(env, "1001")
            response = await env.place(callee="0827654321", contact_ref="crm-ticket-77")
            assert response.status_code == 201, response.text
            call_ref = response.json()["call_ref"]

            call = await browser.wait_call("ringing")
            assert call["direction"] == "incoming"
            assert call["callee"] == "0827654321" and call["contactRef"] == "crm-ticket-77", call
            shown = await browser.evaluate(
                "[...document.querySelectorAll('#incoming:not([hidden]) dd')]"
                ".map((e) => e.textContent)"
            )
            assert shown[:2] == ["0827654321", "crm-ticket-77"], shown
            await browser.screenshot(tmp_path / "softphone-incoming.png")
            # Not auto-answered: the call still rings the agent.
            assert (await env.state(call_ref))["status"] != "ended"

            await browser.click("#reject")
            ended = await env.wait_ended(call_ref)
            assert ended["end_reason"] == "reject", ended
            assert ended["legs"]["agent"]["answered_at"] is None
            assert (await browser.wait_call("ended"))["status"] == 603
            assert await browser.evaluate("document.querySelector('#incoming').hidden")

    run(main())


def test_a_browser_call_with_a_bad_outbound_id_is_refused_and_never_dialled(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with Sipp("trunk_answer") as trunk:
            async with served(tmp_path, trunk_port=trunk.port) as (env, base, _):
                async with Browser() as browser:
                    await browser.open_phone(base)
                    assert (await browser.login("1001", PASSWORD))["registered"]
                    await browser.place("0821234567", outbound_id="abc", contact_ref="crm-9")
                    call = await browser.wait_call("ended")
                    assert call["direction"] == "outgoing"
                    assert 400 <= call["status"] < 500, call
                    assert call["warning"] == "outbound_id: pattern", call
                    status = await browser.evaluate(
                        "document.querySelector('#call-status').textContent"
                    )
                    assert str(call["status"]) in status and "outbound_id" in status, status
                    await browser.screenshot(tmp_path / "softphone-refused.png")
                listed = await env.acme.get("/click2dial/calls")
                assert listed.json()["calls"] == []
            assert "INVITE" not in trunk.messages_log(), trunk.messages_log()

    run(main())
