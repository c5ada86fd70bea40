"""rtpengine in the media path of a call whose agent is a browser.

A browser speaks ICE, DTLS-SRTP and multiplexed RTCP (``UDP/TLS/RTP/SAVPF``);
trunks and desk phones speak plain RTP.  When one leg of a call is a
browser, every session description that crosses that leg's boundary goes
through rtpengine, both ways:

* an SDP *received* from the browser leg (its offer, or its answer to ours)
  is rewritten into plain RTP before the call flow sees it, so the flow, the
  local ringback and the other leg only ever meet rtpengine's plain side;
* an SDP *sent* to the browser leg (an offer or an answer the flow made, the
  ringback answer included) is rewritten into WebRTC on its way out.

rtpengine knows the call by the call's reference and its two sides by fixed
tags: the browser leg's name and the other leg's, whatever stands in for
the other leg at the moment (the ringback player, then the callee).  Every
exchange is an ``offer`` from one tag and an ``answer`` from the other, so a
re-INVITE from either side, hold and resume, and early media all follow the
same four rules (:class:`MediaRelay`).  rtpengine keeps its ports per side
across re-offers, so the callee keeps sending where it was first told.

Whether a leg is a browser is read from its first SDP
(:func:`is_webrtc`); a plain RTP call never touches rtpengine.

This module does not know the call flow; the driver (:mod:`.control`)
decides which SDP is an offer or an answer and awaits the rewrite.
"""

from __future__ import annotations

import logging

from ..media.bencode import Encodable
from ..media.rtpengine import Profile, RtpEngine, RtpEngineError

log = logging.getLogger(__name__)

#: The transport of a DTLS-SRTP media line (RFC 5764) and the mark of a
#: DTLS fingerprint: either is a browser's SDP.
_WEBRTC_MARKS = (b"UDP/TLS/RTP/SAVP", b"a=fingerprint:")


def is_webrtc(sdp: bytes | None) -> bool:
    """Whether ``sdp`` describes WebRTC media (DTLS-SRTP)."""
    return sdp is not None and any(mark in sdp for mark in _WEBRTC_MARKS)


class MediaRelayError(Exception):
    """rtpengine could not rewrite an SDP: the call cannot have media."""


class MediaRelay:
    """rtpengine between one browser leg (``leg``) and the plain-RTP rest
    of the call (``other``)."""

    def __init__(self, engine: RtpEngine, call_id: str, leg: str, other: str) -> None:
        self.engine = engine
        self.call_id = call_id
        self.leg = leg
        self.other = other
        self._answered = False
        """rtpengine has seen both sides (an answer): later offers name
        the other side too, so that a re-offer from either is recognised."""
        self.deleted = False

    async def received_offer(self, sdp: bytes) -> bytes:
        """The browser's offer, rewritten for the plain side."""
        # The browser offers a=setup:actpass; rtpengine would take the
        # active role on its side and send a ClientHello as soon as ICE
        # works, before the browser has our answer (which says passive, as
        # every answer to a browser does): the browser then never completes
        # DTLS.  Passive on the browser's side from the start.
        return await self._offer(
            self.leg, self.other, sdp, Profile.RTP, {"DTLS-reverse": "passive"}
        )

    async def received_answer(self, sdp: bytes) -> bytes:
        """The browser's answer to an offer of ours, rewritten for the plain side."""
        return await self._answer(self.other, self.leg, sdp, Profile.RTP)

    async def sending_offer(self, sdp: bytes) -> bytes:
        """An offer from the plain side, rewritten for the browser."""
        return await self._offer(self.other, self.leg, sdp, Profile.WEBRTC)

    async def sending_answer(self, sdp: bytes) -> bytes:
        """An answer from the plain side to the browser's offer, rewritten for it."""
        return await self._answer(self.leg, self.other, sdp, Profile.WEBRTC)

    async def delete(self) -> None:
        """End the call's media in rtpengine (once; errors are only logged:
        rtpengine forgets an idle call by itself)."""
        if self.deleted:
            return
        self.deleted = True
        try:
            await self.engine.delete(self.call_id)
        except RtpEngineError as exc:
            log.warning("call %s: rtpengine delete: %s", self.call_id, exc)

    async def _offer(
        self,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        towards: Profile,
        options: dict[str, Encodable] | None = None,
    ) -> bytes:
        extra: dict[str, Encodable] = dict(options or {})
        if self._answered:
            extra["to-tag"] = to_tag
        try:
            return await self.engine.offer(
                self.call_id, from_tag, sdp, towards=towards, extra=extra
            )
        except (RtpEngineError, OSError) as exc:  # OSError: no socket to it
            raise MediaRelayError(f"media relay: {exc}") from exc

    async def _answer(self, from_tag: str, to_tag: str, sdp: bytes, towards: Profile) -> bytes:
        try:
            body = await self.engine.answer(self.call_id, from_tag, to_tag, sdp, towards=towards)
        except (RtpEngineError, OSError) as exc:  # OSError: no socket to it
            raise MediaRelayError(f"media relay: {exc}") from exc
        self._answered = True
        return body
