"""What integrators receive, without any network: the documents, the
agent-connection rows, the API view of a row, and the signature — including
the verification snippet docs/notifications.md tells integrators to copy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from click2dial.config import IntegratorConfig
from click2dial.notify import (
    agent_notifications,
    document,
    encode,
    notification_json,
    sign,
    verify_signature,
)
from click2dial.store import CallRecord, Notification

DOCS = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
SECRET = "whsec-0123456789abcdef"


def cdr() -> Notification:
    return Notification(
        integrator="acme",
        kind="cdr",
        call_ref="call-1",
        payload={"type": "cdr", "payload": {"call_ref": "call-1", "contact_ref": "ünïcode"}},
        target="redis",
    )


def test_a_document_is_the_stored_payload_with_the_row_id_first() -> None:
    row = cdr()
    doc = document(row)
    assert list(doc) == ["id", "type", "payload"]
    assert doc == {"id": row.id, **row.payload}
    body = encode(row)
    assert json.loads(body) == doc
    assert "ünïcode".encode() in body  # UTF-8 as is, not \\u escapes
    assert encode(row) == body  # the same bytes on every attempt
    # A stored id never wins over the row's own.
    row.payload = {"id": "forged", **row.payload}
    assert document(row)["id"] == row.id


def test_agent_connection_rows_one_per_configured_target() -> None:
    record = CallRecord(
        call_ref="call-9", integrator="acme", agent="1001", callee="0821234567",
        outbound_id="27110000001", outbound_id_requested="random", contact_ref="t-1",
        call_type="outbound", created_at=1.0, node_id="n",
    )  # fmt: skip
    both = IntegratorConfig(
        name="acme",
        redis="redis://127.0.0.1/3",
        webhook_url="http://crm.example/hook",
        webhook_secret=SECRET,
    )
    rows = agent_notifications(record, both, now=5.0)
    assert [(r.kind, r.target, r.call_ref, r.created_at) for r in rows] == [
        ("agent", "redis", "call-9", 5.0),
        ("agent", "webhook", "call-9", 5.0),
    ]
    assert rows[0].id != rows[1].id
    for row in rows:
        row.validate()
        assert row.payload == {
            "type": "call",
            "payload": {"call_ref": "call-9", "agent": "1001", "contact_ref": "t-1",
                        "number": "0821234567", "ref": "click-dial"},
        }  # fmt: skip
    assert agent_notifications(record, IntegratorConfig(name="acme"), now=5.0) == []


def test_the_api_view_of_a_row() -> None:
    row = cdr()
    row.attempts, row.last_error = 2, "redis: ConnectionError"
    view = notification_json(row)
    assert view["document"] == document(row)
    assert {k: view[k] for k in ("id", "kind", "type", "target", "attempts", "last_error")} == {
        "id": row.id, "kind": "cdr", "type": "cdr", "target": "redis",
        "attempts": 2, "last_error": "redis: ConnectionError",
    }  # fmt: skip
    json.dumps(view)  # serialisable as is


def documented_verifier() -> Any:
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (source,) = [b for b in blocks if "def verify_signature" in b]
    namespace: dict[str, Any] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)
    return namespace["verify_signature"]


@pytest.mark.parametrize("verify", [verify_signature, documented_verifier()],
                         ids=["ours", "docs"])  # fmt: skip
def test_signatures_verify_only_the_exact_body_and_secret(verify: Any) -> None:
    body = encode(cdr())
    header = sign(SECRET, body)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", header)
    assert verify(SECRET, body, header)
    assert verify(SECRET, body, f" {header} ")  # header whitespace is not the signature
    assert not verify(SECRET + "!", body, header)
    assert not verify(SECRET, body[:-1] + b" ", header)
    assert not verify(SECRET, body, header.upper())
    assert not verify(SECRET, body, header.removeprefix("sha256="))
    assert not verify(SECRET, body, "")
    assert not verify(SECRET, body, "sha256=ä")
