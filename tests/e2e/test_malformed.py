"""4xx, never 500, for every malformed request (issue 11, build item 2).

* Named cases: JSON nested past the recursion limit in far less than 64 KiB,
  lone surrogates (JSON strings and keys, form bodies, query strings),
  duplicate keys and form fields, UTF-16 and a byte-order mark, integers
  past Python's digit limit: each is 400 with the documented error body.
* NUL characters in query strings and path parameters, which PostgreSQL
  cannot store or compare: 400 / 404 on the PostgreSQL backend.
* A hypothesis property: random bytes, random JSON values (lone surrogates
  and deep nesting among them) and random query strings posted to the
  service running in-process never get a 5xx, and every 4xx has the error
  body.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.support import ACME_KEY, running
from tests.e2e.test_api import JSON, PATH, Cases, assert_error, bare, listed, run

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEEP = b'{"agent": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # 40 KB, 20,000 levels


def test_deep_nesting_and_lone_surrogates_are_400_with_the_error_body(tmp_path: Path) -> None:
    assert len(DEEP) < 64 * 1024
    bodies: dict[str, tuple[bytes, dict[str, str]]] = {
        "deep_array": (DEEP, JSON),
        "deep_object": (b'{"a":' * 8_000 + b"1" + b"}" * 8_000, JSON),
        "33_levels": (b'{"agent": ' + b"[" * 32 + b"]" * 32 + b"}", JSON),
        "surrogate": (b'{"agent": "\\ud800"}', JSON),
        "surrogate_in_valid_call": (
            b'{"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",'
            b' "contact_ref": "ab\\udfffcd"}',
            JSON,
        ),
        "surrogate_key": (b'{"\\ud800": "1001"}', JSON),
        "surrogate_deep_in_list": (b'{"agent": [["\\udc00"]]}', JSON),
        "form_surrogate": (b"agent=%ED%A0%80&callee=0821234567", FORM),
    }

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, (body, headers) in bodies.items():
                with cases.case(name):
                    response = await env.acme.post(PATH, content=body, headers=headers)
                    assert_error(response, 400)
            for name, url in {
                "list_query_surrogate": f"{PATH}?agent=%ED%A0%80",
                "list_query_not_utf8": f"{PATH}?contact_ref=%FF",
                "call_php_surrogate": "/call.php?agent=%ED%A0%80&callee=0821234567",
            }.items():
                with cases.case(name):
                    response = await env.acme.get(url)
                    assert_error(response, 400)
            # A surrogate pair is one valid character: no 400 for it, just the
            # contact_ref rule (422).
            with cases.case("surrogate_pair"):
                pair = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
                        "contact_ref": "\U0001f600"}  # fmt: skip
                response = await env.acme.post(PATH, content=json.dumps(pair), headers=JSON)
                assert_error(response, 422, [("contact_ref", "pattern", "\U0001f600")])
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_duplicate_keys_other_encodings_and_huge_integers_are_400(tmp_path: Path) -> None:
    call = '"callee": "0821234567", "outbound_id": "27110000001"'
    bodies: dict[str, tuple[bytes, dict[str, str]]] = {
        "duplicate_key": (f'{{"agent": "1001", "agent": "1002", {call}}}'.encode(), JSON),
        "duplicate_form_field": (
            b"agent=1001&agent=1002&callee=0821234567&outbound_id=27110000001",
            FORM,
        ),
        "utf16": (f'{{"agent": "1001", {call}}}'.encode("utf-16"), JSON),
        "byte_order_mark": (f'\ufeff{{"agent": "1001", {call}}}'.encode(), JSON),
        "5000_digits": (b'{"agent": ' + b"9" * 5000 + b"}", JSON),
        "1e400": (b'{"agent": 1e400}', JSON),
    }

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, (body, headers) in bodies.items():
                with cases.case(name):
                    response = await env.acme.post(PATH, content=body, headers=headers)
                    assert_error(response, 400)
            with cases.case("call_php_field_twice"):
                response = await env.acme.get(
                    "/call.php?agent=1001&agent=1002&callee=0821234567&outbound_id=27110000001"
                )
                assert_error(response, 400)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_nul_in_query_strings_and_paths_is_4xx_on_postgres(tmp_path: Path) -> None:
    # PostgreSQL text cannot hold U+0000: sent on, it is a server error.
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path, backend="postgres") as env:
            for query in ("agent=10%0001", "contact_ref=%00"):
                with cases.case(query):
                    assert_error(await env.acme.get(f"{PATH}?{query}"), 400)
            for method, url in (
                ("GET", f"{PATH}/%00"),
                ("DELETE", f"{PATH}/00000000-0000-4000-8000-00000000000%00"),
                ("POST", "/click2dial/notifications/%00/redeliver"),
            ):
                with cases.case(f"{method} {url}"):
                    assert_error(await env.acme.request(method, url), 404)
        cases.verify()

    run(main())


# ---------------------------------------------------------------------------
# The property: never a 5xx
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The whole service in-process, on a loop of its own in a thread, so
    that hypothesis can drive it with a plain synchronous client."""
    started = threading.Event()
    url: list[str] = []
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        folder = tmp_path_factory.mktemp("fuzz")
        async with running(folder, agent_port=None, trunk_port=None) as env:
            url.append(str(env.acme.base_url))
            started.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(30), "the service did not start"
    try:
        yield url[0].rstrip("/")
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(st.characters(), SURROGATES), max_size=6).map("".join),
    st.sampled_from(["1001", "0821234567", "27110000001", "random", "internal", ""]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)
FIELDS = st.sampled_from(["agent", "callee", "outbound_id", "contact_ref", "call_type", "x"])
CALLISH = st.dictionaries(st.one_of(FIELDS, TEXT), VALUES, max_size=5)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "", "text/plain",
     "application/json; charset=utf-16"]
)  # fmt: skip


def _assert_not_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code} {response.text}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["status"] == response.status_code and error["title"], error


def _json_bytes(value: object, nest: int) -> bytes:
    # ensure_ascii escapes lone surrogates as \udXXX: valid JSON syntax.
    text = json.dumps(value)
    return ("[" * nest + text + "]" * nest).encode()


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=st.binary(max_size=512), ctype=CONTENT_TYPES)
def test_random_bytes_never_get_a_5xx(service_url: str, body: bytes, ctype: str) -> None:
    headers = {"Authorization": f"Bearer {ACME_KEY}", "Content-Type": ctype}
    _assert_not_5xx(httpx.post(f"{service_url}{PATH}", content=body, headers=headers))


@FUZZ
@given(value=st.one_of(CALLISH, VALUES), nest=st.sampled_from([0, 0, 0, 31, 40, 2000]))
def test_random_json_values_never_get_a_5xx(service_url: str, value: object, nest: int) -> None:
    headers = {"Authorization": f"Bearer {ACME_KEY}", **JSON}
    response = httpx.post(f"{service_url}{PATH}", content=_json_bytes(value, nest), headers=headers)
    _assert_not_5xx(response)


@FUZZ
@given(
    pairs=st.lists(st.tuples(st.one_of(FIELDS, st.binary(max_size=8).map(bytes.hex)),
                             st.binary(max_size=16)), max_size=5),
    path=st.sampled_from([PATH, "/call.php", "/click2dial/notifications"]),
    form=st.booleans(),
)  # fmt: skip
def test_random_query_strings_and_forms_never_get_a_5xx(
    service_url: str, pairs: list[tuple[str, bytes]], path: str, form: bool
) -> None:
    encoded = "&".join(f"{name}={quote_from_bytes(value)}" for name, value in pairs)
    auth = {"Authorization": f"Bearer {ACME_KEY}"}
    if form and path == PATH:
        response = httpx.post(f"{service_url}{path}", content=encoded, headers=auth | FORM)
    else:
        response = httpx.get(f"{service_url}{path}?{encoded}", headers=auth)
    _assert_not_5xx(response)
