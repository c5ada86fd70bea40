"""Standard Webhooks signatures and refused webhook targets (issue 11,
build item 7).

* The verification snippet of docs/notifications.md, taken from the doc and
  run as it is, accepts a request the notifier really delivered (to a real
  HTTP receiver) and refuses it replayed later than the tolerance, with a
  changed body, id or timestamp, or with another secret; for a plain secret
  and for a ``whsec_`` one.  The first header (``X-Click2Dial-Signature``)
  is still sent and still verifies.
* Link-local and metadata targets: an address written in ``webhook_url`` is
  a configuration error at start unless ``[server] webhook_allow_link_local``;
  a host name the resolver turns into one (the numeric form ``2852039166``
  of 169.254.169.254, resolved by the real getaddrinfo) fails the delivery,
  which stays in the outbox with its reason.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from click2dial.config import ConfigError, IntegratorConfig, parse_config
from click2dial.notify import Notifier, verify_signature
from click2dial.notify.signing import standard_secret
from click2dial.store import open_store
from tests.notify.support import FakeClock, HttpReceiver, cdr_row

DOCS = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
PLAIN = "whsec-0123456789abcdef0123456789"
STANDARD = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def documented_verifier() -> Any:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    (source,) = [b for b in blocks if "def verify_webhook" in b]
    namespace: dict[str, Any] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)
    return namespace["verify_webhook"]


async def delivered(tmp_path: Path, secret: str, at: float) -> tuple[dict[str, str], bytes]:
    """The headers and body of one CDR the notifier POSTed at time ``at``."""
    async with (
        HttpReceiver() as hook,
        open_store(f"sqlite:///{tmp_path}/outbox.db") as store,
    ):
        acme = IntegratorConfig(name="acme", webhook_url=hook.url, webhook_secret=secret)
        await store.enqueue([cdr_row("acme", 1, "webhook")])
        notifier = Notifier(store, {"acme": acme}, clock=FakeClock(at))
        try:
            await notifier.deliver_due()
        finally:
            await notifier.close()
        (request,) = hook.requests
    return request.headers, request.body


@pytest.mark.parametrize("secret", [PLAIN, STANDARD], ids=["plain", "whsec"])
def test_a_delivered_request_verifies_with_the_documented_snippet_and_a_replay_fails(
    tmp_path: Path, secret: str
) -> None:
    verify = documented_verifier()
    sent_at = time.time()
    headers, body = asyncio.run(delivered(tmp_path, secret, sent_at))
    assert headers["webhook-id"] == headers["x-click2dial-notification-id"]
    assert headers["webhook-timestamp"] == str(int(sent_at))
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])
    # Received now: accepted.
    assert verify(secret, headers, body)
    assert verify(secret, headers, body, now=sent_at + 299)
    # Replayed after the tolerance, or dated in the future: refused.
    assert not verify(secret, headers, body, now=sent_at + 301)
    assert not verify(secret, headers, body, now=sent_at - 301)
    # A replay with a fresh timestamp breaks the signature.
    fresh = headers | {"webhook-timestamp": str(int(time.time()) + 60)}
    assert not verify(secret, fresh, body, now=time.time() + 60)
    assert not verify(secret, headers | {"webhook-id": "another"}, body)
    assert not verify(secret, headers, body + b" ")
    other = PLAIN + "x" if secret == PLAIN else "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert not verify(other, headers, body)
    assert not verify(secret, {k: v for k, v in headers.items() if k != "webhook-signature"}, body)
    # The first format still comes, keyed with the secret text as before.
    assert verify_signature(secret, body, headers["x-click2dial-signature"])


def test_a_plain_secret_maps_to_its_whsec_form_for_standard_libraries(tmp_path: Path) -> None:
    verify = documented_verifier()
    headers, body = asyncio.run(delivered(tmp_path, PLAIN, time.time()))
    mapped = standard_secret(PLAIN)
    assert mapped == "whsec_" + base64.b64encode(PLAIN.encode()).decode()
    assert verify(mapped, headers, body)
    assert standard_secret(STANDARD) == STANDARD


BASE = '[integrators.acme]\napi_keys = ["acme-key-0123456789"]\nwebhook_secret = "{secret}"\n'


def config(url: str, *, allow: bool = False, secret: str = PLAIN) -> str:
    server = "[server]\nwebhook_allow_link_local = true\n" if allow else ""
    return server + BASE.format(secret=secret) + f'webhook_url = "{url}"\n'


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.0.1:8443/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[fd00:ec2::254]/hook",
        "http://100.100.100.200/hook",
    ],
)
def test_a_link_local_or_metadata_webhook_address_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(url), "t.toml")
    text = str(caught.value)
    assert "integrators.acme.webhook_url" in text and "webhook_allow_link_local" in text, text
    allowed = parse_config(config(url, allow=True), "t.toml")
    assert allowed.server.webhook_allow_link_local is True
    assert allowed.integrators["acme"].webhook_url == url


def test_ordinary_webhook_addresses_are_accepted() -> None:
    for url in ("http://127.0.0.1:9000/h", "https://crm.example.com/h", "http://10.1.2.3/h"):
        assert parse_config(config(url), "t.toml").integrators["acme"].webhook_url == url


def test_a_whsec_secret_must_be_base64() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config("http://127.0.0.1/h", secret="whsec_not*base64*at*all!!"), "t.toml")
    assert "integrators.acme.webhook_secret" in str(caught.value), caught.value
    assert "whsec_" in str(caught.value)


def test_a_name_resolving_to_link_local_fails_delivery_and_stays_in_the_outbox(
    tmp_path: Path,
) -> None:
    # Not an address in the URL's syntax (so the start-up check lets it
    # through), but getaddrinfo resolves it to 169.254.169.254.
    url = "http://2852039166/latest/meta-data/"
    parse_config(config(url), "t.toml")  # no error at start: it is a name

    async def main() -> None:
        async with open_store(f"sqlite:///{tmp_path}/outbox.db") as store:
            acme = IntegratorConfig(name="acme", webhook_url=url, webhook_secret=PLAIN)
            row = cdr_row("acme", 1, "webhook")
            await store.enqueue([row])
            notifier = Notifier(store, {"acme": acme})
            try:
                started = time.monotonic()
                await notifier.deliver_due()
                # Refused before any connection: no 5-second connect timeout.
                assert time.monotonic() - started < 2
            finally:
                await notifier.close()
            (kept,) = await store.undelivered("acme")
            assert kept.id == row.id and kept.attempts == 1
            assert kept.last_error is not None
            assert "169.254.169.254" in kept.last_error and "link-local" in kept.last_error
            assert notifier.counters.failed[("acme", "webhook")] == 1

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_request_goes_to_the_address_that_passed_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name that resolves to an allowed address for the
    check and to a metadata address a moment later.  The resolver here is a
    fake (a real DNS server cannot be told to do this on cue): its first
    answer is the receiver's 127.0.0.1, every later one 169.254.169.254.
    The delivery must reach the receiver, with the name as its Host."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        address = "127.0.0.1" if not answers else "169.254.169.254"
        answers.append(address)
        return real(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)

    async def main() -> None:
        async with (
            HttpReceiver() as hook,
            open_store(f"sqlite:///{tmp_path}/outbox.db") as store,
        ):
            url = hook.url.replace("127.0.0.1", "rebind.test")
            acme = IntegratorConfig(name="acme", webhook_url=url, webhook_secret=PLAIN)
            await store.enqueue([cdr_row("acme", 1, "webhook")])
            notifier = Notifier(store, {"acme": acme})
            try:
                await notifier.deliver_due()
            finally:
                await notifier.close()
            (request,) = hook.requests
            assert request.headers["host"] == url.split("/")[2]
            assert await store.undelivered("acme") == []
        assert answers == ["127.0.0.1"]  # resolved once: no second, rebound lookup

    asyncio.run(asyncio.wait_for(main(), 30))
