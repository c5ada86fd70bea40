"""Bencode as rtpengine's ng protocol uses it: round trips, canonical
output, and strict refusal of malformed input."""

from __future__ import annotations

import pytest

from click2dial.media.bencode import MAX_DEPTH, BencodeError, Encodable, decode, encode


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"i0e"),
        (-42, b"i-42e"),
        (2**70, b"i1180591620717411303424e"),
        (b"", b"0:"),
        (b"a:b e", b"5:a:b e"),
        ([], b"le"),
        ({}, b"de"),
        ([b"x", 1, [b"y"]], b"l1:xi1el1:yee"),
        # Keys sorted as bytes, whatever order they were given in.
        (
            {"sdp": b"v=0", "command": b"offer", "ICE": b"force"},
            b"d3:ICE5:force7:command5:offer3:sdp3:v=0e",
        ),
    ],
)
def test_round_trip_and_canonical_form(value: Encodable, wire: bytes) -> None:
    assert encode(value) == wire
    assert decode(wire) == value


def test_str_is_encoded_as_utf8_and_comes_back_as_bytes() -> None:
    wire = encode({"flags": ["trust-address", "Zürich"]})
    assert wire == b"d5:flagsl13:trust-address7:Z\xc3\xbcrichee"
    assert decode(wire) == {"flags": [b"trust-address", "Zürich".encode()]}


def test_unsorted_keys_from_a_peer_are_accepted() -> None:
    assert decode(b"d6:result2:ok3:sdp3:v=0e") == {"result": b"ok", "sdp": b"v=0"}
    assert decode(b"d3:sdp3:v=06:result2:oke") == {"result": b"ok", "sdp": b"v=0"}


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"", "unexpected end of input"),
        (b"i01e", "leading zero"),
        (b"i-0e", "-0"),
        (b"ie", "empty integer"),
        (b"i-e", "empty integer"),
        (b"i1x2e", "non-digit in integer"),
        (b"i12", "integer without 'e'"),
        (b"03:abc", "leading zero"),
        (b"4:abc", "runs past the end"),
        (b"3abc", "without ':'"),
        (b"99999999999:x", "out of range"),
        (b"l1:a", "list without 'e'"),
        (b"d1:a", "unexpected end of input"),
        (b"d1:ai1e", "dictionary without 'e'"),
        (b"di1ei2ee", "dictionary key is not a string"),
        (b"d1:ai1e1:ai2ee", "duplicate key 'a'"),
        (b"d1:\xffi1ee", "not UTF-8"),
        (b"i1ei2e", "trailing bytes"),
        (b"x", "unexpected byte"),
        (b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1), "nesting deeper"),
    ],
)
def test_malformed_input_is_refused_with_a_clear_error(wire: bytes, message: str) -> None:
    with pytest.raises(BencodeError, match=message) as info:
        decode(wire)
    assert "bencode:" in str(info.value) and "at offset" in str(info.value)


def test_nesting_up_to_the_limit_decodes() -> None:
    wire = b"l" * MAX_DEPTH + b"e" * MAX_DEPTH
    value = decode(wire)
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == []


@pytest.mark.parametrize("value", [True, 1.5, None, {1: b"x"}])
def test_values_without_an_encoding_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="bencode"):
        encode(value)  # type: ignore[arg-type]


def test_a_key_given_as_str_and_bytes_is_a_duplicate() -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        encode({"a": 1, b"a": 2})
