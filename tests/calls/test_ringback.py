"""Local ringback tones share one 20 ms clock per event loop: many ringing
calls cost one timer, each tone keeps its own RTP stream, and a stopped tone
leaves the others playing."""

from __future__ import annotations

import asyncio
import socket

from click2dial.calls import ringback
from click2dial.calls.ringback import PCMA, PCMU, Ringback, RtpSockets, cadence_frames


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.sources: set[tuple[str, int]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(data)
        self.sources.add(addr[:2])


async def until(predicate: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


def test_tones_share_one_clock_and_keep_their_own_streams() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sinks = [Sink(), Sink()]
        ends = [
            await loop.create_datagram_endpoint(lambda s=s: s, local_addr=("127.0.0.1", 0))
            for s in sinks
        ]
        tones = [Ringback("127.0.0.1", PCMU), Ringback("127.0.0.1", PCMA)]
        for tone, (transport, _) in zip(tones, ends, strict=True):
            tone.bind()
            tone.play(*transport.get_extra_info("sockname")[:2])
        clock = ringback._CLOCKS[loop]
        assert list(clock.tones) == tones  # one clock for both
        await until(lambda: all(len(s.packets) >= 10 for s in sinks))
        for sink, pt in zip(sinks, (PCMU, PCMA), strict=True):
            first = sink.packets[:10]
            assert {p[1] & 0x7F for p in first} == {pt}
            assert [p[12:] for p in first] == cadence_frames(pt)[:10]
            ssrcs = {p[8:12] for p in first}
            assert len(ssrcs) == 1
        assert sinks[0].packets[0][8:12] != sinks[1].packets[0][8:12]  # two streams

        tones[0].stop_now()
        assert list(clock.tones) == [tones[1]]
        stopped_at = len(sinks[0].packets)
        playing_at = len(sinks[1].packets)
        await until(lambda: len(sinks[1].packets) >= playing_at + 10)
        assert len(sinks[0].packets) <= stopped_at + 1  # at most one in flight
        tones[1].stop_now()
        assert not clock.tones and clock._handle is None  # the timer is gone too
        for transport, _ in ends:
            transport.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_tone_starts_with_a_jitter_buffer_worth_of_frames_at_once() -> None:
    """A phone's jitter buffer is playing the tone before any other source
    (the callee's early media) can reach it (see ``PRIME_FRAMES``)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = Sink()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: sink, local_addr=("127.0.0.1", 0)
        )
        tone = Ringback("127.0.0.1", PCMU)
        tone.play(*transport.get_extra_info("sockname")[:2])
        # Sent in play() itself, before the 20 ms clock could tick twice.
        assert tone.sent >= ringback.PRIME_FRAMES >= 6
        await until(lambda: len(sink.packets) >= ringback.PRIME_FRAMES)
        tone.stop_now()
        first = sink.packets[: ringback.PRIME_FRAMES]
        assert [p[12:] for p in first] == cadence_frames(PCMU)[: ringback.PRIME_FRAMES]
        seqs = [int.from_bytes(p[2:4], "big") for p in first]
        stamps = [int.from_bytes(p[4:8], "big") for p in first]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(first))]
        assert stamps == [(stamps[0] + 160 * i) & 0xFFFFFFFF for i in range(len(first))]
        transport.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_stopped_tone_hands_its_socket_to_the_next_call() -> None:
    """The controller's RtpSockets: the next tone plays from the socket the
    last one stopped with (no socket per call); a tone stopped after the
    pool closed closes its socket; the kept sockets bound what they hold."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = Sink()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: sink, local_addr=("127.0.0.1", 0)
        )
        sockets = RtpSockets("127.0.0.1", keep=1)
        first = Ringback("127.0.0.1", PCMU, sockets)
        port = first.bind()
        sock = first._sock
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 4 * ringback.RECEIVE_BUFFER
        first.play(*transport.get_extra_info("sockname")[:2])
        first.stop_now()
        assert len(sockets) == 1 and sock.fileno() != -1  # kept, open

        second = Ringback("127.0.0.1", PCMA, sockets)
        assert second.bind() == port and second._sock is sock
        third = Ringback("127.0.0.1", PCMU, sockets)
        assert third.bind() != port  # none spare: a new one
        third_sock = third._sock
        assert third_sock is not None
        second.play(*transport.get_extra_info("sockname")[:2])
        await until(lambda: any(p[1] & 0x7F == PCMA for p in sink.packets))
        assert ("127.0.0.1", port) in sink.sources  # from the first tone's port
        second.stop_now()
        third.stop_now()  # the pool keeps one: this one is closed
        assert len(sockets) == 1 and third_sock.fileno() == -1
        sockets.close()
        assert sock.fileno() == -1 and len(sockets) == 0
        late = Ringback("127.0.0.1", PCMU, sockets)
        late.bind()
        late_sock = late._sock
        assert late_sock is not None
        late.stop_now()
        assert late_sock.fileno() == -1  # given back after close: closed
        transport.close()

    asyncio.run(main())
