"""An asyncio client of rtpengine's ng control protocol.

A request is one UDP datagram ``<cookie> <bencoded dict>``; the reply
carries the same cookie.  rtpengine caches its replies by cookie, so a
retransmission (same cookie, same bytes) is answered from that cache and
never applied twice: that is what makes retrying an ``offer`` safe.  For
the same reason every cookie is unique across restarts of this process (a
random prefix per client), or a new request could get an old cached reply.

Which side of a call a rewritten SDP goes to decides the flags:
:class:`Profile` holds the two kinds of peer (a browser, a plain RTP phone
or trunk) and produces the options from the operators' notes.

This module does not know about calls; the call flow decides when to
offer, answer and delete.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Literal

from .bencode import BencodeError, Encodable, Value, decode, encode

log = logging.getLogger(__name__)

#: Seconds to wait for a reply before sending the request again.
RETRY_INTERVAL = 0.5
#: Sends of one request before giving up (3 x 0.5 s = 1.5 s in all).
TRIES = 3

Role = Literal["offer", "answer"]


class RtpEngineError(Exception):
    """rtpengine answered ``result: error`` (or something unusable)."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"rtpengine {command}: {reason}")
        self.command = command
        self.reason = reason


class UnknownCallError(RtpEngineError):
    """rtpengine has no such call (never created, or deleted already)."""


class RtpEngineTimeoutError(RtpEngineError, TimeoutError):
    """No reply from rtpengine after every retransmission."""


class Profile(enum.Enum):
    """The kind of peer an SDP rewritten by rtpengine is sent to."""

    WEBRTC = "webrtc"
    """A browser: ICE, DTLS-SRTP (rtpengine passive), RTCP multiplexed."""
    RTP = "rtp"
    """A plain RTP phone or trunk: no ICE, no encryption, RTCP apart."""

    def options(self, role: Role) -> dict[str, Encodable]:
        """The ng options for an SDP of ``role`` that goes to this kind of peer."""
        if self is Profile.WEBRTC:
            return {
                "ICE": "force",
                "transport-protocol": "UDP/TLS/RTP/SAVPF",
                # An offer may propose mux; an answer to a browser must use it.
                "rtcp-mux": ["offer" if role == "offer" else "require"],
                "DTLS": "passive",
                "SDES": ["off"],
                "flags": ["generate-mid"],
            }
        return {
            "ICE": "remove",
            "transport-protocol": "RTP/AVP",
            "rtcp-mux": ["demux"],
            "DTLS": "off",
            "SDES": ["off"],
        }


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: RtpEngine) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.client._reply(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the retransmission timer
        # decides, so a restarting rtpengine is given its chance.
        log.debug("rtpengine socket: %s", exc)


def _text(value: Value | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class RtpEngine:
    """A client of one rtpengine at ``address`` (``host:port``)."""

    def __init__(
        self,
        address: str,
        *,
        retry_interval: float = RETRY_INTERVAL,
        tries: int = TRIES,
    ) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"rtpengine address {address!r} is not host:port")
        self.address = address
        self.host = host.strip("[]")
        self.port = int(port)
        self.retry_interval = retry_interval
        self.tries = tries
        #: Told of every request that got no reply at all (readiness uses it).
        self.on_unreachable: Callable[[RtpEngineTimeoutError], None] | None = None
        #: Told of every reply (rtpengine answers, so it is reachable).
        self.on_reply: Callable[[], None] | None = None
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future[dict[str, Value]]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._opening: asyncio.Lock | None = None

    async def _open(self) -> asyncio.DatagramTransport:
        if self._transport is not None:
            return self._transport
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._transport is None:
                transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: _Protocol(self), remote_addr=(self.host, self.port)
                )
                self._transport = transport
        return self._transport

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    def _reply(self, data: bytes) -> None:
        cookie, sep, body = data.partition(b" ")
        future = self._pending.get(cookie)
        if not sep or future is None or future.done():
            return  # a late duplicate, or not ours
        try:
            value = decode(body)
        except BencodeError as exc:
            future.set_exception(RtpEngineError("reply", f"malformed reply: {exc}"))
            return
        if not isinstance(value, dict):
            future.set_exception(RtpEngineError("reply", "reply is not a dictionary"))
            return
        future.set_result(value)

    async def request(self, command: str, **options: Encodable) -> dict[str, Value]:
        """Send ``command`` with ``options``; the reply dictionary when its
        ``result`` is not ``error``.  Option names use the protocol's
        spelling (``call-id``): pass them as ``**{"call-id": ...}``."""
        transport = await self._open()
        cookie = f"{self._prefix}{next(self._counter)}".encode()
        message: dict[str, Encodable] = {"command": command, **options}
        datagram = cookie + b" " + encode(message)
        future: asyncio.Future[dict[str, Value]] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = future
        try:
            for _ in range(self.tries):
                transport.sendto(datagram)
                done, _pending = await asyncio.wait((future,), timeout=self.retry_interval)
                if done:
                    break
            else:
                error = RtpEngineTimeoutError(
                    command,
                    f"no reply from {self.address} after {self.tries} tries "
                    f"over {self.tries * self.retry_interval:.1f} s",
                )
                if self.on_unreachable is not None:
                    self.on_unreachable(error)
                raise error
        finally:
            self._pending.pop(cookie, None)
            if not future.done():
                future.cancel()
        reply = future.result()
        if self.on_reply is not None:
            self.on_reply()
        result = _text(reply.get("result"))
        if result == "error":
            reason = _text(reply.get("error-reason")) or "no reason given"
            if "unknown call" in reason.lower():
                raise UnknownCallError(command, reason)
            raise RtpEngineError(command, reason)
        if not result:
            raise RtpEngineError(command, "reply without a result")
        if "warning" in reply:
            log.warning("rtpengine %s: %s", command, _text(reply["warning"]))
        return reply

    async def ping(self) -> None:
        reply = await self.request("ping")
        if reply.get("result") != b"pong":
            raise RtpEngineError("ping", f"answered {_text(reply.get('result'))!r}, not pong")

    async def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: bytes,
        *,
        towards: Profile,
        extra: Mapping[str, Encodable] | None = None,
    ) -> bytes:
        """The offer ``sdp`` (from the ``from_tag`` side) rewritten for the
        other side, a peer of kind ``towards``."""
        options: dict[str, Encodable] = {"call-id": call_id, "from-tag": from_tag, "sdp": sdp}
        options.update(towards.options("offer"))
        options.update(extra or {})
        reply = await self.request("offer", **options)
        return self._sdp("offer", reply)

    async def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        *,
        towards: Profile,
        extra: Mapping[str, Encodable] | None = None,
    ) -> bytes:
        """The answer ``sdp`` (from the ``to_tag`` side, to an offer made by
        the ``from_tag`` side) rewritten for the offerer, of kind ``towards``."""
        options: dict[str, Encodable] = {
            "call-id": call_id,
            "from-tag": from_tag,
            "to-tag": to_tag,
            "sdp": sdp,
        }
        options.update(towards.options("answer"))
        options.update(extra or {})
        reply = await self.request("answer", **options)
        return self._sdp("answer", reply)

    async def delete(self, call_id: str, from_tag: str | None = None) -> dict[str, Value]:
        """End the call's media (every leg of it without ``from_tag``'s
        narrowing); the reply carries the final statistics.  Deleting a call
        rtpengine does not know is not an error (it answers ``ok`` with a
        ``warning``), so ending a call twice is harmless."""
        options: dict[str, Encodable] = {"call-id": call_id}
        if from_tag is not None:
            options["from-tag"] = from_tag
        # rtpengine's default delete-delay keeps a deleted call for 30 s;
        # the call is over for us, so it goes now.
        options["delete-delay"] = 0
        return await self.request("delete", **options)

    async def query(self, call_id: str) -> dict[str, Value]:
        """The call's state and statistics; :class:`UnknownCallError` if none."""
        return await self.request("query", **{"call-id": call_id})

    @staticmethod
    def _sdp(command: str, reply: Mapping[str, Value]) -> bytes:
        sdp = reply.get("sdp")
        if not isinstance(sdp, bytes) or not sdp:
            raise RtpEngineError(command, "reply without an SDP")
        return sdp
