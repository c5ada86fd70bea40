"""The agent hears ringing, never silence, while a callee without early media
rings (SPEC §1.3).

The agent's phone and the trunk are Click2Dial's own SIP user agent here
(sipp cannot report what RTP it received); the phone's media port is a plain
UDP socket that records every RTP packet Click2Dial sends it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from click2dial.calls.ringback import PCMU, cadence_frames
from click2dial.sip.aio import Call, Listen, UserAgent, UserAgentConfig
from click2dial.sip.sdp import build_offer
from tests.e2e.support import running


class RtpSink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.packets.append(data)


async def until(predicate: object, timeout: float = 10) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_agent_hears_ringback_until_the_callee_answers(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = RtpSink()
        media, _ = await loop.create_datagram_endpoint(lambda: sink, local_addr=("127.0.0.1", 0))
        media_port = media.get_extra_info("sockname")[1]
        callee_may_answer = asyncio.Event()

        async def phone(call: Call) -> None:
            call.answer(build_offer("127.0.0.1", media_port, codecs=[(0, "PCMU/8000")]).to_bytes())

        async def trunk(call: Call) -> None:
            call.ring(180)  # ringing, but no early media
            await callee_may_answer.wait()
            call.answer(build_offer("127.0.0.1", 41000).to_bytes())

        def peer() -> UserAgentConfig:
            return UserAgentConfig([Listen("udp", "127.0.0.1", 0)])

        async with (
            UserAgent(peer(), on_invite=phone) as phone_ua,
            UserAgent(peer(), on_invite=trunk) as trunk_ua,
            running(
                tmp_path,
                agent_port=phone_ua.address()[1],
                trunk_port=trunk_ua.address()[1],
            ) as env,
        ):
            ref = (await env.place()).json()["call_ref"]
            await env.wait_state(ref, {"callee_ringing"})
            await until(lambda: len(sink.packets) >= 25)  # half a second of tone
            first = sink.packets[:25]
            assert all(p[0] == 0x80 and p[1] & 0x7F == PCMU for p in first)  # RTP v2, PCMU
            assert [p[12:] for p in first] == cadence_frames(PCMU)[:25]  # the 425 Hz tone
            assert any(b != 0xFF for b in first[0][12:])  # sound, not μ-law silence
            seqs = [int.from_bytes(p[2:4], "big") for p in first]
            assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(25)]

            callee_may_answer.set()
            await env.wait_state(ref, {"talking"})
            live = env.service.controller.live[ref]  # type: ignore[union-attr]
            await until(lambda: live.ringback is None)
            heard = len(sink.packets)
            # A 300 ms window: the tone has stopped (at most one packet in flight).
            await asyncio.sleep(0.3)
            assert len(sink.packets) - heard <= 1
            await env.acme.delete(f"/click2dial/calls/{ref}")
        media.close()

    asyncio.run(asyncio.wait_for(main(), 60))
