"""Edge cases of the URI and header grammar, the message limits and stream
framing: the corners the RFC 4475 vectors do not reach on their own."""

from __future__ import annotations

import time

import pytest

from click2dial.sip.errors import SipParseError
from click2dial.sip.headers import (
    Address,
    parse_address,
    parse_address_list,
    parse_cseq,
    parse_header_params,
    parse_via,
    quote,
    split_list,
    unquote,
)
from click2dial.sip.message import (
    MAX_HEADER_SIZE,
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    StreamFramer,
    parse_message,
)
from click2dial.sip.uri import parse_uri


def _request(
    *extra: str, body: bytes = b"", first: str = "OPTIONS sip:bob@example.com SIP/2.0"
) -> bytes:
    lines = [
        first,
        "Via: SIP/2.0/UDP client.example.com;branch=z9hG4bKedge",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: edge-1@client.example.com",
        "CSeq: 1 OPTIONS",
        *extra,
    ]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- URIs -------------------------------------------------------------------


def test_uri_parameters_are_case_insensitive() -> None:
    uri = parse_uri("SIP:Bob@Example.COM;Transport=UDP;LR;User=Phone;Method=INVITE;X=AbC")
    assert uri.scheme == "sip"
    assert uri.params == {
        "transport": "udp",
        "lr": None,
        "user": "phone",
        "method": "invite",
        "x": "AbC",
    }
    assert uri.transport == "udp"
    assert uri.matches(parse_uri("sip:Bob@example.com;transport=tcp"))
    assert not uri.matches(parse_uri("sip:bob@example.com"))  # user parts are case-sensitive


def test_uri_components() -> None:
    uri = parse_uri(
        "sips:alice:secret@[2001:db8::1]:5061;maddr=239.255.255.1;ttl=15?subject=hi&priority=urgent"
    )
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "[2001:db8::1]",
        5061,
    )
    assert uri.params == {"maddr": "239.255.255.1", "ttl": "15"}
    assert uri.headers == "subject=hi&priority=urgent"
    assert uri.host_port == "[2001:db8::1]:5061"
    assert str(uri) == (
        "sips:alice:secret@[2001:db8::1]:5061;maddr=239.255.255.1;ttl=15?subject=hi&priority=urgent"
    )


@pytest.mark.parametrize(
    "text",
    [
        "sip:[::1]",
        "sip:user@[::ffff:192.0.2.1]:5060",
        "sip:[2001:db8:0:0:0:0:0:1];transport=tcp",
        "sip:[2001:db8:::192.0.2.1]",  # RFC 5118 §4.10: tolerated ABNF bug
    ],
)
def test_ipv6_hosts_parse(text: str) -> None:
    uri = parse_uri(text)
    assert uri.host.startswith("[")
    assert str(uri) == text


@pytest.mark.parametrize(
    "text",
    [
        "sip:[::1",
        "sip:[]",
        "sip:[g::1]",
        "sip:[1::2::3]",
        "sip:[1:2:3:4:5:6:7:8:9]",
        "sip:[::1]:99999",
        "sip:2001:db8::1",
        "sip:host:65536",
        "sip:us%zzer@host",
        "sip:user@host;%4",
        "sip:user@ho st",
        "sip:",
        "sip:@host",
        "sip:user@host?",
        "sip:user@host?=x",
        "<sip:user@host>",
        "",
    ],
)
def test_malformed_uris_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_escapes_are_kept_but_compared_decoded() -> None:
    uri = parse_uri("sip:%61lice@example.com")
    assert uri.user == "%61lice"
    assert str(uri) == "sip:%61lice@example.com"
    assert uri.matches(parse_uri("sip:alice@example.com"))
    assert not parse_uri("sip:null-%00-null@h").matches(parse_uri("sip:null-@h"))
    assert not parse_uri("sip:h").matches(parse_uri("sip:@h".replace("@", "a@")))


def test_other_schemes_stay_opaque() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.opaque, uri.is_sip) == (
        "tel",
        "+1-201-555-0123;phone-context=example.com",
        False,
    )
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
    assert uri.matches(uri.copy())


# --- header grammar -----------------------------------------------------------


def test_comma_lists_respect_quotes_and_angle_brackets() -> None:
    value = '"Bell, Alexander" <sip:a,b@example.com>;q=0.5 , <sip:b@example.com>,sip:c@example.com'
    assert split_list(value) == [
        '"Bell, Alexander" <sip:a,b@example.com>;q=0.5',
        "<sip:b@example.com>",
        "sip:c@example.com",
    ]
    contacts = parse_address_list(value)
    assert [c.display_name for c in contacts] == ["Bell, Alexander", None, None]
    assert contacts[0].params == {"q": "0.5"}
    assert [str(c.uri) for c in contacts[1:]] == ["sip:b@example.com", "sip:c@example.com"]
    with pytest.raises(SipParseError):
        split_list('"unterminated, <sip:a@b>')


def test_quoted_strings_round_trip() -> None:
    for text in ['a "b" \\c', "tab\there", "nul\x00 bel\x07 del\x7f", ""]:
        assert unquote(quote(text)) == text
        assert parse_address(f"{quote(text)} <sip:a@b>").display_name == text
    # CR and LF cannot be quoted-pairs: they must never reach the wire.
    assert quote("evil\r\nVia: x") == '"evil  Via: x"'


def test_header_parameters() -> None:
    assert parse_header_params(' ; a = 1 ;b;C="x;y"\t') == {"a": "1", "b": None, "c": '"x;y"'}
    assert parse_header_params(";received=[2001:db8::1];rport=5060") == {
        "received": "[2001:db8::1]",
        "rport": "5060",
    }
    for bad in [";", ";a=", ";a b", ";=1", ";a=1 x", ';a="open']:
        with pytest.raises(SipParseError):
            parse_header_params(bad)


def test_via_forms() -> None:
    [via] = parse_via("SIP / 2.0 / tls [2001:db8::9] : 5061 ;branch=z9hG4bK1;received=192.0.2.1")
    assert (via.transport, via.host, via.port) == ("TLS", "[2001:db8::9]", 5061)
    assert via.sent_by == ("[2001:db8::9]", 5061)
    assert str(via) == "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bK1;received=192.0.2.1"
    assert len(parse_via("SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5070")) == 2
    for bad in [
        "SIP/2.0/UDP",
        "SIP/3.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP [1::2::3]",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host,",
        "SIP/2.0/UDP host junk",
    ]:
        with pytest.raises(SipParseError):
            parse_via(bad)


def test_address_forms() -> None:
    assert parse_address("  Bob  Smith\t<sip:bob@example.com> ").display_name == "Bob  Smith"
    assert parse_address('"" <sip:bob@example.com>').display_name == ""
    addr = parse_address("sip:bob@example.com;tag=x")
    assert (str(addr.uri), addr.tag) == ("sip:bob@example.com", "x")
    assert (
        str(Address(parse_uri("sip:a@b"), 'Q "x"', {"tag": "1"})) == '"Q \\"x\\"" <sip:a@b>;tag=1'
    )
    for bad in [
        "",
        "<sip:a@b",
        "Bob, Smith <sip:a@b>",
        '"Bob" x <sip:a@b>',
        "<sip:a@b> junk",
        "sip:a@b?x=y",
        "sip:a@b,c",
        "< sip:a@b>",
    ]:
        with pytest.raises(SipParseError):
            parse_address(bad)


def test_cseq_limits() -> None:
    assert parse_cseq("2147483647 INVITE").seq == 2**31 - 1
    for bad in ["2147483648 INVITE", "1", "INVITE 1", "-1 INVITE", "1 IN VITE", "12345678901 A"]:
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_display_name_mismatch_fails_fast() -> None:
    # A nested "(token|LWS)*" pattern used to take exponential time here.
    start = time.perf_counter()
    with pytest.raises(SipParseError):
        parse_address("a" * 5000 + ", <sip:a@b>")
    assert time.perf_counter() - start < 1.0


# --- messages: header names, folding, controls ----------------------------------


def test_compact_header_forms() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP client.example.com;branch=z9hG4bKc\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\n"
        b"t: <sip:bob@example.com>\r\n"
        b"i: compact@example.com\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:alice@client.example.com>\r\n"
        b"c: application/sdp\r\n"
        b"e: gzip\r\n"
        b"s: hello\r\n"
        b"k: timer\r\n"
        b"o: presence\r\n"
        b"u: refer\r\n"
        b"x: 1800\r\n"
        b"r: <sip:carol@example.com>\r\n"
        b"b: <sip:alice@example.com>\r\n"
        b"l: 3\r\n\r\nv=0"
    )
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.call_id == "compact@example.com"
    assert str(msg.contact[0].uri) == "sip:alice@client.example.com"
    assert [name for name, _ in msg.headers] == [
        "Content-Type",
        "Content-Encoding",
        "Subject",
        "Supported",
        "Event",
        "Allow-Events",
        "Session-Expires",
        "Refer-To",
        "Referred-By",
    ]
    assert msg.headers.get("SUBJECT") == msg.headers.get("s") == "hello"
    assert msg.body == b"v=0"
    # Serialised with the long forms.
    assert b"\r\nContent-Type: application/sdp\r\n" in msg.to_bytes()


def test_header_names_must_be_ascii_tokens() -> None:
    # U+212A KELVIN SIGN lower-cases to "k", the compact form of Supported.
    for name in ["\u212a", "X Y", "X(y)", "", "Fo\u00f6"]:
        with pytest.raises(SipParseError):
            parse_message(_request(f"{name}: value"))
    msg = parse_message(_request("X-!%*_+`'~.Odd: yes", "Via : SIP/2.0/TCP second.example.com"))
    assert msg.headers.get("x-!%*_+`'~.odd") == "yes"
    assert len(msg.via) == 2


def test_folded_lines() -> None:
    msg = parse_message(
        _request(
            "Subject: first",
            " \t second",
            "\tthird  ",
            "Route: <sip:p1@example.com;lr>,",
            "  <sip:p2@example.com;lr>",
        )
    )
    assert msg.headers.get("Subject") == "first second third"
    assert [str(a.uri) for a in msg.headers.addresses("Route")] == [
        "sip:p1@example.com;lr",
        "sip:p2@example.com;lr",
    ]
    with pytest.raises(SipParseError):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n folded-start-line\r\n" + _request()[26:])


@pytest.mark.parametrize(
    "extra",
    [
        "X-Bell: a\x07b",
        "X-Nul: \x00",
        "Subject: tab\tok but \x1b not",
        'X-Quoted: "a" \x7f',
        'X-Raw-In-Quotes: "a\x07"',
    ],
)
def test_control_characters_outside_quoted_pairs_are_rejected(extra: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(_request(extra))


def test_control_characters_inside_quoted_pairs_are_kept() -> None:
    msg = parse_message(_request('X-Ctl: "a\\\x00b\\\x07"', 'Subject: "\\\x1f"'))
    assert msg.headers.get("X-Ctl") == '"a\\\x00b\\\x07"'
    assert parse_message(msg.to_bytes()).headers.get("X-Ctl") == '"a\\\x00b\\\x07"'


@pytest.mark.parametrize(
    "junk", [b"X-A: a\rb", b"X-A: a\nb", b"X-A: a\r\r\nX-B: b", b"X-A: a\n\r\nX-B: b"]
)
def test_bare_cr_or_lf_is_rejected(junk: bytes) -> None:
    data = _request()
    end = data.index(b"\r\n\r\n")
    with pytest.raises(SipParseError):
        parse_message(data[:end] + b"\r\n" + junk + data[end:])


def test_non_utf8_header_is_rejected_but_binary_body_is_fine() -> None:
    with pytest.raises(SipParseError):
        parse_message(_request("X-Latin1: caf\xe9").replace(b"caf\xc3\xa9", b"caf\xe9"))
    assert parse_message(_request(body=b"\xff\x00\xfe")).body == b"\xff\x00\xfe"


@pytest.mark.parametrize(
    ("extra", "ok"),
    [
        ("Max-Forwards: 255", True),
        ("Expires: 4294967295", True),
        ("Expires: 4294967296", False),
        ("Expires: soon", False),
        ("Date: Sat, 13 Nov 2010 23:29:00 GMT", True),
        ("Date: Sat, 13 Nov 2010 23:29:00 UTC", False),
        ("Date: Xyz, 13 Nov 2010 23:29:00 GMT", False),
        ("Content-Length: 0", True),
        ("Content-Length: 65536", False),
        ("Contact: *", True),
        ("Contact:", False),
        ("Call-ID: two words", False),
    ],
)
def test_validated_header_values(extra: str, ok: bool) -> None:
    data = (
        _request(extra).replace(b"Max-Forwards: 70\r\n", b"")
        if "Max-Forwards" in extra
        else _request(extra)
    )
    if ok:
        parse_message(data)
    else:
        with pytest.raises(SipParseError):
            parse_message(data)


def test_max_forwards_range_and_uniqueness() -> None:
    for bad in [
        _request().replace(b"Max-Forwards: 70", b"Max-Forwards: 256"),
        _request("Max-Forwards: 70"),
    ]:
        with pytest.raises(SipParseError):
            parse_message(bad)


def test_contact_star_survives_a_round_trip() -> None:
    data = _request("Contact: *", "Expires: 0", first="REGISTER sip:example.com SIP/2.0")
    data = data.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 REGISTER")
    msg = parse_message(data)
    assert msg.contact == [] and msg.headers.get("Contact") == "*"
    assert parse_message(msg.to_bytes()).headers.get("Contact") == "*"


def test_start_line_variants() -> None:
    assert isinstance(parse_message(_request(first="OPTIONS sip:bob@example.com sip/2.0")), Request)
    response = _request(first="SIP/2.0 486 Busy Here").replace(b"Max-Forwards: 70\r\n", b"")
    msg = parse_message(response)
    assert isinstance(msg, Response) and (msg.status, msg.reason) == (486, "Busy Here")
    for first, status in [
        ("SIP/2.0 99 Too Low", 400),
        ("SIP/2.0 700 Too High", 400),
        ("SIP/2.0 2OO OK", 400),
        ("SIP/2.0 \uff12\uff10\uff10 OK", 400),
        ("SIP/3.0 200 OK", 505),
        ("OPTIONS sip:bob@example.com SIP/3.0", 505),
        ("OPTIONS sip:bob@example.com HTTP/1.1", 400),
        ("OPTIONS\tsip:bob@example.com SIP/2.0", 400),
        ("OPT IONS sip:bob@example.com SIP/2.0", 400),
    ]:
        with pytest.raises(SipParseError) as err:
            parse_message(_request(first=first))
        assert err.value.status == status, first


def test_headers_multimap() -> None:
    headers = Headers()
    headers.add("Supported", "timer")
    headers.add("k", "replaces, 100rel")
    headers.add("X-Custom", "1")
    assert "SUPPORTED" in headers and "x-custom" in headers
    assert headers.get_all("Supported") == ["timer", "replaces", "100rel"]
    headers.set("x-custom", "2")  # replaces, under the name as now given
    assert headers.get("X-CUSTOM") == "2"
    headers.remove("supported")
    assert list(headers) == [("x-custom", "2")]
    assert len(headers.copy()) == 1


# --- limits -------------------------------------------------------------------


def test_message_larger_than_64k_is_rejected() -> None:
    data = _request(body=b"x" * (MAX_MESSAGE_SIZE - len(_request()) + 1))
    assert len(data) > MAX_MESSAGE_SIZE
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    assert err.value.status == 513


def test_too_many_headers_are_rejected() -> None:
    # _request() writes six headers of its own.
    fits = _request(*[f"X-H{i}: {i}" for i in range(MAX_HEADERS - 6)])
    assert len(parse_message(fits).headers) == MAX_HEADERS - 6
    with pytest.raises(SipParseError) as err:
        parse_message(_request(*[f"X-H{i}: {i}" for i in range(MAX_HEADERS - 5)]))
    assert err.value.status == 494


def test_header_section_larger_than_16k_is_rejected() -> None:
    base = len(_request()) - 4
    fits = _request("X-Big: " + "a" * (MAX_HEADER_SIZE - base - 9))
    parse_message(fits)
    with pytest.raises(SipParseError) as err:
        parse_message(_request("X-Big: " + "a" * (MAX_HEADER_SIZE - base - 8)))
    assert err.value.status == 494


def test_datagram_content_length() -> None:
    data = _request(body=b"hello")
    assert parse_message(data + b"trailing junk").body == b"hello"
    with pytest.raises(SipParseError):
        parse_message(data[:-1])
    with pytest.raises(SipParseError):  # exact framing is required on streams
        parse_message(data + b"x", stream=True)
    no_length = _request() + b"body without length"
    assert parse_message(no_length).body == b"body without length"


# --- stream framing -------------------------------------------------------------


def test_keepalive_pings_and_leading_crlf() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [b""]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [b""]
    msg = _request()
    # A lone CRLF before a message is skipped (RFC 3261 §7.5).
    assert framer.feed(b"\r\n" + msg) == [msg]
    assert framer.buffered == 0


def test_split_frames_reassemble_byte_by_byte() -> None:
    first = _request(body=b"v=0\r\n\r\nstill body")  # CRLFCRLF inside the body
    second = _request("X-Second: yes")
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(first + second)):
        frames += framer.feed((first + second)[i : i + 1])
    assert frames == [first, second]
    assert parse_message(frames[0], stream=True).body == b"v=0\r\n\r\nstill body"
    assert framer.buffered == 0


def test_several_messages_in_one_chunk() -> None:
    a, b = _request(body=b"abc"), _request("l: 2")[:-4] + b"\r\n\r\nxy"
    framer = StreamFramer()
    assert framer.feed(a + b"\r\n\r\n" + b + a[:10]) == [a, b"", b]
    assert framer.buffered == 10


@pytest.mark.parametrize(
    ("chunk", "status"),
    [
        (b"INVITE x SIP/2.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 400),
        (b"INVITE x SIP/2.0\r\nContent-Length: -1\r\n\r\n", 400),
        (b"INVITE x SIP/2.0\r\nl: 70000\r\n\r\n", 513),
        (b"INVITE x SIP/2.0\r\nX: " + b"a" * MAX_HEADER_SIZE, 494),
    ],
)
def test_stream_framing_errors(chunk: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as err:
        StreamFramer().feed(chunk)
    assert err.value.status == status


def test_stream_waits_for_the_body() -> None:
    data = _request(body=b"0123456789")
    framer = StreamFramer()
    assert framer.feed(data[:-5]) == []
    assert framer.feed(data[-5:]) == [data]
