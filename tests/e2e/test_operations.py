"""Operations: metrics on the operator listener only (exact, with histograms,
build and process metrics), nothing about one integrator on another's
port, JSON logs with one line per call event and no secret, the operator's
``calls`` and ``hangup`` commands.

The calls run between real sipp peers; the log and command tests run the
real ``click2dial serve`` process.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.support import ACME_KEY, BETA_KEY, CONTACT_REF, config_text, running
from tests.e2e.test_process import PYTHON, wait_http
from tests.notify.support import HttpReceiver
from tests.processes import stop
from tests.sipp.harness import Sipp, free_port, free_port_both

WEBHOOK_SECRET = "whsec-0123456789abcdef-secret"


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` with ``labels``."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


# --------------------------------------------------------------- metrics


def test_metrics_are_on_the_operator_listener_only_exact_and_with_histograms(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer") as trunk:
            async with (
                HttpReceiver() as hook,
                running(
                    tmp_path,
                    agent_port=agent.port,
                    trunk_port=trunk.port,
                    acme=f'webhook_url = "{hook.url}"\nwebhook_secret = "{WEBHOOK_SECRET}"',
                ) as env,
            ):
                assert env.service.operator is not None
                operator = f"http://127.0.0.1:{env.service.operator.bound_port}"
                response = await env.place()
                assert response.status_code == 201, response.text
                ref = response.json()["call_ref"]
                await env.wait_state(ref, {"talking"})
                assert (await env.acme.delete(f"/click2dial/calls/{ref}")).status_code == 200
                await env.wait_ended(ref)
                async with httpx.AsyncClient(base_url=operator, timeout=10) as op:
                    # The agent document and the CDR both go to the webhook.
                    deadline = asyncio.get_running_loop().time() + 15
                    while True:
                        text = (await op.get("/metrics")).text
                        delivered = [
                            s.value
                            for s in families(text)["click2dial_webhook_delivery_seconds"].samples
                            if s.name.endswith("_count") and s.labels["outcome"] == "delivered"
                        ]
                        if delivered == [2.0]:
                            break
                        assert asyncio.get_running_loop().time() < deadline, delivered
                        await asyncio.sleep(0.05)
                    # Not on the integrator's port, with or without its key.
                    assert (await env.acme.get("/metrics")).status_code == 404
                    async with httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{env.service.http_port()}"
                    ) as anonymous:
                        assert (await anonymous.get("/metrics")).status_code == 404

                    env.service.metrics.placed.labels("acme").inc(1_234_566)
                    response = await op.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        # 1,234,567 exactly: `{value:g}` made this 1.23457e+06 (1,234,570).
        assert sample(text, "click2dial_calls_placed_total", integrator="acme") == 1_234_567
        assert 'click2dial_calls_placed_total{integrator="acme"} 1.234567e+06\n' in text
        assert sample(text, "click2dial_calls_ended_total", integrator="acme",
                      end_reason="hungup") == 1  # fmt: skip
        found = families(text)
        for name in ("click2dial_call_agent_setup_seconds", "click2dial_call_callee_setup_seconds"):
            assert found[name].type == "histogram"
            assert sample(text, f"{name}_count", integrator="acme") == 1
            assert sample(text, f"{name}_bucket", integrator="acme", le="+Inf") == 1
        assert found["click2dial_webhook_delivery_seconds"].type == "histogram"
        assert sample(text, "click2dial_build_info", version=__import__("click2dial").__version__)
        assert sample(text, "process_resident_memory_bytes") > 0
        assert "process_cpu_seconds_total" in text
        assert sample(text, "click2dial_calls_live", integrator="acme") == 0
        assert sample(text, "click2dial_outbox_pending") == 0
        assert sample(text, "click2dial_sip_parse_errors_total") == 0
        assert sample(text, "click2dial_notifications_delivered_total", integrator="acme",
                      target="webhook") == 2  # fmt: skip

    asyncio.run(main())


def test_no_integrator_port_answers_metrics_or_names_another_integrator(tmp_path: Path) -> None:
    beta_port = free_port("tcp")

    async def main() -> None:
        async with running(
            tmp_path, agent_port=None, trunk_port=None, extra=f"http_port = {beta_port}"
        ) as env:
            # Agent 1002 has no contact and nothing is registered: it ends (timeout).
            placed = await env.place(agent="1002", outbound_id="random")
            assert placed.status_code == 201, placed.text
            acme_ref = placed.json()["call_ref"]
            await env.wait_ended(acme_ref)
            shared = f"http://127.0.0.1:{env.service.http_port()}"
            own = f"http://127.0.0.1:{beta_port}"
            assert env.service.http_port("beta") == beta_port
            legacy = "/call.php?agent=1001&callee=0821234567"
            paths = ["/metrics", "/healthz", "/readyz", "/openapi.json", "/click2dial/calls",
                     f"/click2dial/calls/{acme_ref}", "/click2dial/notifications", legacy,
                     "/operator/calls", "/nothing"]  # fmt: skip
            seen: list[tuple[str, str, int]] = []
            for base, key, other in ((own, BETA_KEY, "acme"), (shared, ACME_KEY, "beta")):
                for headers in ({"Authorization": f"Bearer {key}"}, {}):
                    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
                        for path in paths:
                            response = await client.get(path)
                            seen.append((base, path, response.status_code))
                            assert other not in response.text.lower(), (base, path)
                            assert other not in str(response.headers).lower(), (base, path)
                            if path in ("/metrics", "/operator/calls"):
                                assert response.status_code == 404, (base, path)
                        assert (await client.delete("/operator/calls/x")).status_code in (404, 405)
            assert (own, "/healthz", 200) in seen and (shared, "/click2dial/calls", 200) in seen
            assert env.service.operator is not None
            # The operator listener does name both: the check above would see a leak.
            async with httpx.AsyncClient() as op:
                port = env.service.operator.bound_port
                text = (await op.get(f"http://127.0.0.1:{port}/metrics")).text
            assert 'integrator="acme"' in text and 'integrator="beta"' in text

    asyncio.run(main())


# ------------------------------------------------- the real server process


@contextmanager
def serve(config: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """``click2dial serve`` with its stdout and stderr in files; stopped
    with SIGTERM on exit (then the files are complete)."""
    out, err = (cwd / "stdout.log").open("wb"), (cwd / "stderr.log").open("wb")
    process = subprocess.Popen(
        [PYTHON, "-m", "click2dial.cli", "serve", "--config", str(config), *args],
        cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=err,
    )  # fmt: skip
    try:
        yield process
    finally:
        stop(process, 15)
        out.close()
        err.close()


def wait_status(base: str, ref: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    auth = {"Authorization": f"Bearer {ACME_KEY}"}
    while True:
        call: dict[str, Any] = httpx.get(f"{base}/click2dial/calls/{ref}", headers=auth).json()
        if call["status"] == status:
            return call
        assert time.monotonic() < deadline, f"call stuck in {call['status']}"
        time.sleep(0.05)


def place(base: str) -> str:
    body = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
            "contact_ref": CONTACT_REF}  # fmt: skip
    response = httpx.post(
        f"{base}/click2dial/calls", json=body, headers={"Authorization": f"Bearer {ACME_KEY}"}
    )
    assert response.status_code == 201, response.text
    ref: str = response.json()["call_ref"]
    return ref


def test_json_logs_have_one_line_per_call_event_and_no_secret(tmp_path: Path) -> None:
    trunk_password = "trunk-pw-S3cr3t-7f1e"
    agent_password = "agent-pw-S3cr3t-99aa"
    redis_password = "redis-pw-S3cr3t-1b2c"
    secrets = [ACME_KEY, BETA_KEY, trunk_password, agent_password, redis_password,
               WEBHOOK_SECRET, "beta-webhook-S3cr3t-4d5e"]  # fmt: skip
    http_port, sip_port = free_port("tcp"), free_port_both()
    base = f"http://127.0.0.1:{http_port}"
    dead = free_port("tcp")  # nothing listens: deliveries fail and are logged
    with (
        Sipp("agent_answer", calls=2) as agent,
        Sipp("trunk_auth_407", calls=2) as trunk,
    ):
        config = tmp_path / "c2d.toml"
        config.write_text(
            config_text(
                database=f"sqlite:///{tmp_path}/c2d.db",
                agent_port=agent.port,
                trunk_port=trunk.port,
                http_port=http_port,
                sip_port=sip_port,
                trunk_auth=("c2d", trunk_password),
                agent=f'password = "{agent_password}"',
                acme=f'redis = "redis://:{redis_password}@127.0.0.1:{dead}/9"\n'
                f'webhook_url = "http://127.0.0.1:{dead}/hook"\n'
                f'webhook_secret = "{WEBHOOK_SECRET}"',
                extra=f'webhook_url = "http://127.0.0.1:{dead}/b"\n'
                'webhook_secret = "beta-webhook-S3cr3t-4d5e"',
            )
        )
        with serve(config, tmp_path, "--log-format", "json", "--log-level", "debug") as process:
            wait_http(f"{base}/healthz", process)
            refs = []
            for _ in range(2):
                ref = place(base)
                wait_status(base, ref, "talking")
                auth = {"Authorization": f"Bearer {ACME_KEY}"}
                assert httpx.delete(f"{base}/click2dial/calls/{ref}", headers=auth).is_success
                wait_status(base, ref, "ended")
                refs.append(ref)
            # A refused request and a bad key are logged too, without the key.
            httpx.get(f"{base}/click2dial/calls", headers={"Authorization": "Bearer nope"})
            # The HTTP server's own warnings are JSON lines too.
            with socket.create_connection(("127.0.0.1", http_port), timeout=5) as raw:
                raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                raw.recv(1000)
        assert process.returncode == 0
    stderr = (tmp_path / "stderr.log").read_text()
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line parses
    assert len(lines) > 10
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert {line["level"] for line in lines} >= {"info", "debug", "warning"}
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    events = Counter(
        (line["msg"], line.get("call_ref"))
        for line in lines
        if line["logger"] == "click2dial.calls"
    )
    for ref in refs:
        for msg in ("call placed", "call answered", "call ended"):
            assert events[(msg, ref)] == 1, (msg, ref, events)
    ended = next(line for line in lines if line["msg"] == "call ended")
    assert ended["integrator"] == "acme" and ended["agent"] == "1001"
    assert ended["end_reason"] == "hungup" and ended["hangup_side"] == "api", ended
    assert ended["talk_s"] > 0 and ended["duration_s"] >= ended["talk_s"]
    answered = next(line for line in lines if line["msg"] == "call answered")
    assert answered["agent_setup_s"] >= 0 and answered["callee_setup_s"] >= 0
    everything = stderr + (tmp_path / "stdout.log").read_text()
    for secret in secrets:
        assert secret not in everything, f"a secret was logged: {secret[:6]}..."


def test_operator_commands_list_live_calls_and_hang_one_up(tmp_path: Path) -> None:
    http_port, sip_port, operator_port = free_port("tcp"), free_port_both(), free_port("tcp")
    base = f"http://127.0.0.1:{http_port}"

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "click2dial.cli", *args, "--config", str(config)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    with Sipp("agent_answer") as agent, Sipp("trunk_answer") as trunk:
        config = tmp_path / "c2d.toml"
        config.write_text(
            config_text(
                database=f"sqlite:///{tmp_path}/c2d.db",
                agent_port=agent.port,
                trunk_port=trunk.port,
                http_port=http_port,
                sip_port=sip_port,
                operator_port=operator_port,
            )
        )
        # The format from the environment this time.
        with serve(config, tmp_path, env={"CLICK2DIAL_LOG_FORMAT": "json"}) as process:
            wait_http(f"{base}/healthz", process)
            empty = command("calls")
            assert empty.returncode == 0, empty.stderr
            assert empty.stdout.splitlines()[-1] == "0 live calls"
            ref = place(base)
            wait_status(base, ref, "talking")
            listed = command("calls")
            assert listed.returncode == 0, listed.stderr
            header, row, total = listed.stdout.splitlines()
            assert header.split() == ["CALL_REF", "INTEGRATOR", "AGENT", "CALLEE", "STATE", "AGE"]
            assert row.split()[:5] == [ref, "acme", "1001", "0821234567", "talking"]
            assert row.split()[5].endswith("s")
            assert total == "1 live call"
            # No integrator key opens the integrator API there.
            operator = f"http://127.0.0.1:{operator_port}"
            auth = {"Authorization": f"Bearer {ACME_KEY}"}
            assert httpx.post(f"{operator}/click2dial/calls", headers=auth).status_code == 404
            assert httpx.get(f"{operator}/click2dial/calls/{ref}", headers=auth).status_code == 404

            missing = command("hangup", "no-such-call")
            assert missing.returncode == 1 and "no live call" in missing.stderr
            hung = command("hangup", ref)
            assert hung.returncode == 0, hung.stderr
            assert hung.stdout.strip() in (f"{ref}: ended", f"{ref}: ending")
            call = wait_status(base, ref, "ended")
            assert call["hangup_side"] == "system"
            assert command("calls").stdout.splitlines()[-1] == "0 live calls"
        assert process.returncode == 0
    logged = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()]
    assert any(line["msg"] == f"operator hung up call {ref}" for line in logged)
