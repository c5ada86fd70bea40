"""Webhook signatures, two of them on every request:

* ``X-Click2Dial-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw
  request body keyed with the integrator's ``webhook_secret`` (the first
  format; kept for the receivers built on it).  It does not cover the
  timestamp, so a recorded request can be replayed.
* Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id``,
  ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``, the
  HMAC-SHA256 of ``id.timestamp.body``, so a receiver that checks the
  timestamp against its clock refuses replays.  Its key: a secret written
  as ``whsec_<base64>`` is that base64's bytes (the standard's form); any
  other secret is its own UTF-8 bytes, the same key as the first header's,
  which a Standard Webhooks library takes as ``"whsec_" + base64(secret)``.

:func:`verify_signature` is what an integrator's receiver runs (the docs show
it); the sender and the tests use the same two functions so they cannot
drift apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-Click2Dial-Signature"
TIMESTAMP_HEADER: Final = "X-Click2Dial-Timestamp"
ID_HEADER: Final = "X-Click2Dial-Notification-Id"
EVENT_HEADER: Final = "X-Click2Dial-Event"
_SCHEME: Final = "sha256="
STANDARD_ID_HEADER: Final = "webhook-id"
STANDARD_TIMESTAMP_HEADER: Final = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER: Final = "webhook-signature"
STANDARD_SECRET_PREFIX: Final = "whsec_"
#: Seconds a receiver lets a Standard Webhooks timestamp differ from its clock.
STANDARD_TOLERANCE: Final = 300


def standard_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature for ``secret``."""
    if secret.startswith(STANDARD_SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(STANDARD_SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            pass  # not base64 after all: a plain secret that starts with whsec_
    return secret.encode()


def standard_secret(secret: str) -> str:
    """``secret`` in the ``whsec_<base64>`` form Standard Webhooks libraries take."""
    return STANDARD_SECRET_PREFIX + base64.b64encode(standard_key(secret)).decode()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of
    ``msg_id.timestamp.body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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
