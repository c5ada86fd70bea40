"""The REST API contract of SPEC §2 (and docs/api.md) end to end: the whole
service in-process, driven over HTTP, with real sipp peers wherever a call
has to exist.

What each test asserts:

* every refusal: its status, and an error body of the one documented shape
  that names each bad field, the rule it broke and the value received, one
  object per bad field; and that a refused request dialled nothing (the
  integrator's listing stays empty, the sipp peers logged no extra INVITE);
* what is accepted: JSON integers, forms, the 230-character contact_ref,
  national caller IDs and the legacy call_ref, with their warnings, as the
  integrator sees them and as the agent's phone received them;
* limits, idempotency, integrator isolation, the `random` caller ID, the
  listing, the deprecated /call.php and the operations endpoints.

Tests that need no call share one service per behaviour and check all of
their cases before failing (see :class:`Cases`), so one failure report names
every broken case.  The calls-per-second tests freeze the call service's
monotonic clock instead of waiting for a token to come back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from tests.e2e.support import ACME_KEY, CONTACT_REF, Env, running
from tests.sipp.harness import Sipp
from tests.test_sipp_c2d_scenarios import LoggedInvite

PATH: Final = "/click2dial/calls"
CALL: Final[Mapping[str, object]] = {
    "agent": "1001",
    "callee": "0821234567",
    "outbound_id": "27110000001",
    "contact_ref": CONTACT_REF,
}
ACME_POOL: Final = ("27110000001", "27110000002", "27110000003")  # tests/e2e/support.py
EXTERNAL_AGENT: Final = "0821111111"  # an agent's mobile: rung through the trunk
UNKNOWN_REF: Final = "00000000-0000-4000-8000-000000000000"
WWW_AUTHENTICATE: Final = 'Bearer realm="click2dial"'
SUCCESSOR_LINK: Final = '</click2dial/calls>; rel="successor-version"'
MAX_BODY: Final = 64 * 1024
ANY_RULE: Final = "*"
DROP: Final = object()  # body_with(field=DROP) leaves the field out
JSON: Final = {"Content-Type": "application/json"}
CALL_PARAMS: Final = {name: str(value) for name, value in CALL.items()}  # as query parameters

# (field, rule, value received); rule ANY_RULE accepts any rule name.
Expected = Sequence[tuple[str, str, object]]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def bare(tmp_path: Path, **options: Any) -> AbstractAsyncContextManager[Env]:
    """The service with no sipp peer: for requests that must not place a call."""
    return running(tmp_path, agent_port=None, trunk_port=None, **options)


def body_with(**changes: object) -> dict[str, object]:
    """A valid call request with some fields changed (or left out with DROP)."""
    body = dict(CALL)
    for name, value in changes.items():
        if value is DROP:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def _triples(items: Expected) -> list[tuple[str, str, str]]:
    # json.dumps keeps True apart from 1 and "1" apart from 1.
    return sorted((f, r, json.dumps(v, sort_keys=True)) for f, r, v in items)


def assert_error(response: httpx.Response, status: int, expected: Expected = ()) -> dict[str, Any]:
    """``response`` is ``status`` with the documented error body, listing
    exactly ``expected``: one object per bad field with its rule and the
    value as received.  Returns the ``error`` object."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    error: dict[str, Any] = body["error"]
    assert {"status", "title", "errors"} <= set(error), error
    assert error["status"] == status, error
    assert isinstance(error["title"], str) and error["title"], error
    for item in error["errors"]:
        assert set(item) == {"field", "rule", "value", "message"}, item
        assert isinstance(item["message"], str) and item["message"], item
    any_rule = {f for f, r, _ in expected if r == ANY_RULE}
    got = [
        (e["field"], ANY_RULE if e["field"] in any_rule else e["rule"], e["value"])
        for e in error["errors"]
    ]
    assert _triples(got) == _triples(expected), error
    return error


def assert_warnings(warnings: list[str], mentions: Sequence[str]) -> None:
    """One warning per expected mention, each naming what it is about."""
    assert len(warnings) == len(mentions), warnings
    for mention in mentions:
        assert any(mention in w for w in warnings), (mention, warnings)


class Cases:
    """Independent checks sharing one service: every failing case is
    collected, and :meth:`verify` reports them all at once."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    @contextmanager
    def case(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.failures.append(f"[{name}] {exc}")

    def verify(self) -> None:
        assert not self.failures, f"{len(self.failures)} case(s) failed:\n" + "\n".join(
            self.failures
        )


@dataclass
class FrozenClock:
    """Stands in for the call service's monotonic clock (calls per second)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def freeze_rate_clock(env: Env) -> FrozenClock:
    assert env.service.service is not None
    clock = FrozenClock()
    env.service.service.monotonic = clock
    return clock


async def page(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get(PATH, params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def listed(client: httpx.AsyncClient, **params: str) -> list[str]:
    """The call_refs of the first page of the integrator's listing."""
    return [call["call_ref"] for call in (await page(client, **params))["calls"]]


async def wait_ended(client: httpx.AsyncClient, call_ref: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.get(f"{PATH}/{call_ref}")
        assert response.status_code == 200, response.text
        if response.json()["status"] == "ended":
            return
        if loop.time() > deadline:
            raise AssertionError(f"call never ended: {response.text}")
        await asyncio.sleep(0.05)


async def wait_invites(peer: Sipp, count: int, timeout: float = 10) -> list[LoggedInvite]:
    """Poll the peer's log until it has logged ``count`` INVITEs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(found := LoggedInvite.parse_all(peer.logs())) < count:
        if loop.time() > deadline:
            raise AssertionError(f"{peer.name} logged {len(found)} INVITEs:\n{peer.logs()}")
        await asyncio.sleep(0.02)
    return found


async def sipp_ok(*peers: Sipp, timeout: float = 20) -> None:
    for peer in peers:
        await asyncio.to_thread(peer.assert_success, timeout)


def invited_refs(peer: Sipp) -> list[str]:
    """The X-Teleforge-Call-Ref of every INVITE the peer received, in order."""
    return [invite.callref for invite in LoggedInvite.parse_all(peer.logs())]


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, f"{response.status_code} {response.text}"
    call: dict[str, Any] = response.json()
    assert response.headers["location"] == f"{PATH}/{call['call_ref']}"
    assert "idempotent-replayed" not in response.headers
    return call


# ---------------------------------------------------------------------------
# 400 / 413 / 415: the body itself
# ---------------------------------------------------------------------------


def test_malformed_json_bodies_are_400(tmp_path: Path) -> None:
    bodies = {
        "truncated": b'{"agent": "1001", "callee": ',
        "not_json": b"agent=1001&callee=0821234567",
        "trailing_garbage": b'{"agent": "1001"} x',
        "invalid_utf8": b'{"agent": "\xff\xfe"}',
        "empty": b"",
    }

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, body in bodies.items():
                with cases.case(name):
                    response = await env.acme.post(PATH, content=body, headers=JSON)
                    assert_error(response, 400)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_non_finite_json_numbers_are_refused_not_a_500(tmp_path: Path) -> None:
    # NaN and Infinity are not JSON (RFC 8259): a malformed body.  1e400 is
    # JSON but no finite number: malformed or a type error, never a crash.
    bodies: dict[str, tuple[bytes, set[int]]] = {
        "NaN": (b'{"agent": NaN, "callee": "0821234567", "outbound_id": "27110000001"}', {400}),
        "Infinity": (b'{"agent": "1001", "callee": Infinity, "outbound_id": "27110000001"}', {400}),
        "-Infinity": (
            b'{"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",'
            b' "contact_ref": -Infinity}',
            {400},
        ),
        "1e400": (b'{"agent": 1e400, "callee": "0821234567", "outbound_id": "27110000001"}',
                  {400, 422}),
    }  # fmt: skip

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, (body, statuses) in bodies.items():
                with cases.case(name):
                    response = await env.acme.post(PATH, content=body, headers=JSON)
                    assert response.status_code in statuses, (
                        f"{response.status_code} {response.text}"
                    )
                    error = response.json()["error"]
                    assert error["status"] == response.status_code
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_json_bodies_that_are_not_objects_are_400(tmp_path: Path) -> None:
    bodies = ["[]", '[{"agent": "1001"}]', '"1001"', "1001", "null", "true"]

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for body in bodies:
                with cases.case(body):
                    response = await env.acme.post(PATH, content=body.encode(), headers=JSON)
                    assert_error(response, 400)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_malformed_form_bodies_are_400(tmp_path: Path) -> None:
    bodies = {
        "field_without_equals": b"agent",
        "last_field_without_equals": b"agent=1001&callee",
        "invalid_utf8": b"agent=\xff\xfe&callee=0821234567",
    }

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, body in bodies.items():
                with cases.case(name):
                    response = await env.acme.post(
                        PATH,
                        content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                    )
                    assert_error(response, 400)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_other_content_types_are_415(tmp_path: Path) -> None:
    valid_json = json.dumps(CALL).encode()

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            with cases.case("text/plain carrying valid JSON"):
                response = await env.acme.post(
                    PATH, content=valid_json, headers={"Content-Type": "text/plain"}
                )
                assert_error(response, 415)
            with cases.case("application/xml"):
                response = await env.acme.post(
                    PATH,
                    content=b"<call><agent>1001</agent></call>",
                    headers={"Content-Type": "application/xml"},
                )
                assert_error(response, 415)
            with cases.case("multipart/form-data"):
                response = await env.acme.post(
                    PATH, data={k: str(v) for k, v in CALL.items()}, files={"x": b"y"}
                )
                assert response.request.headers["content-type"].startswith("multipart/form-data")
                assert_error(response, 415)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def json_body_of_size(size: int) -> bytes:
    """A JSON object exactly ``size`` bytes long whose agent is invalid."""
    head, tail = b'{"agent": "x", "pad": "', b'"}'
    body = head + b"p" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    return body


def test_a_body_over_64_kib_is_413_and_one_of_64_kib_is_read(tmp_path: Path) -> None:
    async def main() -> None:
        async with bare(tmp_path) as env:
            over = await env.acme.post(PATH, content=json_body_of_size(MAX_BODY + 1),
                                       headers=JSON)  # fmt: skip
            assert_error(over, 413)
            # Exactly at the limit the body is parsed and validated.
            at_limit = await env.acme.post(PATH, content=json_body_of_size(MAX_BODY),
                                           headers=JSON)  # fmt: skip
            assert_error(at_limit, 422, [("agent", "pattern", "x"),
                                         ("callee", "required", None),
                                         ("outbound_id", "required", None)])  # fmt: skip
            assert await listed(env.acme) == []

    run(main())


# ---------------------------------------------------------------------------
# 422: the fields
# ---------------------------------------------------------------------------

FIELD_CASES: Final[list[tuple[str, dict[str, object], Expected]]] = [
    ("agent_too_short", body_with(agent="12"), [("agent", "pattern", "12")]),
    ("agent_with_plus", body_with(agent="+27821234567"), [("agent", "pattern", "+27821234567")]),
    ("agent_with_spaces", body_with(agent=" 1001"), [("agent", "pattern", " 1001")]),
    ("agent_missing", body_with(agent=DROP), [("agent", "required", None)]),
    ("agent_empty", body_with(agent=""), [("agent", "required", "")]),
    ("agent_boolean", body_with(agent=True), [("agent", "type", True)]),
    ("agent_decimal", body_with(agent=1001.0), [("agent", "type", 1001.0)]),
    ("agent_list", body_with(agent=["1001"]), [("agent", "type", ["1001"])]),
    ("agent_null", body_with(agent=None), [("agent", "type", None)]),
    ("callee_integer_lost_its_leading_0", body_with(callee=821234567),
     [("callee", "pattern", 821234567)]),
    ("callee_nine_digits", body_with(callee="082123456"), [("callee", "pattern", "082123456")]),
    ("callee_non_ascii_digits", body_with(callee="٠٨٢١٢٣٤٥٦٧"),
     [("callee", "pattern", "٠٨٢١٢٣٤٥٦٧")]),
    ("callee_missing", body_with(callee=DROP), [("callee", "required", None)]),
    ("callee_same_as_agent", body_with(agent=EXTERNAL_AGENT, callee=EXTERNAL_AGENT),
     [("callee", "same_as_agent", EXTERNAL_AGENT)]),
    ("extension_callee_for_an_external_agent", body_with(agent=EXTERNAL_AGENT, callee="1002"),
     [("callee", "call_type", "1002")]),
    ("outbound_id_pattern", body_with(outbound_id="12345"), [("outbound_id", "pattern", "12345")]),
    ("outbound_id_capital_random", body_with(outbound_id="Random"),
     [("outbound_id", "pattern", "Random")]),
    ("outbound_id_missing_without_default", body_with(outbound_id=DROP),
     [("outbound_id", "required", None)]),
    ("outbound_id_null", body_with(outbound_id=None), [("outbound_id", "type", None)]),
    ("contact_ref_with_a_space", body_with(contact_ref="ticket 4711"),
     [("contact_ref", "pattern", "ticket 4711")]),
    ("contact_ref_bad_character_past_230", body_with(contact_ref="a" * 240 + "!"),
     [("contact_ref", "pattern", "a" * 240 + "!")]),
    ("contact_ref_list", body_with(contact_ref=["a"]), [("contact_ref", "type", ["a"])]),
    ("legacy_call_ref_pattern", body_with(contact_ref=DROP, call_ref="bad ref"),
     [("call_ref", "pattern", "bad ref")]),
]  # fmt: skip


def test_each_bad_field_is_a_422_naming_field_rule_and_value(tmp_path: Path) -> None:
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, body, expected in FIELD_CASES:
                with cases.case(name):
                    assert_error(await env.acme.post(PATH, json=body), 422, expected)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_several_bad_fields_get_one_error_object_each(tmp_path: Path) -> None:
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            with cases.case("all four bad"):
                body = {"agent": "12", "callee": True, "outbound_id": "x",
                        "contact_ref": "a b"}  # fmt: skip
                assert_error(await env.acme.post(PATH, json=body), 422,
                             [("agent", "pattern", "12"), ("callee", "type", True),
                              ("outbound_id", "pattern", "x"),
                              ("contact_ref", "pattern", "a b")])  # fmt: skip
            with cases.case("empty object"):
                assert_error(await env.acme.post(PATH, json={}), 422,
                             [("agent", "required", None), ("callee", "required", None),
                              ("outbound_id", "required", None)])  # fmt: skip
            with cases.case("form with blank fields"):
                form = {"agent": "", "callee": "", "outbound_id": "", "contact_ref": "a/b"}
                assert_error(await env.acme.post(PATH, data=form), 422,
                             [("agent", "required", ""), ("callee", "required", ""),
                              ("outbound_id", "required", ""),
                              ("contact_ref", "pattern", "a/b")])  # fmt: skip
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


# ---------------------------------------------------------------------------
# 201: accepted forms, with their warnings, as stored and as dialled
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    body: dict[str, object]
    stored: dict[str, object]
    warnings: tuple[str, ...] = ()  # what each expected warning mentions
    form: bool = False
    extra: dict[str, object] = field(default_factory=dict)


ACCEPTED: Final[dict[str, Accepted]] = {
    "json_integers_are_numbers": Accepted(
        body={"agent": 1001, "callee": 27821234567, "outbound_id": 27110000001,
              "contact_ref": 4711},
        stored={"agent": "1001", "callee": "27821234567", "outbound_id": "27110000001",
                "outbound_id_requested": "27110000001", "contact_ref": "4711",
                "call_type": "outbound"},
    ),
    "form_urlencoded": Accepted(
        body=dict(CALL), form=True,
        stored={"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
                "contact_ref": CONTACT_REF},
    ),
    "contact_ref_over_230_truncated_with_a_warning": Accepted(
        body=body_with(contact_ref="r" * 300),
        stored={"contact_ref": "r" * 230}, warnings=("230",),
    ),
    "national_outbound_id_accepted_with_a_warning": Accepted(
        body=body_with(outbound_id="0110000001"),
        stored={"outbound_id": "0110000001", "outbound_id_requested": "0110000001"},
        warnings=("0110000001",),
    ),
    "legacy_call_ref_used_as_contact_ref": Accepted(
        body=body_with(contact_ref=DROP, call_ref="legacy-4711"),
        stored={"contact_ref": "legacy-4711"}, warnings=("call_ref",),
    ),
    "contact_ref_wins_over_legacy_call_ref": Accepted(
        body=body_with(contact_ref="new-4711", call_ref="old-4711"),
        stored={"contact_ref": "new-4711"}, warnings=("call_ref",),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_request_is_201_stored_and_dialled_as_documented(
    tmp_path: Path, case: Accepted
) -> None:
    async def main() -> None:
        with Sipp("agent_busy") as agent:  # the call ends at once
            async with running(tmp_path, agent_port=agent.port, trunk_port=None) as env:
                if case.form:
                    response = await env.acme.post(PATH, data=case.body)
                else:
                    response = await env.acme.post(PATH, json=case.body)
                call = created(response)
                for name, value in case.stored.items():
                    assert call[name] == value, (name, call)
                assert call["status"] == "agent_ringing" and call["source"] == "api"
                assert call["call_ref"] not in ("legacy-4711", "old-4711")  # always our own id
                assert_warnings(call["warnings"], case.warnings)
                await env.wait_ended(call["call_ref"])
                assert (await env.state(call["call_ref"]))["warnings"] == call["warnings"]
                await sipp_ok(agent)
            (invite,) = LoggedInvite.parse_all(agent.logs())
            assert invite.callref == call["call_ref"]
            assert invite.contactref == call["contact_ref"]
            assert invite.outboundid == call["outbound_id"]

    run(main())


# ---------------------------------------------------------------------------
# 401: credentials
# ---------------------------------------------------------------------------


def test_requests_without_authorization_are_401_even_from_loopback(tmp_path: Path) -> None:
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            requests: dict[str, tuple[str, str, dict[str, Any]]] = {
                "POST calls": ("POST", PATH, {"json": dict(CALL)}),
                "POST calls, malformed body": ("POST", PATH, {"content": b"{", "headers": JSON}),
                "GET calls": ("GET", PATH, {}),
                "GET a call": ("GET", f"{PATH}/{UNKNOWN_REF}", {}),
                "DELETE a call": ("DELETE", f"{PATH}/{UNKNOWN_REF}", {}),
                "GET call.php": ("GET", "/call.php", {"params": CALL_PARAMS}),
            }  # fmt: skip
            async with httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous:
                for name, (method, url, kwargs) in requests.items():
                    with cases.case(name):
                        response = await anonymous.request(method, url, **kwargs)
                        assert_error(response, 401)
                        assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_wrong_or_malformed_credentials_are_401(tmp_path: Path) -> None:
    headers = {
        "wrong_key": "Bearer wrong-key-0123456789abcdef",
        "key_missing_its_last_character": f"Bearer {ACME_KEY[:-1]}",
        "key_with_an_extra_character": f"Bearer {ACME_KEY}x",
        "basic_scheme": "Basic YWNtZTphY21lLWtleQ==",
        "key_without_scheme": ACME_KEY,
        "other_scheme_with_the_key": f"Token {ACME_KEY}",
        "bearer_without_token": "Bearer",
        "bearer_glued_to_the_key": f"Bearer:{ACME_KEY}",
        "key_sent_twice": f"Bearer {ACME_KEY} {ACME_KEY}",
    }

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            async with httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as client:
                for name, value in headers.items():
                    with cases.case(name):
                        response = await client.post(
                            PATH, json=dict(CALL), headers={"Authorization": value}
                        )
                        assert_error(response, 401)
                        assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


# ---------------------------------------------------------------------------
# 403: what the integrator's configuration forbids
# ---------------------------------------------------------------------------

FORBIDDEN: Final[dict[str, tuple[str, str, dict[str, object], Expected]]] = {
    "caller_id_outside_allowed_outbound_ids": (
        'allowed_outbound_ids = ["2711*"]', "acme", body_with(outbound_id="27990000001"),
        [("outbound_id", "not_allowed", "27990000001")],
    ),
    "agent_outside_allowed_agents": (
        'allowed_agents = ["10*"]', "acme", body_with(agent="2001"),
        [("agent", "not_allowed", "2001")],
    ),
    "external_agent_when_only_outbound_calls_are_enabled": (
        'call_types = ["outbound"]', "acme", body_with(agent=EXTERNAL_AGENT),
        [("agent", "call_type", EXTERNAL_AGENT)],
    ),
    "internal_call_when_not_enabled": (
        "", "acme", body_with(callee="1002"), [("callee", "not_allowed", "1002")],
    ),
    "random_without_a_caller_id_pool": (
        "", "beta", body_with(outbound_id="random"), [("outbound_id", "no_pool", "random")],
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("acme", "who", "body", "expected"), list(FORBIDDEN.values()), ids=list(FORBIDDEN)
)
def test_forbidden_call_is_403_naming_field_rule_and_value(
    tmp_path: Path, acme: str, who: str, body: dict[str, object], expected: Expected
) -> None:
    async def main() -> None:
        async with bare(tmp_path, acme=acme) as env:
            client = env.acme if who == "acme" else env.beta
            assert_error(await client.post(PATH, json=body), 403, expected)
            assert await listed(client) == []

    run(main())


# ---------------------------------------------------------------------------
# 409: one live call per agent
# ---------------------------------------------------------------------------


def test_agent_with_a_live_call_is_409_naming_that_call(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent:  # rings until cancelled
            async with running(tmp_path, agent_port=agent.port, trunk_port=None) as env:
                ref = created(await env.place())["call_ref"]
                await wait_invites(agent, 1)
                busy = await env.place(callee="27821234567", contact_ref="second-click")
                error = assert_error(busy, 409, [("agent", "busy", "1001")])
                assert error["call_ref"] == ref
                assert await listed(env.acme) == [ref]
                deleted = await env.acme.delete(f"{PATH}/{ref}")
                assert deleted.json()["status"] == "ended"
                await sipp_ok(agent)
            assert invited_refs(agent) == [ref]

    run(main())


# ---------------------------------------------------------------------------
# 429: limits
# ---------------------------------------------------------------------------


def test_max_cps_is_429_with_retry_after_and_refusals_use_no_dial(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_busy", calls=2) as agent:
            async with running(
                tmp_path, agent_port=agent.port, trunk_port=None, acme="max_cps = 1"
            ) as env:
                clock = freeze_rate_clock(env)
                # Refused before the limit: neither takes the one dial of this second.
                assert_error(await env.place(agent="12"), 422, [("agent", "pattern", "12")])
                assert_error(await env.place(callee="1002"), 403,
                             [("callee", "not_allowed", "1002")])  # fmt: skip
                first = created(await env.place())["call_ref"]
                await env.wait_ended(first)
                over = await env.place()
                assert_error(over, 429)
                assert over.headers["retry-after"] == "1"
                assert_error(await env.place(), 429)  # still within the same second
                clock.now += 1  # refused requests did not push the next dial further away
                second = created(await env.place())["call_ref"]
                await env.wait_ended(second)
                await sipp_ok(agent)
                assert await listed(env.acme) == [second, first]
            assert invited_refs(agent) == [first, second]

    run(main())


def test_a_409_refusal_does_not_use_up_the_calls_per_second(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent, Sipp("agent_busy") as mobile:
            async with running(
                tmp_path, agent_port=agent.port, trunk_port=mobile.port, acme="max_cps = 1"
            ) as env:
                clock = freeze_rate_clock(env)
                ringing = created(await env.place())["call_ref"]
                await wait_invites(agent, 1)
                clock.now += 1  # one dial is available again
                assert_error(await env.place(), 409, [("agent", "busy", "1001")])
                # The 409 dialled nothing, so this second's dial is still there.
                other = created(await env.place(agent=EXTERNAL_AGENT))["call_ref"]
                await env.wait_ended(other)
                await env.acme.delete(f"{PATH}/{ringing}")
                await sipp_ok(agent, mobile)

    run(main())


def test_max_concurrent_is_429_with_retry_after_until_a_call_ends(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer", calls=2) as agent:
            async with running(
                tmp_path, agent_port=agent.port, trunk_port=None, acme="max_concurrent = 1"
            ) as env:
                first = created(await env.place())["call_ref"]
                await wait_invites(agent, 1)
                over = await env.place(agent=EXTERNAL_AGENT)
                assert_error(over, 429)
                assert int(over.headers["retry-after"]) >= 1
                assert (await env.acme.delete(f"{PATH}/{first}")).json()["status"] == "ended"
                second = created(await env.place())["call_ref"]
                await wait_invites(agent, 2)
                assert (await env.acme.delete(f"{PATH}/{second}")).json()["status"] == "ended"
                await sipp_ok(agent)
                assert await listed(env.acme) == [second, first]
            assert invited_refs(agent) == [first, second]

    run(main())


def test_a_429_over_max_concurrent_does_not_use_up_the_calls_per_second(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent, Sipp("agent_busy") as mobile:
            async with running(
                tmp_path, agent_port=agent.port, trunk_port=mobile.port,
                acme="max_cps = 1\nmax_concurrent = 1",
            ) as env:  # fmt: skip
                clock = freeze_rate_clock(env)
                first = created(await env.place())["call_ref"]
                await wait_invites(agent, 1)
                clock.now += 1  # one dial is available again
                assert_error(await env.place(agent=EXTERNAL_AGENT), 429)  # concurrency
                assert (await env.acme.delete(f"{PATH}/{first}")).json()["status"] == "ended"
                # The refused request dialled nothing: this second's dial is still there.
                other = created(await env.place(agent=EXTERNAL_AGENT))["call_ref"]
                await env.wait_ended(other)
                await sipp_ok(agent, mobile)

    run(main())


# ---------------------------------------------------------------------------
# 404 / 405
# ---------------------------------------------------------------------------


def test_unknown_call_ref_and_unknown_path_are_404(tmp_path: Path) -> None:
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            with cases.case("GET unknown call_ref"):
                assert_error(await env.acme.get(f"{PATH}/{UNKNOWN_REF}"), 404)
            with cases.case("DELETE unknown call_ref"):
                assert_error(await env.acme.delete(f"{PATH}/{UNKNOWN_REF}"), 404)
            with cases.case("GET call_ref that is no uuid"):
                assert_error(await env.acme.get(f"{PATH}/not-a-call"), 404)
            async with httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous:
                for path in ("/click2dial/call", f"{PATH}/{UNKNOWN_REF}/legs", "/nope"):
                    with cases.case(f"GET {path} with a key"):
                        assert_error(await env.acme.get(path), 404)
                    with cases.case(f"GET {path} without a key"):
                        assert_error(await anonymous.get(path), 404)
        cases.verify()

    run(main())


WRONG_METHODS: Final[list[tuple[str, str, set[str]]]] = [
    ("PUT", PATH, {"GET", "POST"}),
    ("DELETE", PATH, {"GET", "POST"}),
    ("PATCH", f"{PATH}/{UNKNOWN_REF}", {"GET", "DELETE"}),
    ("POST", f"{PATH}/{UNKNOWN_REF}", {"GET", "DELETE"}),
    ("POST", "/call.php", {"GET"}),
    ("POST", "/healthz", {"GET"}),
    ("DELETE", "/openapi.json", {"GET"}),
]


def test_wrong_method_is_405(tmp_path: Path) -> None:
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for method, path, _ in WRONG_METHODS:
                with cases.case(f"{method} {path}"):
                    assert_error(await env.acme.request(method, path), 405)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_a_405_names_the_allowed_methods_in_allow(tmp_path: Path) -> None:
    # RFC 9110 §15.5.6: a 405 response MUST carry Allow.
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for method, path, allowed in WRONG_METHODS:
                with cases.case(f"{method} {path}"):
                    response = await env.acme.request(method, path)
                    assert response.status_code == 405
                    assert "allow" in response.headers, dict(response.headers)
                    methods = {m.strip().upper() for m in response.headers["allow"].split(",")}
                    assert allowed <= methods and method not in methods, methods
        cases.verify()

    run(main())


# ---------------------------------------------------------------------------
# Isolation between integrators
# ---------------------------------------------------------------------------


def test_an_integrator_cannot_see_or_end_another_integrators_call(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent, Sipp("agent_busy") as mobile:
            async with running(tmp_path, agent_port=agent.port, trunk_port=mobile.port) as env:
                key = {"Idempotency-Key": "crm-click-1"}
                ref = created(await env.acme.post(PATH, json=dict(CALL), headers=key))["call_ref"]
                await wait_invites(agent, 1)
                assert_error(await env.beta.get(f"{PATH}/{ref}"), 404)
                assert_error(await env.beta.delete(f"{PATH}/{ref}"), 404)
                assert (await env.state(ref))["status"] == "agent_ringing"  # still ringing
                # Idempotency keys are per integrator: beta's same key is beta's own call.
                body = body_with(agent=EXTERNAL_AGENT)
                theirs = created(await env.beta.post(PATH, json=body, headers=key))["call_ref"]
                assert theirs != ref
                await wait_ended(env.beta, theirs)
                assert await listed(env.beta) == [theirs]
                assert await listed(env.beta, agent="1001") == []
                assert await listed(env.beta, contact_ref=CONTACT_REF) == [theirs]
                assert await listed(env.acme) == [ref]
                assert_error(await env.acme.get(f"{PATH}/{theirs}"), 404)
                assert (await env.acme.delete(f"{PATH}/{ref}")).json()["hangup_side"] == "api"
                await sipp_ok(agent, mobile)
            assert invited_refs(agent) == [ref]
            assert invited_refs(mobile) == [theirs]

    run(main())


# ---------------------------------------------------------------------------
# Idempotency-Key
# ---------------------------------------------------------------------------


def test_a_repeated_idempotency_key_returns_the_first_call_and_dials_once(tmp_path: Path) -> None:
    async def main() -> None:
        key = {"Idempotency-Key": "k" * 255}  # the longest key allowed
        with Sipp("agent_no_answer") as agent:
            async with running(tmp_path, agent_port=agent.port, trunk_port=None) as env:
                # A refused request is not remembered under its key.
                refused = await env.acme.post(PATH, json=body_with(agent="12"), headers=key)
                assert_error(refused, 422, [("agent", "pattern", "12")])
                first = await env.acme.post(PATH, json=dict(CALL), headers=key)
                call = created(first)
                await wait_invites(agent, 1)
                # The repeat's body is not compared, and the live call is no 409.
                repeat = await env.acme.post(PATH, json=body_with(callee="27821234567"),
                                             headers=key)  # fmt: skip
                assert repeat.status_code == 200, repeat.text
                assert repeat.headers["idempotent-replayed"] == "true"
                assert repeat.headers["location"] == first.headers["location"]
                replayed = repeat.json()
                assert replayed["call_ref"] == call["call_ref"]
                assert replayed["callee"] == "0821234567"
                assert await listed(env.acme) == [call["call_ref"]]
                await env.acme.delete(f"{PATH}/{call['call_ref']}")
                await sipp_ok(agent)
            assert invited_refs(agent) == [call["call_ref"]]

    run(main())


def test_a_new_idempotency_key_dials_again(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_busy", calls=2) as agent:
            async with running(tmp_path, agent_port=agent.port, trunk_port=None) as env:
                one = {"Idempotency-Key": "crm-click-1"}
                first = created(await env.acme.post(PATH, json=dict(CALL), headers=one))
                await env.wait_ended(first["call_ref"])
                repeat = await env.acme.post(PATH, json=dict(CALL), headers=one)
                assert repeat.status_code == 200, repeat.text
                assert repeat.headers["idempotent-replayed"] == "true"
                assert repeat.json()["call_ref"] == first["call_ref"]
                assert repeat.json()["status"] == "ended"  # the first call, as it is now
                two = {"Idempotency-Key": "crm-click-2"}
                second = created(await env.acme.post(PATH, json=dict(CALL), headers=two))
                assert second["call_ref"] != first["call_ref"]
                await env.wait_ended(second["call_ref"])
                await sipp_ok(agent)
            assert invited_refs(agent) == [first["call_ref"], second["call_ref"]]

    run(main())


def test_idempotency_key_outside_1_to_255_characters_is_400(tmp_path: Path) -> None:
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for key in ("", "k" * 256):
                with cases.case(f"{len(key)} characters"):
                    response = await env.acme.post(
                        PATH, json=dict(CALL), headers={"Idempotency-Key": key}
                    )
                    assert_error(response, 400, [("Idempotency-Key", "length", key)])
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


# ---------------------------------------------------------------------------
# outbound_id "random"
# ---------------------------------------------------------------------------


def test_random_presents_a_caller_id_from_the_integrators_pool(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer_hangup") as trunk:
            async with running(tmp_path, agent_port=agent.port, trunk_port=trunk.port) as env:
                call = created(await env.place(outbound_id="random"))
                number = call["outbound_id"]
                assert number in ACME_POOL
                assert call["outbound_id_requested"] == "random"
                ended = await env.wait_ended(call["call_ref"])
                assert ended["outbound_id"] == number
                assert ended["end_reason"] == "callee_hungup"
                await sipp_ok(agent, trunk)
            (at_trunk,) = LoggedInvite.parse_all(trunk.logs())
            assert f"<sip:{number}@" in at_trunk.from_
            assert f"sip:{number}@" in at_trunk.pai
            assert at_trunk.outboundid == number
            assert at_trunk.callref == call["call_ref"]

    run(main())


# ---------------------------------------------------------------------------
# GET /click2dial/calls
# ---------------------------------------------------------------------------


def test_listing_is_newest_first_filtered_and_paginated(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_busy", calls=2) as agent, Sipp("agent_busy") as mobile:
            async with running(tmp_path, agent_port=agent.port, trunk_port=mobile.port) as env:
                refs: list[str] = []
                for fields in ({"contact_ref": "list-a"},
                               {"agent": EXTERNAL_AGENT, "contact_ref": "list-b"},
                               {"contact_ref": "list-a"}):  # fmt: skip
                    refs.append(created(await env.place(**fields))["call_ref"])
                    await env.wait_ended(refs[-1])
                await sipp_ok(agent, mobile)
                c1, c2, c3 = refs
                whole = await page(env.acme)
                assert [c["call_ref"] for c in whole["calls"]] == [c3, c2, c1]
                assert whole["next_cursor"] is None
                assert whole["calls"][0] == await env.state(c3)  # the call, as GET shows it
                since = repr((await env.state(c2))["created_at"])

                assert await listed(env.acme, contact_ref="list-a") == [c3, c1]
                assert await listed(env.acme, contact_ref="list-b") == [c2]
                assert await listed(env.acme, contact_ref="nothing") == []
                assert await listed(env.acme, agent="1001") == [c3, c1]
                assert await listed(env.acme, agent=EXTERNAL_AGENT) == [c2]
                assert await listed(env.acme, since=since) == [c3, c2]  # at or after
                assert await listed(env.acme, contact_ref="list-a", since=since) == [c3]

                pages: list[list[str]] = []
                cursor: str | None = None
                while True:
                    params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
                    current = await page(env.acme, **params)
                    pages.append([c["call_ref"] for c in current["calls"]])
                    cursor = current["next_cursor"]
                    if cursor is None:
                        break
                    assert len(pages) < 5, pages
                assert pages == [[c3], [c2], [c1]]

                first = await page(env.acme, limit="2")
                assert [c["call_ref"] for c in first["calls"]] == [c3, c2]
                rest = await page(env.acme, limit="2", cursor=first["next_cursor"])
                assert [c["call_ref"] for c in rest["calls"]] == [c1]
                assert rest["next_cursor"] is None

                filtered = await page(env.acme, contact_ref="list-a", limit="1")
                assert [c["call_ref"] for c in filtered["calls"]] == [c3]
                tail = await page(env.acme, contact_ref="list-a", limit="1",
                                  cursor=filtered["next_cursor"])  # fmt: skip
                assert [c["call_ref"] for c in tail["calls"]] == [c1]
                assert tail["next_cursor"] is None

    run(main())


def test_bad_limit_since_or_cursor_is_422_naming_the_parameter(tmp_path: Path) -> None:
    queries: dict[str, tuple[dict[str, str], Expected]] = {
        "limit 0": ({"limit": "0"}, [("limit", "range", "0")]),
        "limit 501": ({"limit": "501"}, [("limit", "range", "501")]),
        "limit -1": ({"limit": "-1"}, [("limit", "range", "-1")]),
        "limit 1.5": ({"limit": "1.5"}, [("limit", "range", "1.5")]),
        "limit ten": ({"limit": "ten"}, [("limit", "range", "ten")]),
        "limit empty": ({"limit": ""}, [("limit", "range", "")]),
        "since word": ({"since": "yesterday"}, [("since", "type", "yesterday")]),
        "since empty": ({"since": ""}, [("since", "type", "")]),
        "cursor garbage": ({"cursor": "garbage"}, [("cursor", ANY_RULE, "garbage")]),
        "cursor of valid base64 but no cursor": ({"cursor": "e30"}, [("cursor", ANY_RULE, "e30")]),
        "limit and since": ({"limit": "0", "since": "x"},
                            [("limit", "range", "0"), ("since", "type", "x")]),
    }  # fmt: skip

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, (params, expected) in queries.items():
                with cases.case(name):
                    assert_error(await env.acme.get(PATH, params=params), 422, expected)
        cases.verify()

    run(main())


def test_limit_of_non_ascii_digits_and_since_nan_are_422(tmp_path: Path) -> None:
    # Python's str.isdigit() and float() accept these; the API's rules do not:
    # limit is an integer 1-500 in ASCII digits, since is a number.
    queries: dict[str, tuple[dict[str, str], Expected]] = {
        "limit superscript two": ({"limit": "²"}, [("limit", "range", "²")]),
        "limit arabic-indic three": ({"limit": "٣"}, [("limit", "range", "٣")]),
        "since nan": ({"since": "nan"}, [("since", "type", "nan")]),
    }

    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            for name, (params, expected) in queries.items():
                with cases.case(name):
                    assert_error(await env.acme.get(PATH, params=params), 422, expected)
        cases.verify()

    run(main())


# ---------------------------------------------------------------------------
# The deprecated GET /call.php
# ---------------------------------------------------------------------------


def assert_deprecated(response: httpx.Response) -> None:
    assert response.headers.get("deprecation") == "true", dict(response.headers)
    assert response.headers.get("link") == SUCCESSOR_LINK, dict(response.headers)


def test_call_php_places_and_replays_a_call_with_deprecation_headers(tmp_path: Path) -> None:
    async def main() -> None:
        params = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
                  "call_ref": "legacy-4711"}  # fmt: skip
        key = {"Idempotency-Key": "php-click-1"}
        with Sipp("agent_busy") as agent:
            async with running(tmp_path, agent_port=agent.port, trunk_port=None) as env:
                response = await env.acme.get("/call.php", params=params, headers=key)
                call = created(response)
                assert_deprecated(response)
                assert call["contact_ref"] == "legacy-4711"
                assert call["call_ref"] != "legacy-4711"
                assert call["agent"] == "1001" and call["callee"] == "0821234567"
                assert_warnings(call["warnings"], ("call_ref",))
                repeat = await env.acme.get("/call.php", params=params, headers=key)
                assert repeat.status_code == 200, repeat.text
                assert repeat.headers["idempotent-replayed"] == "true"
                assert repeat.json()["call_ref"] == call["call_ref"]
                assert_deprecated(repeat)
                await env.wait_ended(call["call_ref"])
                await sipp_ok(agent)
            (invite,) = LoggedInvite.parse_all(agent.logs())
            assert invite.callref == call["call_ref"]
            assert invite.contactref == "legacy-4711"

    run(main())


def test_call_php_errors_carry_deprecation_headers(tmp_path: Path) -> None:
    async def main() -> None:
        cases = Cases()
        async with bare(tmp_path) as env:
            with cases.case("422"):
                response = await env.acme.get(
                    "/call.php", params={"agent": "12", "callee": "0821234567"}
                )
                assert_error(
                    response, 422, [("agent", "pattern", "12"), ("outbound_id", "required", None)]
                )
                assert_deprecated(response)  # fmt: skip
            with cases.case("403"):
                params = {"agent": "1001", "callee": "1002", "outbound_id": "27110000001"}
                response = await env.acme.get("/call.php", params=params)
                assert_error(response, 403, [("callee", "not_allowed", "1002")])
                assert_deprecated(response)
            assert await listed(env.acme) == []
        cases.verify()

    run(main())


def test_call_php_401_carries_deprecation_headers(tmp_path: Path) -> None:
    async def main() -> None:
        async with bare(tmp_path) as env:
            headers = {"Authorization": "Bearer wrong-key-0123456789abcdef"}
            response = await env.acme.get("/call.php", params=CALL_PARAMS, headers=headers)
            assert_error(response, 401)
            assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
            assert_deprecated(response)

    run(main())


# ---------------------------------------------------------------------------
# Operations endpoints
# ---------------------------------------------------------------------------


def test_health_readiness_and_openapi_need_no_key(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            bare(tmp_path) as env,
            httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous,
        ):
            health = await anonymous.get("/healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            ready = await anonymous.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {
                "status": "ready",
                "checks": {"service": "ok", "store": "ok", "sip": "ok"},
                "not_ready": [],
            }
            document = await anonymous.get("/openapi.json")
            assert document.status_code == 200
            spec = document.json()
            assert str(spec["openapi"]).startswith("3.1")
            assert {"get", "post"} <= set(spec["paths"][PATH])
            assert {"get", "delete"} <= set(spec["paths"][f"{PATH}/{{call_ref}}"])

    run(main())
