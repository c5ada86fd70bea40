"""Node liveness and takeover (issue 12, point 2): two ``click2dial serve``
processes share one PostgreSQL schema; one is SIGKILLed with live calls.

* Within ``takeover_after`` and a few seconds the survivor sends a BYE to
  both sipp peers of each call (sipp exits 0 only when every call got its
  BYE) and each call has exactly one ``failed`` CDR in the outbox.
* The survivor keeps placing calls; the dead node, started again, finds
  nothing to recover: no second CDR, no BYE.
* Two survivors racing to take over one dead node end each call once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from click2dial.app import Click2Dial
from click2dial.config import parse_config
from click2dial.sip.transaction import TimerConfig
from click2dial.store import CallRecord, open_store
from tests.e2e.support import ACME_KEY, CONTACT_REF, config_text, drop_pg_schema, pg_schema_url
from tests.e2e.test_durability import wait_dialogs_saved
from tests.e2e.test_process import output, server, wait_http
from tests.sipp.harness import Sipp, free_port, free_port_both

AGENTS = ("1001", "1002", "1003")
HEARTBEAT = 0.5
TAKEOVER_AFTER = 2.0
AUTH = {"Authorization": f"Bearer {ACME_KEY}"}


def node_config(
    node_id: str,
    heartbeat: float = HEARTBEAT,
    takeover_after: float = TAKEOVER_AFTER,
    **options: Any,
) -> str:
    """``config_text`` for one node of several: its own name, and quick
    liveness settings so that the test runs in seconds."""
    text = config_text(**options)
    return text.replace(
        'node_id = "e2e-node"',
        f'node_id = "{node_id}"\n'
        f"heartbeat_interval = {heartbeat}\ntakeover_after = {takeover_after}",
    )


def place(base: str, agent: str) -> str:
    body = {"agent": agent, "callee": "0821234567", "outbound_id": "27110000001",
            "contact_ref": CONTACT_REF}  # fmt: skip
    response = httpx.post(f"{base}/click2dial/calls", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return str(response.json()["call_ref"])


def wait_status(base: str, ref: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        call: dict[str, Any] = httpx.get(f"{base}/click2dial/calls/{ref}", headers=AUTH).json()
        if call["status"] == status:
            return call
        assert time.monotonic() < deadline, f"call {ref} never got to {status}: {call}"
        time.sleep(0.05)


async def cdrs(database: str) -> list[tuple[str, str]]:
    """(call_ref, end_reason) of every CDR row in the outbox, sorted."""
    async with open_store(database) as store:
        rows = await store.undelivered("acme", limit=1000)
    return sorted(
        (row.call_ref, row.payload["payload"]["end_reason"]) for row in rows if row.kind == "cdr"
    )


def test_sigkill_of_a_node_with_live_calls_a_survivor_byes_both_peers_once(
    tmp_path: Path,
) -> None:
    database = asyncio.run(pg_schema_url())
    n = len(AGENTS)
    try:
        with (
            Sipp("agent_answer", calls=n, timeout=90) as agent,
            Sipp("agent_answer", calls=1, timeout=90) as late_agent,
            # The trunk gets the dead node's calls and then one on the survivor.
            Sipp("trunk_answer", calls=n + 1, timeout=90) as trunk,
        ):
            # No Redis there: the CDRs stay in the outbox to be counted.
            redis = f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"'
            extra = "".join(
                f'\n[agents."{ext}"]\ncontact = "sip:{ext}@127.0.0.1:{port}"\n'
                for ext, port in (("1003", agent.port), ("1004", late_agent.port))
            )
            ports = {name: (free_port("tcp"), free_port_both()) for name in ("a", "b")}
            for name, (http_port, sip_port) in ports.items():
                (tmp_path / f"{name}.toml").write_text(
                    node_config(
                        f"node-{name}",
                        database=database,
                        agent_port=agent.port,
                        extension_1002_port=agent.port,
                        trunk_port=trunk.port,
                        http_port=http_port,
                        sip_port=sip_port,
                        acme=redis,
                        extra=extra,
                        spool=f"{tmp_path}/{name}-ends.jsonl",
                    )
                )
            base_a = f"http://127.0.0.1:{ports['a'][0]}"
            base_b = f"http://127.0.0.1:{ports['b'][0]}"
            with (
                server(["serve", "--config", str(tmp_path / "b.toml")], tmp_path) as node_b,
            ):
                wait_http(f"{base_b}/healthz", node_b)
                with server(["serve", "--config", str(tmp_path / "a.toml")], tmp_path) as node_a:
                    wait_http(f"{base_a}/healthz", node_a)
                    refs = [place(base_a, ext) for ext in AGENTS]
                    for ref in refs:
                        wait_status(base_a, ref, "talking")
                    asyncio.run(wait_dialogs_saved(database, refs))
                    node_a.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    node_a.wait(10)
                assert agent.running()  # nobody has hung up yet
                # sipp exits 0 once each of its calls got a BYE and answered it.
                agent.assert_success(timeout=TAKEOVER_AFTER + 10)
                took = time.monotonic() - killed_at
                ended = [wait_status(base_b, ref, "ended", timeout=5) for ref in refs]
                assert [c["end_reason"] for c in ended] == ["failed"] * n
                # Silence is noticed after TAKEOVER_AFTER, at the next sweep
                # (one heartbeat later); the BYEs go out at once.
                assert took < TAKEOVER_AFTER + 4, f"BYEs {took:.1f} s after the SIGKILL"
                assert asyncio.run(cdrs(database)) == sorted((ref, "failed") for ref in refs)

                # The survivor keeps working: a call on it completes.
                new = place(base_b, "1004")
                wait_status(base_b, new, "talking")
                assert httpx.delete(f"{base_b}/click2dial/calls/{new}", headers=AUTH).is_success
                wait_status(base_b, new, "ended")
                late_agent.assert_success(timeout=10)
                trunk.assert_success(timeout=10)  # the dead node's n calls and this one

                # The dead node comes back: nothing of its own is live, so its
                # recovery writes no CDR and sends no BYE.
                with server(["serve", "--config", str(tmp_path / "a.toml")], tmp_path) as again:
                    wait_http(f"{base_a}/healthz", again)  # recovery ran before HTTP
                    again.send_signal(signal.SIGTERM)
                    again.wait(10)
                log = output(again)
                assert again.returncode == 0, log
                assert "closed as failed" not in log, log
        after = asyncio.run(cdrs(database))
        assert [row for row in after if row[0] in refs] == sorted((ref, "failed") for ref in refs)
        assert len(after) == n + 1  # and the survivor's own call's
    finally:
        asyncio.run(drop_pg_schema(database))


def test_two_survivors_racing_for_one_dead_node_end_each_call_once(tmp_path: Path) -> None:
    async def main() -> None:
        database = await pg_schema_url()
        nodes: list[Click2Dial] = []
        try:
            async with open_store(database) as store:
                # A node that beat once, long ago, leaving calls live (no
                # saved dialog: nothing to BYE, the CDRs are the point here).
                await store.node_started("dead", time.time() - 60)
                refs = []
                for i in range(10):
                    call = CallRecord(
                        call_ref=f"dead-{i}", integrator="acme", agent=f"20{i:02d}",
                        callee="0821234567", outbound_id="27110000001",
                        outbound_id_requested="random", contact_ref=CONTACT_REF,
                        call_type="outbound", created_at=time.time() - 30, node_id="dead",
                        state="talking",
                    )  # fmt: skip
                    await store.create_call(call)
                    refs.append(call.call_ref)
            nodes = []
            for name in ("one", "two"):
                text = node_config(
                    name,
                    # The nodes' own sweeps come too late to join the race.
                    heartbeat=20,
                    takeover_after=50,
                    database=database,
                    agent_port=None,
                    trunk_port=None,
                    acme=f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"',
                    spool=f"{tmp_path}/{name}-ends.jsonl",
                )
                node = Click2Dial(parse_config(text, f"{name}.toml"), timers=TimerConfig(t1=0.1))
                nodes.append(node)
                await node.start()
            clusters = [node.cluster for node in nodes]
            assert clusters[0] is not None and clusters[1] is not None
            ended = await asyncio.gather(*(c.take_over("dead") for c in clusters))
            assert sorted(ended) == [0, len(refs)]
            assert await cdrs(database) == sorted((ref, "failed") for ref in refs)
            async with open_store(database) as store:
                assert await store.live_calls() == []
                winner = "one" if ended[0] else "two"
                (row,) = [r for r in await store.nodes() if r.node_id == "dead"]
                assert row.taken_over_by == winner
        finally:
            for node in nodes:
                await node.stop()
            await drop_pg_schema(database)

    asyncio.run(main())
