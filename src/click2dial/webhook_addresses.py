"""Which addresses a webhook may not be sent to.

A webhook URL is written by whoever configures an integrator; without a
check it could make Click2Dial POST to a cloud metadata service (link-local
169.254.169.254 and friends) from inside the operator's network.  These
targets are refused unless the operator allows them
(``[server] webhook_allow_link_local``): at start-up when the URL holds the
address itself, at delivery time when a host name resolves to one.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Metadata services outside the link-local ranges.
_METADATA = frozenset(
    {
        ipaddress.ip_address("fd00:ec2::254"),  # AWS instance metadata over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
    }
)


def refused_address(address: IPAddress) -> str | None:
    """Why a webhook may not go to ``address``, or ``None``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:  # 169.254.0.0/16, fe80::/10
        return f"{address} is link-local (cloud metadata services live there)"
    if address in _METADATA:
        return f"{address} is a cloud metadata address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The IP address a URL's host names literally (``[...]`` stripped)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
