"""Who is calling: API keys to integrators.

Keys are compared in constant time, and against every key of every
integrator this listener serves, so neither the position of a mismatch nor
which integrator a key belongs to shows in the response time.

A request without a key acts as the listener's keyless integrator (if any)
only when it comes from this host directly: a loopback TCP peer and no
forwarding header, or, through the operator's ``trusted_proxies``, a
loopback client named by ``X-Forwarded-For``.  A same-host proxy or tunnel
would otherwise lend its loopback address to anyone.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

from ..config import IntegratorConfig

#: Headers by which a proxy or tunnel says the request came from elsewhere.
#: A keyless request carrying any of them did not come from this host
#: directly, whatever address the TCP peer has.
FORWARDING_HEADERS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-original-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "via",
    }
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_address(
    request: Request, trusted: Sequence[Network]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of the client that sent ``request``, as far as it can be
    told, or ``None`` when it cannot.

    Without trusted proxies it is the TCP peer, and only when no forwarding
    header is present.  With them, a request from a trusted proxy is taken
    back through ``X-Forwarded-For`` from the right, hop by hop, while the
    hop is trusted; the first untrusted hop is the client.  A request from a
    trusted proxy without ``X-Forwarded-For`` cannot be told apart from a
    tunnel through that proxy: ``None``.
    """
    peer = _address(request.client.host) if request.client else None
    if peer is None:
        return None
    forwarded = any(name in FORWARDING_HEADERS for name in request.headers)

    def is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in trusted)

    if not is_trusted(peer):
        return None if forwarded else peer
    values = request.headers.getlist("x-forwarded-for")
    if not values:
        return None
    hops = [hop for value in values for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        if not is_trusted(client):
            break
        address = _address(hop)
        if address is None:
            return None
        client = address
    return client


class Authenticator:
    """Maps a request to the integrator it authenticates as, or ``None``."""

    def __init__(
        self, integrators: list[IntegratorConfig], *, trusted_proxies: Sequence[str] = ()
    ) -> None:
        self.integrators = integrators
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]
        self._keys = [
            (key.encode(), integrator) for integrator in integrators for key in integrator.api_keys
        ]
        keyless = [i for i in integrators if i.allow_keyless_loopback]
        self._keyless = keyless[0] if len(keyless) == 1 else None

    def authenticate(self, request: Request) -> IntegratorConfig | None:
        header = request.headers.get("authorization")
        if header is None:
            if self._keyless is None:
                return None
            client = client_address(request, self._trusted)
            return self._keyless if client is not None and client.is_loopback else None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        found: IntegratorConfig | None = None
        for key, integrator in self._keys:
            if hmac.compare_digest(key, presented):
                found = integrator
        return found
