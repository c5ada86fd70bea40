"""The softphone site's own rules (src/click2dial/api/phone.py), without a
server: which WebSocket URL the page is given, what is served and what is
not, and the 503 when the page was never built.  Served by the real server
and used by Chromium: tests/e2e/test_softphone.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from click2dial.api.app import build_app
from click2dial.api.phone import PhoneSite, WebSocketListener, websocket_url


def _get(site: PhoneSite, *paths: str, **headers: str) -> list[httpx.Response]:
    """GET each path from the app of ``site`` (in process, no server)."""
    # The phone routes use neither the call service nor the authenticator.
    app = build_app(object(), object(), phone=site)  # type: ignore[arg-type]

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://phone.test") as client:
            return [await client.get(path, headers=headers) for path in paths]

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("listeners", "browser_host", "url"),
    [
        ([], "pbx.example.com", None),
        ([WebSocketListener("ws", "127.0.0.1", 8088)], "pbx.example.com", "ws://pbx.example.com:8088/ws"),
        ([WebSocketListener("ws", "0.0.0.0", 8088)], "10.1.2.3", "ws://10.1.2.3:8088/ws"),
        ([WebSocketListener("ws", "[::]", 8088)], "::1", "ws://[::1]:8088/ws"),
        ([WebSocketListener("ws", "192.0.2.7", 8088)], "localhost", "ws://192.0.2.7:8088/ws"),
        ([WebSocketListener("ws", "[2001:db8::7]", 80)], "x", "ws://[2001:db8::7]:80/ws"),
        (
            [WebSocketListener("ws", "0.0.0.0", 8088), WebSocketListener("wss", "0.0.0.0", 8089)],
            "pbx.example.com",
            "wss://pbx.example.com:8089/ws",
        ),
    ],
)  # fmt: skip
def test_the_websocket_url_prefers_wss_and_names_wildcards_by_the_browsers_host(
    listeners: list[WebSocketListener], browser_host: str, url: str | None
) -> None:
    assert websocket_url(listeners, browser_host) == url


def test_config_json_uses_the_host_the_browser_asked_for() -> None:
    site = PhoneSite(lambda: [WebSocketListener("ws", "127.0.0.1", 8088)], sip_domain="pbx.test")
    (answer,) = _get(site, "/phone/config.json", Host="phone.test:8300")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json() == {
        "websocket_url": "ws://phone.test:8088/ws",
        "websocket_urls": ["ws://phone.test:8088/ws"],
        "sip_domain": "pbx.test",
    }


def test_an_unbuilt_page_is_a_503_that_says_how_to_build_it(tmp_path: Path) -> None:
    answer, script = _get(PhoneSite(static_dir=tmp_path / "missing"), "/phone", "/phone/phone.js")
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["status"] == 503 and "make phone" in error["title"]
    assert script.status_code == 404


def test_only_the_folders_known_files_are_served_with_revalidation(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "phone.js").write_text("console.log(1)")
    (tmp_path / "phone.css").write_text("body{}")
    (tmp_path / "notes.txt").write_text("not served: unknown type")
    (tmp_path / "sub.js").mkdir()
    site = PhoneSite(static_dir=tmp_path)
    page, script, style = _get(site, "/phone", "/phone/phone.js", "/phone/phone.css")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"

    assert script.status_code == 200 and script.text == "console.log(1)"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    (again,) = _get(site, "/phone/phone.js", **{"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert style.headers["content-type"] == "text/css; charset=utf-8"

    # The page itself only at /phone (its relative links resolve from there),
    # and nothing but files of a known type in the folder.
    names = ("index.html", "notes.txt", "sub.js", "%2e%2e", "missing.js")
    for name, answer in zip(names, _get(site, *(f"/phone/{n}" for n in names)), strict=True):
        assert answer.status_code == 404, name
        assert answer.json()["error"]["status"] == 404
