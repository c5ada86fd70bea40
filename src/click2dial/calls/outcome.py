"""How a call ended: SIP status → Q.850 cause (RFC 3398 §8.2.6.1) →
``end_reason`` (SPEC §5).

The end reason is derived from the cause, so the two can never disagree:
16 normal clearing, 17 busy, 18/19/102 no answer, 21/22 rejected, anything
else an error of the number or the route; ``failed`` (0 or 41) is kept for
Click2Dial's own faults and is never derived from a peer's answer.

This module owns that mapping; the words themselves
(:class:`~click2dial.vocabulary.EndReason`,
:class:`~click2dial.vocabulary.HangupSide`) are the vocabulary's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..vocabulary import EndReason, HangupSide

#: RFC 3398 §8.2.6.1: SIP final response → ISDN cause value.
SIP_TO_Q850: dict[int, int] = {
    400: 41, 401: 21, 402: 21, 403: 21, 404: 1, 405: 63, 406: 79, 407: 21, 408: 102,
    410: 22, 413: 127, 414: 127, 415: 79, 416: 127, 420: 127, 421: 127, 423: 127,
    480: 18, 481: 41, 482: 25, 483: 25, 484: 28, 485: 1, 486: 17, 487: 127, 488: 127,
    500: 41, 501: 79, 502: 38, 503: 41, 504: 102, 505: 127, 513: 127,
    600: 17, 603: 21, 604: 1, 606: 58,
}  # fmt: skip

NORMAL_CLEARING = 16
USER_BUSY = 17
NO_USER_RESPONDING = 18
NO_ANSWER = 19
#: The agent has no registered contact (SPEC §5: ``error``, 20).
SUBSCRIBER_ABSENT = 20
CALL_REJECTED = 21
TEMPORARY_FAILURE = 41


def q850_for_status(status: int) -> int:
    """The cause for a SIP final response; unlisted codes fall back per class
    (RFC 3398: 4xx → 127 interworking, 5xx → 41, 6xx → 31 normal unspecified)."""
    if status in SIP_TO_Q850:
        return SIP_TO_Q850[status]
    if 500 <= status < 600:
        return TEMPORARY_FAILURE
    if status >= 600:
        return 31
    return 127


def reason_for_cause(cause: int) -> EndReason:
    if cause == NORMAL_CLEARING:
        return EndReason.HUNGUP
    if cause == USER_BUSY:
        return EndReason.BUSY
    if cause in (NO_USER_RESPONDING, NO_ANSWER, 102):
        return EndReason.TIMEOUT
    if cause in (CALL_REJECTED, 22):
        return EndReason.REJECT
    return EndReason.ERROR


#: The end reason of a normal clearing, by who hung up; anyone else: ``hungup``.
_HUNGUP_BY: dict[str, EndReason] = {
    HangupSide.AGENT: EndReason.AGENT_HUNGUP,
    HangupSide.CALLEE: EndReason.CALLEE_HUNGUP,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything the CDR says about how the call ended.

    ``end_reason`` is an :class:`EndReason` and ``hangup_side`` a
    :class:`HangupSide` when built here; they are typed ``str`` because an
    outcome rebuilt from a stored row keeps whatever word the row holds."""

    end_reason: str
    end_code: int
    sip_status: int | None = None
    sip_reason: str | None = None
    hangup_side: str | None = None

    @classmethod
    def from_sip(cls, status: int, reason: str | None, side: str) -> Outcome:
        cause = q850_for_status(status)
        return cls(reason_for_cause(cause), cause, status, reason, side)

    @classmethod
    def hangup(cls, side: str) -> Outcome:
        reason = _HUNGUP_BY.get(side, EndReason.HUNGUP)
        return cls(reason, NORMAL_CLEARING, None, None, side)

    @classmethod
    def no_answer(cls, side: str, alerted: bool) -> Outcome:
        """Our ring timer expired: 19 if the phone was ringing, 18 if it
        never even said so."""
        cause = NO_ANSWER if alerted else NO_USER_RESPONDING
        return cls(EndReason.TIMEOUT, cause, None, None, side)

    @classmethod
    def failure(cls, detail: str, status: int | None = None) -> Outcome:
        """Click2Dial's own fault; ``status`` the SIP status that stands for
        it towards a caller waiting for our answer, if any."""
        return cls(EndReason.FAILED, TEMPORARY_FAILURE, status, detail, HangupSide.SYSTEM)
