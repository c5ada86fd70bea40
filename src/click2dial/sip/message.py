"""SIP messages: the Request/Response model, the wire parser and serializer,
and stream framing (RFC 3261 §7, §18.3).

Theory of operation
-------------------
The headers that transactions and dialogs need on every message (Via, From,
To, Call-ID, CSeq, Max-Forwards, Contact) are parsed eagerly and held as typed
attributes; they are the source of truth and are written back first when the
message is serialised.  Values of the canonical shape (see headers.py) are
fully validated here but become objects lazily: Via, Address and the
Request-URI keep their regex match until first touched, and serialise as their
source text until then (which for that shape is exactly what the built object
would serialise to).  Every other header stays a string in
:class:`Headers`, in order, under its canonical name, and is parsed only by
whoever needs it.  This keeps a parse+serialise round trip cheap while still
rejecting every malformed message the core could trip on later.

Hard limits (message size, header count, line length) bound the work one
datagram or stream can cause.  Anything malformed raises
:class:`SipParseError`; nothing else escapes :func:`parse_message` or
:meth:`StreamFramer.feed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .errors import SipParseError
from .headers import (
    _COMMON_METHODS,
    _DUP_PARAM,
    _LAZY_NAME_ADDR,
    _LAZY_VIA,
    CANON_SIP_URI,
    CANONICAL,
    FAST_SIP_URI,
    LIST_HEADERS,
    MAX_CSEQ,
    TOKEN_RE,
    Address,
    CSeq,
    Via,
    canonical_uri,
    parse_address,
    parse_address_list,
    parse_cseq,
    parse_via,
    split_list,
)
from .uri import Uri, parse_params, parse_uri

MAX_MESSAGE_SIZE = 65535
MAX_HEADER_SIZE = 16384
MAX_HEADERS = 128
_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_STREAM_CL = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$")
# Fast paths for the start lines nearly every message has; anything else
# (odd URIs, lower-case version, controls...) takes the general path.
_FAST_REQUEST_LINE = re.compile(rf"([A-Z]++) {FAST_SIP_URI} SIP/2\.0")
# The canonical subset (see headers.py), whose Request-URI is built lazily.
_LAZY_REQUEST_LINE = re.compile(rf"([A-Z]++) ({CANON_SIP_URI}) SIP/2\.0")
_new = object.__new__
_set_attr = object.__setattr__  # CSeq is frozen
_FAST_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ([^\x00-\x08\x0a-\x1f\x7f]*+)")
_FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")
# Control characters other than HT.  A header section normally holds them only
# as its CRLF line ends, so counting what translate() deletes against the CRLF
# count is a cheap test that sends only odd messages down the slow path.
_CTL_BYTES = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f"
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A well-formed quoted-string: raw CTLs are not qdtext, but a quoted-pair may
# escape any of them except CR and LF (RFC 3261 §25.1).
_QUOTED_STRING = re.compile(r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"')

# The headers parse_message turns into typed attributes (and Expires and Date,
# which it validates but keeps as strings), by lower-case wire name including
# the compact forms; every other known header maps to (key, canonical name).
(
    _VIA,
    _FROM,
    _TO,
    _CALL_ID,
    _CSEQ,
    _MAX_FORWARDS,
    _CONTENT_LENGTH,
    _CONTACT,
    _EXPIRES,
    _DATE_HEADER,
) = range(10)
_CODES = {
    "via": _VIA, "from": _FROM, "to": _TO, "call-id": _CALL_ID, "cseq": _CSEQ,
    "max-forwards": _MAX_FORWARDS, "content-length": _CONTENT_LENGTH,
    "contact": _CONTACT, "expires": _EXPIRES, "date": _DATE_HEADER,
}  # fmt: skip
_SPECIAL: dict[str, int] = {}
_RAW: dict[str, tuple[str, str]] = {}
for _lower, _canon in CANONICAL.items():
    if _canon.lower() in _CODES:
        _SPECIAL[_lower] = _CODES[_canon.lower()]
    else:
        _RAW[_lower] = (_canon.lower(), _canon)
del _lower, _canon


def _spellings(name: str) -> set[str]:
    return {name, name.lower(), name.upper(), name.capitalize()}


# The same tables keyed by exact spellings seen on the wire (canonical, lower
# and upper case, compact forms), so that most header names are looked up
# without lower-casing them.  A name not found here takes the slow path.
_WIRE_SPECIAL: dict[str, int] = {}
_WIRE_RAW: dict[str, tuple[str, str]] = {}
for _lower, _canon in CANONICAL.items():
    for _spelling in _spellings(_canon) | _spellings(_lower):
        if _lower in _SPECIAL:
            _WIRE_SPECIAL[_spelling] = _SPECIAL[_lower]
        else:
            _WIRE_RAW[_spelling] = _RAW[_lower]
del _lower, _canon, _spelling

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 301: "Moved Permanently",
    302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip


class Headers:
    """Ordered multi-map of the headers a message does not hold parsed.

    Names are looked up case-insensitively and compact forms are expanded.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str, str]] | None = None) -> None:
        # (lower-case canonical key, name as written on the wire, value)
        self._items: list[tuple[str, str, str]] = items if items is not None else []

    @staticmethod
    def _key(name: str) -> tuple[str, str]:
        lower = name.lower()
        canon = CANONICAL.get(lower)
        return (canon.lower(), canon) if canon else (lower, name)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = self._key(name)[0]
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers are split at their commas."""
        key = self._key(name)[0]
        raw = [v for k, _, v in self._items if k == key]
        if key in LIST_HEADERS:
            return [part for v in raw for part in split_list(v) if part]
        return raw

    def addresses(self, name: str) -> list[Address]:
        return [parse_address(v) for v in self.get_all(name)]

    def __contains__(self, name: str) -> bool:
        key = self._key(name)[0]
        return any(k == key for k, _, _ in self._items)

    def add(self, name: str, value: str) -> None:
        key, canon = self._key(name)
        self._items.append((key, canon, value))

    def prepend(self, name: str, value: str) -> None:
        key, canon = self._key(name)
        self._items.insert(0, (key, canon, value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = self._key(name)[0]
        self._items = [item for item in self._items if item[0] != key]

    def copy(self) -> Headers:
        return Headers(list(self._items))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)


class Message:
    """Fields shared by requests and responses."""

    __slots__ = ("body", "call_id", "contact", "cseq", "from_", "headers", "to", "via")

    def __init__(
        self,
        via: list[Via],
        from_: Address,
        to: Address,
        call_id: str,
        cseq: CSeq,
        headers: Headers | None = None,
        body: bytes = b"",
        contact: list[Address] | None = None,
    ) -> None:
        self.via = via
        self.from_ = from_
        self.to = to
        self.call_id = call_id
        self.cseq = cseq
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.contact = contact if contact is not None else []

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    @property
    def sdp(self) -> bytes | None:
        """The body when it is a session description, else ``None``."""
        if self.body and self.content_type == "application/sdp":
            return self.body
        return None

    def _start_line(self) -> str:
        raise NotImplementedError

    def _max_forwards_line(self) -> str:
        return ""

    def to_bytes(self) -> bytes:
        # One f-string for the head: building a list of lines and joining it
        # costs a third more on the serialise hot path.
        cseq = self.cseq
        # x.__str__() rather than f"{x}" for the parsed objects: a direct
        # call skips format() and its trip through C.
        via = self.via
        if len(via) == 1:
            vias = f"Via: {via[0].__str__()}\r\n"
        else:
            vias = "".join([f"Via: {v}\r\n" for v in via])
        contact = self.contact
        if not contact:
            contacts = ""
        elif len(contact) == 1:
            contacts = f"Contact: {contact[0].__str__()}\r\n"
        else:
            contacts = "Contact: " + ", ".join([str(c) for c in contact]) + "\r\n"
        # Concatenation beats a comprehension and join here too.
        others = ""
        for _, name, value in self.headers._items:
            others += f"{name}: {value}\r\n"
        head = (
            f"{self._start_line()}\r\n{vias}{self._max_forwards_line()}"
            f"From: {self.from_.__str__()}\r\nTo: {self.to.__str__()}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq.seq} {cseq.method}\r\n{contacts}{others}"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode()
        return head + self.body if self.body else head

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    # ``uri`` is a property: a Request-URI of the canonical shape is kept as
    # its validated match (``_uri_m``) until first read, and serialised from
    # its source text until then.
    __slots__ = ("_uri", "_uri_m", "max_forwards", "method")

    def __init__(
        self,
        method: str,
        uri: Uri,
        via: list[Via],
        from_: Address,
        to: Address,
        call_id: str,
        cseq: CSeq,
        headers: Headers | None = None,
        body: bytes = b"",
        contact: list[Address] | None = None,
        max_forwards: int | None = 70,
    ) -> None:
        # Message.__init__ inlined: one call fewer per parsed message.
        self.via = via
        self.from_ = from_
        self.to = to
        self.call_id = call_id
        self.cseq = cseq
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.contact = contact if contact is not None else []
        self.method = method
        self._uri = uri
        self._uri_m: re.Match[str] | None = None
        self.max_forwards = max_forwards

    def _load_uri(self) -> None:
        m = self._uri_m
        assert m is not None
        _, _, scheme, user, host, port, params = m.groups()
        self._uri = canonical_uri(scheme, user, host, port, params)
        self._uri_m = None

    @property
    def uri(self) -> Uri:
        if self._uri_m is not None:
            self._load_uri()
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri_m = None
        self._uri = value

    def _start_line(self) -> str:
        m = self._uri_m
        if m is not None:
            text = m.group(2)
            if text.count(";") < 2 or _DUP_PARAM.search(text) is None:
                return f"{self.method} {text} SIP/2.0"
            self._load_uri()
        return f"{self.method} {self._uri.__str__()} SIP/2.0"

    def _max_forwards_line(self) -> str:
        mf = self.max_forwards
        return "" if mf is None else f"Max-Forwards: {mf}\r\n"

    def response(
        self, status: int, reason: str | None = None, to_tag: str | None = None
    ) -> Response:
        """A response to this request built per RFC 3261 §8.2.6."""
        to = self.to
        if to_tag and to.tag is None and status != 100:
            to = to.copy()
            to.params["tag"] = to_tag
        headers = Headers()
        if status == 100:
            ts = self.headers.get("Timestamp")
            if ts is not None:
                headers.add("Timestamp", ts)
        elif status < 300 and self.method in ("INVITE", "SUBSCRIBE"):
            for rr in self.headers.get_all("Record-Route"):
                headers.add("Record-Route", rr)
        return Response(
            status,
            reason if reason is not None else REASONS.get(status, "Unknown"),
            list(self.via),
            self.from_,
            to,
            self.call_id,
            self.cseq,
            headers,
        )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} cseq={self.cseq}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        via: list[Via],
        from_: Address,
        to: Address,
        call_id: str,
        cseq: CSeq,
        headers: Headers | None = None,
        body: bytes = b"",
        contact: list[Address] | None = None,
    ) -> None:
        super().__init__(via, from_, to, call_id, cseq, headers, body, contact)
        self.status = status
        self.reason = reason

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} cseq={self.cseq}>"


def _parse_int(value: str, name: str, limit: int) -> int:
    # isdigit() alone also accepts non-ASCII digits; with isascii() it is
    # [0-9]+, cheaper than a regex.
    if not (value.isdigit() and value.isascii() and len(value) <= 10):
        raise SipParseError(f"{name} is not a number: {value[:40]!r}")
    number = int(value)
    if number > limit:
        raise SipParseError(f"{name} out of range: {value[:40]!r}")
    return number


def _classify(name: str) -> tuple[int, None] | tuple[None, tuple[str, str]]:
    """The slow path of header-name lookup: LWS before the colon, non-ASCII
    text, extension headers.  Returns (code, None) for a header parsed into an
    attribute, else (None, (key, name to store))."""
    name = name.rstrip(" \t")
    if not TOKEN_RE.fullmatch(name):
        raise SipParseError(f"bad header name: {name[:80]!r}")
    lower = name.lower()
    code = _SPECIAL.get(lower)
    if code is not None:
        return code, None
    return None, _RAW.get(lower) or (lower, name)


def _check_controls(text: str) -> None:
    """Slow path for the rare header that holds control characters: they are
    legal only as quoted-pairs inside quoted strings."""
    if _CTL.search(_QUOTED_STRING.sub("", text)) is not None:
        raise SipParseError(f"control character outside a quoted string: {text[:80]!r}")


def _parse_start_line(first: str, controls: bool) -> tuple[str, Uri] | tuple[int, str]:
    """(method, Request-URI) or (status, reason).  The start line is checked
    before the headers so that an unknown SIP version yields 505 (RFC 3261
    §21.5.7) whatever else is wrong with the message."""
    m = _FAST_REQUEST_LINE.fullmatch(first)
    if m is not None:
        method, scheme, user, host, port, params = m.groups()
        port_num = None
        if port is not None:
            port_num = int(port)
            if port_num > 65535:
                raise SipParseError(f"URI port out of range: {first[:80]!r}")
        return method, Uri(
            scheme, host, user, None, port_num, parse_params(params) if params else {}
        )
    m = _FAST_STATUS_LINE.fullmatch(first)
    if m is not None:
        return int(m.group(1)), m.group(2)
    return _parse_start_line_general(first, controls)


def _parse_start_line_general(first: str, controls: bool) -> tuple[str, Uri] | tuple[int, str]:
    if controls and _CTL.search(first) is not None:
        raise SipParseError(f"control character in start line: {first[:80]!r}")
    if first[:4].upper() == "SIP/":
        # A method is a token and cannot contain '/': this is a status line.
        parts = first.split(" ", 2)
        if parts[0].upper() != "SIP/2.0":
            raise SipParseError(f"unsupported SIP version: {first[:80]!r}", 505)
        if len(parts) < 2:
            raise SipParseError(f"bad status line: {first[:80]!r}")
        code = parts[1]
        if not (len(code) == 3 and code.isascii() and code.isdigit() and "100" <= code <= "699"):
            raise SipParseError(f"bad status code: {first[:80]!r}")
        return int(code), parts[2] if len(parts) == 3 else ""
    parts = first.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"bad request line: {first[:80]!r}")
    method, uri_text, version = parts
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if version[:4].upper() == "SIP/":
            raise SipParseError(f"unsupported SIP version: {version[:20]!r}", 505)
        raise SipParseError(f"bad request line: {first[:80]!r}")
    if not TOKEN_RE.fullmatch(method):
        raise SipParseError(f"bad method: {method[:40]!r}")
    uri = parse_uri(uri_text)
    if uri.headers is not None:
        raise SipParseError("Request-URI must not carry headers")
    return method, uri


def _parse_unfolded(data: bytes, start: int, end: int, stream: bool) -> Request | Response:
    """parse_message of ``data`` with the folded lines of its header section
    (``data[start:end]``) unfolded: the folds, with the LWS around them, become
    one space.  The start line cannot be folded (parse_message has rejected a
    continuation line right after it), so only header lines change."""
    unfolded = data[:start] + _FOLD.sub(b" ", data[start:end]) + data[end:]
    return parse_message(unfolded, stream=stream)


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    ``stream`` says the bytes were framed by :class:`StreamFramer` (so the
    body length is exact); for datagrams a Content-Length larger than the
    body is an error and a smaller one truncates the body (RFC 3261 §18.3).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("message too large", 513)
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("no end of headers")
    if end - start > MAX_HEADER_SIZE:
        raise SipParseError("header section too large", 494)
    raw = data[start:end]
    try:
        head = raw.decode()
    except UnicodeDecodeError as exc:
        raise SipParseError("header section is not UTF-8") from exc
    lines = head.split("\r\n")
    crlfs = len(lines) - 1
    controls = len(raw) - len(raw.translate(None, _CTL_BYTES)) != 2 * crlfs
    if controls and (raw.count(b"\r") != crlfs or raw.count(b"\n") != crlfs):
        raise SipParseError("bare CR or LF in header section")
    first = lines.pop(0)
    uri_m = _LAZY_REQUEST_LINE.fullmatch(first)
    if uri_m is not None:
        start_line: tuple[str, Uri | None] | tuple[int, str] = (uri_m.group(1), None)
    else:
        start_line = _parse_start_line(first, controls)

    if lines and lines[0][:1] in (" ", "\t"):
        raise SipParseError("continuation line before the first header")
    if len(lines) > MAX_HEADERS:
        if "\r\n " in head or "\r\n\t" in head:
            return _parse_unfolded(data, start, end, stream)
        raise SipParseError("too many headers", 494)

    via: list[Via] = []
    from_ = to = None
    call_id = None
    cseq = None
    max_forwards: int | None = None
    content_length: int | None = None
    contact: list[Address] = []
    items: list[tuple[str, str, str]] = []
    append = items.append
    wire_raw = _WIRE_RAW.get
    wire_special = _WIRE_SPECIAL.get
    try:
        if controls:
            for line in lines:
                _check_controls(line.partition(":")[2])
        lazy_via = _LAZY_VIA.fullmatch
        lazy_address = _LAZY_NAME_ADDR.fullmatch
        for line in lines:
            # Split at ": ", the usual separator, so that the value seldom
            # needs stripping (strip() then returns it without a copy).  No
            # known name contains ':', so a name found below ends at the first
            # colon, as the grammar wants; anything else is re-split at ':'.
            name, colon, value = line.partition(": ")
            value = value.strip(" \t")
            if colon and (entry := wire_raw(name)) is not None:
                append((entry[0], entry[1], value))
                continue
            if not colon or (code := wire_special(name)) is None:
                # Slow path: no space after the colon, LWS before it, unusual
                # case, extension header.
                name, colon, value = line.partition(":")
                if not colon:
                    raise SipParseError(f"header line without colon: {line[:80]!r}")
                value = value.strip(" \t")
                code, entry = _classify(name)
                if entry is not None:
                    append((entry[0], entry[1], value))
                    continue
            # The lazy paths of parse_via and parse_address are inlined.
            if code == _VIA:
                if "," not in value and (m := lazy_via(value)) is not None:
                    one_via = _new(Via)
                    one_via._m = m
                    via.append(one_via)
                else:
                    via.extend(parse_via(value))
            elif code == _FROM:
                if from_ is not None:
                    raise SipParseError("more than one From")
                m = lazy_address(value)
                if m is not None:
                    from_ = _new(Address)
                    from_._m = m
                else:
                    from_ = parse_address(value)
            elif code == _TO:
                if to is not None:
                    raise SipParseError("more than one To")
                m = lazy_address(value)
                if m is not None:
                    to = _new(Address)
                    to._m = m
                else:
                    to = parse_address(value)
            elif code == _CALL_ID:
                if call_id is not None:
                    raise SipParseError("more than one Call-ID")
                if not value or " " in value or "\t" in value:
                    raise SipParseError(f"malformed Call-ID: {value[:80]!r}")
                call_id = value
            elif code == _CSEQ:
                if cseq is not None:
                    raise SipParseError("more than one CSeq")
                # parse_cseq's fast path, inlined.
                number, _, cseq_method = value.partition(" ")
                if (
                    cseq_method in _COMMON_METHODS
                    and number.isdigit()
                    and number.isascii()
                    and len(number) <= 10
                    and (seq := int(number)) <= MAX_CSEQ
                ):
                    cseq = _new(CSeq)
                    _set_attr(cseq, "seq", seq)
                    _set_attr(cseq, "method", cseq_method)
                else:
                    cseq = parse_cseq(value)
            elif code == _MAX_FORWARDS:
                if max_forwards is not None:
                    raise SipParseError("more than one Max-Forwards")
                # _parse_int's common case inlined: one to three ASCII digits.
                if 0 < len(value) < 4 and value.isdigit() and value.isascii():
                    max_forwards = int(value)
                    if max_forwards > 255:
                        raise SipParseError(f"Max-Forwards out of range: {value!r}")
                else:
                    max_forwards = _parse_int(value, "Max-Forwards", 255)
            elif code == _CONTENT_LENGTH:
                if 0 < len(value) < 5 and value.isdigit() and value.isascii():
                    length = int(value)  # below MAX_MESSAGE_SIZE
                else:
                    length = _parse_int(value, "Content-Length", MAX_MESSAGE_SIZE)
                if content_length is not None and content_length != length:
                    raise SipParseError("conflicting Content-Length values")
                content_length = length
            elif code == _CONTACT:
                if value == "*":  # REGISTER removing every binding (RFC 3261 §10.2.2)
                    append(("contact", "Contact", value))
                elif "," not in value and (m := lazy_address(value)) is not None:
                    one_contact = _new(Address)
                    one_contact._m = m
                    contact.append(one_contact)
                else:
                    contact.extend(parse_address_list(value))
            elif code == _EXPIRES:
                _parse_int(value, "Expires", 2**32 - 1)
                append(("expires", "Expires", value))
            else:
                if not _DATE.fullmatch(value):
                    raise SipParseError(f"malformed Date: {value[:80]!r}")
                append(("date", "Date", value))
    except SipParseError:
        # Folded lines (obsolete, RFC 3261 §7.3.1) are rare: rather than
        # looking for them in every message, the first pass fails on them
        # (a continuation line has no colon or a name starting with LWS), and
        # only then is the message parsed again unfolded.
        if "\r\n " in head or "\r\n\t" in head:
            return _parse_unfolded(data, start, end, stream)
        raise

    if not via:
        raise SipParseError("missing Via")
    if from_ is None or to is None or call_id is None or cseq is None:
        raise SipParseError("missing one of From, To, Call-ID, CSeq")

    rest_bytes = data[end + 4 :]
    if content_length is None:
        body = rest_bytes
    elif content_length > len(rest_bytes):
        raise SipParseError("Content-Length larger than the body")
    else:
        body = rest_bytes[:content_length]
    if stream and len(body) != len(rest_bytes):
        raise SipParseError("stream message longer than its Content-Length")

    headers = _new(Headers)
    headers._items = items
    if isinstance(start_line[0], int):
        status, reason = start_line
        return Response(status, reason, via, from_, to, call_id, cseq, headers, body, contact)
    method, uri = start_line
    if cseq.method != method:
        raise SipParseError(f"CSeq method {cseq.method!r} does not match {method!r}")
    # Request.__init__ inlined: the slots are set directly.
    request = _new(Request)
    request.via = via
    request.from_ = from_
    request.to = to
    request.call_id = call_id
    request.cseq = cseq
    request.headers = headers
    request.body = body
    request.contact = contact
    request.method = method
    request._uri_m = uri_m
    if uri is not None:
        request._uri = uri
    request.max_forwards = max_forwards
    return request


class StreamFramer:
    """Cuts a byte stream (TCP, TLS) into SIP messages by Content-Length.

    :meth:`feed` returns complete messages as bytes; an empty ``b""`` entry is
    a CRLFCRLF keep-alive ping (RFC 5626 §4.4.1) the adapter answers with CRLF.
    """

    __slots__ = ("_buf", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self.max_message = max_message

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            if buf.startswith(b"\r\n"):
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    out.append(b"")
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping
                del buf[:2]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_SIZE:
                    raise SipParseError("header section too large", 494)
                break
            m = _STREAM_CL.search(buf, 0, end + 2)
            if m is None:
                length = 0
            else:
                value = m.group(1)
                # A stream cannot be re-synchronised after a bad length (RFC 4475
                # §3.1.2.3), and int() refuses long digit strings with a plain
                # ValueError: both end the connection here.
                if not (value.isdigit() and len(value) <= 10):
                    raise SipParseError(f"bad Content-Length on stream: {value[:40]!r}")
                length = int(value)
            total = end + 4 + length
            if total > self.max_message:
                raise SipParseError("message too large", 513)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
