"""SIP and SIPS URIs (RFC 3261 §19.1): parsing, serialising, comparing.

Parameter names are case-insensitive and stored lower-cased; the values of the
parameters that RFC 3261 defines as tokens (``transport``, ``user``,
``method``) are compared case-insensitively too, so ``transport=UDP`` is the
same as ``transport=udp``.  URIs of other schemes (``tel:``, ``urn:``...) are
kept opaque: the core routes only on SIP URIs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError

_ESC = r"%[0-9A-Fa-f]{2}"
_USER = rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|{_ESC})+"
_PASSWORD = rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|{_ESC})*"
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)"
_PARAMCHARS = rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|{_ESC})+"
_HNVCHARS = rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|{_ESC})*"

_SIP_URI = re.compile(
    rf"(?i:(sips?)):(?:({_USER})(?::({_PASSWORD}))?@)?({_HOST})(?::([0-9]{{1,5}}))?"
    rf"((?:;{_PARAMCHARS}(?:={_PARAMCHARS})?)*)"
    rf"(?:\?({_HNVCHARS}={_HNVCHARS}(?:&{_HNVCHARS}={_HNVCHARS})*))?"
)
_ABSOLUTE_URI = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):([^\s<>\"]+)")
_TOKEN_VALUED = frozenset({"transport", "user", "method"})


def parse_params(text: str) -> dict[str, str | None]:
    """Split ``;a=b;c`` (already validated) into a dict with lower-cased names."""
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
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":")
                out.append(self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?")
            out.append(self.headers)
        return "".join(out)

    def matches(self, other: Uri) -> bool:
        """Loose equality used for routing decisions (RFC 3261 §19.1.4,
        without the parameter cross-checks): scheme, user, host and port."""
        return (
            self.scheme == other.scheme
            and self.user == other.user
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.opaque == other.opaque
        )


def parse_uri(text: str) -> Uri:
    """Parse a URI, raising :class:`SipParseError` on anything malformed."""
    m = _SIP_URI.fullmatch(text)
    if m is not None:
        scheme, user, password, host, port, params, headers = m.groups()
        port_num: int | None = None
        if port is not None:
            port_num = int(port)
            if port_num > 65535:
                raise SipParseError(f"URI port out of range: {text!r}")
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
