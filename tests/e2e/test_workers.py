"""``[server] workers`` (issue 10): one node run as two worker processes on
one PostgreSQL schema, or on one SQLite file (the default database, where
``workers = "auto"`` is the default), behind one HTTP port
(``click2dial.workers``).

* Calls POSTed to the one HTTP port are placed by both workers; each worker
  dials from its own SIP port (the configured one, and the next).
* A DELETE answers whichever worker the connection reached.
* A worker killed with live calls is started again by the supervisor, and
  the new worker ends exactly its calls: a BYE to both parties of each and
  one ``failed`` CDR each; the other worker's calls go on talking.
* SIGTERM to the supervisor stops the node: every worker exits, status 0.
* A supervisor killed with SIGKILL takes its workers down with it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from click2dial.store import CallRecord, open_store
from tests.e2e.support import config_text, drop_pg_schema, pg_schema_url
from tests.e2e.test_process import output, server, wait_http
from tests.e2e.test_takeover import AUTH, cdrs, place, wait_status
from tests.sipp.harness import Sipp, free_port

AGENTS = tuple(str(n) for n in range(1003, 1019))


def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def two_free_ports() -> int:
    """A port that is free, with the next one, for UDP and TCP both."""
    for _ in range(200):
        port = free_port("tcp")
        if port < 65535 and all(
            _free(p, kind)
            for p in (port, port + 1)
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        ):
            return port
    raise AssertionError("no two consecutive free ports")


def worker_pids(supervisor: int) -> dict[int, int]:
    """Worker index -> pid, from the supervisor's children."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    found = {}
    for pid in map(int, children):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--worker" in argv:
            found[int(argv[argv.index(b"--worker") + 1])] = pid
    return found


def got_bye(peer: Sipp, call_ref: str) -> bool:
    """Whether the sipp peer received a BYE in the dialog of our INVITE
    that carried ``call_ref``."""
    log = peer.messages_log()
    invite = re.search(rf"INVITE sip:[^\n]*\n(?:[^\n]+\n)*?X-Teleforge-Call-Ref: {call_ref}\n", log)
    if invite is None:
        return False
    message = log[invite.start() : log.find("\n\n", invite.start())]
    call_id = re.search(r"^Call-ID: (\S+)", message, re.M)
    assert call_id is not None
    return (
        re.search(rf"BYE sip:[^\n]*\n(?:[^\n]+\n)*?Call-ID: {re.escape(call_id[1])}\n", log)
        is not None
    )


async def owners(database: str, refs: list[str]) -> dict[str, str]:
    async with open_store(database) as store:
        calls: list[CallRecord | None] = [await store.get_call("acme", ref) for ref in refs]
    return {call.call_ref: call.node_id for call in calls if call is not None}


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_two_workers_share_the_http_port_and_a_killed_worker_ends_its_own_calls(
    tmp_path: Path, backend: str
) -> None:
    database = (
        asyncio.run(pg_schema_url()) if backend == "postgres" else f"sqlite:///{tmp_path}/node.db"
    )
    try:
        with (
            Sipp("agent_answer", calls=len(AGENTS), timeout=120) as agent,
            Sipp("trunk_answer", calls=len(AGENTS), timeout=120) as trunk,
        ):
            http_port, sip_port, operator_port = (
                free_port("tcp"),
                two_free_ports(),
                two_free_ports(),
            )
            extra = "".join(
                f'\n[agents."{ext}"]\ncontact = "sip:{ext}@127.0.0.1:{agent.port}"\n'
                for ext in AGENTS
            )
            text = config_text(
                database=database,
                agent_port=None,
                trunk_port=trunk.port,
                http_port=http_port,
                sip_port=sip_port,
                operator_port=operator_port,
                # No Redis there: the CDRs stay in the outbox to be counted.
                acme=f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"',
                extra=extra,
                spool=f"{tmp_path}/ends.jsonl",
                workers=2,
            )
            config = tmp_path / "node.toml"
            config.write_text(text)
            base = f"http://127.0.0.1:{http_port}"
            with server(["serve", "--config", str(config)], tmp_path) as node:
                wait_http(f"{base}/healthz", node)
                deadline = time.monotonic() + 20
                while len(worker_pids(node.pid)) < 2:
                    assert time.monotonic() < deadline, output(node)
                    time.sleep(0.05)
                # Each POST on a new connection: the kernel spreads them over
                # the workers; place calls until each owns two.
                refs: list[str] = []
                placed: dict[str, str] = {}
                for ext in AGENTS:
                    refs.append(place(base, ext))
                    wait_status(base, refs[-1], "talking")
                    placed = asyncio.run(owners(database, refs))
                    per_worker = [list(placed.values()).count(f"e2e-node-w{i}") for i in (0, 1)]
                    if min(per_worker) >= 2:
                        break
                assert min(per_worker) >= 2, placed
                # Each worker dialled from its own SIP port.
                invites = trunk.messages_log()
                assert f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};" in invites
                assert f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port + 1};" in invites
                # A DELETE through the shared port ends a call of either worker.
                ended_by_api = refs.pop(0)
                deleted = httpx.delete(f"{base}/click2dial/calls/{ended_by_api}", headers=AUTH)
                assert deleted.status_code == 200, deleted.text
                wait_status(base, ended_by_api, "ended")

                pids = worker_pids(node.pid)
                killed = [ref for ref in refs if placed[ref] == "e2e-node-w1"]
                survivors = [ref for ref in refs if placed[ref] == "e2e-node-w0"]
                os.kill(pids[1], signal.SIGKILL)
                for ref in killed:
                    call = wait_status(base, ref, "ended", timeout=30)
                    assert call["end_reason"] == "failed", call
                deadline = time.monotonic() + 20
                while not all(got_bye(agent, r) and got_bye(trunk, r) for r in killed):
                    assert time.monotonic() < deadline, "no BYE to the killed worker's peers"
                    time.sleep(0.05)
                new_pids = worker_pids(node.pid)
                assert new_pids[1] != pids[1] and new_pids[0] == pids[0]
                for ref in survivors:  # the other worker's calls go on
                    assert wait_status(base, ref, "talking")["status"] == "talking"
                    assert not got_bye(agent, ref)
                failed = [ref for ref, reason in asyncio.run(cdrs(database)) if reason == "failed"]
                assert sorted(failed) == sorted(killed)  # one failed CDR each, no other
                for ref in survivors:
                    assert (
                        httpx.delete(f"{base}/click2dial/calls/{ref}", headers=AUTH).status_code
                        == 200
                    )
                    wait_status(base, ref, "ended")
                supervisor_pids = worker_pids(node.pid)
                node.send_signal(signal.SIGTERM)
                assert node.wait(30) == 0
                # The supervisor waited for its workers: none is left running.
                assert not any(Path(f"/proc/{pid}").exists() for pid in supervisor_pids.values())
    finally:
        if backend == "postgres":
            asyncio.run(drop_pg_schema(database))


def test_a_worker_that_cannot_start_stops_the_node(tmp_path: Path) -> None:
    database = asyncio.run(pg_schema_url())
    try:
        sip_port = two_free_ports()
        text = config_text(
            database=database,
            agent_port=None,
            trunk_port=None,
            sip_port=sip_port,
            spool=f"{tmp_path}/ends.jsonl",
            workers=2,
        )
        config = tmp_path / "node.toml"
        config.write_text(text)
        # Worker 1's SIP port (the configured one plus one) is taken.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", sip_port + 1))
            with server(["serve", "--config", str(config)], tmp_path) as node:
                assert node.wait(30) == 1
                log = output(node)
        assert f"{sip_port + 1}" in log
        assert "worker 1" in log and "before it started: stopping the node" in log
    finally:
        asyncio.run(drop_pg_schema(database))


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_supervisor_killed_with_sigkill_takes_its_workers_down(tmp_path: Path) -> None:
    sip_port = two_free_ports()
    text = config_text(
        database=f"sqlite:///{tmp_path}/node.db",
        agent_port=None,
        trunk_port=None,
        sip_port=sip_port,
        operator_port=two_free_ports(),
        spool=f"{tmp_path}/ends.jsonl",
        workers=2,
    )
    config = tmp_path / "node.toml"
    config.write_text(text)
    with server(["serve", "--config", str(config)], tmp_path) as node:
        deadline = time.monotonic() + 30
        while len(pids := worker_pids(node.pid)) < 2:
            assert node.poll() is None and time.monotonic() < deadline, output(node)
            time.sleep(0.05)
        node.kill()
        node.wait(10)
        deadline = time.monotonic() + 30
        try:
            while any(_running(pid) for pid in pids.values()):
                assert time.monotonic() < deadline, "workers left running without a supervisor"
                time.sleep(0.05)
        finally:  # orphans would also hold the test's pipe of their output
            for pid in pids.values():
                if _running(pid):
                    os.kill(pid, signal.SIGKILL)
    # They stopped as on SIGTERM: their SIP ports are free again.
    assert _free(sip_port, socket.SOCK_DGRAM) and _free(sip_port + 1, socket.SOCK_DGRAM)
