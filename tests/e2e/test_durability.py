"""Every call ends, whatever happens to the process or the database (issue 8,
point 9; SPEC §4 "Every call ends").

* SIGKILL with live calls, then a restart: both sipp peers of each call
  receive a BYE (the dialogs the call control saved when they were
  established), and each call has exactly one ``failed`` CDR.
* PostgreSQL restarted while calls are live and ending: once it is back,
  every call has ended with exactly one CDR with its true duration (not the
  outage's), none stays live, and its agent can be called again at once.
  The PostgreSQL is the test's own (``private_pg``), never the machine's.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from click2dial.store import Notification, Store, open_store
from tests.e2e.private_pg import PrivatePostgres
from tests.e2e.support import ACME_KEY, CONTACT_REF, config_text, running
from tests.e2e.test_process import server, wait_http
from tests.sipp.harness import Sipp, free_port, free_port_both

AGENTS = ("1001", "1002", "1003")


def test_sigkill_with_live_calls_then_a_restart_byes_both_peers_of_each_call(
    tmp_path: Path,
) -> None:
    http_port, sip_port = free_port("tcp"), free_port_both()
    database = f"sqlite:///{tmp_path}/c2d.db"
    base = f"http://127.0.0.1:{http_port}"
    auth = {"Authorization": f"Bearer {ACME_KEY}"}
    n = len(AGENTS)
    # Each sipp passes (exit 0) only when all its calls got Click2Dial's BYE
    # and answered it: the agent's phone after any re-INVITEs, the trunk
    # right after its ACK.
    with (
        Sipp("agent_answer", calls=n, timeout=90) as agent,
        Sipp("trunk_answer", calls=n, timeout=90) as trunk,
    ):
        config = tmp_path / "c2d.toml"
        config.write_text(
            config_text(
                database=database,
                agent_port=agent.port,
                extension_1002_port=agent.port,
                trunk_port=trunk.port,
                http_port=http_port,
                sip_port=sip_port,
                # A Redis that is not there: the CDRs wait in the outbox.
                acme=f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"',
                extra=f'\n[agents."1003"]\ncontact = "sip:1003@127.0.0.1:{agent.port}"\n',
            )
        )
        with server(["serve", "--config", str(config)], tmp_path) as first:
            wait_http(f"{base}/healthz", first)
            refs = []
            for ext in AGENTS:
                body = {"agent": ext, "callee": "0821234567", "outbound_id": "27110000001",
                        "contact_ref": CONTACT_REF}  # fmt: skip
                response = httpx.post(f"{base}/click2dial/calls", json=body, headers=auth)
                assert response.status_code == 201, response.text
                refs.append(response.json()["call_ref"])
            deadline = time.monotonic() + 30
            for ref in refs:
                while (
                    httpx.get(f"{base}/click2dial/calls/{ref}", headers=auth).json()["status"]
                    != "talking"
                ):
                    assert time.monotonic() < deadline, f"call {ref} never got to talking"
                    time.sleep(0.05)
            # Talking is not the same moment as the dialogs' durable save:
            # wait for both legs of every call to be in the store.
            asyncio.run(wait_dialogs_saved(database, refs))
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert agent.running() and trunk.running()  # nobody has hung up yet
        with server(["serve", "--config", str(config)], tmp_path) as second:
            wait_http(f"{base}/healthz", second)
            agent.assert_success(timeout=30)
            trunk.assert_success(timeout=30)
            calls = [
                httpx.get(f"{base}/click2dial/calls/{ref}", headers=auth).json() for ref in refs
            ]
    assert [(c["status"], c["end_reason"]) for c in calls] == [("ended", "failed")] * n

    async def outbox() -> list[tuple[str, str]]:
        async with open_store(database) as store:
            rows = await store.undelivered("acme")
        return sorted(
            (row.call_ref, row.payload["payload"]["end_reason"])
            for row in rows
            if row.kind == "cdr"
        )

    assert asyncio.run(outbox()) == sorted((ref, "failed") for ref in refs)  # one CDR each


async def wait_dialogs_saved(database: str, refs: list[str], timeout: float = 10) -> None:
    async with open_store(database) as store:
        deadline = time.monotonic() + timeout
        while True:
            saved = {ref: sorted(await store.dialogs_of(ref)) for ref in refs}
            if all(legs == ["agent", "callee"] for legs in saved.values()):
                return
            assert time.monotonic() < deadline, (
                f"the call control never saved the legs' dialogs (store.save_dialog): {saved}"
            )
            await asyncio.sleep(0.05)


TALK_MS = 6000
"""The callee's talk time: long enough that every call is talking when the
database goes down, and hangs up during the outage."""


def test_postgres_restarted_while_calls_end_every_call_ends_once_with_its_true_duration(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    n = len(AGENTS)

    async def main() -> None:
        with (
            Sipp("agent_answer", calls=n, timeout=90) as agent,
            Sipp("trunk_answer_hangup", calls=n, timeout=90,
                 variables={"talk_ms": TALK_MS}) as trunk,
        ):  # fmt: skip
            async with running(
                tmp_path,
                database=private_pg.url,
                agent_port=agent.port,
                extension_1002_port=agent.port,
                trunk_port=trunk.port,
                # A Redis that is not there: the CDRs stay in the outbox to be counted.
                acme=f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"',
                extra=f'\n[agents."1003"]\ncontact = "sip:1003@127.0.0.1:{agent.port}"\n',
            ) as env:
                refs = []
                for ext in AGENTS:
                    response = await env.place(agent=ext)
                    assert response.status_code == 201, response.text
                    refs.append(response.json()["call_ref"])
                for ref in refs:
                    await env.wait_state(ref, {"talking"})
                # pg_ctl blocks: run it off the loop, which keeps serving SIP.
                await asyncio.to_thread(private_pg.stop, "fast")
                down_at = time.time()
                # Both parties of every call are done: the trunk's BYEs were
                # answered and Click2Dial's BYEs to the agents too.
                await asyncio.to_thread(trunk.assert_success, 30)
                await asyncio.to_thread(agent.assert_success, 30)
                await asyncio.sleep(2)  # the outage goes on a little longer
                await asyncio.to_thread(private_pg.start)
                up_at = time.time()
                async with open_store(private_pg.url) as store:
                    ended = await wait_all_ended(store, refs)
                    cdrs = [r for r in await store.undelivered("acme", 1000) if r.kind == "cdr"]
                    assert await store.live_calls() == []
                    # Each agent is free for a new call at once.
                    for ext in AGENTS:
                        response = await env.place(agent=ext, contact_ref="again")
                        assert response.status_code == 201, response.text
        for ref in refs:
            call = ended[ref]
            assert (call.end_reason, call.hangup_side) == ("callee_hungup", "callee"), call
            assert call.ended_at is not None and down_at < call.ended_at < up_at, (
                "the callee must hang up while the database is down"
            )
            assert [row.call_ref for row in cdrs].count(ref) == 1, cdrs
            payload = cdr_of(cdrs, ref)
            assert payload["end_reason"] == "callee_hungup"
            # The time between the callee's answer and its BYE: the outage
            # and the delayed write are not in it.
            assert abs(payload["call_time"] - TALK_MS / 1000) <= 1, payload

    asyncio.run(asyncio.wait_for(main(), 120))


async def wait_all_ended(store: Store, refs: list[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        calls = {ref: await store.get_call("acme", ref) for ref in refs}
        if all(call is not None and not call.live for call in calls.values()):
            return calls
        assert time.monotonic() < deadline, f"calls still live after the outage: {calls}"
        await asyncio.sleep(0.1)


def cdr_of(rows: list[Notification], ref: str) -> dict[str, Any]:
    (row,) = [row for row in rows if row.call_ref == ref]
    payload: dict[str, Any] = row.payload["payload"]
    return payload


def test_a_call_answered_201_survives_a_sigkill_right_after(tmp_path: Path) -> None:
    """Issue 10: group commit keeps durability. Each 201 is sent only once
    its call is in the database: calls placed concurrently (so that they
    share group commits) and the server SIGKILLed the moment the last 201
    arrives are all there after a restart, each closed with one failed CDR."""
    http_port, sip_port = free_port("tcp"), free_port_both()
    database = f"sqlite:///{tmp_path}/c2d.db"
    base = f"http://127.0.0.1:{http_port}"
    auth = {"Authorization": f"Bearer {ACME_KEY}"}
    agents = [f"1{n:03d}" for n in range(100, 120)]
    config = tmp_path / "c2d.toml"
    # The agents ring a socket that takes the INVITEs and never answers (no
    # ICMP error to end the calls early): the calls stay live.
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    silent = f"sip:{{}}@127.0.0.1:{hole.getsockname()[1]}"
    config.write_text(
        config_text(
            database=database,
            agent_port=None,
            trunk_port=None,
            http_port=http_port,
            sip_port=sip_port,
            # A Redis that is not there: each CDR waits in the outbox.
            acme=f'max_cps = 100\nmax_concurrent = 100\nredis = "redis://127.0.0.1:{free_port("tcp")}/9"',
            extra="".join(
                f'\n[agents."{ext}"]\ncontact = "{silent.format(ext)}"\n' for ext in agents
            ),
        )
    )

    async def place_all() -> list[str]:
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/click2dial/calls",
                        json={
                            "agent": ext,
                            "callee": "0821234567",
                            "outbound_id": "27110000001",
                        },
                    )
                    for ext in agents
                )
            )
        assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
        return [r.json()["call_ref"] for r in responses]

    with server(["serve", "--config", str(config)], tmp_path) as first:
        wait_http(f"{base}/healthz", first)
        refs = asyncio.run(place_all())
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    with server(["serve", "--config", str(config)], tmp_path) as second:
        wait_http(f"{base}/healthz", second)
        calls = [httpx.get(f"{base}/click2dial/calls/{ref}", headers=auth) for ref in refs]
    hole.close()

    async def cdrs() -> list[Notification]:
        async with open_store(database) as store:
            return [n for n in await store.undelivered("acme", 500) if n.kind == "cdr"]

    assert [c.status_code for c in calls] == [200] * len(refs)
    assert {(c.json()["status"], c.json()["end_reason"]) for c in calls} == {("ended", "failed")}
    assert sorted(n.call_ref for n in asyncio.run(cdrs())) == sorted(refs)  # one each
