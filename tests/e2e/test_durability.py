"""Every call ends, whatever happens to the process or the database (issue 8,
point 9; SPEC §4 "Every call ends").

* SIGKILL with live calls, then a restart: both sipp peers of each call
  receive a BYE (the dialogs the call control saved when they were
  established), and each call has exactly one ``failed`` CDR.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from click2dial.store import open_store
from tests.e2e.support import ACME_KEY, CONTACT_REF, config_text
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
        assert agent.running and trunk.running  # nobody has hung up yet
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
