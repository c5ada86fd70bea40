"""Click2Dial as a process: crash recovery, the newcomer's commands.

These run the real ``click2dial`` command in a subprocess, the way an
operator does.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from click2dial.store import open_store
from tests.e2e.support import ACME_KEY, CONTACT_REF, config_text
from tests.processes import stop
from tests.sipp.harness import Sipp, free_port, free_port_both

PYTHON = sys.executable


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never answered")
        time.sleep(0.05)


_OUTPUT: dict[int, list[bytes]] = {}


def _drain(process: subprocess.Popen[bytes]) -> None:
    # A busy node logs a lot: an unread pipe would fill and stall it.
    assert process.stderr is not None
    lines = _OUTPUT.setdefault(process.pid, [])
    for line in process.stderr:
        lines.append(line)


def output(process: subprocess.Popen[bytes]) -> str:
    """What a :func:`server` process wrote to stderr so far (its log)."""
    return b"".join(_OUTPUT.get(process.pid, [])).decode(errors="replace")


@contextmanager
def server(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [PYTHON, "-m", "click2dial.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    reader = threading.Thread(target=_drain, args=(process,), daemon=True)
    reader.start()
    try:
        yield process
    finally:
        stop(process)
        reader.join(5)
        if process.stderr is not None:
            process.stderr.close()


def test_a_call_live_when_the_server_is_killed_gets_a_failed_cdr_at_restart(
    tmp_path: Path,
) -> None:
    http_port, sip_port = free_port("tcp"), free_port_both()
    database = f"sqlite:///{tmp_path}/c2d.db"
    base = f"http://127.0.0.1:{http_port}"
    auth = {"Authorization": f"Bearer {ACME_KEY}"}
    with Sipp("agent_answer") as agent, Sipp("trunk_answer") as trunk:
        config = tmp_path / "c2d.toml"
        config.write_text(
            config_text(
                database=database,
                agent_port=agent.port,
                trunk_port=trunk.port,
                http_port=http_port,
                sip_port=sip_port,
                # A Redis that is not there: the CDR must wait in the outbox.
                acme=f'redis = "redis://127.0.0.1:{free_port("tcp")}/9"',
            )
        )
        with server(["serve", "--config", str(config)], tmp_path) as first:
            wait_http(f"{base}/healthz", first)
            body = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
                    "contact_ref": CONTACT_REF}  # fmt: skip
            ref = httpx.post(f"{base}/click2dial/calls", json=body, headers=auth).json()["call_ref"]
            deadline = time.monotonic() + 20
            while httpx.get(f"{base}/click2dial/calls/{ref}", headers=auth).json()["status"] != (
                "talking"
            ):
                assert time.monotonic() < deadline, "the call never got to talking"
                time.sleep(0.05)
            assert "; event loop uvloop" in output(first)  # the default
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        agent.stop()
        trunk.stop()
    # The restart runs on the standard event loop: recovery works on both.
    text = config.read_text().replace("[server]\n", '[server]\nevent_loop = "asyncio"\n')
    config.write_text(text)
    with server(["serve", "--config", str(config)], tmp_path) as second:
        wait_http(f"{base}/healthz", second)
        call = httpx.get(f"{base}/click2dial/calls/{ref}", headers=auth).json()
        assert "; event loop asyncio" in output(second)
    assert call["status"] == "ended"
    assert call["end_reason"] == "failed" and call["end_code"] == 41

    async def outbox() -> list[str]:
        async with open_store(database) as store:
            rows = await store.undelivered("acme")
        return [row.call_ref for row in rows if row.kind == "cdr"]

    assert asyncio.run(outbox()) == [ref]  # exactly one CDR, waiting for delivery


def test_demo_completes_a_call_and_prints_its_cdr(tmp_path: Path) -> None:
    temporary, work = tmp_path / "tmp", tmp_path / "work"
    temporary.mkdir()
    work.mkdir()
    result = subprocess.run(
        [PYTHON, "-m", "click2dial.cli", "demo"],
        cwd=work,
        env={**os.environ, "TMPDIR": str(temporary)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    # Each state with its time of day and its time since the request.
    states = re.findall(r"^  \d\d:\d\d:\d\d\.\d{3} \(\+ *(\d+\.\d\d) s\) call is (\w+)$", out, re.M)
    assert states[0][1] == "agent_ringing"
    assert {"talking", "ended"} <= {state for _, state in states}
    times = [float(t) for t, _ in states]
    assert times == sorted(times) and times[-1] >= 2.0  # the talk lasts 2 s
    # The agent pop-up document, then the CDR, both parse.
    popup_at, cdr_at = out.index("Agent pop-up document"), out.index("CDR (")
    assert popup_at < cdr_at
    popup = json.JSONDecoder().raw_decode(out[out.index("{", popup_at) :])[0]
    assert popup["type"] == "call" and popup["payload"]["agent"] == "1001"
    assert popup["payload"]["contact_ref"] == "demo-ticket-42"
    cdr = json.JSONDecoder().raw_decode(out[out.index("{", cdr_at) :])[0]
    assert cdr["type"] == "cdr" and cdr["payload"]["end_reason"] == "callee_hungup"
    assert cdr["payload"]["call_ref"] == popup["payload"]["call_ref"]
    # Nothing left behind: no temporary folder, nothing in the working folder.
    assert list(temporary.iterdir()) == []
    assert list(work.iterdir()) == []


def test_serve_on_the_embedded_defaults_answers_on_port_8300(tmp_path: Path) -> None:
    env = {"CLICK2DIAL_CONFIG": ""}
    with server(["serve"], tmp_path, env) as process:
        wait_http("http://127.0.0.1:8300/readyz", process)
        # The embedded integrator needs no key from loopback.
        response = httpx.post(
            "http://127.0.0.1:8300/click2dial/calls",
            json={"agent": "1001", "callee": "bad"},
        )
        assert response.status_code == 422
        assert response.json()["error"]["errors"][0]["field"] == "callee"
    assert (tmp_path / "click2dial.db").exists()  # SQLite in the working folder


def test_check_config_names_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[integrators.acme]\nmax_cps = -1\napi_keys = ["short"]\n')
    result = subprocess.run(
        [PYTHON, "-m", "click2dial.cli", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"{bad}: integrators.acme.max_cps" in result.stderr
    assert f"{bad}: integrators.acme.api_keys" in result.stderr


def test_a_sigterm_while_the_node_starts_stops_it_cleanly(tmp_path: Path) -> None:
    """The HTTP port answers before start-up is over, so a supervisor (or a
    test) may send SIGTERM then.  The node must finish starting and stop in
    order (exit 0), not die of the signal half way (-15)."""
    config = tmp_path / "c2d.toml"
    config.write_text(
        config_text(
            database=f"sqlite:///{tmp_path}/c2d.db",
            agent_port=None,
            trunk_port=None,
            http_port=free_port("tcp"),
            sip_port=free_port_both(),
        )
    )
    process = subprocess.Popen(
        [PYTHON, "-m", "click2dial.cli", "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            # start() logs the descriptor budget first, long before it returns.
            if b"open-file limit" in line:
                break
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        returncode = process.wait(20)
    finally:
        stop(process)
    log = b"".join([*seen, rest]).decode(errors="replace")
    assert returncode == 0, log
    assert "running on" in log and "stopping: hanging up live calls" in log
