"""asyncio adapters for the sans-IO SIP core: sockets, clock, user-agent API."""

from .transport import Listen, ListenerError, SipTransport
from .ua import (
    Acked,
    Answered,
    Call,
    CallEvent,
    Ended,
    Failed,
    Progress,
    UserAgent,
    UserAgentConfig,
)

__all__ = [
    "Acked",
    "Answered",
    "Call",
    "CallEvent",
    "Ended",
    "Failed",
    "Listen",
    "ListenerError",
    "Progress",
    "SipTransport",
    "UserAgent",
    "UserAgentConfig",
]
