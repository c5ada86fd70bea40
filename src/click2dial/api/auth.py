"""Who is calling: API keys to integrators.

Keys are compared in constant time, and against every key of every
integrator this listener serves, so neither the position of a mismatch nor
which integrator a key belongs to shows in the response time.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request

from ..config import IntegratorConfig


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Maps a request to the integrator it authenticates as, or ``None``."""

    def __init__(self, integrators: list[IntegratorConfig]) -> None:
        self.integrators = integrators
        self._keys = [
            (key.encode(), integrator) for integrator in integrators for key in integrator.api_keys
        ]
        keyless = [i for i in integrators if i.allow_keyless_loopback]
        self._keyless = keyless[0] if len(keyless) == 1 else None

    def authenticate(self, request: Request) -> IntegratorConfig | None:
        header = request.headers.get("authorization")
        if header is None:
            client = request.client.host if request.client else None
            return self._keyless if _is_loopback(client) else None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        found: IntegratorConfig | None = None
        for key, integrator in self._keys:
            if hmac.compare_digest(key, presented):
                found = integrator
        return found
