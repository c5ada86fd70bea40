"""Local ringback tones share one 20 ms clock per event loop: many ringing
calls cost one timer, each tone keeps its own RTP stream, and a stopped tone
leaves the others playing."""

from __future__ import annotations

import asyncio

from click2dial.calls import ringback
from click2dial.calls.ringback import PCMA, PCMU, Ringback, cadence_frames


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(data)


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
