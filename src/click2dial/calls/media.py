"""Session descriptions passed between the two legs of a click-to-dial call.

Click2Dial is a signalling-only B2BUA: media flows directly between the
agent's phone and the trunk.  Each leg sees Click2Dial as one SDP session of
its own, so the ``o=`` line that a leg receives keeps one username and
session id and a version that goes up with every change (RFC 3264 §8);
:class:`LegSession` owns that.  The media lines themselves are the other
party's, unchanged.
"""

from __future__ import annotations

from .. import ids
from ..sip.sdp import Origin, SessionDescription, answer_for, parse_sdp
from .ringback import Ringback


class LegSession:
    """Our SDP identity towards one leg."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.session_id = str(ids.randbits(31) + 1)
        self.version = 0
        self.last_sent: bytes | None = None

    def present(self, sdp: SessionDescription) -> bytes:
        """``sdp`` with our origin; the version moves only when the body
        differs from what this leg last received from us."""
        out = sdp.copy()
        out.origin = Origin(
            "click2dial", self.session_id, self.version, "IN", out.origin.addrtype, self.address
        )
        body = out.to_bytes()
        if self.last_sent is not None and body != self.last_sent:
            self.version += 1
            out.origin = Origin(
                "click2dial", self.session_id, self.version, "IN", out.origin.addrtype, self.address
            )
            body = out.to_bytes()
        self.last_sent = body
        return body

    def relay(self, raw: bytes) -> bytes:
        """Present the other leg's SDP (raises ``SdpError`` if malformed)."""
        return self.present(parse_sdp(raw))

    def ringback_answer(self, offer: SessionDescription, ringback: Ringback) -> bytes:
        """Our answer while we play ringback: one G.711 codec, our RTP port,
        and sendonly — we talk, the phone listens."""
        encoding = "PCMU/8000" if ringback.payload_type == 0 else "PCMA/8000"
        answer = answer_for(
            offer, self.address, ringback.port, codecs=[(ringback.payload_type, encoding)]
        )
        return self.present(answer.with_direction("sendonly"))

    def placeholder_answer(self, offer: bytes) -> bytes:
        """An inactive answer that completes the agent's late-offer exchange
        until the callee's media is known (RFC 3725 §4.2's idea of a
        held first leg)."""
        answer = answer_for(parse_sdp(offer), self.address, 9).with_direction("inactive")
        return self.present(answer)
