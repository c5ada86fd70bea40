"""The webhook target: one signed ``POST`` per attempt, any 2xx is delivery.

Webhooks cannot be made exactly-once from this side (the receiver may have
acted on a request whose answer was lost), so every request names the
document's id in the body and in ``X-Click2Dial-Notification-Id``, and
receivers deduplicate on it.
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any, Final

import httpx

from .. import __version__
from ..config import IntegratorConfig
from ..store import Notification
from ..webhook_addresses import IPAddress, literal_address, refused_address
from .documents import DeliveryError, encode, event_type
from .signing import (
    EVENT_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    STANDARD_ID_HEADER,
    STANDARD_SIGNATURE_HEADER,
    STANDARD_TIMESTAMP_HEADER,
    TIMESTAMP_HEADER,
    sign,
    standard_signature,
)

_REASON_LIMIT: Final = 200


class WebhookSender:
    """Posts documents; one connection pool shared by every integrator."""

    def __init__(self, *, timeout: float = 5.0, allow_link_local: bool = False) -> None:
        self.timeout = timeout
        self.allow_link_local = allow_link_local
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
        timestamp = math.floor(now)
        secret = integrator.webhook_secret
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            TIMESTAMP_HEADER: str(timestamp),
            ID_HEADER: row.id,
            EVENT_HEADER: event_type(row),
            STANDARD_ID_HEADER: row.id,
            STANDARD_TIMESTAMP_HEADER: str(timestamp),
            STANDARD_SIGNATURE_HEADER: standard_signature(secret, row.id, timestamp, body),
        }
        try:
            # httpx's timeout applies per phase; this bounds the whole request.
            async with asyncio.timeout(self.timeout):
                url: httpx.URL | str = integrator.webhook_url
                extensions: dict[str, Any] = {}
                if not self.allow_link_local:
                    url, extensions = await self.pinned(integrator.webhook_url, headers)
                response = await self.client.post(
                    url, content=body, headers=headers, extensions=extensions
                )
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            detail = str(exc) or "no answer"
            raise DeliveryError(f"webhook: {type(exc).__name__}: {detail}") from exc
        if not 200 <= response.status_code < 300:
            reason = response.reason_phrase[:_REASON_LIMIT]
            raise DeliveryError(f"webhook: answered {response.status_code} {reason}".rstrip())
        return response.status_code

    async def pinned(
        self, url: str, headers: dict[str, str]
    ) -> tuple[httpx.URL | str, dict[str, Any]]:
        """The URL to connect to: a host name is resolved and checked once,
        then the request goes to the address that passed the check, so a
        name that resolves differently a moment later (DNS rebinding) cannot
        send it elsewhere.  The ``Host`` header, the TLS server name and the
        certificate check still use the name.  ``headers`` gains ``Host``."""
        parts = httpx.URL(url)
        address = await self.check_target(url)
        if address is None:
            return url, {}
        headers["Host"] = parts.netloc.decode("ascii")
        extensions: dict[str, Any] = {}
        if parts.scheme == "https":
            extensions["sni_hostname"] = parts.host
        return parts.copy_with(host=str(address)), extensions

    async def check_target(self, url: str) -> IPAddress | None:
        """Refuse a URL whose host is, or resolves to, a link-local or
        metadata address (:mod:`click2dial.webhook_addresses`); the address
        a host name resolved to (``None`` for a literal address)."""
        parts = httpx.URL(url)
        host, port = parts.host, parts.port or (443 if parts.scheme == "https" else 80)
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            addresses = [a for a in (literal_address(str(i[4][0])) for i in infos) if a]
        for address in addresses:
            reason = refused_address(address)
            if reason is not None:
                raise DeliveryError(
                    f"webhook: {host} refused as a target: {reason} "
                    "([server] webhook_allow_link_local allows it)"
                )
        if literal is not None:
            return None
        if not addresses:
            raise DeliveryError(f"webhook: {host} resolves to no address")
        return addresses[0]

    async def close(self) -> None:
        await self.client.aclose()
