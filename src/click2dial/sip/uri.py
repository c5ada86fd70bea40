"""SIP and SIPS URIs (RFC 3261 §19.1): parsing, serialising, comparing.

Parameter names are case-insensitive and stored lower-cased; the values of the
parameters that RFC 3261 defines as tokens (``transport``, ``user``,
``method``) are compared case-insensitively too, so ``transport=UDP`` is the
same as ``transport=udp``.  URIs of other schemes (``tel:``, ``urn:``...) are
kept opaque: the core routes only on SIP URIs.

Escapes (``%41``) are kept as written, so a URI serialises back to the bytes
it was parsed from; :meth:`Uri.matches` compares user parts unescaped, as
RFC 3261 §19.1.4 requires.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote as _pct_decode

from .errors import SipParseError

# Each component is one character class with '%' in it, and escapes are
# checked once over the whole URI afterwards: an alternation per character
# ("class | %XX") makes the regex engine several times slower on the hot path.
_USER_CHARS = r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]"
_PASSWORD_CHARS = r"[A-Za-z0-9\-_.!~*'()&=+$,%]"
_PARAM_CHARS = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]"
_HNV_CHARS = r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]"
HOST_PATTERN = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)"

_SIP_URI = re.compile(
    rf"([Ss][Ii][Pp][Ss]?):(?:({_USER_CHARS}+)(?::({_PASSWORD_CHARS}*))?@)?"
    rf"({HOST_PATTERN})(?::([0-9]{{1,5}}))?"
    rf"((?:;{_PARAM_CHARS}+(?:={_PARAM_CHARS}+)?)*)"
    rf"(?:\?({_HNV_CHARS}+={_HNV_CHARS}*(?:&{_HNV_CHARS}+={_HNV_CHARS}*)*))?"
)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE_URI = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):([^\s<>\"]+)")
_TOKEN_VALUED = frozenset({"transport", "user", "method"})
_IPV4_TAIL = re.compile(r":::[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def valid_ip_literal(host: str) -> bool:
    """Whether ``host`` (a bracketed IPv6 reference, brackets included) holds a
    real IPv6 address.

    The ``2001:db8:::192.0.2.1`` form that RFC 3261's ABNF wrongly allows is
    accepted too, as RFC 5118 §4.10 asks receivers to be robust to it.
    """
    inner = host[1:-1]
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        m = _IPV4_TAIL.search(inner)
        if m is None or m.end() != len(inner):
            return False
        try:
            ipaddress.IPv6Address(inner[: m.start()] + inner[m.start() + 1 :])
        except ValueError:
            return False
    return True


def parse_params(text: str) -> dict[str, str | None]:
    """Split ``;a=b;c`` (already validated) into a dict with lower-cased names."""
    if text[:1] == ";" and text.find(";", 1) < 0:  # the usual single parameter
        name, eq, value = text[1:].partition("=")
        lname = name.lower()
        if eq:
            return {lname: value.lower() if lname in _TOKEN_VALUED else value}
        if lname:
            return {lname: None}
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        lname = name.lower()
        if eq:
            params[lname] = value.lower() if lname in _TOKEN_VALUED else value
        else:
            params[lname] = None
    return params


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes; bytes that are not UTF-8 stay distinct."""
    return _pct_decode(text, errors="surrogateescape") if "%" in text else text


@dataclass(slots=True)
class Uri:
    """A parsed URI.  For schemes other than sip/sips only ``scheme`` and
    ``opaque`` are set."""

    scheme: str
    host: str = ""
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    opaque: str | None = None

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def copy(self) -> Uri:
        return Uri(
            self.scheme,
            self.host,
            self.user,
            self.password,
            self.port,
            dict(self.params),
            self.headers,
            self.opaque,
        )

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        user = self.user
        if user is None:
            out = f"{self.scheme}:{self.host}"
        elif self.password is None:
            out = f"{self.scheme}:{user}@{self.host}"
        else:
            out = f"{self.scheme}:{user}:{self.password}@{self.host}"
        if self.port is not None:
            out += f":{self.port}"
        if self.params:
            # Concatenation beats a comprehension and join for one or two.
            for k, v in self.params.items():
                out += f";{k}" if v is None else f";{k}={v}"
        if self.headers:
            out += "?" + self.headers
        return out

    def matches(self, other: Uri) -> bool:
        """Loose equality used for routing decisions (RFC 3261 §19.1.4,
        without the parameter cross-checks): scheme, user, host and port.
        User parts are compared unescaped (``%75ser`` is ``user``)."""
        if self.user != other.user and (
            self.user is None or other.user is None or unescape(self.user) != unescape(other.user)
        ):
            return False
        return (
            self.scheme == other.scheme
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.opaque == other.opaque
        )


def parse_uri(text: str) -> Uri:
    """Parse a URI, raising :class:`SipParseError` on anything malformed."""
    m = _SIP_URI.fullmatch(text)
    if m is not None:
        scheme, user, password, host, port, params, headers = m.groups()
        if "%" in text and _BAD_ESCAPE.search(text):
            raise SipParseError(f"bad %-escape in URI: {text[:80]!r}")
        if host[0] == "[" and not valid_ip_literal(host):
            raise SipParseError(f"bad IPv6 reference in URI: {text[:80]!r}")
        port_num: int | None = None
        if port is not None:
            port_num = int(port)
            if port_num > 65535:
                raise SipParseError(f"URI port out of range: {text[:80]!r}")
        return Uri(
            scheme.lower(),
            host,
            user,
            password,
            port_num,
            parse_params(params) if params else {},
            headers,
        )
    m = _ABSOLUTE_URI.fullmatch(text)
    if m is None or m.group(1).lower() in ("sip", "sips"):
        raise SipParseError(f"malformed URI: {text[:80]!r}")
    return Uri(m.group(1).lower(), opaque=m.group(2))
