"""The webhook target: one signed ``POST`` per attempt, any 2xx is delivery.

Webhooks cannot be made exactly-once from this side (the receiver may have
acted on a request whose answer was lost), so every request names the
document's id in the body and in ``X-Click2Dial-Notification-Id``, and
receivers deduplicate on it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

import httpx

from .. import __version__
from ..config import IntegratorConfig
from ..store import Notification
from .documents import DeliveryError, encode, event_type
from .signing import EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

_REASON_LIMIT: Final = 200


class WebhookSender:
    """Posts documents; one connection pool shared by every integrator."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": f"Click2Dial/{__version__}"},
        )

    async def deliver(self, row: Notification, integrator: IntegratorConfig, now: float) -> int:
        """POST the row's document; returns the 2xx status.

        Raises :class:`DeliveryError` for anything else: no answer within
        the timeout (connect, send and answer together), a connection error,
        or a status outside 2xx.
        """
        if not integrator.webhook_url or not integrator.webhook_secret:
            raise DeliveryError(f"integrator {integrator.name} has no signed webhook configured")
        body = encode(row)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(integrator.webhook_secret, body),
            TIMESTAMP_HEADER: str(math.floor(now)),
            ID_HEADER: row.id,
            EVENT_HEADER: event_type(row),
        }
        try:
            # httpx's timeout applies per phase; this bounds the whole request.
            async with asyncio.timeout(self.timeout):
                response = await self.client.post(
                    integrator.webhook_url, content=body, headers=headers
                )
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            detail = str(exc) or "no answer"
            raise DeliveryError(f"webhook: {type(exc).__name__}: {detail}") from exc
        if not 200 <= response.status_code < 300:
            reason = response.reason_phrase[:_REASON_LIMIT]
            raise DeliveryError(f"webhook: answered {response.status_code} {reason}".rstrip())
        return response.status_code

    async def close(self) -> None:
        await self.client.aclose()
