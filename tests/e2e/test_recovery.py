"""Crash recovery at start: every saved dialog of a call left live gets a BYE,
and the call gets its one ``failed`` CDR.

The crash is staged without the call control: a plain user agent sets up
real dialogs with sipp peers, their snapshots are saved for a live call as
the call control saves them, and that user agent goes away without a word
(no BYE: what a SIGKILL leaves).  Then Click2Dial starts on that database.
The process-level version, with the call control saving the dialogs itself,
is in test_durability.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from click2dial.sip.aio import Answered, Listen, UserAgent, UserAgentConfig
from click2dial.sip.transaction import TimerConfig
from click2dial.store import CallRecord, open_store
from tests.e2e.support import running
from tests.sipp.harness import Sipp, free_port, free_port_both

SDP = (
    b"v=0\r\no=click2dial 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)


def live_call(call_ref: str, agent: str = "1001") -> CallRecord:
    return CallRecord(
        call_ref=call_ref,
        integrator="acme",
        agent=agent,
        callee="0821234567",
        outbound_id="27110000001",
        outbound_id_requested="27110000001",
        contact_ref="ticket-1",
        call_type="outbound",
        created_at=time.time() - 30,
        node_id="e2e-node",
        state="talking",
    )


async def dialogs_with(
    peers: list[Sipp], sip_port: int, cseq_after: int = 0
) -> list[dict[str, Any]]:
    """Set up a dialog with each peer from ``sip_port`` (Click2Dial's port:
    sipp answers a request where its call's first message came from, which
    is where a restarted server on its fixed port is), use ``cseq_after``
    more CSeq numbers after the snapshot (as a live call's requests do), and
    leave without a BYE."""
    config = UserAgentConfig([Listen("udp", "127.0.0.1", sip_port)], timers=TimerConfig(t1=0.1))
    states = []
    async with UserAgent(config) as ua:
        for peer in peers:
            call = ua.invite(peer.uri(), sdp=SDP)
            assert isinstance(await call.wait_for(Answered, 10), Answered)
            assert call.dialog is not None
            states.append(call.dialog.snapshot())
            call.dialog.local_cseq += cseq_after
    # The socket is closed on a later turn of the loop: wait for the port.
    deadline = time.monotonic() + 5
    while not port_free(sip_port):
        assert time.monotonic() < deadline, f"port {sip_port} still busy"
        await asyncio.sleep(0.01)
    return states


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def cdrs(database: str) -> list[tuple[str, str]]:
    async with open_store(database) as store:
        rows = await store.undelivered("acme")
    return [(row.call_ref, row.payload["payload"]["end_reason"]) for row in rows]


def test_a_restart_byes_both_saved_legs_and_writes_one_failed_cdr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"sqlite:///{tmp_path}/click2dial.db"
    sip_port = free_port_both()

    async def main() -> None:
        with Sipp("uas_basic") as agent, Sipp("uas_basic") as callee:
            agent_state, callee_state = await dialogs_with([agent, callee], sip_port, 5)
            async with open_store(database) as store:
                await store.create_call(live_call("c-1"))
                await store.save_dialog("c-1", "agent", agent_state)
                await store.save_dialog("c-1", "callee", callee_state)
            # A redis that is not there: the CDR waits in the outbox.
            acme = f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"'
            async with running(
                tmp_path, agent_port=None, trunk_port=None, acme=acme, sip_port=sip_port
            ) as env:
                # Each peer got a BYE in its dialog and answered it.
                await asyncio.to_thread(agent.assert_success, 10)
                await asyncio.to_thread(callee.assert_success, 10)
                call = await env.state("c-1")
                assert "BYE: agent 200, callee 200" in caplog.text
                assert (call["status"], call["end_reason"]) == ("ended", "failed")
                assert env.service.store is not None
                assert await env.service.store.dialogs_of("c-1") == {}
        assert await cdrs(database) == [("c-1", "failed")]

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_peer_that_never_answers_the_bye_does_not_hold_up_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"sqlite:///{tmp_path}/click2dial.db"
    sip_port = free_port_both()

    async def main() -> None:
        with Sipp("uas_basic") as peer:
            (state,) = await dialogs_with([peer], sip_port)
        # The peer is gone and a socket that never answers holds its port: the
        # BYE is delivered (no ICMP error to end it early) and never answered.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(peer.address)
        async with open_store(database) as store:
            await store.create_call(live_call("c-dead"))
            await store.save_dialog("c-dead", "callee", state)
        started = time.monotonic()
        acme = f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"'
        async with running(
            tmp_path, agent_port=None, trunk_port=None, acme=acme, sip_port=sip_port
        ) as env:
            # The BYE alone would take 64*T1 = 6.4 s to give up.
            assert "callee sent, no answer yet" in caplog.text
            assert time.monotonic() - started < 5
            call = await env.state("c-dead")
            assert (call["status"], call["end_reason"]) == ("ended", "failed")
        silent.close()
        assert await cdrs(database) == [("c-dead", "failed")]

    asyncio.run(asyncio.wait_for(main(), 60))
