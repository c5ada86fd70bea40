"""Browser agents with media (issue 9, the Chromium acceptance points): Debian's
headless Chromium runs the softphone page (SIP.js over the server's ``ws:``
listener), a real rtpengine bridges its DTLS-SRTP to a sipp trunk that
echoes RTP, and the CDR lands on the integrator's Redis list.

* A REST call to the registered browser is auto-answered; the browser's
  ``RTCPeerConnection`` reaches ``connected`` and counts inbound RTP already
  while the callee rings (our ringback, through rtpengine); once the callee
  answers, the browser's audio reaches the trunk and the trunk's echo of it
  comes back to rtpengine.
* The browser places a call with ``X-Teleforge-Outbound-Id`` and
  ``X-Teleforge-Contact-Ref``; while the callee rings (a 180 without media)
  the page plays its own ring tone; the trunk sees the caller ID and the contact
  ref, media flows both ways, the CDR carries the contact ref.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from click2dial.media.rtpengine import RtpEngine
from click2dial.notify import CDR_LIST
from tests.browser.harness import Browser
from tests.e2e.support import Env, running
from tests.e2e.test_registrar import wait_bound
from tests.e2e.test_webrtc_media import forgotten
from tests.media.harness import RunningRtpEngine, rtpengine
from tests.notify.support import RedisServer, brpop_all, wait_until
from tests.sipp.harness import Sipp, free_port
from tests.test_sipp_c2d_scenarios import LoggedInvite

PASSWORD = "s3cret-1001"
AGENT = f'password = "{PASSWORD}"'
CALLEE = "0821234567"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RunningRtpEngine]:
    with rtpengine(tmp_path / "rtpengine") as running_engine:
        yield running_engine


@dataclass
class Bed:
    env: Env
    browser: Browser
    redis: RedisServer
    trunk: Sipp


@asynccontextmanager
async def bed(
    tmp_path: Path, engine: RunningRtpEngine, *, ring_ms: int, autoanswer: bool = False
) -> AsyncIterator[Bed]:
    """The service with a ``ws:`` listener, rtpengine and the integrator's
    CDRs on a Redis; a sipp trunk whose callee rings ``ring_ms`` without
    early media, answers, echoes RTP for 3 s and hangs up; Chromium's
    softphone registered as 1001."""
    with (
        RedisServer() as redis,
        Sipp(
            "trunk_ringback",
            variables={"ring_ms": ring_ms, "talk_ms": 3000},
            extra_args=["-rtp_echo"],
        ) as trunk,
    ):
        ws_port = free_port("tcp")
        async with (
            running(
                tmp_path,
                agent_port=None,
                agent=AGENT,
                trunk_port=trunk.port,
                listen=(f"ws:127.0.0.1:{ws_port}",),
                sip=f'rtpengine = "{engine.address}"',
                acme=f'redis = "{redis.url(3)}"',
            ) as env,
            Browser() as browser,
        ):
            await browser.open_phone(str(env.acme.base_url).rstrip("/"))
            assert (await browser.login("1001", PASSWORD, autoanswer=autoanswer))["registered"]
            await wait_bound(env, "1001")
            yield Bed(env, browser, redis, trunk)


async def media_up(browser: Browser, engine: RunningRtpEngine, condition: str) -> None:
    """Wait for the browser's media to be connected and ``condition`` to
    hold; on failure, say what the page and rtpengine saw."""
    try:
        await browser.wait_for(f"window.phone.connectionState === 'connected' && {condition}")
    except AssertionError as exc:
        state = await browser.phone()
        page = "\n".join(map(str, state.pop("log")))
        raise AssertionError(f"{exc}\npage: {state}\n{page}\nrtpengine:\n{engine.log()}") from None


async def relayed_from(
    engine: RunningRtpEngine, call_ref: str, tag: str, more_than: int | None = None
) -> Any:
    """RTP packets rtpengine received on the ``tag`` side of the call (or,
    with ``more_than``, whether they are more than that)."""
    client = RtpEngine(engine.address)
    try:
        reply = await client.query(call_ref)
    finally:
        await client.close()
    tags: Any = reply.get("tags")
    assert isinstance(tags, dict) and tag in tags, reply
    total = 0
    for media in tags[tag].get("medias", []):
        for stream in media.get("streams", []):
            total += int(stream.get("stats", {}).get("packets", 0))
    return total if more_than is None else total > more_than


async def packets(browser: Browser) -> tuple[str | None, int, int]:
    state = await browser.phone()
    return state["connectionState"], state["inboundRtpPackets"], state["outboundRtpPackets"]


def test_a_rest_call_is_auto_answered_and_the_browser_hears_ringback_then_the_callee(
    tmp_path: Path, engine: RunningRtpEngine
) -> None:
    async def main() -> None:
        # No early media: while the callee rings, the agent hears our ringback.
        async with bed(tmp_path, engine, ring_ms=2500, autoanswer=True) as b:
            env, browser, redis, trunk = b.env, b.browser, b.redis, b.trunk
            response = await env.place(contact_ref="crm-webrtc-1")
            assert response.status_code == 201, response.text
            ref = response.json()["call_ref"]

            # Answered by itself; while the callee still rings, the
            # browser's media is up and RTP (our ringback) comes in.
            await browser.wait_call("established", timeout=10)
            await media_up(browser, engine, "window.phone.inboundRtpPackets > 10")
            state = await env.state(ref)
            assert state["status"] == "callee_ringing", state
            assert state["legs"]["callee"]["answered_at"] is None, state

            # The callee answers and echoes what the browser sends: the
            # browser's audio reaches the trunk through rtpengine and
            # comes back to rtpengine's trunk side.
            await env.wait_state(ref, {"talking"}, timeout=10)
            _, _, sent_before = await packets(browser)
            echoed_before = await relayed_from(engine, ref, "callee")
            await media_up(browser, engine, f"window.phone.outboundRtpPackets > {sent_before + 50}")
            await wait_until(
                lambda: relayed_from(engine, ref, "callee", more_than=echoed_before + 50),
                10,
                "the trunk's echo at rtpengine",
            )
            assert (await packets(browser))[0] == "connected"

            ended = await env.wait_ended(ref, timeout=20)
            assert ended["end_reason"] == "callee_hungup", ended
            await asyncio.to_thread(trunk.assert_success, 20)
            assert (await browser.wait_call("ended"))["direction"] == "incoming"
            (doc,) = await brpop_all(redis.client(3), 1, CDR_LIST)
            cdr = doc["payload"]
            assert cdr["call_ref"] == ref and cdr["contact_ref"] == "crm-webrtc-1", cdr
            assert cdr["end_reason"] == "callee_hungup", cdr
            await forgotten(engine, ref)
            # The trunk was offered rtpengine's plain side, not the browser's.
            (invite,) = LoggedInvite.parse_all(trunk.logs())
            assert invite.sdp, invite

    run(main())


def test_the_browser_places_a_call_with_teleforge_headers_and_talks(
    tmp_path: Path, engine: RunningRtpEngine
) -> None:
    async def main() -> None:
        async with bed(tmp_path, engine, ring_ms=1500) as b:
            env, browser, redis, trunk = b.env, b.browser, b.redis, b.trunk
            await browser.place(CALLEE, outbound_id="27110000002", contact_ref="crm-77")
            # The callee rings without early media: the page's own ring tone.
            await browser.wait_for("window.phone.localRingback === true", timeout=5)
            assert (await browser.phone())["call"]["state"] == "ringing"
            await browser.wait_call("established", timeout=10)
            assert (await browser.phone())["localRingback"] is False
            await media_up(
                browser,
                engine,
                "window.phone.inboundRtpPackets > 50 && window.phone.outboundRtpPackets > 50",
            )
            listed = await env.acme.get("/click2dial/calls", params={"contact_ref": "crm-77"})
            (item,) = listed.json()["calls"]
            assert item["source"] == "webrtc" and item["status"] == "talking", item

            ended = await env.wait_ended(item["call_ref"])
            assert ended["end_reason"] == "callee_hungup", ended
            assert (await browser.wait_call("ended"))["endedBy"] == "remote"
            await asyncio.to_thread(trunk.assert_success, 20)
            (doc,) = await brpop_all(redis.client(3), 1, CDR_LIST)
            cdr = doc["payload"]
            assert cdr["contact_ref"] == "crm-77" and cdr["clid"] == "27110000002", cdr
            await forgotten(engine, item["call_ref"])
            (invite,) = LoggedInvite.parse_all(trunk.logs())
            assert "<sip:27110000002@" in invite.from_, invite
            assert invite.pai.startswith("<sip:27110000002@"), invite
            assert invite.contactref == "crm-77" and invite.callee == CALLEE, invite

    run(main())
