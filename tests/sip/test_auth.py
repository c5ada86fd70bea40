"""Digest authentication: header grammar, RFC known answers, client/server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from click2dial.sip.auth import (
    CLIENT_NONCE_MEMORY,
    AuthResult,
    Challenge,
    DigestClient,
    DigestServer,
    UnsupportedAuthError,
    parse_challenge,
    parse_challenges,
    parse_credentials,
    select_challenges,
)
from click2dial.sip.errors import SipError, SipParseError

SECRET = b"0123456789abcdef-test-secret"
NOW = 1_700_000_000.0
ALGORITHMS = ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"]


def fixed(cnonce: str) -> Callable[[], str]:
    return lambda: cnonce


def passwords(table: dict[str, str]) -> Callable[[str], str | None]:
    return table.get


# -- known answers -------------------------------------------------------------

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_section_3_5() -> None:
    client = DigestClient("Mufasa", "Circle Of Life", cnonce_factory=fixed("0a4f113b"))
    value = client.authorization(RFC2617_CHALLENGE, "GET", "/dir/index.html")
    params = parse_credentials(value)
    assert params == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "response": "6629fae49393a05397450978507c4ef1",
        "algorithm": "MD5",
        "cnonce": "0a4f113b",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
        "qop": "auth",
        "nc": "00000001",
    }
    assert value.startswith('Digest username="Mufasa", realm="testrealm@host.com", ')
    assert ", qop=auth, nc=00000001" in value


RFC7616_CHALLENGE = """Digest
    realm="http-auth@example.org",
    qop="auth, auth-int",
    algorithm=SHA-256,
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""""
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1(algorithm: str, response: str) -> None:
    challenge = parse_challenge(RFC7616_CHALLENGE.replace("SHA-256", algorithm))
    assert challenge.qop == ["auth", "auth-int"]
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=fixed(RFC7616_CNONCE))
    params = parse_credentials(client.authorization(challenge, "GET", "/dir/index.html"))
    assert params["response"] == response
    assert params["algorithm"] == algorithm
    assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_rfc2069_response_without_qop() -> None:
    # RFC 2069 §2.4: response = H(H(A1):nonce:H(A2)), no cnonce or nc.
    client = DigestClient("Mufasa", "CircleOfLife")
    value = client.authorization(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"',
        "GET",
        "/dir/index.html",
    )
    params = parse_credentials(value)
    assert params["response"] == "1949323746fe6a43ef61f9606e7febea"
    assert "qop" not in params and "nc" not in params and "cnonce" not in params
    assert "opaque" not in params


# -- client behaviour -----------------------------------------------------------


def test_nonce_count_increments_per_nonce_and_resets_on_new_nonce() -> None:
    client = DigestClient("alice", "pw")
    first = 'Digest realm="r", nonce="n1", qop="auth"'
    second = 'Digest realm="r", nonce="n2", qop="auth"'
    ncs = [
        parse_credentials(client.authorization(c, "REGISTER", "sip:r"))["nc"]
        for c in (first, first, first, second, first)
    ]
    assert ncs == ["00000001", "00000002", "00000003", "00000001", "00000004"]


def test_cnonce_is_random_by_default() -> None:
    client = DigestClient("alice", "pw")
    challenge = 'Digest realm="r", nonce="n", qop="auth"'
    cnonces = {parse_credentials(client.authorization(challenge, "X", "u"))["cnonce"]}
    cnonces.add(parse_credentials(client.authorization(challenge, "X", "u"))["cnonce"])
    assert len(cnonces) == 2
    assert all(len(c) >= 16 for c in cnonces)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_auth_int_when_only_auth_int_offered() -> None:
    client = DigestClient("alice", "pw", cnonce_factory=fixed("c"))
    body = b"v=0\r\n\xff"
    params = parse_credentials(
        client.authorization('Digest realm="r", nonce="n", qop="auth-int"', "INVITE", "sip:b", body)
    )
    assert params["qop"] == "auth-int"
    ha1 = _md5(b"alice:r:pw")
    ha2 = _md5(b"INVITE:sip:b:" + _md5(body).encode())
    expected = _md5(f"{ha1}:n:00000001:c:auth-int:{ha2}".encode())
    assert params["response"] == expected


def test_values_with_quotes_are_escaped() -> None:
    client = DigestClient('al"ice', "pw", cnonce_factory=fixed("c"))
    value = client.authorization(r'Digest realm="a\"b", nonce="n", qop=auth', "X", "sip:u")
    assert r'username="al\"ice"' in value
    params = parse_credentials(value)
    assert params["username"] == 'al"ice'
    assert params["realm"] == 'a"b'


@pytest.mark.parametrize(
    "challenge",
    [
        'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n", algorithm=AKAv1-MD5, qop="auth"',
        'Digest realm="r", nonce="n", qop="auth-conf"',
        'Digest realm="r", nonce="n", algorithm=MD5-sess',
        'Basic realm="r"',
    ],
)
def test_unanswerable_challenges_raise_unsupported(challenge: str) -> None:
    parsed = parse_challenge(challenge)
    assert not parsed.supported
    with pytest.raises(UnsupportedAuthError) as info:
        DigestClient("a", "b").authorization(parsed, "INVITE", "sip:x")
    assert isinstance(info.value, SipError)
    assert not isinstance(info.value, SipParseError)


def test_algorithm_is_case_insensitive_and_echoed() -> None:
    client = DigestClient("a", "b")
    value = client.authorization('Digest realm="r", nonce="n", algorithm=sha-256', "X", "u")
    assert parse_credentials(value)["algorithm"] == "sha-256"


# -- header grammar --------------------------------------------------------------


def test_parse_challenge_fields() -> None:
    c = parse_challenge(
        'Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
    )
    assert c == Challenge(
        scheme="Digest",
        realm="atlanta.com",
        nonce="f84f1cec41e6cbe5aea9c8e88d359",
        opaque="",
        algorithm="MD5",
        qop=["auth"],
        stale=False,
    )
    assert parse_challenge('digest realm=r,nonce=n/+a==,stale="true"').stale
    assert parse_challenge("digest realm=r,nonce=n/+a==").nonce == "n/+a=="


def test_parse_challenge_defaults_and_other_schemes() -> None:
    c = parse_challenge('Digest nonce="n", realm="r"')
    assert (c.algorithm, c.qop, c.opaque, c.stale) == ("MD5", [], None, False)
    basic = parse_challenge('Basic realm="r"')
    assert (basic.scheme, basic.realm, basic.nonce) == ("Basic", "r", "")


def test_parse_challenges_splits_several_in_one_value() -> None:
    value = (
        'Digest realm="r", nonce="a", algorithm=SHA-256, qop="auth", '
        'Digest realm="r", nonce="b", algorithm=MD5, qop="auth"'
    )
    assert [c.nonce for c in parse_challenges(value)] == ["a", "b"]
    with pytest.raises(SipParseError):
        parse_challenge(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        ",,",
        'realm="r"',
        'Digest realm="r", nonce="n',
        'Digest realm="r" nonce="n"',
        'Digest realm="r", nonce=',
        'Digest realm="r", nonce="n" x',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r", realm="s", nonce="n"',
        '"Digest" realm="r", nonce="n"',
        'Digest@ realm="r", nonce="n"',
    ],
)
def test_parse_challenge_rejects_garbage(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_challenge(value)


def test_parse_credentials() -> None:
    params = parse_credentials(
        'Digest USERNAME="bob", realm="biloxi.com", nonce="dcd98b", '
        'uri="sip:bob@biloxi.com", Response="245f2341", qop=auth, nc=00000001, '
        'cnonce="0a4f113b", opaque=""'
    )
    assert params == {
        "username": "bob",
        "realm": "biloxi.com",
        "nonce": "dcd98b",
        "uri": "sip:bob@biloxi.com",
        "response": "245f2341",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "opaque": "",
    }


@pytest.mark.parametrize(
    "value",
    [
        'Basic username="x"',
        'Digest username="a", username="b"',
        'Digest username="a", Digest username="b"',
        "Digest username=",
        'Digest username="a',
    ],
)
def test_parse_credentials_rejects(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_credentials(value)


def test_select_challenges_topmost_supported_per_realm() -> None:
    challenges = [
        parse_challenge('Digest realm="a", nonce="1", algorithm=SHA-512-256, qop="auth"'),
        parse_challenge('Digest realm="a", nonce="2", algorithm=SHA-256, qop="auth"'),
        parse_challenge('Digest realm="a", nonce="3", algorithm=MD5, qop="auth"'),
        parse_challenge('Digest realm="proxy", nonce="4", qop="auth"'),
        parse_challenge('Basic realm="other"'),
    ]
    assert [c.nonce for c in select_challenges(challenges)] == ["2", "4"]
    assert select_challenges(challenges[:1]) == []


_AUTH_ALPHABET = st.sampled_from([*'Digest realm=nonce,"\\ \t\r\nq/+', "\u00e9", "\x00"])


@settings(max_examples=500)
@given(st.text(max_size=200) | st.text(alphabet=_AUTH_ALPHABET, max_size=80))
def test_property_parsers_only_raise_sip_parse_error(value: str) -> None:
    for parse in (parse_challenges, parse_credentials):
        with contextlib.suppress(SipParseError):
            parse(value)
    server = DigestServer("r", SECRET)
    assert not server.verify("INVITE", value, passwords({"a": "b"}), now=NOW).ok


# -- server --------------------------------------------------------------------


def _round_trip(
    server: DigestServer,
    client: DigestClient,
    *,
    algorithm: str = "MD5",
    issued_at: float = NOW,
    checked_at: float = NOW,
    table: dict[str, str] | None = None,
    method: str = "INVITE",
) -> AuthResult:
    challenge = server.challenge(algorithm=algorithm, now=issued_at)
    value = client.authorization(challenge, method, "sip:bob@example.com")
    return server.verify(method, value, passwords(table or {"alice": "secret"}), now=checked_at)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_every_algorithm(algorithm: str) -> None:
    server = DigestServer("example.com", SECRET)
    result = _round_trip(server, DigestClient("alice", "secret"), algorithm=algorithm)
    assert result == AuthResult(True, "alice", "ok", False)


def test_challenge_format() -> None:
    server = DigestServer("example.com", SECRET, 60)
    value = server.challenge(now=NOW)
    c = parse_challenge(value)
    assert (c.realm, c.algorithm, c.qop, c.stale, c.opaque) == (
        "example.com",
        "MD5",
        ["auth"],
        False,
        None,
    )
    assert value.startswith('Digest realm="example.com", nonce="')
    assert value.endswith(', algorithm=MD5, qop="auth"')
    assert server.challenge(stale=True, now=NOW).endswith(", stale=true")
    assert parse_challenge(server.challenge(stale=True, now=NOW)).stale
    assert parse_challenge(server.challenge(algorithm="sha-256-SESS")).algorithm == "SHA-256-sess"
    # Two challenges in the same second still get distinct nonces.
    assert parse_challenge(server.challenge(now=NOW)).nonce != c.nonce
    with pytest.raises(UnsupportedAuthError):
        server.challenge(algorithm="SHA-512-256")


def test_server_constructor_validation() -> None:
    with pytest.raises(ValueError):
        DigestServer("r", b"short")
    with pytest.raises(ValueError):
        DigestServer("r", SECRET, 0)
    with pytest.raises(ValueError):
        DigestServer("r", SECRET, max_tracked_nonces=0)


def test_wrong_password() -> None:
    server = DigestServer("example.com", SECRET)
    result = _round_trip(server, DigestClient("alice", "guess"))
    assert result == AuthResult(False, "alice", "bad response", False)


def test_unknown_user() -> None:
    server = DigestServer("example.com", SECRET)
    result = _round_trip(server, DigestClient("mallory", "x"))
    assert result == AuthResult(False, "mallory", "no such user", False)


def test_method_is_covered_by_the_response() -> None:
    server = DigestServer("example.com", SECRET)
    challenge = server.challenge(now=NOW)
    value = DigestClient("alice", "secret").authorization(challenge, "INVITE", "sip:b")
    result = server.verify("BYE", value, passwords({"alice": "secret"}), now=NOW)
    assert result.reason == "bad response"


def test_stale_nonce_with_right_password_sets_stale() -> None:
    server = DigestServer("example.com", SECRET, nonce_lifetime=300)
    client = DigestClient("alice", "secret")
    assert _round_trip(server, client, checked_at=NOW + 300).ok
    result = _round_trip(server, client, checked_at=NOW + 301)
    assert result == AuthResult(False, "alice", "stale nonce", True)
    # A nonce from the future (clock stepped back) is stale too.
    assert _round_trip(server, client, checked_at=NOW - 301).reason == "stale nonce"


def test_stale_nonce_with_wrong_password_is_not_stale() -> None:
    server = DigestServer("example.com", SECRET, nonce_lifetime=300)
    result = _round_trip(server, DigestClient("alice", "guess"), checked_at=NOW + 1000)
    assert result == AuthResult(False, "alice", "bad response", False)


def _tamper(nonce: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(nonce))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("index", [0, 7, 8, 15, 16, 47])
def test_tampered_nonce(index: int) -> None:
    server = DigestServer("example.com", SECRET)
    challenge = parse_challenge(server.challenge(now=NOW))
    challenge.nonce = _tamper(challenge.nonce, index)
    value = DigestClient("alice", "secret").authorization(challenge, "INVITE", "sip:b")
    result = server.verify("INVITE", value, passwords({"alice": "secret"}), now=NOW)
    assert result == AuthResult(False, "alice", "bad nonce", False)


@pytest.mark.parametrize("nonce", ["", "abc", "!" * 64, "A" * 64, "A" * 63 + "=", "A" * 65])
def test_garbage_nonce(nonce: str) -> None:
    server = DigestServer("example.com", SECRET)
    challenge = Challenge("Digest", "example.com", nonce, qop=["auth"])
    value = DigestClient("alice", "secret").authorization(challenge, "INVITE", "sip:b")
    assert server.verify("INVITE", value, passwords({"alice": "secret"}), now=NOW).reason == (
        "bad nonce"
    )


def test_nonce_from_another_secret_or_realm_is_bad() -> None:
    other_secret = DigestServer("example.com", b"another secret of 16+ bytes")
    other_realm = DigestServer("example.org", SECRET)
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "secret")
    for issuer in (other_secret, other_realm):
        challenge = parse_challenge(issuer.challenge(now=NOW))
        challenge.realm = "example.com"
        value = client.authorization(challenge, "INVITE", "sip:b")
        assert server.verify("INVITE", value, passwords({"alice": "secret"}), now=NOW).reason == (
            "bad nonce"
        )


def test_shared_secret_lets_another_server_verify() -> None:
    issuer = DigestServer("example.com", SECRET)
    verifier = DigestServer("example.com", SECRET)
    value = DigestClient("alice", "secret").authorization(
        issuer.challenge(now=NOW), "REGISTER", "sip:example.com"
    )
    assert verifier.verify("REGISTER", value, passwords({"alice": "secret"}), now=NOW + 5).ok


def test_algorithm_downgrade_is_refused() -> None:
    server = DigestServer("example.com", SECRET)
    challenge = parse_challenge(server.challenge(algorithm="SHA-256", now=NOW))
    challenge.algorithm = "MD5"
    value = DigestClient("alice", "secret").authorization(challenge, "INVITE", "sip:b")
    result = server.verify("INVITE", value, passwords({"alice": "secret"}), now=NOW)
    assert result.reason == "bad nonce"


def test_realm_mismatch() -> None:
    server = DigestServer("example.com", SECRET)
    challenge = parse_challenge(server.challenge(now=NOW))
    challenge.realm = "evil.com"
    value = DigestClient("alice", "secret").authorization(challenge, "INVITE", "sip:b")
    result = server.verify("INVITE", value, passwords({"alice": "secret"}), now=NOW)
    assert result == AuthResult(False, "alice", "realm mismatch", False)


def test_replayed_nc_is_refused_and_increasing_nc_accepted() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "secret")
    table = passwords({"alice": "secret"})
    challenge = server.challenge(now=NOW)
    first = client.authorization(challenge, "INVITE", "sip:b")
    second = client.authorization(challenge, "INVITE", "sip:b")
    assert server.verify("INVITE", first, table, now=NOW).ok
    assert server.verify("INVITE", second, table, now=NOW + 1).ok
    replay = server.verify("INVITE", first, table, now=NOW + 2)
    assert replay == AuthResult(False, "alice", "replayed nc", True)
    assert server.verify("INVITE", second, table, now=NOW + 2).reason == "replayed nc"
    third = client.authorization(challenge, "INVITE", "sip:b")
    assert server.verify("INVITE", third, table, now=NOW + 3).ok


def test_nonce_counts_are_tracked_per_nonce() -> None:
    server = DigestServer("example.com", SECRET)
    table = passwords({"alice": "secret", "bob": "pw"})
    # Two clients challenged in the same second each start at nc=1.
    a = DigestClient("alice", "secret").authorization(server.challenge(now=NOW), "INVITE", "u")
    b = DigestClient("bob", "pw").authorization(server.challenge(now=NOW), "INVITE", "u")
    assert server.verify("INVITE", a, table, now=NOW).ok
    assert server.verify("INVITE", b, table, now=NOW).ok


def test_bounded_memory_refuses_forgotten_nonces_as_stale() -> None:
    server = DigestServer("example.com", SECRET, max_tracked_nonces=2)
    table = passwords({"alice": "secret"})
    clients = [DigestClient("alice", "secret") for _ in range(3)]
    challenges = [server.challenge(now=NOW + i) for i in range(3)]
    values = [c.authorization(ch, "INVITE", "u") for c, ch in zip(clients, challenges, strict=True)]
    for i, value in enumerate(values):
        assert server.verify("INVITE", value, table, now=NOW + 3 + i).ok
    assert len(server._seen) == 2
    # The first nonce was evicted: its replay must not look like a first use.
    replay = server.verify("INVITE", values[0], table, now=NOW + 10)
    assert replay == AuthResult(False, "alice", "replayed nc", True)
    # Nonces still tracked keep working with a higher nc.
    again = clients[2].authorization(challenges[2], "INVITE", "u")
    assert server.verify("INVITE", again, table, now=NOW + 10).ok


def test_expired_entries_are_pruned() -> None:
    server = DigestServer("example.com", SECRET, nonce_lifetime=10)
    for i in range(5):
        at = NOW + i * 20
        assert _round_trip(server, DigestClient("alice", "secret"), issued_at=at, checked_at=at).ok
    assert len(server._seen) == 1


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        'Basic "x"',
        'Digest username="alice"',
        'Digest username="alice", realm="example.com", nonce="n", uri="u", response="0"',
        'Digest realm="example.com", nonce="n", uri="u", response="0", qop=auth, nc=00000001, '
        'cnonce="c"',
    ],
)
def test_malformed_credentials(value: str) -> None:
    server = DigestServer("example.com", SECRET)
    result = server.verify("INVITE", value, passwords({"alice": "secret"}), now=NOW)
    assert (result.ok, result.reason, result.stale) == (False, "malformed", False)


@pytest.mark.parametrize(
    ("param", "replacement"),
    [
        ("qop=auth", "qop=auth-int"),
        ("nc=00000001", "nc=1"),
        ("nc=00000001", "nc=0000000g"),
        ("algorithm=MD5", "algorithm=SHA-512-256"),
        ('response="', 'response="zz'),
        ('response="', 'response="\u00e9'),
    ],
)
def test_malformed_fields_in_otherwise_good_credentials(param: str, replacement: str) -> None:
    server = DigestServer("example.com", SECRET)
    value = DigestClient("alice", "secret").authorization(
        server.challenge(now=NOW), "INVITE", "sip:b"
    )
    assert param in value
    result = server.verify(
        "INVITE", value.replace(param, replacement), passwords({"alice": "secret"}), now=NOW
    )
    assert (result.ok, result.username, result.reason) == (False, "alice", "malformed")


def test_rfc2069_client_is_refused() -> None:
    server = DigestServer("example.com", SECRET)
    challenge = parse_challenge(server.challenge(now=NOW))
    challenge.qop = []
    value = DigestClient("alice", "secret").authorization(challenge, "INVITE", "sip:b")
    result = server.verify("INVITE", value, passwords({"alice": "secret"}), now=NOW)
    assert result.reason == "malformed"


def test_uppercase_hex_response_is_accepted() -> None:
    server = DigestServer("example.com", SECRET)
    value = DigestClient("alice", "secret").authorization(
        server.challenge(now=NOW), "INVITE", "sip:b"
    )
    response = parse_credentials(value)["response"]
    upper = value.replace(response, response.upper())
    assert server.verify("INVITE", upper, passwords({"alice": "secret"}), now=NOW).ok


def test_verify_defaults_to_the_wall_clock() -> None:
    server = DigestServer("example.com", SECRET)
    value = DigestClient("alice", "secret").authorization(server.challenge(), "INVITE", "u")
    assert server.verify("INVITE", value, passwords({"alice": "secret"})).ok


def test_client_nonce_memory_is_bounded() -> None:
    client = DigestClient("alice", "pw")
    first = 'Digest realm="r", nonce="first", qop="auth"'
    assert parse_credentials(client.authorization(first, "X", "u"))["nc"] == "00000001"
    for i in range(CLIENT_NONCE_MEMORY):
        client.authorization(f'Digest realm="r", nonce="n{i}", qop="auth"', "X", "u")
    assert len(client._nonce_counts) == CLIENT_NONCE_MEMORY
    # Forgotten, so it starts over; a server sees a replay and re-challenges.
    assert parse_credentials(client.authorization(first, "X", "u"))["nc"] == "00000001"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reusing_a_nonce_across_requests(algorithm: str) -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "secret")
    table = passwords({"alice": "secret"})
    challenge = server.challenge(algorithm=algorithm, now=NOW)
    values = [client.authorization(challenge, "REGISTER", "sip:example.com") for _ in range(3)]
    cnonces = {parse_credentials(v)["cnonce"] for v in values}
    # -sess binds the session key to the first cnonce; the others refresh it.
    assert len(cnonces) == (1 if algorithm.endswith("-sess") else 3)
    for i, value in enumerate(values):
        assert server.verify("REGISTER", value, table, now=NOW + i).ok
