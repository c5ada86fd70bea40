"""Secrets from ``*_file`` paths and environment variables, end to end: the
real ``click2dial serve`` process authenticates an integrator with an API key
read from a file and answers the trunk's digest challenge with a password
read from its environment (a real sipp trunk checks the digest)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e.support import ACME_KEY, CONTACT_REF, config_text
from tests.e2e.test_process import output, server, wait_http
from tests.sipp.harness import Sipp, free_port, free_port_both

FILE_KEY = "acme-key-read-from-a-file-0123"
TRUNK_PASSWORD = "trunk-secret"  # what the trunk_auth_407 scenario's digest is checked against


def test_api_key_from_a_file_and_trunk_password_from_the_environment(tmp_path: Path) -> None:
    http_port, sip_port = free_port("tcp"), free_port_both()
    base = f"http://127.0.0.1:{http_port}"
    key_file = tmp_path / "acme.key"
    key_file.write_text(FILE_KEY + "\n")
    body = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
            "contact_ref": CONTACT_REF}  # fmt: skip
    with Sipp("agent_answer_hangup") as agent, Sipp("trunk_auth_407") as trunk:
        text = config_text(
            database=f"sqlite:///{tmp_path}/c2d.db",
            agent_port=agent.port,
            trunk_port=trunk.port,
            http_port=http_port,
            sip_port=sip_port,
            trunk_auth=("c2d", "not-this-one"),
        )
        text = text.replace(f'api_keys = ["{ACME_KEY}"]', f'api_keys_file = "{key_file}"', 1)
        text = text.replace('password = "not-this-one"', 'password_env = "C2D_TEST_TRUNK"', 1)
        assert "not-this-one" not in text and FILE_KEY not in text
        config = tmp_path / "c2d.toml"
        config.write_text(text)
        env = {"C2D_TEST_TRUNK": TRUNK_PASSWORD}
        with server(["serve", "--config", str(config)], tmp_path, env) as process:
            wait_http(f"{base}/healthz", process)
            calls = f"{base}/click2dial/calls"
            # The key the file used to replace no longer works; the file's does.
            stale = httpx.post(calls, json=body, headers={"Authorization": f"Bearer {ACME_KEY}"})
            assert stale.status_code == 401
            auth = {"Authorization": f"Bearer {FILE_KEY}"}
            placed = httpx.post(calls, json=body, headers=auth)
            assert placed.status_code == 201, placed.text
            ref = placed.json()["call_ref"]
            deadline = time.monotonic() + 30
            while (call := httpx.get(f"{calls}/{ref}", headers=auth).json())["status"] != "ended":
                assert time.monotonic() < deadline, f"the call never ended: {call}"
                time.sleep(0.05)
        agent.assert_success(20)
        trunk.assert_success(20)
        logged = trunk.logged_auth()
    assert call["end_reason"] == "agent_hungup", call
    assert len(logged) == 1
    assert logged[0].credentials.is_valid(TRUNK_PASSWORD, "INVITE")


def test_serve_refuses_to_start_when_a_secret_file_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "c2d.toml"
    missing = tmp_path / "absent.key"
    config.write_text(f'[integrators.acme]\napi_keys_file = "{missing}"\n')
    with server(["serve", "--config", str(config)], tmp_path) as process:
        assert process.wait(20) == 2
    err = output(process)
    assert f"integrators.acme.api_keys_file: cannot read {missing}" in err
