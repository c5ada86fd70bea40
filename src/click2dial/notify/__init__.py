"""Notifications to integrators (SPEC §5): CDRs and agent connections, to
Redis and signed webhooks, from the durable outbox the store keeps.

* :mod:`.documents` — the JSON documents and the Redis names they live under.
* :mod:`.signing` — webhook signatures (:func:`verify_signature` for receivers).
* :mod:`.redis_target` — one client per Redis URL; exactly-once ``LPUSH``.
* :mod:`.webhook_target` — the signed ``POST``.
* :mod:`.worker` — :class:`Notifier`: the delivery worker, the inline agent
  notification, redelivery, counters.
"""

from __future__ import annotations

from .documents import (
    AGENT_CHANNEL_PREFIX,
    CDR_LIST,
    MARKER_PREFIX,
    DeliveryError,
    agent_notifications,
    document,
    encode,
    notification_json,
)
from .signing import sign, verify_signature
from .worker import Notifier, NotifierCounters

__all__ = [
    "AGENT_CHANNEL_PREFIX",
    "CDR_LIST",
    "MARKER_PREFIX",
    "DeliveryError",
    "Notifier",
    "NotifierCounters",
    "agent_notifications",
    "document",
    "encode",
    "notification_json",
    "sign",
    "verify_signature",
]
