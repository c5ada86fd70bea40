"""Keyless loopback only from a direct loopback peer (issue 11, build item 6).

* End to end: an integrator with ``allow_keyless_loopback`` is served a
  keyless request from 127.0.0.1 with no forwarding header, and refused
  (401) when the request carries ``X-Forwarded-For: 127.0.0.1``,
  ``X-Real-IP``, ``Forwarded`` or ``X-Forwarded-Host`` (a same-host proxy or
  tunnel).
* With ``[server] trusted_proxies``: the client is taken from
  ``X-Forwarded-For`` through the trusted hops (real Starlette requests
  through the :class:`Authenticator`), and the key is parsed and checked.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from click2dial.api.auth import Authenticator
from click2dial.config import ConfigError, IntegratorConfig, parse_config
from tests.e2e.test_api import PATH, Cases, assert_error, bare, run

KEYLESS = "allow_keyless_loopback = true"


def test_keyless_request_through_a_forwarding_header_is_401(tmp_path: Path) -> None:
    forwarded = {
        "x-forwarded-for 127.0.0.1": {"X-Forwarded-For": "127.0.0.1"},
        "x-forwarded-for ::1": {"X-Forwarded-For": "::1"},
        "x-real-ip": {"X-Real-IP": "127.0.0.1"},
        "forwarded": {"Forwarded": "for=127.0.0.1"},
        "x-forwarded-host": {"X-Forwarded-Host": "localhost"},
        "empty x-forwarded-for": {"X-Forwarded-For": ""},
    }

    async def main() -> None:
        cases = Cases()
        async with (
            bare(tmp_path, extra=KEYLESS) as env,
            httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous,
        ):
            direct = await anonymous.get(PATH)
            assert direct.status_code == 200, direct.text  # the direct loopback peer: served
            for name, headers in forwarded.items():
                with cases.case(name):
                    assert_error(await anonymous.get(PATH, headers=headers), 401)
                    response = await anonymous.post(PATH, json={}, headers=headers)
                    assert_error(response, 401)
        cases.verify()

    run(main())


def request(peer: str, headers: dict[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": PATH,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (peer, 40000),
        "query_string": b"",
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("peer", "headers", "served"),
    [
        # A loopback client behind the trusted local proxy.
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}, True),
        # Two trusted hops, then a loopback client.
        ("127.0.0.1", {"X-Forwarded-For": "::1, 10.0.0.5"}, True),
        # The client behind the proxy is remote: refused.
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, False),
        # A forged loopback entry left of an untrusted hop is not believed.
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}, False),
        # From the trusted proxy but without X-Forwarded-For: a tunnel.
        ("127.0.0.1", {}, False),
        ("127.0.0.1", {"X-Real-IP": "127.0.0.1"}, False),
        # Garbage in the chain: refused.
        ("127.0.0.1", {"X-Forwarded-For": "localhost"}, False),
        # Not from a trusted proxy: forwarding headers refuse, as without the key.
        ("127.0.0.2", {"X-Forwarded-For": "127.0.0.1"}, False),
        ("127.0.0.2", {}, True),
        ("203.0.113.9", {}, False),
    ],
)
def test_trusted_proxies_take_the_client_from_x_forwarded_for(
    peer: str, headers: dict[str, str], served: bool
) -> None:
    keyless = IntegratorConfig(name="local", allow_keyless_loopback=True)
    auth = Authenticator([keyless], trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"])
    found = auth.authenticate(request(peer, headers))
    assert (found is keyless) is served, (peer, headers)


def test_without_trusted_proxies_any_forwarding_header_refuses() -> None:
    keyless = IntegratorConfig(name="local", allow_keyless_loopback=True)
    auth = Authenticator([keyless])
    assert auth.authenticate(request("127.0.0.1", {})) is keyless
    assert auth.authenticate(request("::1", {})) is keyless
    for name in ("X-Forwarded-For", "X-Real-IP", "Forwarded", "Via", "True-Client-IP"):
        assert auth.authenticate(request("127.0.0.1", {name: "127.0.0.1"})) is None, name


BASE = '[integrators.acme]\napi_keys = ["acme-key-0123456789"]\n'


def test_trusted_proxies_key_is_parsed_and_checked() -> None:
    config = parse_config(
        '[server]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\n' + BASE, "t.toml"
    )
    assert config.server.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    assert parse_config(BASE, "t.toml").server.trusted_proxies == ()
    with pytest.raises(ConfigError) as caught:
        parse_config('[server]\ntrusted_proxies = ["proxy.local"]\n' + BASE, "t.toml")
    assert "server.trusted_proxies" in str(caught.value), caught.value
    assert "must be an IP address or network" in str(caught.value)
