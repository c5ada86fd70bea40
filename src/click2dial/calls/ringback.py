"""Local ringback tone for the agent while the callee rings without early media.

SPEC §1: the agent hears ringing, never dead silence.  When the trunk sends
its own early media (183 with SDP) the agent is moved onto it; until then, and
when the far end only says 180, Click2Dial plays the ITU-T E.180 ringing tone
(425 Hz, 1 s on, 4 s off) as G.711 RTP (RFC 3550, RFC 3551 payload types 0
and 8) from a socket of its own.  A call's socket goes back to
:class:`RtpSockets` when its tone stops, for the next call: binding and
closing a socket cost six system calls per call.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import weakref
from collections.abc import Callable

from .. import ids

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms
FRAME_SECONDS = FRAME_SAMPLES / 8000
_RTP_HEADER = struct.Struct("!BBHII")
TONE_HZ = 425
CADENCE = (1.0, 4.0)  # seconds on, seconds off
PCMU, PCMA = 0, 8
#: Frames sent at once when a tone starts (160 ms).  A phone's jitter buffer
#: only starts playing once it holds a few frames (baresip: 6), and until it
#: plays, some ignore a change of source: baresip 1.0 (libre 1.1) then keeps
#: waiting for the tone's next sequence numbers and drops every packet of
#: the callee's media that follows a shorter tone (early media within a
#: few packets of the ACK: one-way audio for the whole call, half the time).
#: Primed, the buffer is playing before any other source can reach it.
PRIME_FRAMES = 8
#: Bound sockets kept for the next tone, per controller.
SPARE_SOCKETS = 256
#: The tone's socket never reads: a small receive buffer bounds what the
#: agent's own RTP (sent to our port while it rings) can hold in the kernel.
RECEIVE_BUFFER = 4096


def _ulaw(sample: int) -> int:
    """G.711 μ-law encoding of one 16-bit linear sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _alaw(sample: int) -> int:
    """G.711 A-law encoding of one 16-bit linear sample."""
    sign = 0x80 if sample >= 0 else 0
    code = min(abs(sample), 32767) >> 4  # 12-bit magnitude
    if code > 15:
        exponent = 1
        while code > 31:
            code >>= 1
            exponent += 1
        code = (exponent << 4) | (code - 16)
    return (sign | code) ^ 0x55


def _frames(encode: Callable[[int], int]) -> list[bytes]:
    """One full cadence cycle as 20 ms payloads (computed once per codec)."""
    on = int(CADENCE[0] * SAMPLE_RATE)
    total = int(sum(CADENCE) * SAMPLE_RATE)
    amplitude = 8000  # about -12 dBm0: audible, not harsh
    samples = [
        int(amplitude * math.sin(2 * math.pi * TONE_HZ * n / SAMPLE_RATE)) if n < on else 0
        for n in range(total)
    ]
    data = bytes(encode(s) for s in samples)
    return [data[i : i + FRAME_SAMPLES] for i in range(0, total, FRAME_SAMPLES)]


_CACHE: dict[int, list[bytes]] = {}


def cadence_frames(payload_type: int) -> list[bytes]:
    if payload_type not in _CACHE:
        _CACHE[payload_type] = _frames(_ulaw if payload_type == PCMU else _alaw)
    return _CACHE[payload_type]


class _Clock:
    """One 20 ms clock for every tone this event loop plays: each tick sends
    the next frame of every active tone, so a thousand ringing calls cost one
    timer, not a thousand sleeping tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tones: dict[Ringback, None] = {}  # insertion-ordered set
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    def add(self, tone: Ringback) -> None:
        self.tones[tone] = None
        if self._handle is None:
            self._next = self.loop.time()
            self._tick()

    def remove(self, tone: Ringback) -> None:
        self.tones.pop(tone, None)
        if not self.tones and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        for tone in list(self.tones):
            tone._send_next()
        if not self.tones:
            return
        # Pace on the clock, not on delays, so jitter never adds up; after a
        # long stall, start again from now instead of sending a burst.
        self._next += FRAME_SECONDS
        now = self.loop.time()
        if self._next < now - 5 * FRAME_SECONDS:
            self._next = now
        self._handle = self.loop.call_at(self._next, self._tick)


_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clock] = weakref.WeakKeyDictionary()


def _clock() -> _Clock:
    loop = asyncio.get_running_loop()
    clock = _CLOCKS.get(loop)
    if clock is None:
        clock = _CLOCKS[loop] = _Clock(loop)
    return clock


class RtpSockets:
    """Bound UDP sockets on one host for ringback tones: a stopped tone's
    socket serves the next one.  Data left in a kept socket is harmless:
    a tone only sends."""

    def __init__(self, host: str, keep: int = SPARE_SOCKETS) -> None:
        self.host = host
        self.keep = keep
        self._spare: list[tuple[socket.socket, int]] = []

    def __len__(self) -> int:
        return len(self._spare)

    def take(self) -> tuple[socket.socket, int]:
        """A bound socket and its port (OSError if none can be bound)."""
        if self._spare:
            return self._spare.pop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((self.host, 0))
            port = int(sock.getsockname()[1])
        except OSError:
            sock.close()
            raise
        return sock, port

    def give(self, sock: socket.socket, port: int) -> None:
        if len(self._spare) < self.keep and sock.fileno() != -1:
            self._spare.append((sock, port))
        else:
            sock.close()

    def close(self) -> None:
        """Close the kept sockets; a socket given back later is closed."""
        self.keep = 0
        spare, self._spare = self._spare, []
        for sock, _ in spare:
            sock.close()


class Ringback:
    """Plays the tone to one RTP destination until :meth:`stop`.

    :meth:`bind` and :meth:`stop_now` are synchronous so that the call driver
    can put the port in the agent's ACK and silence the tone in the same step
    that decides to, with no task in between."""

    def __init__(
        self, bind_host: str, payload_type: int, sockets: RtpSockets | None = None
    ) -> None:
        if payload_type not in (PCMU, PCMA):
            raise ValueError("ringback is G.711 only (payload type 0 or 8)")
        self.sockets = RtpSockets(bind_host, keep=0) if sockets is None else sockets
        self.payload_type = payload_type
        self.port = 0
        self.sent = 0
        self._sock: socket.socket | None = None
        self._clock: _Clock | None = None
        self._destination: tuple[str, int] = ("", 0)
        self._frames = cadence_frames(payload_type)
        self._ssrc = ids.randbits(32)
        self._seq = ids.randbits(16)
        self._stamp = ids.randbits(32)

    def bind(self) -> int:
        """Bind the local RTP socket; returns its port (for our SDP)."""
        self._sock, self.port = self.sockets.take()
        return self.port

    async def open(self) -> int:
        return self.bind()

    def play(self, host: str, port: int) -> None:
        if self._sock is None:
            self.bind()
        self._destination = (host, port)
        for _ in range(PRIME_FRAMES):
            self._send_next()
        self._clock = _clock()
        self._clock.add(self)

    def _send_next(self) -> None:
        sock = self._sock
        if sock is None:
            return
        marker = 0x80 if self.sent == 0 else 0
        header = _RTP_HEADER.pack(
            0x80, marker | self.payload_type, self._seq, self._stamp, self._ssrc
        )
        # A try costs nothing until it raises, unlike suppress() per packet.
        try:  # noqa: SIM105
            sock.sendto(header + self._frames[self.sent % len(self._frames)], self._destination)
        except OSError:
            pass  # the phone's port may not be open yet (ICMP), or a full buffer: keep playing
        self.sent += 1
        self._seq = (self._seq + 1) & 0xFFFF
        self._stamp = (self._stamp + FRAME_SAMPLES) & 0xFFFFFFFF

    def stop_now(self) -> None:
        """Stop playing and hand the socket back."""
        if self._clock is not None:
            self._clock.remove(self)
            self._clock = None
        if self._sock is not None:
            self.sockets.give(self._sock, self.port)
            self._sock = None

    async def stop(self) -> None:
        self.stop_now()
