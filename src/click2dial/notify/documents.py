"""The documents integrators receive (SPEC §5) and the names they find them
under: one outbox row becomes exactly one JSON document, the same bytes on
every attempt and on every target.

The stored row's ``payload`` is the document *without* its ``id``:
``{"type": "cdr", "payload": {...}}`` or ``{"type": "call", "payload":
{...}}``.  The ``id`` (the row's id, stable across retries and redeliveries)
is added here, at delivery, so consumers can deduplicate on it; storing it
twice would only give the two copies a chance to disagree.

This module also owns the vocabulary shared by the targets: the Redis key
and channel names and :class:`DeliveryError`.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ..calls.cdr import agent_payload
from ..config import IntegratorConfig
from ..store import CallRecord, Notification

CDR_LIST: Final = "enigma:notifications:cdr"
"""Redis list the CDRs are ``LPUSH``-ed onto (consumers ``BRPOP``: oldest first)."""
AGENT_CHANNEL_PREFIX: Final = "enigma:notifications:agents:"
"""Redis pub/sub channel of an agent's connection documents, plus the agent."""
MARKER_PREFIX: Final = "enigma:notifications:delivered:"
"""Redis key, plus the document id, that records a delivery (see redis_target)."""

EVENT_TYPES: Final = {"cdr": "cdr", "agent": "call"}
"""Outbox ``kind`` → the document's ``type`` (and the webhook's event header)."""


class DeliveryError(Exception):
    """One attempt to hand a document to a target failed; the row is retried."""


def document(row: Notification) -> dict[str, Any]:
    """The JSON document of an outbox row: ``id`` first, then what was stored."""
    stored = row.payload
    doc: dict[str, Any] = {"id": row.id}
    if "type" not in stored:
        doc["type"] = EVENT_TYPES.get(row.kind, row.kind)
    doc.update((key, value) for key, value in stored.items() if key != "id")
    return doc


def encode(row: Notification) -> bytes:
    """The exact bytes delivered (and, for webhooks, signed)."""
    return json.dumps(document(row), separators=(",", ":"), ensure_ascii=False).encode()


def event_type(row: Notification) -> str:
    value = row.payload.get("type")
    return value if isinstance(value, str) else EVENT_TYPES.get(row.kind, row.kind)


def agent_channel(row: Notification) -> str:
    """The pub/sub channel of an agent-connection row."""
    inner = row.payload.get("payload")
    agent = inner.get("agent") if isinstance(inner, dict) else None
    if not isinstance(agent, str) or not agent:
        raise DeliveryError(f"agent document {row.id} names no agent")
    return AGENT_CHANNEL_PREFIX + agent


def targets(integrator: IntegratorConfig) -> list[str]:
    """The targets an integrator has configured, Redis first."""
    found = []
    if integrator.redis:
        found.append("redis")
    if integrator.webhook_url:
        found.append("webhook")
    return found


def agent_notifications(
    record: CallRecord, integrator: IntegratorConfig, now: float
) -> list[Notification]:
    """The agent-connection outbox rows of a call, one per target."""
    stored = {"type": EVENT_TYPES["agent"], "payload": agent_payload(record)}
    return [
        Notification(
            integrator=record.integrator,
            kind="agent",
            call_ref=record.call_ref,
            payload=stored,
            target=target,
            created_at=now,
        )
        for target in targets(integrator)
    ]


def notification_json(row: Notification) -> dict[str, Any]:
    """An outbox row as the notifications API shows it to its integrator."""
    return {
        "id": row.id,
        "kind": row.kind,
        "type": event_type(row),
        "target": row.target,
        "call_ref": row.call_ref,
        "created_at": row.created_at,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "last_error": row.last_error,
        "delivered_at": row.delivered_at,
        "document": document(row),
    }
