"""The rtpengine client against a real rtpengine (started per test by the
``real_rtpengine`` fixture on free ports, userspace, its own config)."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from click2dial.media.rtpengine import (
    Profile,
    RtpEngine,
    RtpEngineError,
    RtpEngineTimeoutError,
    UnknownCallError,
)
from tests.e2e.test_api import bare
from tests.media.harness import RunningRtpEngine, rtpengine
from tests.sipp.harness import free_port


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def plain_sdp(port: int, session: int = 1) -> bytes:
    return (
        "v=0\r\n"
        f"o=- {session} 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    ).encode()


def media(sdp: bytes) -> tuple[str, int, str]:
    """(connection address, audio port, transport) of the first audio stream."""
    text = sdp.decode()
    conn = re.search(r"^c=IN IP4 (\S+)\r?$", text, re.M)
    m = re.search(r"^m=audio (\d+) (\S+) ", text, re.M)
    assert conn and m, text
    return conn.group(1), int(m.group(1)), m.group(2)


def browser_sdp(port: int, setup: str) -> bytes:
    """What a browser sends: ICE, DTLS-SRTP, RTCP multiplexed."""
    return (
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        f"m=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\n"
        f"a=rtpmap:0 PCMU/8000\r\na=mid:0\r\na=rtcp-mux\r\na=setup:{setup}\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
        "a=ice-ufrag:bRwS\r\na=ice-pwd:0123456789abcdefghijklmn\r\n"
        f"a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host\r\n"
        "a=sendrecv\r\n"
    ).encode()


def test_ping_answers_pong(real_rtpengine: RunningRtpEngine) -> None:
    async def main() -> None:
        client = RtpEngine(real_rtpengine.address)
        try:
            await client.ping()
            reply = await client.request("ping")
            assert reply == {"result": b"pong"}
        finally:
            await client.close()

    run(main())


def test_offer_from_plain_rtp_towards_a_browser_then_answer_delete_and_query(
    real_rtpengine: RunningRtpEngine,
) -> None:
    async def main() -> None:
        client = RtpEngine(real_rtpengine.address)
        try:
            offered = await client.offer(
                "call-webrtc", "tag-a", plain_sdp(40000), towards=Profile.WEBRTC
            )
            text = offered.decode()
            _, port, transport = media(offered)
            assert transport == "UDP/TLS/RTP/SAVPF", text
            assert real_rtpengine.port_min <= port <= real_rtpengine.port_max, text
            for line in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=candidate:"):
                assert line in text, (line, text)
            assert "a=rtcp-mux" in text, text
            assert "a=mid:" in text, text  # generate-mid
            # An offerer leaves the DTLS role to the answerer (RFC 5763 §5).
            assert re.search(r"^a=setup:actpass\r?$", text, re.M), text
            assert "a=crypto:" not in text, text  # SDES off

            # The browser's answer, rewritten back for the plain RTP side.
            browser_answer = browser_sdp(41000, "active")
            answered = await client.answer(
                "call-webrtc", "tag-a", "tag-b", browser_answer, towards=Profile.RTP
            )
            atext = answered.decode()
            _, aport, atransport = media(answered)
            assert atransport == "RTP/AVP", atext
            assert real_rtpengine.port_min <= aport <= real_rtpengine.port_max, atext
            for absent in ("a=ice-", "a=fingerprint", "a=setup", "a=candidate", "a=rtcp-mux"):
                assert absent not in atext, (absent, atext)

            state = await client.query("call-webrtc")
            assert state["result"] == b"ok", state
            tags = state["tags"]
            assert isinstance(tags, dict) and set(tags) == {"tag-a", "tag-b"}, state

            deleted = await client.delete("call-webrtc", "tag-a")
            assert deleted["result"] == b"ok", deleted
            with pytest.raises(UnknownCallError, match=r"rtpengine query: .*[Uu]nknown call"):
                await client.query("call-webrtc")
            # Deleting again is harmless (a call ends once, but both legs
            # may report it): ok, with rtpengine's warning.
            again = await client.delete("call-webrtc")
            assert again["result"] == b"ok" and b"not found" in again["warning"], again
        finally:
            await client.close()

    run(main())


def test_offer_from_a_browser_towards_plain_rtp_and_the_answer_back_to_it(
    real_rtpengine: RunningRtpEngine,
) -> None:
    """The agent-placed call: the browser offers, the trunk answers."""

    async def main() -> None:
        client = RtpEngine(real_rtpengine.address)
        try:
            to_trunk = await client.offer(
                "call-browser", "b", browser_sdp(42000, "actpass"), towards=Profile.RTP
            )
            text = to_trunk.decode()
            assert media(to_trunk)[2] == "RTP/AVP", text
            for absent in ("a=ice-", "a=fingerprint", "a=setup", "a=candidate", "a=rtcp-mux"):
                assert absent not in text, (absent, text)
            assert "a=rtcp:" in text, text  # RTCP demultiplexed: its own port

            to_browser = await client.answer(
                "call-browser", "b", "t", plain_sdp(43000), towards=Profile.WEBRTC
            )
            atext = to_browser.decode()
            assert media(to_browser)[2] == "UDP/TLS/RTP/SAVPF", atext
            # rtpengine takes the passive DTLS role; the browser connects.
            assert re.search(r"^a=setup:passive\r?$", atext, re.M), atext
            assert re.search(r"^a=rtcp-mux\r?$", atext, re.M), atext
            assert "a=mid:0" in atext, atext  # the browser's mid, answered
            for line in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=candidate:"):
                assert line in atext, (line, atext)
            await client.delete("call-browser")
        finally:
            await client.close()

    run(main())


def rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


async def receive(sock: socket.socket, count: int, timeout: float = 5) -> list[bytes]:
    """The next ``count`` packets, leaving out late priming packets (a
    priming packet sent while rtpengine was still learning the address can
    arrive after the first one did)."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            packet = await loop.sock_recv(sock, 2048)
            if not packet.endswith(b"prime"):
                got.append(packet)
    return got


async def prime(sender: socket.socket, target: tuple[str, int], receiver: socket.socket) -> None:
    """Send a priming packet every 50 ms until one arrives, then drain what
    the receiver got (bounded: fails after 3 s)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(3):
        while True:
            sender.sendto(rtp(0, 0xF, b"prime"), target)
            try:
                async with asyncio.timeout(0.05):
                    await loop.sock_recv(receiver, 2048)
                break
            except TimeoutError:
                continue
    while True:
        try:
            receiver.recv(2048)
        except BlockingIOError:
            return


def test_plain_rtp_on_both_sides_is_relayed_both_ways(real_rtpengine: RunningRtpEngine) -> None:
    async def main() -> None:
        client = RtpEngine(real_rtpengine.address)
        side_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        side_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for sock in (side_a, side_b):
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
            a_port = side_a.getsockname()[1]
            b_port = side_b.getsockname()[1]
            # A offers; the SDP rtpengine gives B names the port B sends to.
            to_b = await client.offer("call-rtp", "a", plain_sdp(a_port), towards=Profile.RTP)
            b_target = media(to_b)
            assert b_target[2] == "RTP/AVP" and b_target[1] != a_port, to_b
            # B answers; the SDP rtpengine gives A names the port A sends to.
            to_a = await client.answer(
                "call-rtp", "a", "b", plain_sdp(b_port, 2), towards=Profile.RTP
            )
            a_target = media(to_a)
            assert a_target[1] != b_port and a_target[1] != b_target[1], to_a

            # rtpengine learns each side's address from its first packets and
            # may drop one meanwhile: prime both directions before counting.
            await prime(side_a, (a_target[0], a_target[1]), side_b)
            await prime(side_b, (b_target[0], b_target[1]), side_a)
            sent_ab = [rtp(i, 0xA, b"from A %d" % i) for i in range(1, 6)]
            sent_ba = [rtp(i, 0xB, b"from B %d" % i) for i in range(1, 6)]
            for packet in sent_ab:
                side_a.sendto(packet, (a_target[0], a_target[1]))
            got_b = await receive(side_b, len(sent_ab))
            for packet in sent_ba:
                side_b.sendto(packet, (b_target[0], b_target[1]))
            got_a = await receive(side_a, len(sent_ba))
            # Userspace relays the packets unchanged (no transcoding asked);
            # its worker threads may hand two of them on out of order.
            assert sorted(got_b) == sorted(sent_ab)
            assert sorted(got_a) == sorted(sent_ba)

            stats = await client.query("call-rtp")
            assert stats["result"] == b"ok"
            await client.delete("call-rtp")
            with pytest.raises(UnknownCallError):
                await client.query("call-rtp")
        finally:
            side_a.close()
            side_b.close()
            await client.close()

    run(main())


def test_an_error_reply_is_raised_with_its_reason(real_rtpengine: RunningRtpEngine) -> None:
    async def main() -> None:
        client = RtpEngine(real_rtpengine.address)
        try:
            with pytest.raises(RtpEngineError, match=r"rtpengine offer: .*SDP") as info:
                await client.offer("x", "y", b"this is not SDP", towards=Profile.RTP)
            assert "SDP" in info.value.reason and not isinstance(info.value, UnknownCallError)
        finally:
            await client.close()

    run(main())


def test_an_unreachable_rtpengine_is_a_clear_timeout_within_two_seconds() -> None:
    async def main() -> None:
        dead = f"127.0.0.1:{free_port('udp')}"
        client = RtpEngine(dead)
        told: list[RtpEngineTimeoutError] = []
        client.on_unreachable = told.append
        started = time.monotonic()
        try:
            expected = re.escape(f"no reply from {dead} after 3 tries")
            with pytest.raises(RtpEngineTimeoutError, match=expected):
                await client.ping()
        finally:
            await client.close()
        elapsed = time.monotonic() - started
        assert 1.4 <= elapsed < 2.0, elapsed
        assert len(told) == 1

    run(main())


async def readyz_when(
    client: httpx.AsyncClient, rtpengine_state: str, timeout: float
) -> tuple[int, dict[str, Any]]:
    """Status and body of the first /readyz whose rtpengine check is
    ``rtpengine_state``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        body: dict[str, Any] = response.json()
        if body["checks"].get("rtpengine") == rtpengine_state:
            return response.status_code, body
        assert time.monotonic() < deadline, f"/readyz: {response.status_code} {body}"
        await asyncio.sleep(0.05)


def test_readyz_says_an_unreachable_rtpengine_is_not_ok(tmp_path: Path) -> None:
    dead = free_port("udp")

    async def main() -> None:
        async with (
            bare(tmp_path, sip=f'rtpengine = "127.0.0.1:{dead}"') as env,
            httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous,
        ):
            first = await anonymous.get("/readyz")
            # Not ready before the first probe has an answer, either.
            assert first.status_code == 503, first.text
            assert first.json()["checks"]["rtpengine"] in {"not probed yet", "unreachable"}
            status, body = await readyz_when(anonymous, "unreachable", 3)
            assert status == 503, body
            assert body["status"] == "not ready" and body["not_ready"] == ["rtpengine"], body
            assert body["checks"]["store"] == "ok" and body["checks"]["sip"] == "ok", body

    run(main())


def test_readyz_follows_a_real_rtpengine_stopping_and_starting_again(tmp_path: Path) -> None:
    async def main() -> None:
        with rtpengine(tmp_path / "first") as running:
            async with (
                bare(tmp_path, sip=f'rtpengine = "{running.address}"') as env,
                httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous,
            ):
                status, up = await readyz_when(anonymous, "ok", 5)
                assert status == 200 and up["not_ready"] == [], up
                running.stop()
                status, down = await readyz_when(anonymous, "unreachable", 5)
                assert status == 503 and down["not_ready"] == ["rtpengine"], down
                port = int(running.address.rpartition(":")[2])
                with rtpengine(tmp_path / "second", port=port):
                    status, again = await readyz_when(anonymous, "ok", 5)
                    assert status == 200 and again["not_ready"] == [], again

    run(main())
