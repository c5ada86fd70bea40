"""SDP model, parser/serializer and offer/answer helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from click2dial.sip.errors import SipParseError
from click2dial.sip.sdp import (
    MAX_SDP_SIZE,
    Media,
    Origin,
    SdpError,
    SessionDescription,
    answer_for,
    build_offer,
    parse_sdp,
)

# RFC 4317 §2.1-style offer with an extra video stream and an unknown line.
OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n"
    b"s=\r\n"
    b"c=IN IP4 host.atlanta.example.com\r\n"
    b"t=0 0\r\n"
    b"x=kept verbatim  \r\n"
    b"m=audio 49170 RTP/AVP 0 8 97\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:97 iLBC/8000\r\n"
    b"m=video 51372 RTP/AVP 31 32\r\n"
    b"c=IN IP4 192.0.2.7\r\n"
    b"a=rtpmap:31 H261/90000\r\n"
    b"a=rtpmap:32 MPV/90000\r\n"
)


def _parse_lines(*lines: str) -> SessionDescription:
    return parse_sdp(("\r\n".join(lines) + "\r\n").encode())


BASE = ("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0")


# -- parsing -------------------------------------------------------------------


def test_parse_fields_and_sections() -> None:
    sdp = parse_sdp(OFFER)
    assert sdp.origin == Origin(
        "alice", "2890844526", 2890844526, "IN", "IP4", "host.atlanta.example.com"
    )
    assert sdp.session_name == ""
    assert sdp.lines == [
        ("c", "IN IP4 host.atlanta.example.com"),
        ("t", "0 0"),
        ("x", "kept verbatim  "),
    ]
    assert [m.media for m in sdp.media] == ["audio", "video"]
    audio = sdp.media[0]
    assert (audio.port, audio.proto, audio.fmts) == (49170, "RTP/AVP", ["0", "8", "97"])
    assert audio.lines[2] == ("a", "rtpmap:97 iLBC/8000")
    assert sdp.media[1].lines[0] == ("c", "IN IP4 192.0.2.7")


def test_round_trip_is_byte_exact_for_canonical_input() -> None:
    data = OFFER.replace(b"x=kept verbatim  ", b"k=clear:secret")
    assert parse_sdp(data).to_bytes() == data
    assert bytes(parse_sdp(data)) == data


def test_bare_lf_and_blank_lines_are_accepted() -> None:
    data = OFFER.replace(b"x=kept verbatim  \r\n", b"")
    lf = data.replace(b"\r\n", b"\n") + b"\n"
    assert parse_sdp(lf) == parse_sdp(data)
    assert parse_sdp(lf).to_bytes() == data


def test_missing_final_newline_is_accepted() -> None:
    assert parse_sdp(b"v=0\r\no=- 1 2 IN IP4 h\r\ns=x").session_name == "x"


def test_extra_spaces_in_o_and_m_lines_are_tolerated() -> None:
    sdp = _parse_lines("v=0", "o=-  1 2 IN\tIP4 h ", "s=-", "m=audio  4000 RTP/AVP  0")
    assert sdp.origin.addrtype == "IP4"
    assert sdp.media[0].fmts == ["0"]


def test_o_and_s_may_appear_later_in_the_session_section() -> None:
    sdp = _parse_lines("v=0", "s=name", "t=0 0", "o=- 1 2 IN IP4 h")
    assert sdp.session_name == "name"
    assert sdp.to_bytes().startswith(b"v=0\r\no=- 1 2 IN IP4 h\r\ns=name\r\nt=0 0\r\n")


def test_unknown_lines_in_media_section_are_kept() -> None:
    sdp = _parse_lines(*BASE, "m=audio 4000 RTP/AVP 0", "y=whatever", "o=odd but kept")
    assert sdp.media[0].lines == [("y", "whatever"), ("o", "odd but kept")]
    assert parse_sdp(sdp.to_bytes()) == sdp


def test_port_count_and_empty_format_list() -> None:
    sdp = _parse_lines(*BASE, "m=audio 4000/2 RTP/AVP 0", "m=video 0 RTP/AVP")
    assert (sdp.media[0].port, sdp.media[0].port_count) == (4000, 2)
    assert sdp.media[1].fmts == []
    assert parse_sdp(sdp.to_bytes()) == sdp
    assert b"m=audio 4000/2 RTP/AVP 0\r\n" in sdp.to_bytes()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n",
        b"v=1\r\no=- 1 1 IN IP4 h\r\ns=-\r\n",
        b"o=- 1 1 IN IP4 h\r\nv=0\r\ns=-\r\n",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\ns=-\r\nv=0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\no=- 1 1 IN IP4 h\r\ns=-\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\ns=-\r\n",
        b"v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n",
        b"v=0\r\no=- 1 x IN IP4 h\r\ns=-\r\n",
        b"v=0\r\no=- 1 -1 IN IP4 h\r\ns=-\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1/0 RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nbad line\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nx-unknown=1\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\na =x\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n1=x\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=a\rb\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=a\x00b\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=\xff\r\n",
    ],
)
def test_malformed_sdp_raises_sdp_error(data: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(data)


def test_sdp_error_is_a_parse_error() -> None:
    with pytest.raises(SipParseError) as info:
        parse_sdp(b"garbage")
    assert isinstance(info.value, ValueError)
    assert info.value.status == 400


def test_oversized_sdp_is_rejected() -> None:
    data = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n" + b"a=x\r\n" * (MAX_SDP_SIZE // 5)
    with pytest.raises(SdpError) as info:
        parse_sdp(data)
    assert info.value.status == 413


# -- serialisation guards --------------------------------------------------------


def _minimal() -> SessionDescription:
    return SessionDescription(Origin("-", "1", 1, "IN", "IP4", "h"), "-")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: setattr(s, "session_name", "evil\r\na=injected"),
        lambda s: s.lines.append(("a", "x\ny")),
        lambda s: s.lines.append(("ab", "x")),
        lambda s: s.lines.append(("m", "audio 1 RTP/AVP 0")),
        lambda s: s.lines.append(("o", "- 1 1 IN IP4 h")),
        lambda s: setattr(s.origin, "username", "two words"),
        lambda s: setattr(s.origin, "address", ""),
        lambda s: setattr(s.origin, "sess_version", -1),
        lambda s: s.media.append(Media("audio", 70000, "RTP/AVP", ["0"])),
        lambda s: s.media.append(Media("audio", 1, "RTP/AVP", ["0"], [("v", "0")])),
        lambda s: s.media.append(Media("audio", 1, "RTP/AVP", ["0 8"])),
    ],
)
def test_to_bytes_refuses_what_would_not_parse_back(
    mutate: Callable[[SessionDescription], object],
) -> None:
    sdp = _minimal()
    mutate(sdp)
    with pytest.raises(SdpError):
        sdp.to_bytes()


# -- queries -------------------------------------------------------------------


def test_connection_prefers_media_level_c() -> None:
    sdp = parse_sdp(OFFER)
    assert sdp.connection(0) == ("host.atlanta.example.com", 49170)
    assert sdp.connection(1) == ("192.0.2.7", 51372)


def test_connection_drops_multicast_ttl_and_handles_ipv6() -> None:
    sdp = _parse_lines(
        "v=0",
        "o=- 1 1 IN IP4 h",
        "s=-",
        "c=IN IP4 224.2.1.1/127/3",
        "m=audio 5000 RTP/AVP 0",
        "m=audio 5002 RTP/AVP 0",
        "c=IN IP6 2001:db8::1",
    )
    assert sdp.connection(0) == ("224.2.1.1", 5000)
    assert sdp.connection(1) == ("2001:db8::1", 5002)


def test_connection_without_c_or_with_bad_c() -> None:
    sdp = _parse_lines("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 5000 RTP/AVP 0")
    with pytest.raises(SdpError):
        sdp.connection(0)
    with pytest.raises(IndexError):
        sdp.connection(1)
    bad = _parse_lines("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4", "m=audio 5000 RTP/AVP 0")
    with pytest.raises(SdpError):
        bad.connection()


def test_direction_default_session_and_media_levels() -> None:
    sdp = _parse_lines(
        *BASE,
        "a=sendonly",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 0",
        "a=recvonly",
        "m=audio 4004 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=inactive",
    )
    assert [sdp.direction(i) for i in range(3)] == ["sendonly", "recvonly", "inactive"]
    assert parse_sdp(OFFER).direction(0) == "sendrecv"


def test_media_attribute_helpers() -> None:
    sdp = _parse_lines(
        *BASE,
        "a=tool:x",
        "m=audio 4000 RTP/AVP 0 8 101 18",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:8 pcma/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=rtcp-mux",
    )
    m = sdp.media[0]
    assert sdp.attributes("tool") == ["x"]
    assert m.attributes("fmtp") == ["101 0-15"]
    assert m.attributes("rtcp-mux") == [""]
    assert m.attributes("missing") == []
    assert m.rtpmap() == {
        "101": "telephone-event/8000",
        "8": "pcma/8000",
        "0": "PCMU/8000",
        "18": "G729/8000",
    }


# -- derived descriptions ----------------------------------------------------------


def test_bump_version_returns_a_new_object() -> None:
    sdp = parse_sdp(OFFER)
    bumped = sdp.bump_version()
    assert bumped is not sdp
    assert bumped.origin.sess_version == 2890844527
    assert sdp.origin.sess_version == 2890844526
    assert bumped.bump_version().origin.sess_version == 2890844528
    assert b"o=alice 2890844526 2890844527 IN IP4" in bumped.to_bytes()


def test_copy_shares_no_mutable_state() -> None:
    sdp = parse_sdp(OFFER)
    dup = sdp.copy()
    assert dup == sdp
    dup.lines.append(("a", "x"))
    dup.media[0].lines.append(("a", "y"))
    dup.media[0].fmts.append("9")
    dup.origin.username = "bob"
    assert sdp == parse_sdp(OFFER)


def test_with_direction_all_streams() -> None:
    sdp = _parse_lines(
        *BASE,
        "a=recvonly",
        "m=audio 4000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
        "a=ptime:20",
        "m=audio 4002 RTP/AVP 0",
    )
    held = sdp.with_direction("sendonly")
    assert ("a", "recvonly") not in held.lines
    assert held.media[0].lines == [
        ("a", "rtpmap:0 PCMU/8000"),
        ("a", "sendonly"),
        ("a", "ptime:20"),
    ]
    assert held.media[1].lines == [("a", "sendonly")]
    assert [held.direction(i) for i in range(2)] == ["sendonly", "sendonly"]
    assert sdp.direction(1) == "recvonly"  # original untouched


def test_with_direction_one_stream_and_duplicates_collapse() -> None:
    sdp = _parse_lines(*BASE, "m=audio 4000 RTP/AVP 0", "a=sendrecv", "a=inactive", "m=audio 2 X 0")
    one = sdp.with_direction("recvonly", 0)
    assert one.media[0].lines == [("a", "recvonly")]
    assert one.media[1].lines == []


def test_with_direction_without_media_sets_session_level() -> None:
    sdp = _parse_lines(*BASE, "a=sendonly")
    assert sdp.with_direction("inactive").lines[-1] == ("a", "inactive")
    assert ("a", "sendonly") not in sdp.with_direction("inactive").lines


def test_with_direction_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        parse_sdp(OFFER).with_direction("sideways")


def test_is_hold() -> None:
    offer = build_offer("192.0.2.1", 4000, session_id=1)
    assert not offer.is_hold
    assert offer.with_direction("sendonly").is_hold
    assert offer.with_direction("inactive").is_hold
    assert not offer.with_direction("recvonly").is_hold
    old_style = offer.copy()
    old_style.lines[0] = ("c", "IN IP4 0.0.0.0")
    assert old_style.is_hold
    # One stream still flowing means the call is not on hold.
    two = _parse_lines(*BASE, "m=audio 4000 RTP/AVP 0", "a=sendonly", "m=audio 4002 RTP/AVP 0")
    assert not two.is_hold
    # Rejected streams do not count; nothing active is not a hold.
    rejected = _parse_lines(*BASE, "m=audio 4000 RTP/AVP 0", "a=inactive", "m=video 0 RTP/AVP 31")
    assert rejected.is_hold
    assert not _parse_lines(*BASE, "m=audio 0 RTP/AVP 0").is_hold
    no_c = _parse_lines("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 4000 RTP/AVP 0")
    assert not no_c.is_hold


# -- offer / answer ------------------------------------------------------------


def test_build_offer_default() -> None:
    offer = build_offer("192.0.2.10", 40000, session_id=42)
    assert offer.to_bytes() == (
        b"v=0\r\n"
        b"o=- 42 42 IN IP4 192.0.2.10\r\n"
        b"s=-\r\n"
        b"c=IN IP4 192.0.2.10\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 8 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )
    assert offer.connection(0) == ("192.0.2.10", 40000)


def test_build_offer_options() -> None:
    offer = build_offer(
        "2001:db8::5", 5004, codecs=[(8, "PCMA/8000")], direction="recvonly", session_id=7
    )
    assert offer.origin.addrtype == "IP6"
    assert ("c", "IN IP6 2001:db8::5") in offer.lines
    assert offer.media[0].fmts == ["8"]
    assert offer.direction(0) == "recvonly"
    assert offer.media[0].attributes("fmtp") == []
    random_ids = {build_offer("h", 1).origin.sess_id for _ in range(5)}
    assert len(random_ids) == 5
    with pytest.raises(ValueError):
        build_offer("h", 1, direction="up")
    with pytest.raises(ValueError):
        build_offer("h", 70000)
    with pytest.raises(ValueError):
        build_offer("h", 1, codecs=[])


def test_answer_intersects_codecs_and_rejects_other_streams() -> None:
    offer = parse_sdp(OFFER)
    answer = answer_for(offer, "192.0.2.20", 30000, session_id=9)
    assert answer.to_bytes() == (
        b"v=0\r\n"
        b"o=- 9 9 IN IP4 192.0.2.20\r\n"
        b"s=-\r\n"
        b"c=IN IP4 192.0.2.20\r\n"
        b"t=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0 8\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
        b"m=video 0 RTP/AVP 31\r\n"
    )


def test_answer_uses_offer_payload_numbers_and_our_preference() -> None:
    offer = _parse_lines(
        *BASE,
        "m=audio 4000 RTP/AVP 96 8 0 18",
        "a=rtpmap:96 TELEPHONE-EVENT/8000",
        "a=fmtp:96 0-15",
        "a=rtpmap:18 G729/8000",
        "a=fmtp:18 annexb=no",
    )
    answer = answer_for(
        offer,
        "192.0.2.20",
        30000,
        codecs=[(18, "G729/8000"), (0, "PCMU/8000"), (101, "telephone-event/8000")],
    )
    m = answer.media[0]
    assert m.fmts == ["18", "0", "96"]
    assert m.rtpmap() == {"18": "G729/8000", "0": "PCMU/8000", "96": "TELEPHONE-EVENT/8000"}
    assert m.attributes("fmtp") == ["18 annexb=no", "96 0-16"]


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("sendrecv", "sendrecv"),
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
    ],
)
def test_answer_mirrors_direction(offered: str, answered: str) -> None:
    offer = build_offer("192.0.2.1", 4000, direction=offered)
    assert answer_for(offer, "192.0.2.2", 5000).direction(0) == answered
    session_level = _parse_lines(*BASE, f"a={offered}", "m=audio 4000 RTP/AVP 0")
    assert answer_for(session_level, "192.0.2.2", 5000).direction(0) == answered


def test_answer_rejects_without_common_codec() -> None:
    offer = _parse_lines(*BASE, "m=audio 4000 RTP/AVP 9 101", "a=rtpmap:101 telephone-event/8000")
    answer = answer_for(offer, "192.0.2.2", 5000)
    assert (answer.media[0].port, answer.media[0].fmts) == (0, ["9"])
    assert answer.media[0].lines == []


def test_answer_accepts_only_one_stream_and_skips_unusable_ones() -> None:
    offer = _parse_lines(
        *BASE,
        "t=1 2",
        "m=audio 0 RTP/AVP 0",
        "m=audio 4000 RTP/SAVP 0",
        "m=audio 4002 RTP/AVP 0",
        "m=audio 4004 RTP/AVP 8",
        "m=image 4006 udptl t38",
    )
    answer = answer_for(offer, "192.0.2.2", 5000)
    assert [(m.media, m.port, m.proto) for m in answer.media] == [
        ("audio", 0, "RTP/AVP"),
        ("audio", 0, "RTP/SAVP"),
        ("audio", 5000, "RTP/AVP"),
        ("audio", 0, "RTP/AVP"),
        ("image", 0, "udptl"),
    ]
    # §6: the answer's t= lines equal the offer's.
    assert [v for t, v in answer.lines if t == "t"] == ["0 0", "1 2"]


def test_answer_to_offer_without_media() -> None:
    offer = _parse_lines(*BASE)
    answer = answer_for(offer, "192.0.2.2", 5000)
    assert answer.media == []
    with pytest.raises(ValueError):
        answer_for(offer, "h", -1)


def test_offer_answer_round_trip_between_legs() -> None:
    offer = build_offer("10.0.0.1", 4000, direction="sendonly")
    answer = answer_for(parse_sdp(offer.to_bytes()), "10.0.0.2", 6000)
    assert parse_sdp(answer.to_bytes()) == answer
    assert answer.connection(0) == ("10.0.0.2", 6000)
    assert answer.direction(0) == "recvonly"
    assert offer.is_hold and not answer.is_hold


# -- properties ------------------------------------------------------------------

_WORD = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), exclude_characters="\x85"
    ),
    min_size=1,
    max_size=12,
).filter(lambda w: not any(c.isspace() for c in w))
_VALUE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\0"),
    max_size=30,
)
_LETTER = st.sampled_from("abcdefghijklnpqrtuwxyzABZ")


@st.composite
def _descriptions(draw: st.DrawFn) -> SessionDescription:
    origin = Origin(
        draw(_WORD),
        draw(_WORD),
        draw(st.integers(0, 2**64)),
        draw(_WORD),
        draw(_WORD),
        draw(_WORD),
    )
    session_lines = draw(st.lists(st.tuples(_LETTER, _VALUE), max_size=5))
    media = draw(
        st.lists(
            st.builds(
                Media,
                _WORD,
                st.integers(0, 65535),
                _WORD,
                st.lists(_WORD, max_size=4),
                st.lists(st.tuples(st.sampled_from("acbkiosxyz"), _VALUE), max_size=5),
                st.none() | st.integers(1, 99999),
            ),
            max_size=3,
        )
    )
    return SessionDescription(origin, draw(_VALUE), session_lines, media)


@settings(max_examples=300)
@given(_descriptions())
def test_property_round_trip(sdp: SessionDescription) -> None:
    data = sdp.to_bytes()
    assert parse_sdp(data) == sdp
    assert parse_sdp(data.replace(b"\r\n", b"\n")) == sdp


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_property_random_bytes_only_raise_sdp_error(data: bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    # Whatever parses must serialise and parse back to the same thing.
    assert parse_sdp(sdp.to_bytes()) == sdp


@settings(max_examples=300)
@given(_descriptions(), st.data())
def test_property_mutated_descriptions_only_raise_sdp_error(
    sdp: SessionDescription, data: st.DataObject
) -> None:
    raw = bytearray(sdp.to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
    try:
        parsed = parse_sdp(bytes(raw))
    except SdpError:
        return
    for i in range(len(parsed.media)):
        parsed.direction(i)
    parsed.is_hold  # noqa: B018 - must not raise on anything that parsed
    answer_for(parsed, "192.0.2.1", 4000)


def test_answer_to_offer_without_t_line_gets_one() -> None:
    offer = _parse_lines("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4 h", "m=audio 4000 RTP/AVP 0")
    assert answer_for(offer, "192.0.2.2", 5000).lines == [
        ("c", "IN IP4 192.0.2.2"),
        ("t", "0 0"),
    ]
