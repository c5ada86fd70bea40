"""Local ringback tone for the agent while the callee rings without early media.

SPEC §1: the agent hears ringing, never dead silence.  When the trunk sends
its own early media (183 with SDP) the agent is moved onto it; until then, and
when the far end only says 180, Click2Dial plays the ITU-T E.180 ringing tone
(425 Hz, 1 s on, 4 s off) as G.711 RTP (RFC 3550, RFC 3551 payload types 0
and 8) from a socket of its own.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import socket
import struct
from collections.abc import Callable

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms
TONE_HZ = 425
CADENCE = (1.0, 4.0)  # seconds on, seconds off
PCMU, PCMA = 0, 8


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


class _Sender(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        pass  # the phone's port may not be open yet: keep playing


class Ringback:
    """Plays the tone to one RTP destination until :meth:`stop`.

    :meth:`bind` and :meth:`stop` are synchronous so that the call driver can
    put the port in the agent's ACK and silence the tone in the same step
    that decides to, with no task in between."""

    def __init__(self, bind_host: str, payload_type: int) -> None:
        if payload_type not in (PCMU, PCMA):
            raise ValueError("ringback is G.711 only (payload type 0 or 8)")
        self.bind_host = bind_host
        self.payload_type = payload_type
        self.port = 0
        self.sent = 0
        self._sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    def bind(self) -> int:
        """Bind the local RTP socket; returns its port (for our SDP)."""
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.bind_host, 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        return self.port

    async def open(self) -> int:
        return self.bind()

    def play(self, host: str, port: int) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run((host, port)))

    async def _run(self, destination: tuple[str, int]) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Sender, sock=self._sock)
        self._sock = None  # the transport owns it now
        self._transport = transport
        frames = cadence_frames(self.payload_type)
        ssrc = secrets.randbits(32)
        seq = secrets.randbits(16)
        stamp = secrets.randbits(32)
        started = loop.time()
        index = 0
        while True:
            marker = 0x80 if index == 0 else 0
            header = struct.pack("!BBHII", 0x80, marker | self.payload_type, seq, stamp, ssrc)
            transport.sendto(header + frames[index % len(frames)], destination)
            self.sent += 1
            index += 1
            seq = (seq + 1) & 0xFFFF
            stamp = (stamp + FRAME_SAMPLES) & 0xFFFFFFFF
            # Pace on the clock, not on sleep durations, so jitter never adds up.
            await asyncio.sleep(max(0.0, started + index * 0.02 - loop.time()))

    def stop_now(self) -> None:
        """Stop playing and release the socket."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def stop(self) -> None:
        self.stop_now()
