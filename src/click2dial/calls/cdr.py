"""Call Data Records and agent-connection documents (SPEC §5).

Pure functions from a stored call to the JSON documents integrators receive.
Durations are whole seconds, computed from the call's own timestamps so that
a CDR rebuilt later says the same thing.
"""

from __future__ import annotations

from typing import Any

from ..vocabulary import EndReason
from .outcome import Outcome

REF = "click-dial"
"""The CDR's ``ref``: always this."""
CALL_DIR = "outbound"
"""The CDR's ``call_dir``: Click2Dial only places calls, so always outbound.
A direction, not a :class:`~click2dial.vocabulary.CallType`."""


def _seconds(start: float | None, end: float | None) -> int:
    if start is None or end is None or end < start:
        return 0
    return round(end - start)


def cdr_payload(call: Any, outcome: Outcome, ended_at: float) -> dict[str, Any]:
    """The ``payload`` of a ``{"type": "cdr"}`` document."""
    agent_end = call.agent_answered_at or ended_at
    callee_end = call.callee_answered_at or ended_at
    return {
        "extension": call.agent,
        "number": call.callee,
        "dial_number": call.callee,
        "call_ref": call.call_ref,
        "contact_ref": call.contact_ref,
        "dialed_at": int(call.created_at),
        "end_reason": outcome.end_reason,
        "end_code": outcome.end_code,
        "call_time": _seconds(call.callee_answered_at, ended_at),
        "hold_time": _seconds(call.created_at, callee_end),
        "call_dir": CALL_DIR,
        "recording_url": None,
        "ref": REF,
        "clid": call.outbound_id,
        "call_type": call.call_type,
        "ring_time_extension": _seconds(call.created_at, agent_end),
        "ring_time_number": _seconds(call.callee_dialed_at, callee_end)
        if call.callee_dialed_at
        else 0,
        "sip_status": outcome.sip_status,
        "hangup_side": outcome.hangup_side,
    }


def agent_payload(call: Any) -> dict[str, Any]:
    """The ``payload`` of a ``{"type": "call"}`` agent-connection document."""
    return {
        "call_ref": call.call_ref,
        "agent": call.agent,
        "contact_ref": call.contact_ref,
        "number": call.callee,
        "ref": REF,
    }


def cdr_from_record(call: Any) -> dict[str, Any]:
    """The CDR payload of a call that has ended, from its stored fields."""
    outcome = Outcome(
        call.end_reason or EndReason.FAILED,
        call.end_code if call.end_code is not None else 0,
        call.sip_status,
        call.sip_reason,
        call.hangup_side,
    )
    return cdr_payload(call, outcome, call.ended_at or call.created_at)
