"""Webhook signatures: ``X-Click2Dial-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw request body keyed with the integrator's
``webhook_secret``.

:func:`verify_signature` is what an integrator's receiver runs (the docs show
it); the sender and the tests use the same two functions so they cannot
drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-Click2Dial-Signature"
TIMESTAMP_HEADER: Final = "X-Click2Dial-Timestamp"
ID_HEADER: Final = "X-Click2Dial-Notification-Id"
EVENT_HEADER: Final = "X-Click2Dial-Event"
_SCHEME: Final = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return _SCHEME + digest


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of exactly these ``body`` bytes.

    The comparison takes the same time wherever the first wrong character
    is, so a forger learns nothing from how fast a guess is refused.
    """
    expected = sign(secret, body).encode()
    given = header.strip().encode("utf-8", "replace")
    return hmac.compare_digest(expected, given)
