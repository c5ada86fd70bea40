"""Session descriptions (SDP, RFC 8866) and the offer/answer model (RFC 3264),
as far as the call layer needs them to pass media between two call legs.

This module owns the SDP data model, its parser and serializer, and the few
offer/answer operations the call layer performs: building an audio offer,
answering an offer, putting a description on hold and bumping its version.

Model
-----
A :class:`SessionDescription` keeps ``v=``/``o=``/``s=`` as typed fields and
every other line as a ``(type, value)`` pair, in order, at the session level
or inside its :class:`Media` section.  Lines the model does not interpret are
kept verbatim so that a description relayed from one leg to the other loses
nothing.  Helpers that derive a new description (:meth:`~SessionDescription.
with_direction`, :meth:`~SessionDescription.bump_version`) never modify the
object they are called on: descriptions are routinely shared between the two
legs of a call, and an in-place edit on one side would leak to the other.

:func:`parse_sdp` raises :class:`SdpError` and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import ids
from .errors import SipParseError

__all__ = [
    "DEFAULT_CODECS",
    "DIRECTIONS",
    "MAX_SDP_SIZE",
    "Media",
    "Origin",
    "SdpError",
    "SessionDescription",
    "answer_for",
    "build_offer",
    "parse_sdp",
]

#: A session description travels inside one SIP message, which is itself
#: capped at 64 KiB; anything larger is not a description we sent or want.
MAX_SDP_SIZE = 65535

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: (payload type, rtpmap encoding) pairs offered and accepted by default.
DEFAULT_CODECS: tuple[tuple[int, str], ...] = (
    (0, "PCMU/8000"),
    (8, "PCMA/8000"),
    (101, "telephone-event/8000"),
)

# Static payload types (RFC 3551 table 4) an offer may list without rtpmap.
_STATIC_PAYLOADS = {
    "0": "PCMU/8000",
    "3": "GSM/8000",
    "4": "G723/8000",
    "8": "PCMA/8000",
    "9": "G722/8000",
    "18": "G729/8000",
}
# RFC 3264 §6.1: the answerer mirrors a one-way stream.
_MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
# Addresses nobody can send media to; RFC 2543 hold used the IPv4 one.
_NULL_ADDRESSES = frozenset({"0.0.0.0", "::"})

_TYPE = re.compile(r"[A-Za-z]")
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_FIELD = re.compile(r"[^\s]+")
_SEPARATOR = re.compile(r"[ \t]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_PORT = re.compile(r"([0-9]{1,5})(?:/([0-9]{1,5}))?")


class SdpError(SipParseError):
    """Malformed session description (or one that cannot be serialised).

    ``status`` is 400 like any malformed request, 413 for an oversized body;
    an offer that parses but cannot be accepted is the call layer's 488.
    """


@dataclass(slots=True)
class Origin:
    """The ``o=`` line."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Media:
    """One media section: its ``m=`` line and the lines that follow it.

    ``port_count`` is the optional ``/<number of ports>`` of the ``m=`` line.
    """

    media: str
    port: int
    proto: str
    fmts: list[str]
    lines: list[tuple[str, str]] = field(default_factory=list)
    port_count: int | None = None

    def attributes(self, name: str) -> list[str]:
        """Values of every ``a=name:value`` line (``""`` for a flag ``a=name``)."""
        return _attributes(self.lines, name)

    def rtpmap(self) -> dict[str, str]:
        """Payload type -> encoding (``"PCMU/8000"``), from ``a=rtpmap`` lines
        and, for static payload types listed without one, RFC 3551."""
        mapping: dict[str, str] = {}
        for value in self.attributes("rtpmap"):
            pt, _, encoding = value.partition(" ")
            if encoding.strip():
                mapping.setdefault(pt.strip(), encoding.strip())
        for fmt in self.fmts:
            if fmt not in mapping and fmt in _STATIC_PAYLOADS:
                mapping[fmt] = _STATIC_PAYLOADS[fmt]
        return mapping

    def copy(self) -> Media:
        return Media(
            self.media, self.port, self.proto, list(self.fmts), list(self.lines), self.port_count
        )

    def _m_value(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join([self.media, port, self.proto, *self.fmts])


@dataclass(slots=True)
class SessionDescription:
    """A parsed session description.

    ``lines`` holds the session-level lines other than ``v=``, ``o=`` and
    ``s=``, in order; ``media`` the media sections in order.
    """

    origin: Origin
    session_name: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    # -- serialisation -------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise with CRLF line ends: ``v=``, ``o=``, ``s=``, then the rest.

        Raises :class:`SdpError` if a value would break the line framing
        (CR, LF or NUL), so that text from an API caller cannot inject lines.
        """
        o = self.origin
        words = [o.username, o.sess_id, o.nettype, o.addrtype, o.address]
        for m in self.media:
            words.extend([m.media, m.proto, *m.fmts])
        for word in words:
            if not _FIELD.fullmatch(word):
                raise SdpError(f"SDP field must be non-empty without spaces: {word[:80]!r}")
        if o.sess_version < 0:
            raise SdpError(f"negative o= sess-version: {o.sess_version}")
        out = ["v=0", f"o={o}", f"s={self.session_name}"]
        out.extend(_format_lines(self.lines, "vosm"))
        for m in self.media:
            if not 0 <= m.port <= 65535 or (m.port_count is not None and m.port_count < 1):
                raise SdpError(f"m= port out of range: {m.port}/{m.port_count}")
            out.append(f"m={m._m_value()}")
            out.extend(_format_lines(m.lines, "vm"))
        for line in out:
            if _FORBIDDEN.search(line):
                raise SdpError(f"SDP value contains CR, LF or NUL: {line[:80]!r}")
        return ("\r\n".join(out) + "\r\n").encode()

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def copy(self) -> SessionDescription:
        """A deep copy: no list is shared with the original."""
        o = self.origin
        origin = Origin(o.username, o.sess_id, o.sess_version, o.nettype, o.addrtype, o.address)
        return SessionDescription(
            origin, self.session_name, list(self.lines), [m.copy() for m in self.media]
        )

    # -- queries ---------------------------------------------------------

    def connection(self, media_index: int = 0) -> tuple[str, int]:
        """``(address, port)`` media of stream ``media_index`` should go to.

        The media-level ``c=`` wins over the session-level one; a multicast
        TTL or address count (``/127/3``) is dropped.  Raises
        :class:`SdpError` if neither level has a usable ``c=``, and
        :class:`IndexError` for a stream that does not exist.
        """
        m = self.media[media_index]
        for lines in (m.lines, self.lines):
            for t, value in lines:
                if t == "c":
                    parts = value.split()
                    if len(parts) != 3:
                        raise SdpError(f"malformed c= line: {value[:80]!r}")
                    return parts[2].split("/", 1)[0], m.port
        raise SdpError(f"no c= line for media stream {media_index}")

    def direction(self, media_index: int = 0) -> str:
        """``sendrecv``, ``sendonly``, ``recvonly`` or ``inactive`` for a stream:
        its own attribute, else the session-level one, else ``sendrecv``."""
        found = _direction_of(self.media[media_index].lines)
        if found is None:
            found = _direction_of(self.lines)
        return found or "sendrecv"

    @property
    def is_hold(self) -> bool:
        """Whether the sender of this description is holding the call.

        True when every active (non-zero port) stream is ``sendonly`` or
        ``inactive`` or points at a null address (RFC 2543-style hold with
        ``c=IN IP4 0.0.0.0``).  A description with no active stream is not a
        hold: it is a rejection.
        """
        active = [i for i, m in enumerate(self.media) if m.port != 0]
        if not active:
            return False
        for i in active:
            if self.direction(i) in ("sendonly", "inactive"):
                continue
            try:
                address = self.connection(i)[0]
            except SdpError:
                return False
            if address not in _NULL_ADDRESSES:
                return False
        return True

    # -- derived descriptions ------------------------------------------

    def bump_version(self) -> SessionDescription:
        """A copy whose ``o=`` sess-version is one higher.

        Returns a **new** object and leaves ``self`` untouched (RFC 3264 §8:
        every changed offer from the same session needs a higher version).
        """
        new = self.copy()
        new.origin.sess_version += 1
        return new

    def with_direction(self, direction: str, media_index: int | None = None) -> SessionDescription:
        """A copy with ``direction`` set on stream ``media_index``, or on every
        stream when it is ``None`` (session-level direction lines are then
        removed so that they cannot contradict the new ones).  An existing
        direction line is replaced where it stands; otherwise one is appended
        to the section."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown media direction {direction!r}")
        new = self.copy()
        if media_index is None:
            new.lines = [ln for ln in new.lines if not _is_direction(ln)]
            if not new.media:
                new.lines.append(("a", direction))
            for m in new.media:
                m.lines = _set_direction(m.lines, direction)
        else:
            m = new.media[media_index]
            m.lines = _set_direction(m.lines, direction)
        return new

    def attributes(self, name: str) -> list[str]:
        """Values of every session-level ``a=name:value`` line."""
        return _attributes(self.lines, name)


# -- parsing -----------------------------------------------------------------


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse a session description.

    Accepts CRLF and bare LF line ends and skips empty lines.  Requires
    ``v=0`` first and exactly one ``o=`` and ``s=`` before the first ``m=``;
    every other line of the form ``<letter>=<value>`` is kept verbatim.
    """
    if len(data) > MAX_SDP_SIZE:
        raise SdpError(f"SDP larger than {MAX_SDP_SIZE} bytes", 413)
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError(f"SDP is not UTF-8: {exc.reason}") from None
    raw_lines = text.split("\n")
    lines: list[tuple[str, str]] = []
    for raw in raw_lines:
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not _TYPE.fullmatch(line[0]):
            raise SdpError(f"malformed SDP line: {line[:80]!r}")
        if _FORBIDDEN.search(line):
            raise SdpError(f"stray CR or NUL in SDP line: {line[:80]!r}")
        lines.append((line[0], line[2:]))
    if not lines or lines[0] != ("v", "0"):
        raise SdpError("SDP must start with v=0")

    origin: Origin | None = None
    session_name: str | None = None
    session: list[tuple[str, str]] = []
    media: list[Media] = []
    for t, value in lines[1:]:
        if t == "v":
            raise SdpError("v= line after the start of the SDP")
        if t == "m":
            media.append(_parse_m(value))
        elif media:
            media[-1].lines.append((t, value))
        elif t == "o":
            if origin is not None:
                raise SdpError("more than one o= line")
            origin = _parse_origin(value)
        elif t == "s":
            if session_name is not None:
                raise SdpError("more than one s= line")
            session_name = value
        else:
            session.append((t, value))
    if origin is None:
        raise SdpError("SDP without o= line")
    if session_name is None:
        raise SdpError("SDP without s= line")
    return SessionDescription(origin, session_name, session, media)


def _words(value: str) -> list[str]:
    # RFC 8866 separates fields with exactly one space; some peers pad with
    # more or with tabs, which costs nothing to accept.
    return _SEPARATOR.split(value.strip(" \t"))


def _parse_origin(value: str) -> Origin:
    parts = _words(value)
    if len(parts) != 6 or not all(_FIELD.fullmatch(p) for p in parts):
        raise SdpError(f"malformed o= line: {value[:80]!r}")
    username, sess_id, version, nettype, addrtype, address = parts
    if not _DIGITS.fullmatch(version):
        raise SdpError(f"o= sess-version is not a number: {value[:80]!r}")
    return Origin(username, sess_id, int(version), nettype, addrtype, address)


def _parse_m(value: str) -> Media:
    parts = _words(value)
    if len(parts) < 3 or not all(_FIELD.fullmatch(p) for p in parts):
        raise SdpError(f"malformed m= line: {value[:80]!r}")
    port_match = _PORT.fullmatch(parts[1])
    if port_match is None:
        raise SdpError(f"malformed m= port: {value[:80]!r}")
    port = int(port_match.group(1))
    count = None if port_match.group(2) is None else int(port_match.group(2))
    if port > 65535 or (count is not None and count == 0):
        raise SdpError(f"m= port out of range: {value[:80]!r}")
    return Media(parts[0], port, parts[2], parts[3:], [], count)


# -- line helpers --------------------------------------------------------------


def _format_lines(lines: list[tuple[str, str]], reserved: str) -> list[str]:
    # A reserved type here would be read back as a different structure (a
    # second o=, a new m= section), so refuse it rather than emit it.
    for t, _ in lines:
        if not _TYPE.fullmatch(t) or t in reserved:
            raise SdpError(f"SDP line type must be one letter other than {reserved}: {t!r}")
    return [f"{t}={v}" for t, v in lines]


def _attributes(lines: list[tuple[str, str]], name: str) -> list[str]:
    values = []
    for t, value in lines:
        if t != "a":
            continue
        key, sep, rest = value.partition(":")
        if key == name:
            values.append(rest if sep else "")
    return values


def _is_direction(line: tuple[str, str]) -> bool:
    return line[0] == "a" and line[1] in DIRECTIONS


def _direction_of(lines: list[tuple[str, str]]) -> str | None:
    for line in lines:
        if _is_direction(line):
            return line[1]
    return None


def _set_direction(lines: list[tuple[str, str]], direction: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    placed = False
    for line in lines:
        if _is_direction(line):
            if not placed:
                out.append(("a", direction))
                placed = True
        else:
            out.append(line)
    if not placed:
        out.append(("a", direction))
    return out


# -- offer / answer ------------------------------------------------------------


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _new_session_id() -> int:
    # RFC 8866 §5.2 only asks for global uniqueness; 62 random bits keep the
    # number within a signed 64-bit integer for peers that parse it as one.
    return ids.randbits(62) or 1


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"RTP port out of range: {port}")


def _encoding_key(encoding: str) -> tuple[str, str, str]:
    """Compare rtpmap encodings by name (case-insensitively), clock rate and
    channel count, with channels defaulting to 1 (RFC 8866 §6.6)."""
    parts = encoding.strip().split("/")
    name = parts[0].lower()
    rate = parts[1] if len(parts) > 1 else ""
    channels = parts[2] if len(parts) > 2 else "1"
    return (name, rate, channels)


def _audio_lines(
    codecs: Sequence[tuple[str, str]], fmtp: dict[str, str], direction: str
) -> list[tuple[str, str]]:
    lines = [("a", f"rtpmap:{pt} {encoding}") for pt, encoding in codecs]
    lines.extend(("a", f"fmtp:{pt} {fmtp[pt]}") for pt, _ in codecs if pt in fmtp)
    lines.append(("a", "ptime:20"))
    lines.append(("a", direction))
    return lines


def build_offer(
    address: str,
    port: int,
    *,
    session_id: int | None = None,
    codecs: Sequence[tuple[int, str]] = DEFAULT_CODECS,
    direction: str = "sendrecv",
) -> SessionDescription:
    """An offer for one RTP/AVP audio stream at ``address:port``.

    ``codecs`` are ``(payload type, encoding)`` pairs in order of preference;
    a ``telephone-event`` codec gets ``a=fmtp:<pt> 0-16`` (DTMF digits,
    RFC 4733).  ``session_id`` defaults to a random number and is also the
    initial sess-version.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown media direction {direction!r}")
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    _check_port(port)
    sid = _new_session_id() if session_id is None else session_id
    addrtype = _addrtype(address)
    pairs = [(str(pt), encoding) for pt, encoding in codecs]
    fmtp = {pt: "0-16" for pt, enc in pairs if _encoding_key(enc)[0] == "telephone-event"}
    media = Media("audio", port, "RTP/AVP", [pt for pt, _ in pairs])
    media.lines = _audio_lines(pairs, fmtp, direction)
    return SessionDescription(
        Origin("-", str(sid), sid, "IN", addrtype, address),
        "-",
        [("c", f"IN {addrtype} {address}"), ("t", "0 0")],
        [media],
    )


def answer_for(
    offer: SessionDescription,
    address: str,
    port: int,
    *,
    codecs: Sequence[tuple[int, str]] = DEFAULT_CODECS,
    session_id: int | None = None,
) -> SessionDescription:
    """The RFC 3264 answer to ``offer`` from a party receiving RTP at
    ``address:port``.

    Every offered stream gets an ``m=`` line, in the offer's order.  The
    first RTP/AVP audio stream with a codec in common (telephone-event alone
    does not count) is accepted with the common codecs in ``codecs`` order,
    using the offer's payload type numbers (§6.1), and the mirrored direction
    (sendonly <-> recvonly).  Every other stream is rejected with port 0,
    since this party has a single RTP port to give.
    """
    _check_port(port)
    sid = _new_session_id() if session_id is None else session_id
    addrtype = _addrtype(address)
    wanted = [_encoding_key(enc) for _, enc in codecs]
    session_lines: list[tuple[str, str]] = [("c", f"IN {addrtype} {address}")]
    # §6: the answer's t= line must equal the offer's.
    session_lines.extend(line for line in offer.lines if line[0] == "t")
    if not any(t == "t" for t, _ in session_lines):
        session_lines.append(("t", "0 0"))

    answer_media: list[Media] = []
    accepted_one = False
    for index, m in enumerate(offer.media):
        chosen: list[tuple[str, str]] = []
        if not accepted_one and m.media == "audio" and m.port != 0 and m.proto == "RTP/AVP":
            offered = m.rtpmap()
            by_key: dict[tuple[str, str, str], str] = {}
            for fmt in m.fmts:
                encoding = offered.get(fmt)
                if encoding is not None:
                    by_key.setdefault(_encoding_key(encoding), fmt)
            for key in wanted:
                if key in by_key and by_key[key] not in (pt for pt, _ in chosen):
                    chosen.append((by_key[key], offered[by_key[key]]))
        if not any(_encoding_key(enc)[0] != "telephone-event" for _, enc in chosen):
            fmt = m.fmts[0] if m.fmts else "0"
            answer_media.append(Media(m.media, 0, m.proto, [fmt]))
            continue
        accepted_one = True
        fmtp: dict[str, str] = {}
        offered_fmtp = {v.partition(" ")[0]: v.partition(" ")[2] for v in m.attributes("fmtp")}
        for pt, enc in chosen:
            if _encoding_key(enc)[0] == "telephone-event":
                fmtp[pt] = "0-16"
            elif offered_fmtp.get(pt):
                fmtp[pt] = offered_fmtp[pt]
        direction = _MIRROR[offer.direction(index)]
        accepted = Media("audio", port, m.proto, [pt for pt, _ in chosen])
        accepted.lines = _audio_lines(chosen, fmtp, direction)
        answer_media.append(accepted)

    return SessionDescription(
        Origin("-", str(sid), sid, "IN", addrtype, address), "-", session_lines, answer_media
    )
