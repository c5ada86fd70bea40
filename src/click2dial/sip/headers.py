"""Header-level grammar of RFC 3261 §25: names, lists, parameters, and the
structured headers the core relies on (Via, From/To/Contact/Route addresses,
CSeq).

Every parser here is strict about what RFC 3261 forbids and tolerant of the
linear white space it allows; all of them raise :class:`SipParseError` and
nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .uri import Uri, parse_uri

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

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(_TOKEN)
_QUOTED = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
_HPARAM = re.compile(
    rf"[ \t]*;[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_QUOTED}|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?[ \t]*"
)
_DISPLAY_TOKENS = re.compile(rf"(?:{_TOKEN}|[ \t])*")
_VIA_RE = re.compile(
    rf"({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)
_CSEQ_RE = re.compile(rf"[ \t]*([0-9]{{1,10}})[ \t]+({_TOKEN})[ \t]*")
MAX_CSEQ = 2**31 - 1


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    return CANONICAL.get(name.lower(), name)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and ``<...>``."""
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
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
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value[:80]!r}")
    parts.append(value[start:].strip())
    return parts


def parse_header_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``;name=value`` pairs from ``text[pos:]``; the whole rest must
    be parameters.  Names are lower-cased; quoted values keep their quotes."""
    params: dict[str, str | None] = {}
    end = len(text)
    match = _HPARAM.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise SipParseError(f"malformed header parameters: {text[pos : pos + 80]!r}")
            break
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return re.sub(r"\\(.)", r"\1", inner) if "\\" in inner else inner
    return value


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class Via:
    """One Via entry.  ``params`` holds branch, received, rport, maddr..."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host.lower(), self.port)

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hp}{format_params(self.params)}"


def parse_via(value: str) -> list[Via]:
    """Parse a Via header value (one or more comma-separated entries)."""
    vias = []
    for item in split_list(value):
        m = _VIA_RE.match(item)
        if m is None:
            raise SipParseError(f"malformed Via: {item[:80]!r}")
        proto, version, transport, host, port = m.groups()
        if proto.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"unsupported Via protocol: {item[:80]!r}")
        port_num = None
        if port is not None:
            port_num = int(port)
            if port_num > 65535:
                raise SipParseError(f"Via port out of range: {item[:80]!r}")
        params = parse_header_params(item, m.end())
        if "branch" in params and not params["branch"]:
            raise SipParseError("empty Via branch")
        vias.append(Via(transport.upper(), host, port_num, params))
    return vias


@dataclass(slots=True)
class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact,
    Route, Record-Route, P-Asserted-Identity...)."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def copy(self) -> Address:
        return Address(self.uri.copy(), self.display_name, dict(self.params))

    def __str__(self) -> str:
        uri = f"<{self.uri}>"
        if self.display_name:
            uri = f"{quote(self.display_name)} {uri}"
        return uri + format_params(self.params) if self.params else uri


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted string starting at ``text[start] == '"'``."""
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError(f"unterminated quoted string: {text[:80]!r}")


def parse_address(value: str) -> Address:
    """Parse one name-addr / addr-spec with its parameters."""
    text = value.strip()
    if not text:
        raise SipParseError("empty address")
    display: str | None = None
    if text[0] == '"':
        end = _quoted_end(text, 0)
        display = unquote(text[:end])
        lt = end
        while lt < len(text) and text[lt] in " \t":
            lt += 1
        if lt >= len(text) or text[lt] != "<":
            raise SipParseError(f"quoted display name without <URI>: {text[:80]!r}")
    else:
        lt = text.find("<")
        if lt >= 0:
            raw = text[:lt].strip()
            if raw and not _DISPLAY_TOKENS.fullmatch(raw):
                raise SipParseError(f"display name must be tokens or quoted: {text[:80]!r}")
            display = raw or None
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unterminated <URI>: {text[:80]!r}")
        uri = parse_uri(text[lt + 1 : gt])
        return Address(uri, display, parse_header_params(text, gt + 1))
    # addr-spec: the URI ends at the first ';' and cannot carry URI
    # parameters or headers (RFC 3261 §20.10).
    semi = text.find(";")
    uri_text = text if semi < 0 else text[:semi]
    if any(c in uri_text for c in " \t,?"):
        raise SipParseError(f"URI with space, comma or '?' must be in <>: {text[:80]!r}")
    uri = parse_uri(uri_text)
    params = parse_header_params(text, semi) if semi >= 0 else {}
    return Address(uri, None, params)


def parse_address_list(value: str) -> list[Address]:
    return [parse_address(item) for item in split_list(value)]


@dataclass(slots=True, frozen=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipParseError(f"malformed CSeq: {value[:80]!r}")
    seq = int(m.group(1))
    if seq > MAX_CSEQ:
        raise SipParseError(f"CSeq number out of range: {value[:80]!r}")
    return CSeq(seq, m.group(2))
