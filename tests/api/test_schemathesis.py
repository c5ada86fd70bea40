"""schemathesis against the running server: every operation of
``GET /openapi.json``, with generated valid and invalid requests (a fixed
seed, a bounded number of examples per operation).

Checks: no 5xx (``not_a_server_error``); every response is documented and
matches its schema (``response_schema_conformance``).  Whether the server
takes exactly what the document calls valid is checked field by field in
tests/api/test_openapi_strict.py: schemathesis's acceptance/rejection checks
cannot be used whole, since JSON Schema cannot say every rule (an agent
dialling itself, a cursor the server never issued, a call_ref that is
ignored, unchecked, when contact_ref is sent: tests/calls/test_rules.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.e2e.test_process import server, wait_http
from tests.sipp.harness import free_port

KEY = "acme-key-0123456789abcdef"
CHECKS = "not_a_server_error,response_schema_conformance"


def _schemathesis() -> list[str]:
    tool = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert tool, "schemathesis is a dev dependency: run `make install`"
    return [tool]


def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    http_port, sip_port = free_port("tcp"), free_port("udp")
    config = tmp_path / "c2d.toml"
    # Agent and trunk point at the discard port: accepted calls fail at once.
    config.write_text(f"""
[server]
http_host = "127.0.0.1"
http_port = {http_port}
database = "sqlite:///{tmp_path}/c2d.db"
spool = "{tmp_path}/spool.jsonl"
operator_listen = ""
workers = 1
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
public_host = "127.0.0.1"
[trunk]
uri = "sip:127.0.0.1:9"
[agents."1001"]
contact = "sip:1001@127.0.0.1:9"
[integrators.acme]
api_keys = ["{KEY}"]
clid_pool = ["27110000001"]
""")
    base = f"http://127.0.0.1:{http_port}"
    report = tmp_path / "report.json"
    with server(["serve", "--config", str(config)], tmp_path) as process:
        wait_http(f"{base}/healthz", process)
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as answer:
            document = json.loads(answer.read())
        # Every operation but the document's own (schemathesis leaves that out).
        operations = sum(
            method in {"get", "post", "put", "patch", "delete"}
            for path, item in document["paths"].items()
            if path != "/openapi.json"
            for method in item
        )
        result = subprocess.run(
            [
                *_schemathesis(), "run", f"{base}/openapi.json",
                "--checks", CHECKS,
                "--header", f"Authorization: Bearer {KEY}",
                "--max-examples", "15",
                "--seed", "20261206",
                "--workers", "1",
                "--phases", "examples,coverage,fuzzing",
                "--request-timeout", "10",
                "--report", "json", "--report-json-path", str(report),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )  # fmt: skip
        assert process.poll() is None, "the server died under schemathesis"
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert f"Tested: {operations}" in output, output[-3000:]  # every operation of the document
    assert json.loads(report.read_text())  # the run wrote its report
