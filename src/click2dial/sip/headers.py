"""Header-level grammar of RFC 3261 §25: names, lists, parameters, and the
structured headers the core relies on (Via, From/To/Contact/Route addresses,
CSeq).

Every parser here is strict about what RFC 3261 forbids and tolerant of the
linear white space it allows; all of them raise :class:`SipParseError` and
nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SipParseError
from .uri import HOST_PATTERN, Uri, parse_params, parse_uri, valid_ip_literal

#: Canonical spelling of the header names the core knows, keyed by lower-case
#: long and compact (RFC 3261 §7.3.3 and later RFCs) forms.
_CANONICAL_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
    "Allow", "Allow-Events", "Answer-Mode", "Authentication-Info", "Authorization",
    "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
    "Event", "Expires", "From", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE",
    "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact",
    "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
    "Server", "Session-Expires", "Subject", "Subscription-State", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
]  # fmt: skip
CANONICAL: dict[str, str] = {name.lower(): name for name in _CANONICAL_NAMES}
CANONICAL.update(
    {
        "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
        "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
        "v": "Via", "o": "Event", "r": "Refer-To", "b": "Referred-By", "x": "Session-Expires",
        "u": "Allow-Events", "a": "Accept-Contact", "j": "Reject-Contact",
        "d": "Request-Disposition",
    }
)  # fmt: skip

#: Headers whose values are comma-separated lists (RFC 3261 §7.3.1).  Others,
#: like the authentication headers and Date, contain commas of their own.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "content-encoding", "content-language", "in-reply-to",
        "p-asserted-identity", "alert-info", "call-info", "error-info", "warning",
        "reason", "privacy",
    }
)  # fmt: skip

_TOKEN_CHARS = r"[A-Za-z0-9\-.!%*_+`'~]"
_TOKEN = _TOKEN_CHARS + "+"
TOKEN_RE = re.compile(_TOKEN)
_QUOTED = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
_GEN_VALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_HPARAM = re.compile(rf"[ \t]*;[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_QUOTED}|{_GEN_VALUE}))?[ \t]*")
# name-addr: a quoted display name, or tokens and LWS (one flat character class:
# "(token|LWS)*" nests quantifiers and backtracks exponentially on a mismatch),
# then <URI>.  The quoted string is the unrolled "normal* (\\. normal*)*" loop.
_NAME_ADDR = re.compile(
    r'(?:"([^"\\]*(?:\\.[^"\\]*)*)"[ \t]*|(' + _TOKEN_CHARS[:-1] + r" \t]*))<([^<>]*)>",
    re.DOTALL,
)
_VIA_RE = re.compile(
    rf"({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+({HOST_PATTERN})"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)
_CSEQ_RE = re.compile(rf"[ \t]*([0-9]{{1,10}})[ \t]+({_TOKEN})[ \t]*")

# Fast paths: one regex each for the Via and name-addr shapes nearly every
# message uses (no LWS inside, no escapes, no quoted parameter values, no IPv6
# literal).  Each accepts a strict subset of what the general parser accepts,
# with the same result; anything else takes the general path.  Every repeat is
# possessive: each run of characters is followed by a character outside its
# class, so giving characters back could never lead to a match, and not
# recording the backtracking points makes the match a third faster.
_FAST_HOST_PORT = r"([A-Za-z0-9][A-Za-z0-9\-.]*+)(?<!-)(?::([0-9]{1,5}+))?"
_FAST_HPARAMS = r"((?:;[A-Za-z0-9\-.!%*_+`'~]++(?:=[A-Za-z0-9\-.!%*_+`'~:]++)?+)*+)"
#: A SIP URI without password, escapes, IPv6 literal or headers: groups are
#: scheme, user, host, port and the ``;``-led parameter text.
FAST_SIP_URI = (
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,/]++)@)?" + _FAST_HOST_PORT
    + r"((?:;[A-Za-z0-9\-_.!~*'()/:&+$]++(?:=[A-Za-z0-9\-_.!~*'()/:&+$]++)?+)*+)"
)  # fmt: skip
_FAST_VIA = re.compile(rf"SIP/2\.0/([A-Z]++) {_FAST_HOST_PORT}{_FAST_HPARAMS}")
_FAST_NAME_ADDR = re.compile(
    r'(?:"([^"\\]*+)"[ \t]*+|(' + _TOKEN_CHARS[:-1] + r" \t]*+))"
    rf"<{FAST_SIP_URI}>{_FAST_HPARAMS}"
)
# Lazy paths: the canonical subset of the fast shapes, i.e. the text a parsed
# object of that shape serialises back to exactly (lower-case parameter names,
# a port without leading zeros, one space before a quoted display name,
# lower-case URI parameters, no control characters).  The whole value is
# validated by the match, at parse time; the objects are built from the match
# only when first touched, and an untouched object serialises as its source
# text (after checking for duplicate parameter names, which a dict would
# merge).  Anything else takes the eager paths above.
# 0-65535 without leading zeros, the usual one to four digits tried first.
_CANON_PORT = (
    r"(?::([1-9][0-9]{0,3}+(?![0-9])|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
    r"|655[0-2][0-9]|6553[0-5]|0)(?![0-9]))?"
)
_CANON_HOST_PORT = r"([A-Za-z0-9][A-Za-z0-9\-.]*+)(?<!-)" + _CANON_PORT
_CANON_HPARAMS = r"((?:;[a-z0-9\-.!%*_+`'~]++(?:=[A-Za-z0-9\-.!%*_+`'~:]++)?+)*+)"
CANON_SIP_URI = (
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,/]++)@)?" + _CANON_HOST_PORT
    + r"((?:;[a-z0-9\-_.!~*'()/:&+$]++(?:=[a-z0-9\-_.!~*'()/:&+$]++)?+)*+)"
)  # fmt: skip
_LAZY_VIA = re.compile(rf"SIP/2\.0/([A-Z]++) {_CANON_HOST_PORT}{_CANON_HPARAMS}")
_LAZY_NAME_ADDR = re.compile(
    r'(?:"([^"\\\x00-\x08\x0a-\x1f\x7f]*+)" )?' + rf"<{CANON_SIP_URI}>{_CANON_HPARAMS}"
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# Characters quote() must escape: the quote and backslash themselves, and the
# control characters a quoted-string may carry only as quoted-pairs.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
MAX_CSEQ = 2**31 - 1


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    return CANONICAL.get(name.lower(), name)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and ``<...>``."""
    if "," not in value:
        # Nothing to split; an unbalanced quote is left to the item's parser.
        return [value.strip(" \t")]
    if '"' not in value and "<" not in value:
        return [part.strip(" \t") for part in value.split(",")]
    parts: list[str] = []
    start = 0
    in_quote = in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value[:80]!r}")
    parts.append(value[start:].strip(" \t"))
    return parts


def parse_header_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``;name=value`` pairs from ``text[pos:]``; the whole rest must
    be parameters (and LWS).  Names are lower-cased; quoted values keep their
    quotes."""
    params: dict[str, str | None] = {}
    end = len(text)
    match = _HPARAM.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            if text[pos:].strip(" \t"):
                raise SipParseError(f"malformed header parameters: {text[pos : pos + 80]!r}")
            break
        name, value = m.groups()
        params[name.lower()] = value
        pos = m.end()
    return params


def _split_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` already validated by a fast-path regex (no LWS, no quotes)."""
    if text.find(";", 1) < 0:  # the usual single parameter
        name, eq, value = text[1:].partition("=")
        return {name.lower(): value if eq else None}
    params: dict[str, str | None] = {}
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        params[name.lower()] = value if eq else None
    return params


def canonical_uri(
    scheme: str, user: str | None, host: str, port: str | None, params: str | None
) -> Uri:
    """A Uri from the groups of a validated canonical-form match (the lazy
    Request-URI and name-addr paths share it)."""
    return Uri(
        scheme,
        host,
        user,
        None,
        int(port) if port is not None else None,
        _split_canonical_params(params) if params else {},
    )


def _split_canonical_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` matched by a lazy-path regex: names (and URI parameter
    values) are already lower-case, so this is parse_params/_split_params
    without the lower-casing."""
    if text.find(";", 1) < 0:  # the usual single parameter
        name, eq, value = text[1:].partition("=")
        return {name: value if eq else None}
    params: dict[str, str | None] = {}
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        params[name] = value if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    # Concatenation beats a comprehension and join for the usual one or two.
    out = ""
    for k, v in params.items():
        out += f";{k}" if v is None else f";{k}={v}"
    return out


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return value


def quote(value: str) -> str:
    """``value`` as a quoted-string.  CR and LF cannot be carried even as
    quoted-pairs (RFC 3261 §25.1), so they become spaces rather than letting a
    caller's string split the header."""
    if "\r" in value or "\n" in value:
        value = value.replace("\r", " ").replace("\n", " ")
    if _NEEDS_ESCAPE.search(value) is None:
        return f'"{value}"'
    return '"' + _NEEDS_ESCAPE.sub(r"\\\g<0>", value) + '"'


# A parameter name given twice in a ``;``-led list (names already lower-case).
# Searched over a whole lazy header value it may also pair names of different
# sections (or a ';' in a display name): that only sends the object down the
# eager path, which is always correct.
_DUP_PARAM = re.compile(r";([^;=]++)(?:=[^;]*+)?+(?:;[^;]*+)*?;\1(?![A-Za-z0-9\-_.!~*'()/:&+$%`])")


_new = object.__new__


class Via:
    """One Via entry.  ``params`` holds branch, received, rport, maddr...

    A Via parsed by the lazy path holds only its validated match (``_m``) until
    a field is first read or written; it then builds its fields and is an
    ordinary mutable object.  Until then it serialises as its source text.
    """

    __slots__ = ("_host", "_m", "_params", "_port", "_transport")

    # The lazy fields below are spelled out as properties on purpose: one
    # shared descriptor class measured 6% slower on parse+read+serialize.

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        self._m: re.Match[str] | None = None
        self._transport = transport
        self._host = host
        self._port = port
        self._params: dict[str, str | None] = {} if params is None else params

    def _load(self) -> None:
        m = self._m
        assert m is not None
        transport, host, port, params = m.groups()
        self._transport = transport
        self._host = host
        self._port = int(port) if port is not None else None
        self._params = _split_canonical_params(params) if params else {}
        self._m = None

    @property
    def transport(self) -> str:
        if self._m is not None:
            self._load()
        return self._transport

    @transport.setter
    def transport(self, value: str) -> None:
        if self._m is not None:
            self._load()
        self._transport = value

    @property
    def host(self) -> str:
        if self._m is not None:
            self._load()
        return self._host

    @host.setter
    def host(self, value: str) -> None:
        if self._m is not None:
            self._load()
        self._host = value

    @property
    def port(self) -> int | None:
        if self._m is not None:
            self._load()
        return self._port

    @port.setter
    def port(self, value: int | None) -> None:
        if self._m is not None:
            self._load()
        self._port = value

    @property
    def params(self) -> dict[str, str | None]:
        if self._m is not None:
            self._load()
        return self._params

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        if self._m is not None:
            self._load()
        self._params = value

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host.lower(), self.port)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Via:
            return NotImplemented
        assert isinstance(other, Via)
        return (self.transport, self.host, self.port, self.params) == (
            other.transport,
            other.host,
            other.port,
            other.params,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass was

    def __repr__(self) -> str:
        return (
            f"Via(transport={self.transport!r}, host={self.host!r}, port={self.port!r}, "
            f"params={self.params!r})"
        )

    def __str__(self) -> str:
        m = self._m
        if m is not None:
            text = m.string
            if text.count(";") < 2 or _DUP_PARAM.search(text) is None:
                return text
            self._load()
        hp = self._host if self._port is None else f"{self._host}:{self._port}"
        if not self._params:
            return f"SIP/2.0/{self._transport} {hp}"
        return f"SIP/2.0/{self._transport} {hp}{format_params(self._params)}"


def _parse_via_item(item: str) -> Via:
    m = _VIA_RE.match(item)
    if m is None:
        raise SipParseError(f"malformed Via: {item[:80]!r}")
    proto, version, transport, host, port = m.groups()
    if version != "2.0" or proto.upper() != "SIP":
        raise SipParseError(f"unsupported Via protocol: {item[:80]!r}")
    if host[0] == "[" and not valid_ip_literal(host):
        raise SipParseError(f"bad IPv6 reference in Via: {item[:80]!r}")
    port_num = None
    if port is not None:
        port_num = int(port)
        if port_num > 65535:
            raise SipParseError(f"Via port out of range: {item[:80]!r}")
    params = parse_header_params(item, m.end()) if m.end() < len(item) else {}
    if "branch" in params and not params["branch"]:
        raise SipParseError("empty Via branch")
    return Via(transport.upper(), host, port_num, params)


def parse_via(value: str) -> list[Via]:
    """Parse a Via header value (one or more comma-separated entries)."""
    if "," not in value:
        m = _LAZY_VIA.fullmatch(value)
        if m is not None:
            via = _new(Via)
            via._m = m
            return [via]
        m = _FAST_VIA.fullmatch(value)
        if m is not None:
            transport, host, port, params = m.groups()
            port_num = None
            if port is not None:
                port_num = int(port)
                if port_num > 65535:
                    raise SipParseError(f"Via port out of range: {value[:80]!r}")
            return [Via(transport, host, port_num, _split_params(params) if params else {})]
    return _parse_via_general(value)


def _parse_via_general(value: str) -> list[Via]:
    return [_parse_via_item(item) for item in split_list(value)]


class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact,
    Route, Record-Route, P-Asserted-Identity...).

    Lazy like :class:`Via`: one parsed by the lazy path keeps its validated
    match until a field is first read or written.
    """

    __slots__ = ("_display_name", "_m", "_params", "_uri")

    def __init__(
        self,
        uri: Uri,
        display_name: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        self._m: re.Match[str] | None = None
        self._uri = uri
        self._display_name = display_name
        self._params: dict[str, str | None] = {} if params is None else params

    def _load(self) -> None:
        m = self._m
        assert m is not None
        display, scheme, user, host, port, uri_params, params = m.groups()
        self._uri = canonical_uri(scheme, user, host, port, uri_params)
        self._display_name = display
        self._params = _split_canonical_params(params) if params else {}
        self._m = None

    @property
    def uri(self) -> Uri:
        if self._m is not None:
            self._load()
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        if self._m is not None:
            self._load()
        self._uri = value

    @property
    def display_name(self) -> str | None:
        if self._m is not None:
            self._load()
        return self._display_name

    @display_name.setter
    def display_name(self, value: str | None) -> None:
        if self._m is not None:
            self._load()
        self._display_name = value

    @property
    def params(self) -> dict[str, str | None]:
        if self._m is not None:
            self._load()
        return self._params

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        if self._m is not None:
            self._load()
        self._params = value

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def copy(self) -> Address:
        if self._m is not None:  # an independent lazy copy of the same text
            other = _new(Address)
            other._m = self._m
            return other
        return Address(self._uri.copy(), self._display_name, dict(self._params))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Address:
            return NotImplemented
        assert isinstance(other, Address)
        return (self.uri, self.display_name, self.params) == (
            other.uri,
            other.display_name,
            other.params,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass was

    def __repr__(self) -> str:
        return (
            f"Address(uri={self.uri!r}, display_name={self.display_name!r}, params={self.params!r})"
        )

    def __str__(self) -> str:
        m = self._m
        if m is not None:
            text = m.string
            if text.count(";") < 2 or _DUP_PARAM.search(text) is None:
                return text
            self._load()
        # An empty display name is written as "" so that it parses back as "".
        # uri.__str__() rather than f"{uri}": a direct call skips format().
        display = self._display_name
        if display is None:
            out = f"<{self._uri.__str__()}>"
        elif display.isalnum():  # nothing to escape: skip quote()'s checks
            out = f'"{display}" <{self._uri.__str__()}>'
        else:
            out = f"{quote(display)} <{self._uri.__str__()}>"
        return out + format_params(self._params) if self._params else out


def parse_address(value: str) -> Address:
    """Parse one name-addr / addr-spec with its parameters."""
    m = _LAZY_NAME_ADDR.fullmatch(value)
    if m is not None:
        address = _new(Address)
        address._m = m
        return address
    m = _FAST_NAME_ADDR.fullmatch(value)
    if m is not None:
        quoted, tokens, scheme, user, host, port, uri_params, params = m.groups()
        port_num = None
        if port is not None:
            port_num = int(port)
            if port_num > 65535:
                raise SipParseError(f"URI port out of range: {value[:80]!r}")
        uri = Uri(
            scheme, host, user, None, port_num, parse_params(uri_params) if uri_params else {}
        )
        return Address(
            uri,
            quoted if quoted is not None else tokens.strip(" \t") or None,
            _split_params(params) if params else {},
        )
    return _parse_address_general(value)


def _parse_address_general(value: str) -> Address:
    text = value.strip(" \t")
    if not text:
        raise SipParseError("empty address")
    m = _NAME_ADDR.match(text)
    if m is not None:
        quoted, tokens, uri_text = m.groups()
        if quoted is not None:
            display: str | None = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            display = tokens.rstrip(" \t") or None
        end = m.end()
        params = parse_header_params(text, end) if end < len(text) else {}
        return Address(parse_uri(uri_text), display, params)
    if "<" in text or text[0] == '"':
        raise SipParseError(f"malformed name-addr: {text[:80]!r}")
    # addr-spec: the URI ends at the first ';' and cannot carry URI
    # parameters or headers (RFC 3261 §20.10).
    semi = text.find(";")
    uri_text = text if semi < 0 else text[:semi].rstrip(" \t")
    if "," in uri_text or "?" in uri_text:
        raise SipParseError(f"URI with comma or '?' must be in <>: {text[:80]!r}")
    uri = parse_uri(uri_text)
    return Address(uri, None, parse_header_params(text, semi) if semi >= 0 else {})


def parse_address_list(value: str) -> list[Address]:
    if "," not in value:  # what split_list would do, without the call
        return [parse_address(value.strip(" \t"))]
    return [parse_address(item) for item in split_list(value)]


@dataclass(slots=True, frozen=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


# Methods a CSeq names almost always; one of them after a plain number and a
# single space is a well-formed CSeq without running the regex.
_COMMON_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
     "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"}
)  # fmt: skip


def parse_cseq(value: str) -> CSeq:
    number, _, method = value.partition(" ")
    if (
        method in _COMMON_METHODS
        and number.isdigit()
        and number.isascii()
        and len(number) <= 10
        and (seq := int(number)) <= MAX_CSEQ
    ):
        return CSeq(seq, method)
    return _parse_cseq_general(value)


def _parse_cseq_general(value: str) -> CSeq:
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipParseError(f"malformed CSeq: {value[:80]!r}")
    seq = int(m.group(1))
    if seq > MAX_CSEQ:
        raise SipParseError(f"CSeq number out of range: {value[:80]!r}")
    return CSeq(seq, m.group(2))
