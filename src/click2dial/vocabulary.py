"""The closed sets of words a call is described with (SPEC §1, §2, §5): call
types, sources, states, leg states, end reasons and hangup sides.

This module owns the spelling of every one of those words, once.  The
configuration (``call_types``), the store (which refuses a value outside
them), the API and its OpenAPI document (whose ``enum`` lists are generated
from these classes), call control and CDR building all use the members
below instead of string literals.

They are :class:`enum.StrEnum`: a member *is* its string value, so it goes
into JSON, SQL and TOML as the plain word, compares equal to it, and a plain
string read back from a row or a file needs no conversion to be compared.
Members are declared in a meaningful order (states in the order a call goes
through them), which is the order the OpenAPI document lists them in.

This is a leaf: it imports nothing from Click2Dial, so that any layer may
import it without reaching up the chain.
"""

from __future__ import annotations

from enum import StrEnum, unique

__all__ = [
    "CallSource",
    "CallState",
    "CallType",
    "EndReason",
    "HangupSide",
    "LegState",
]


@unique
class CallType(StrEnum):
    """What a call joins, decided from the agent and callee given (SPEC §1)."""

    OUTBOUND = "outbound"
    """An extension to an external number."""
    EXTERNAL = "external"
    """An external number to an external number."""
    INTERNAL = "internal"
    """An extension to an extension (only when the integrator enables it)."""


@unique
class CallSource(StrEnum):
    """Who placed the call."""

    API = "api"
    """An integrator, through the REST API."""
    WEBRTC = "webrtc"
    """An agent's browser softphone."""


@unique
class CallState(StrEnum):
    """A call's ``status``, in the order a call goes through them; every
    state but :attr:`ENDED` is live."""

    AGENT_RINGING = "agent_ringing"
    AGENT_ANSWERED = "agent_answered"
    CALLEE_RINGING = "callee_ringing"
    TALKING = "talking"
    ENDING = "ending"
    """Reported, never stored: the end is decided (the call no longer counts
    against its agent) and is being written with its CDR."""
    ENDED = "ended"


@unique
class LegState(StrEnum):
    """The SIP progress of one leg (``legs.agent.state``, ``legs.callee.state``);
    ``null`` before the leg is dialled.  Only the callee leg is ever
    :attr:`DIALING` (sent, no answer yet)."""

    DIALING = "dialing"
    RINGING = "ringing"
    ANSWERED = "answered"


@unique
class EndReason(StrEnum):
    """How a call ended (the CDR's ``end_reason``, SPEC §5)."""

    HUNGUP = "hungup"
    AGENT_HUNGUP = "agent_hungup"
    CALLEE_HUNGUP = "callee_hungup"
    BUSY = "busy"
    REJECT = "reject"
    TIMEOUT = "timeout"
    ERROR = "error"
    FAILED = "failed"
    """Click2Dial's own fault; never derived from a peer's answer."""


@unique
class HangupSide(StrEnum):
    """Who ended a call (``hangup_side``)."""

    AGENT = "agent"
    CALLEE = "callee"
    API = "api"
    """An integrator's ``DELETE``."""
    SYSTEM = "system"
    """Click2Dial itself: a timer, a shutdown, a fault."""
