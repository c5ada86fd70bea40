"""Bencode, the encoding of rtpengine's ng control protocol (sans-IO).

Only what the protocol uses: dictionaries, lists, byte strings and
integers.  Decoding is strict, because a datagram that does not parse
exactly is one we must not act on: no leading zeros, no ``-0``, no
trailing bytes, no duplicate keys, a bounded nesting depth.  Dictionary
keys need not be sorted on input (rtpengine writes them in its own order)
but are sorted on output, as bencode requires.

Decoded byte strings stay :class:`bytes`; dictionary keys become
:class:`str` (the protocol's keys are ASCII words), so callers write
``reply["result"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: Nesting deeper than this is refused (rtpengine's replies nest 4-5 deep).
MAX_DEPTH = 32

Value = bytes | int | list["Value"] | dict[str, "Value"]
"""A decoded value."""

Encodable = (
    bytes
    | bytearray
    | str
    | int
    | Sequence["Encodable"]
    | Mapping[str, "Encodable"]
    | Mapping[bytes, "Encodable"]
)
"""What :func:`encode` accepts (``str`` is encoded as UTF-8)."""

_DIGITS = frozenset(b"0123456789")


class BencodeError(ValueError):
    """Input that is not valid bencode, with the offset where it went wrong."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"bencode: {message} at offset {offset}")
        self.offset = offset


def encode(value: Encodable) -> bytes:
    """``value`` in bencode."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):
        return key
    raise TypeError(f"bencode: dictionary key {key!r} is not str or bytes")


def _first(item: tuple[bytes, object]) -> bytes:
    return item[0]


def _encode(value: Encodable, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"bencode: nesting deeper than {MAX_DEPTH}")
    if isinstance(value, bytes | bytearray):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, str):
        raw = value.encode()
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bool):
        # bool is an int subclass; True would silently become i1e.
        raise TypeError("bencode: booleans have no encoding; say 1/0 or a string")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, Mapping):
        items = sorted(((_key_bytes(k), v) for k, v in value.items()), key=_first)
        out.append(b"d")
        previous: bytes | None = None
        for key, item in items:
            if key == previous:  # "a" and b"a" both given
                raise ValueError(f"bencode: duplicate key {key!r}")
            previous = key
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise TypeError(f"bencode: cannot encode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """The single value ``data`` holds; :class:`BencodeError` otherwise."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after the value", end)
    return value


def _integer(data: bytes, start: int, end: int) -> int:
    """The decimal integer in ``data[start:end]``, in canonical form."""
    digits_at = start + 1 if end > start and data[start] == 0x2D else start  # "-"
    if digits_at == end:
        raise BencodeError("empty integer", start)
    for i in range(digits_at, end):
        if data[i] not in _DIGITS:
            raise BencodeError("non-digit in integer", i)
    if data[digits_at] == 0x30 and (end - digits_at > 1 or digits_at != start):  # "0"
        raise BencodeError("integer with a leading zero or -0", start)
    return int(data[start:end])


def _decode(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    if pos >= len(data):
        raise BencodeError("unexpected end of input", pos)
    lead = data[pos]
    if lead in _DIGITS:
        colon = data.find(b":", pos)
        if colon < 0:
            raise BencodeError("string length without ':'", pos)
        if colon - pos > 10:
            raise BencodeError("string length out of range", pos)
        length = _integer(data, pos, colon)
        end = colon + 1 + length
        if end > len(data):
            raise BencodeError(f"string of {length} bytes runs past the end", pos)
        return data[colon + 1 : end], end
    if lead == 0x69:  # "i"
        close = data.find(b"e", pos + 1)
        if close < 0:
            raise BencodeError("integer without 'e'", pos)
        return _integer(data, pos + 1, close), close + 1
    if depth >= MAX_DEPTH:
        raise BencodeError(f"nesting deeper than {MAX_DEPTH}", pos)
    if lead == 0x6C:  # "l"
        items: list[Value] = []
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("list without 'e'", pos)
            if data[pos] == 0x65:  # "e"
                return items, pos + 1
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
    if lead == 0x64:  # "d"
        result: dict[str, Value] = {}
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("dictionary without 'e'", pos)
            if data[pos] == 0x65:
                return result, pos + 1
            if data[pos] not in _DIGITS:
                raise BencodeError("dictionary key is not a string", pos)
            raw, after = _decode(data, pos, depth + 1)
            assert isinstance(raw, bytes)
            try:
                key = raw.decode()
            except UnicodeDecodeError:
                raise BencodeError("dictionary key is not UTF-8", pos) from None
            if key in result:
                raise BencodeError(f"duplicate key {key!r}", pos)
            result[key], pos = _decode(data, after, depth + 1)
    raise BencodeError(f"unexpected byte {bytes([lead])!r}", pos)
