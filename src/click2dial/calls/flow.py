"""The click-to-dial call flow: one call's two SIP legs as a sans-IO state machine.

Theory of operation
-------------------
Everything that decides what happens to a call lives here, and nothing here
does I/O: the driver (:mod:`.control`) feeds :class:`CallFlow.handle` one
event at a time with the current time, and carries out the actions it
returns, in order.  Timers are data: :attr:`CallFlow.deadline` says when the
driver must feed a :class:`Tick`.  This file does not know how SIP messages
are built or sent; a leg is a dialog that can be invited, cancelled, sent an
in-dialog request, answered and hung up.

The call goes through these phases (``INIT`` only until :class:`Start`)::

    AGENT_RINGING --agent answers--> CALLEE_RINGING --callee answers--> TALKING
          |                                |                              |
          +------------ any end -----------+------------------------------+
                                                                          v
                                              ENDED <--legs gone-- ENDING

An agent-placed call (the agent's INVITE, :class:`StartIncoming`) enters the
same machine on a side path and joins it at TALKING::

    AGENT_CALLING --callee answers--> CONNECTING --agent's ACK--> TALKING

* The agent gets a late-offer INVITE; its 200 carries the offer, which the
  driver answers in the ACK (local ringback or an inactive placeholder) and
  which becomes the callee's offer.
* An agent-placed call: the agent's INVITE carries the offer, which becomes
  the callee's offer at once; we are its UAS, so the callee's progress and
  early media go back as 180/183 on it, the callee's answer as its 200, and
  an end before that as its final error (:func:`agent_final_status`).
* The callee's early media and answer are brought to the agent by re-INVITE
  (the "media sync"), one at a time, skipping versions superseded meanwhile.
* In TALKING every re-INVITE and UPDATE from one leg is relayed to the other
  and its answer sent back ("relay, not answer").  An UPDATE without SDP is a
  session refresh and is answered 200 at once.  One offer/answer exchange
  runs at a time per call: an offer arriving while another is in flight, in
  either direction, is answered 491 so that its sender retries (glare).
* Answered legs without a session timer are probed with in-dialog OPTIONS;
  408 or 481 means the peer is gone.
* A leg's requests keep their order whatever the timing: nothing is sent on
  a leg after its BYE, and a leg with a re-INVITE in flight is hung up only
  after that re-INVITE's final response (its 2xx is ACKed first).

The end of a call is decided exactly once (:class:`Finish`): the driver takes
the call out of the live set and writes its CDR at that moment; the legs are
then torn down in ENDING, and :class:`Done` says they are all gone.

Transitions are in :data:`TRANSITIONS`, keyed by ``(phase, event type, leg)``.
A missing entry is an event that cannot happen in that phase: :class:`FlowError`
(the driver ends such a call as ``failed``), never a silent guess.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..sip.errors import SipError
from ..sip.sdp import SessionDescription, parse_sdp
from ..vocabulary import EndReason
from .media import LegSession
from .outcome import SUBSCRIBER_ABSENT, Outcome


class Leg(enum.StrEnum):
    AGENT = "agent"
    CALLEE = "callee"

    @property
    def other(self) -> Leg:
        return Leg.CALLEE if self is Leg.AGENT else Leg.AGENT


class Phase(enum.Enum):
    INIT = "init"
    AGENT_RINGING = "agent_ringing"
    AGENT_CALLING = "agent_calling"  # an agent-placed call: the callee rings
    CONNECTING = "connecting"  # ...the callee answered, the agent's ACK is awaited
    CALLEE_RINGING = "callee_ringing"
    TALKING = "talking"
    ENDING = "ending"
    ENDED = "ended"


class LegState(enum.Enum):
    IDLE = "idle"  # not invited yet
    INVITING = "inviting"  # INVITE sent, no final response
    OFFERED = "offered"  # its INVITE to us awaits our final response
    CANCELLING = "cancelling"  # CANCEL sent, waiting for the INVITE's final response
    ANSWERED = "answered"  # dialog confirmed
    GONE = "gone"  # nothing more is ever sent on it


# ----------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class Start:
    """Begin the call.  The driver says whether it knows where each party is."""

    agent_reachable: bool = True
    callee_reachable: bool = True


@dataclass(frozen=True, slots=True)
class StartIncoming:
    """Begin an agent-placed call: the agent's INVITE, offering ``offer``,
    waits for our final response."""

    offer: bytes | None
    callee_reachable: bool = True
    cancelled: bool = False
    """The agent cancelled its INVITE while the call was being admitted."""
    media_error: str | None = None
    """The offer needed the media relay and did not get through it: the
    call ends at once as ``failed``, the agent hears 503."""


@dataclass(frozen=True, slots=True)
class Progress:
    leg: Leg
    status: int
    sdp: bytes | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    leg: Leg
    sdp: bytes | None
    session_timer: bool = False
    """The dialog negotiated an RFC 4028 session timer: no OPTIONS probes."""
    media_error: str | None = None
    """The agent's offer needed the media relay and did not get through it."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The leg's INVITE got a final error, timed out or could not be sent."""

    leg: Leg
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class PeerEnded:
    """The leg's dialog ended from its side: a BYE (``status`` None), or a
    failure the SIP layer saw (no ACK, session expiry, 408/481 to one of our
    in-dialog requests) with the status that says so."""

    leg: Leg
    status: int | None = None
    reason: str = "bye"


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """An in-dialog INVITE or UPDATE from the leg; ``token`` names its server
    transaction for :class:`Respond`."""

    leg: Leg
    method: str
    sdp: bytes | None
    token: Any


@dataclass(frozen=True, slots=True)
class PeerAck:
    """The ACK of our 2xx to a re-INVITE of the leg; carries the answer when
    our 2xx carried the offer."""

    leg: Leg
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class RequestDone:
    """The final outcome of our in-dialog request to the leg (status 408 for
    a time-out).  ``cseq`` identifies the re-INVITE whose 2xx an :class:`Ack`
    answers."""

    leg: Leg
    method: str
    status: int
    sdp: bytes | None = None
    cseq: int = 0
    retry_after: float | None = None
    """The response's ``Retry-After`` in seconds, if it had one."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call on request: ``"api"`` (an integrator's DELETE) or
    ``"system"`` (shutdown)."""

    side: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; fed at :attr:`CallFlow.deadline`."""


@dataclass(frozen=True, slots=True)
class Abort:
    """End the call as Click2Dial's own failure: the driver could not carry
    out an action or hit an event the flow has no transition for.
    ``status`` is the SIP status that stands for it, when one does (503: a
    resource such as the media relay is unavailable)."""

    detail: str
    status: int | None = None


Event = (
    Start
    | StartIncoming
    | Progress
    | Answered
    | Failed
    | PeerEnded
    | PeerRequest
    | PeerAck
    | RequestDone
    | Hangup
    | Tick
    | Abort
)


# ---------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class Invite:
    """INVITE the leg; ``sdp`` None is a late offer (the agent)."""

    leg: Leg
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class AckAgent:
    """ACK the agent's 200 with an answer to ``offer`` (ringback or an
    inactive placeholder, the driver's choice); ``offer`` None: an empty ACK."""

    offer: SessionDescription | None


@dataclass(frozen=True, slots=True)
class RingAgent:
    """A provisional response to the agent's INVITE (an agent-placed call)."""

    status: int
    sdp: bytes | None = None


@dataclass(frozen=True, slots=True)
class AnswerAgent:
    """200 to the agent's INVITE with the callee's answer; its ACK comes as
    :class:`PeerAck`."""

    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class RejectAgent:
    """A final error to the agent's INVITE."""

    status: int


@dataclass(frozen=True, slots=True)
class StopRingback:
    pass


@dataclass(frozen=True, slots=True)
class Cancel:
    leg: Leg


@dataclass(frozen=True, slots=True)
class Bye:
    leg: Leg


@dataclass(frozen=True, slots=True)
class Send:
    """An in-dialog request to the leg: a re-INVITE or UPDATE (``sdp`` the
    offer, or None) or an OPTIONS probe.  Answered by :class:`RequestDone`."""

    leg: Leg
    method: str
    sdp: bytes | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK the leg's 2xx (CSeq ``cseq``) to our offer-less re-INVITE."""

    leg: Leg
    sdp: bytes | None
    cseq: int


@dataclass(frozen=True, slots=True)
class Respond:
    leg: Leg
    token: Any
    status: int
    sdp: bytes | None = None


@dataclass(frozen=True, slots=True)
class Persist:
    """Record fields of the call (state, leg states, times)."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PersistDialog:
    """The leg's dialog is established: keep it so a crash can still BYE it."""

    leg: Leg


@dataclass(frozen=True, slots=True)
class AgentConnected:
    """The agent answered: tell the integrator before the callee is dialled."""


@dataclass(frozen=True, slots=True)
class Finish:
    """The call has ended: write its end and CDR now."""

    outcome: Outcome
    ended_at: float


@dataclass(frozen=True, slots=True)
class Done:
    """Every leg is gone: nothing more will happen to this call."""


Action = (
    Invite
    | AckAgent
    | RingAgent
    | AnswerAgent
    | RejectAgent
    | StopRingback
    | Cancel
    | Bye
    | Send
    | Ack
    | Respond
    | Persist
    | PersistDialog
    | AgentConnected
    | Finish
    | Done
)


class FlowError(Exception):
    """An event the flow has no transition for: a bug in the driver or below."""


# ------------------------------------------------------------ the machine
@dataclass(frozen=True, slots=True)
class FlowTimers:
    agent_ring: float
    callee_ring: float
    max_duration: float
    probe_interval: float = 60.0
    """Seconds between OPTIONS probes of a leg without session timer; 0: off."""
    teardown: float = 40.0
    """Longest a leg may take to go away after the end (a BYE or CANCEL
    nobody answers gives up after 64*T1 = 32 s in the SIP layer)."""


#: A relayed request's failure that must not reach the other leg as it is:
#: 401/407 are the relay target's challenge to us; 408/481 mean the relay
#: target's dialog is gone, which is not the sender's dialog.
_RELAY_STATUS = {401: 500, 407: 500, 408: 500, 481: 500}
#: Times a refused media sync re-INVITE (491, or 500/503 with Retry-After) is
#: sent again.
MEDIA_SYNC_RETRIES = 3
#: Q.850 88, "incompatible destination": the answer has no codec of the offer.
INCOMPATIBLE_DESTINATION = 88
RECOVERY_ON_TIMER_EXPIRY = 102


def _not_registered(leg: Leg) -> Outcome:
    """An extension with no binding to ring: not a phone's refusal, nobody to
    ring at all, so subscriber absent (Q.850 20), at once, never a ring
    time-out."""
    who = "Agent" if leg is Leg.AGENT else "Callee"
    return Outcome(EndReason.ERROR, SUBSCRIBER_ABSENT, 480, f"{who} not registered", leg.value)


def agent_final_status(outcome: Outcome) -> int:
    """The final response to an agent's INVITE when its call ends before the
    callee answers: the callee's own status (except a challenge, which was
    for us), 480 for a ring time-out, 500 for our own fault, 487 otherwise
    (a DELETE, a shutdown)."""
    if outcome.sip_status is not None and outcome.sip_status >= 300:
        return _RELAY_STATUS.get(outcome.sip_status, outcome.sip_status)
    if outcome.end_reason == EndReason.TIMEOUT:
        return 480
    if outcome.end_reason == EndReason.FAILED:
        return 500
    return 487


@dataclass(slots=True)
class _LegData:
    state: LegState = LegState.IDLE
    alerted: bool = False
    offer_out: str | None = None  # method of our in-flight INVITE/UPDATE to it
    offer_out_sdp: bool = False  # ...and whether it carried an offer
    probe_out: bool = False
    bye_pending: bool = False  # hang up once offer_out completes
    next_probe: float | None = None


@dataclass(slots=True)
class _Relay:
    origin: Leg
    token: Any
    method: str
    origin_sdp: bool
    awaiting_ack: int | None = None  # CSeq of the target's 2xx, ACKed with origin's answer


class CallFlow:
    """One click-to-dial call.  See the module docstring."""

    def __init__(self, timers: FlowTimers, sdp_host: str) -> None:
        self.timers = timers
        self.phase = Phase.INIT
        self.legs = {Leg.AGENT: _LegData(), Leg.CALLEE: _LegData()}
        self.sessions = {Leg.AGENT: LegSession(sdp_host), Leg.CALLEE: LegSession(sdp_host)}
        self.outcome: Outcome | None = None
        self.deadline: float | None = None  # ring timers, max duration, teardown
        self.callee_offer: SessionDescription | None = None
        self._media_wanted: bytes | None = None
        self._media_applied: bytes | None = None
        self._media_retry_at: float | None = None
        self._media_retries = 0
        self._ringback = True  # the driver may be playing ringback until the first media sync
        self._relay: _Relay | None = None
        self._out: list[Action] = []

    # ------------------------------------------------------------ entry
    def handle(self, event: Event, now: float) -> list[Action]:
        """Process one event at time ``now``; the actions to carry out, in order."""
        leg = getattr(event, "leg", None)
        handler = TRANSITIONS.get((self.phase, type(event), leg))
        if handler is None:
            raise FlowError(f"no transition for {type(event).__name__}({leg}) in {self.phase}")
        self._out = []
        handler(self, event, now)
        out, self._out = self._out, []
        return out

    @property
    def next_timer(self) -> float | None:
        """When to feed the next :class:`Tick` (None: no timer)."""
        times = [leg.next_probe for leg in self.legs.values() if leg.next_probe is not None]
        if self.deadline is not None:
            times.append(self.deadline)
        if self._media_retry_at is not None:
            times.append(self._media_retry_at)
        return min(times) if times else None

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED

    def offered_to(self, leg: Leg) -> bool:
        """Whether our last re-INVITE or UPDATE to ``leg`` carried an offer
        (so the SDP in its 2xx is the answer; without one, it is an offer)."""
        return self.legs[leg].offer_out_sdp

    # ---------------------------------------------------- start, agent leg
    def _start(self, event: Start, now: float) -> None:
        if not (event.agent_reachable and event.callee_reachable):
            # Nobody to ring, or nobody to connect the agent to: ring no one.
            self.phase = Phase.AGENT_RINGING  # for _end's bookkeeping
            self._end(_not_registered(Leg.CALLEE if event.agent_reachable else Leg.AGENT), now)
            return
        self.phase = Phase.AGENT_RINGING
        self.legs[Leg.AGENT].state = LegState.INVITING
        self.deadline = now + self.timers.agent_ring
        self._emit(Invite(Leg.AGENT, None))

    def _start_incoming(self, event: StartIncoming, now: float) -> None:
        agent = self.legs[Leg.AGENT]
        agent.state = LegState.OFFERED
        self._ringback = False  # the agent's phone makes its own from our 180
        self.phase = Phase.AGENT_CALLING
        if event.cancelled:
            agent.state = LegState.GONE
            self._end(Outcome.hangup(Leg.AGENT.value), now)
            return
        if event.media_error is not None:
            self._end(Outcome.failure(event.media_error, 503), now)
            return
        offer: SessionDescription | None = None
        if event.offer:
            try:
                offer = parse_sdp(event.offer)
                callee_sdp = self.sessions[Leg.CALLEE].present(offer)
            except SipError:
                offer = None
        if offer is None:
            # No late offer on this side: the callee would have to offer, and
            # its offer could only reach the agent in our 200 (RFC 3261
            # allows it, phones and browsers always offer; keep it simple).
            reason = "Agent SDP offer unusable" if event.offer else "Agent sent no SDP offer"
            self._end(Outcome.from_sip(488, reason, "agent"), now)
            return
        self.callee_offer = offer
        self._emit(Persist({"agent_answered_at": now, "agent_leg": "answered"}))
        self._emit(AgentConnected())  # the agent is there from the start
        if not event.callee_reachable:
            self._end(_not_registered(Leg.CALLEE), now)
            return
        self.legs[Leg.CALLEE].state = LegState.INVITING
        self.deadline = now + self.timers.callee_ring
        self._emit(Invite(Leg.CALLEE, callee_sdp))
        self._emit(
            Persist({"state": "callee_ringing", "callee_dialed_at": now, "callee_leg": "dialing"})
        )

    def _callee_progress_to_agent(self, event: Progress, now: float) -> None:
        data = self.legs[Leg.CALLEE]
        if event.status in (180, 183) and not data.alerted:
            data.alerted = True
            self._emit(Persist({"callee_leg": "ringing"}))
        if event.sdp:
            try:
                body = self.sessions[Leg.AGENT].relay(event.sdp)
            except SipError:
                return  # early media we cannot describe: the agent keeps ringing
            self._emit(RingAgent(183, body))
        elif event.status in (180, 183):
            self._emit(RingAgent(180))

    def _callee_answered_to_agent(self, event: Answered, now: float) -> None:
        data = self.legs[Leg.CALLEE]
        data.state = LegState.ANSWERED
        self._emit(PersistDialog(Leg.CALLEE))
        body: bytes | None = None
        if event.sdp:
            try:
                body = self.sessions[Leg.AGENT].relay(event.sdp)
            except SipError:
                body = None
        if body is None or not self._compatible(event.sdp or b""):
            self._end(
                Outcome("error", INCOMPATIBLE_DESTINATION, 488, "No codec in common", "system"),
                now,
            )
            return
        self.phase = Phase.CONNECTING
        self.legs[Leg.AGENT].state = LegState.ANSWERED
        self.deadline = now + self.timers.max_duration
        self._arm_probe(Leg.CALLEE, event.session_timer, now)
        self._emit(AnswerAgent(body))
        self._emit(
            Persist({"state": "talking", "callee_answered_at": now, "callee_leg": "answered"})
        )

    def _agent_acked(self, event: PeerAck, now: float) -> None:
        self.phase = Phase.TALKING
        self._emit(PersistDialog(Leg.AGENT))
        self._arm_probe(Leg.AGENT, False, now)

    def _agent_cancelled(self, event: PeerEnded, now: float) -> None:
        """The agent gave up before the callee answered (its CANCEL, already
        answered 487 by the SIP layer)."""
        self.legs[Leg.AGENT].state = LegState.GONE
        self._end(Outcome.hangup(Leg.AGENT.value), now)

    def _agent_progress(self, event: Progress, now: float) -> None:
        data = self.legs[Leg.AGENT]
        if event.status in (180, 183) and not data.alerted:
            data.alerted = True
            self._emit(Persist({"agent_leg": "ringing"}))

    def _agent_answered(self, event: Answered, now: float) -> None:
        data = self.legs[Leg.AGENT]
        data.state = LegState.ANSWERED
        self._emit(PersistDialog(Leg.AGENT))
        offer: SessionDescription | None = None
        if event.media_error is not None:
            self._emit(AckAgent(None))
            self._end(Outcome.failure(event.media_error, 503), now)
            return
        if event.sdp:
            try:
                offer = parse_sdp(event.sdp)
                callee_sdp = self.sessions[Leg.CALLEE].present(offer)
            except SipError:
                offer = None
        if offer is None:
            self._emit(AckAgent(None))
            reason = "Agent SDP offer unusable" if event.sdp else "Agent sent no SDP offer"
            self._end(Outcome.from_sip(488, reason, "agent"), now)
            return
        self.callee_offer = offer
        self._emit(AckAgent(offer))
        self._arm_probe(Leg.AGENT, event.session_timer, now)
        self._emit(
            Persist({"state": "agent_answered", "agent_answered_at": now, "agent_leg": "answered"})
        )
        self._emit(AgentConnected())
        self.phase = Phase.CALLEE_RINGING
        self.legs[Leg.CALLEE].state = LegState.INVITING
        self.deadline = now + self.timers.callee_ring
        self._emit(Invite(Leg.CALLEE, callee_sdp))
        self._emit(
            Persist({"state": "callee_ringing", "callee_dialed_at": now, "callee_leg": "dialing"})
        )

    def _agent_failed(self, event: Failed, now: float) -> None:
        self.legs[Leg.AGENT].state = LegState.GONE
        self._end(Outcome.from_sip(event.status, event.reason, "agent"), now)

    def _agent_vanished_early(self, event: PeerEnded, now: float) -> None:
        self.legs[Leg.AGENT].state = LegState.GONE
        self._end(Outcome.failure("agent leg ended before answer"), now)

    # ------------------------------------------------------------- callee leg
    def _callee_progress(self, event: Progress, now: float) -> None:
        data = self.legs[Leg.CALLEE]
        if event.status in (180, 183) and not data.alerted:
            data.alerted = True
            self._emit(Persist({"callee_leg": "ringing"}))
        if event.sdp:
            self._want_agent_media(event.sdp)

    def _callee_answered(self, event: Answered, now: float) -> None:
        data = self.legs[Leg.CALLEE]
        data.state = LegState.ANSWERED
        self._emit(PersistDialog(Leg.CALLEE))
        if event.sdp and not self._compatible(event.sdp):
            self._end(
                Outcome("error", INCOMPATIBLE_DESTINATION, 488, "No codec in common", "system"),
                now,
            )
            return
        self.phase = Phase.TALKING
        self.deadline = now + self.timers.max_duration
        self._arm_probe(Leg.CALLEE, event.session_timer, now)
        self._emit(
            Persist({"state": "talking", "callee_answered_at": now, "callee_leg": "answered"})
        )
        if event.sdp:
            self._want_agent_media(event.sdp)

    def _callee_failed(self, event: Failed, now: float) -> None:
        self.legs[Leg.CALLEE].state = LegState.GONE
        self._end(Outcome.from_sip(event.status, event.reason, "callee"), now)

    def _callee_vanished_early(self, event: PeerEnded, now: float) -> None:
        self.legs[Leg.CALLEE].state = LegState.GONE
        self._end(Outcome.failure("callee leg ended before answer"), now)

    def _compatible(self, answer: bytes) -> bool:
        """Whether the callee's answer keeps a codec the agent offered on its
        first audio stream (a port-0 answer rejects the stream)."""
        offer = self.callee_offer
        if offer is None:
            return True
        try:
            described = parse_sdp(answer)
        except SipError:
            return False
        offered = next((m for m in offer.media if m.media == "audio"), None)
        answered = next((m for m in described.media if m.media == "audio"), None)
        if offered is None:
            return True
        if answered is None or answered.port == 0:
            return False
        names = {_codec(e) for e in offered.rtpmap().values()} - _NOT_CODECS
        return any(_codec(e) in names for e in answered.rtpmap().values())

    # ------------------------------------------------ media sync to the agent
    def _want_agent_media(self, sdp: bytes) -> None:
        self._media_wanted = sdp
        self._sync_agent_media()

    def _sync_agent_media(self) -> None:
        agent = self.legs[Leg.AGENT]
        wanted = self._media_wanted
        if (
            wanted is None
            or wanted == self._media_applied
            or agent.state is not LegState.ANSWERED
            or agent.offer_out is not None
            or self._relay is not None
            or self._media_retry_at is not None
        ):
            return
        try:
            body = self.sessions[Leg.AGENT].relay(wanted)
        except SipError:
            self._media_applied = wanted  # a description we cannot relay: keep the last one
            return
        if self._ringback:
            self._ringback = False
            self._emit(StopRingback())
        self._media_applied = wanted
        agent.offer_out, agent.offer_out_sdp = "INVITE", True
        self._emit(Send(Leg.AGENT, "INVITE", body))

    # ------------------------------------------------------ in-dialog requests
    def _early_request(self, event: PeerRequest, now: float) -> None:
        """An offer before both legs are answered has nowhere to go yet."""
        if event.method == "UPDATE" and not event.sdp:
            self._emit(Respond(event.leg, event.token, 200))
        else:
            self._emit(Respond(event.leg, event.token, 491))

    def _peer_request(self, event: PeerRequest, now: float) -> None:
        leg, target = event.leg, event.leg.other
        if event.method == "UPDATE" and not event.sdp:
            self._emit(Respond(leg, event.token, 200))  # a session refresh
            return
        busy = (
            self._relay is not None
            or self.legs[leg].offer_out is not None
            or self.legs[target].offer_out is not None
        )
        if busy:
            self._emit(Respond(leg, event.token, 491))
            return
        body: bytes | None = None
        if event.sdp:
            try:
                body = self.sessions[target].relay(event.sdp)
            except SipError:
                self._emit(Respond(leg, event.token, 488))
                return
        self._relay = _Relay(leg, event.token, event.method, bool(event.sdp))
        self.legs[target].offer_out = event.method
        self.legs[target].offer_out_sdp = body is not None
        self._emit(Send(target, event.method, body))

    def _peer_ack(self, event: PeerAck, now: float) -> None:
        relay = self._relay
        if relay is None or relay.origin is not event.leg or relay.awaiting_ack is None:
            return  # the ACK of a 2xx that needed nothing more
        self._relay = None
        target = relay.origin.other
        body: bytes | None = None
        if event.sdp:
            try:
                body = self.sessions[target].relay(event.sdp)
            except SipError:
                body = None
        if self.legs[target].state is LegState.ANSWERED:
            self._emit(Ack(target, body, relay.awaiting_ack))
        self._after_offer()

    def _request_done(self, event: RequestDone, now: float) -> None:
        data = self.legs[event.leg]
        if event.method == "OPTIONS":
            data.probe_out = False
            if event.status in (408, 481):
                self._lost(event.leg, event.status, now)
                return
            if self.timers.probe_interval > 0:
                data.next_probe = now + self.timers.probe_interval
            return
        data.offer_out = None
        relay = self._relay
        if relay is not None and relay.origin is event.leg.other:
            self._relay_answered(relay, event)
        elif event.leg is Leg.AGENT and event.method == "INVITE":
            self._media_sync_done(event, now)
        if event.status in (408, 481):
            self._lost(event.leg, event.status, now)
            return
        self._after_offer()

    def _media_sync_done(self, event: RequestDone, now: float) -> None:
        """Our media sync re-INVITE to the agent got its final response.  A
        glare (491) or a "not now" (500/503 with Retry-After: RFC 6337 §4.3,
        what a browser answers while it still applies the previous answer)
        is tried again, a few times; any other refusal leaves the agent on
        the media it has."""
        delay: float | None = None
        if event.status == 491:
            delay = 2.1  # RFC 3261 §14.1: we own the dialog's Call-ID
        elif event.status in (500, 503) and event.retry_after is not None:
            delay = min(max(event.retry_after, 0.2), 10.0)
        if delay is None or self._media_retries >= MEDIA_SYNC_RETRIES:
            return
        self._media_retries += 1
        self._media_applied = None  # offer it again
        self._media_retry_at = now + delay

    def _media_retry_due(self, now: float) -> None:
        if self._media_retry_at is not None and self._media_retry_at <= now:
            self._media_retry_at = None
            self._sync_agent_media()

    def _request_done_ending(self, event: RequestDone, now: float) -> None:
        data = self.legs[event.leg]
        if event.method == "OPTIONS":
            data.probe_out = False
            return
        data.offer_out = None
        if data.bye_pending and data.state is LegState.ANSWERED:
            data.bye_pending = False
            data.state = LegState.GONE
            offerless = event.method == "INVITE" and not data.offer_out_sdp
            if offerless and event.sdp and 200 <= event.status < 300:
                # Our offer-less re-INVITE got an offer in its 2xx: the dialog
                # needs its ACK before the BYE.
                self._emit(Ack(event.leg, None, event.cseq))
            self._emit(Bye(event.leg))
        self._check_done()

    def _relay_answered(self, relay: _Relay, event: RequestDone) -> None:
        origin = relay.origin
        if not 200 <= event.status < 300:
            self._relay = None
            status = _RELAY_STATUS.get(event.status, event.status)
            if self.legs[origin].state is LegState.ANSWERED:
                self._emit(Respond(origin, relay.token, status))
            return
        body: bytes | None = None
        if event.sdp:
            try:
                body = self.sessions[origin].relay(event.sdp)
            except SipError:
                body = None
        if event.method == "INVITE" and not relay.origin_sdp and event.sdp:
            relay.awaiting_ack = event.cseq  # our 2xx carries the offer; the answer is in the ACK
        else:
            self._relay = None
        if self.legs[origin].state is LegState.ANSWERED:
            self._emit(Respond(origin, relay.token, 200, body))

    def _after_offer(self) -> None:
        if self._relay is None:
            self._sync_agent_media()

    # -------------------------------------------------------------- timers
    def _arm_probe(self, leg: Leg, session_timer: bool, now: float) -> None:
        if not session_timer and self.timers.probe_interval > 0:
            self.legs[leg].next_probe = now + self.timers.probe_interval

    def _probe_due(self, now: float) -> None:
        for leg, data in self.legs.items():
            if data.next_probe is not None and data.next_probe <= now:
                data.next_probe = None
                if data.state is LegState.ANSWERED and not data.probe_out:
                    data.probe_out = True
                    self._emit(Send(leg, "OPTIONS"))

    def _tick(self, event: Tick, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            if self.phase is Phase.AGENT_RINGING:
                self._end(Outcome.no_answer("agent", self.legs[Leg.AGENT].alerted), now)
            elif self.phase in (Phase.CALLEE_RINGING, Phase.AGENT_CALLING):
                self._end(Outcome.no_answer("callee", self.legs[Leg.CALLEE].alerted), now)
            else:  # past max_call_duration Click2Dial itself hangs up
                self._end(Outcome.hangup("system"), now)
            return
        self._probe_due(now)
        self._media_retry_due(now)

    def _teardown_tick(self, event: Tick, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            # A leg that never went away: the SIP layer gives up on it too.
            for data in self.legs.values():
                data.state = LegState.GONE
            self._check_done()

    # ---------------------------------------------------------------- ends
    def _hangup(self, event: Hangup, now: float) -> None:
        self._end(Outcome.hangup(event.side), now)

    def _abort(self, event: Abort, now: float) -> None:
        self._end(Outcome.failure(event.detail, event.status), now)

    def _peer_ended(self, event: PeerEnded, now: float) -> None:
        self.legs[event.leg].state = LegState.GONE
        self.legs[event.leg].offer_out = None
        if event.status is None and event.reason == "bye":
            self._end(Outcome.hangup(event.leg.value), now)
        else:
            self._lost(event.leg, event.status or 408, now, event.reason)

    def _lost(self, leg: Leg, status: int, now: float, reason: str | None = None) -> None:
        """The peer of ``leg`` is gone without a BYE (408, 481, no ACK...)."""
        cause = RECOVERY_ON_TIMER_EXPIRY if status == 408 else 41
        detail = reason if reason and reason != "bye" else f"{leg.value} unreachable"
        self._end(Outcome("error", cause, status, detail, leg.value), now)

    def _end(self, outcome: Outcome, now: float) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.phase = Phase.ENDING
        self.deadline = now + self.timers.teardown
        for data in self.legs.values():
            data.next_probe = None
        self._media_retry_at = None
        if self._ringback:
            self._ringback = False
            self._emit(StopRingback())
        self._emit(Finish(outcome, now))
        relay, self._relay = self._relay, None
        if relay is not None and relay.awaiting_ack is None:
            if self.legs[relay.origin].state is LegState.ANSWERED:
                self._emit(Respond(relay.origin, relay.token, 487))
        elif relay is not None and self.legs[relay.origin.other].state is LegState.ANSWERED:
            # The target's 2xx carried an offer whose answer will never come:
            # ACK it before its BYE.
            self._emit(Ack(relay.origin.other, None, relay.awaiting_ack or 0))
        self._teardown()

    def _teardown(self) -> None:
        """Hang up every leg that can be hung up now."""
        for leg, data in self.legs.items():
            if data.state is LegState.INVITING:
                data.state = LegState.CANCELLING
                self._emit(Cancel(leg))
            elif data.state is LegState.ANSWERED:
                if data.offer_out is not None:
                    data.bye_pending = True  # after its re-INVITE's final response
                else:
                    data.state = LegState.GONE
                    self._emit(Bye(leg))
            elif data.state is LegState.OFFERED:
                data.state = LegState.GONE
                assert self.outcome is not None
                self._emit(RejectAgent(agent_final_status(self.outcome)))
            elif data.state is LegState.IDLE:
                data.state = LegState.GONE
        self._check_done()

    def _check_done(self) -> None:
        if self.phase is Phase.ENDING and all(d.state is LegState.GONE for d in self.legs.values()):
            self.phase = Phase.ENDED
            self.deadline = None
            self._emit(Done())

    def _answered_while_ending(self, event: Answered, now: float) -> None:
        data = self.legs[event.leg]
        if data.state in (LegState.INVITING, LegState.CANCELLING):
            # A 2xx that crossed our CANCEL: the dialog exists, hang it up.
            data.state = LegState.GONE
            if event.leg is Leg.AGENT:
                self._emit(AckAgent(None))
            self._emit(Bye(event.leg))
        self._check_done()

    def _gone_while_ending(self, event: Failed | PeerEnded, now: float) -> None:
        self.legs[event.leg].state = LegState.GONE
        self.legs[event.leg].offer_out = None
        self._check_done()

    def _request_while_ending(self, event: PeerRequest, now: float) -> None:
        self._emit(Respond(event.leg, event.token, 487))

    def _ignore(self, event: Event, now: float) -> None:
        pass

    def _emit(self, action: Action) -> None:
        self._out.append(action)


_NOT_CODECS = frozenset({"telephone-event", "cn", "red", "comfort-noise"})


def _codec(encoding: str) -> str:
    return encoding.split("/", 1)[0].strip().lower()


_Handler = Callable[[CallFlow, Any, float], None]
A, C = Leg.AGENT, Leg.CALLEE
_I, _AR, _CR, _T, _E = (Phase.INIT, Phase.AGENT_RINGING, Phase.CALLEE_RINGING, Phase.TALKING,
                        Phase.ENDING)  # fmt: skip
_AC, _CN = Phase.AGENT_CALLING, Phase.CONNECTING

#: (phase, event type, leg or None) -> handler.  Everything the call does is here.
TRANSITIONS: dict[tuple[Phase, type, Leg | None], _Handler] = {
    (_I, Start, None): CallFlow._start,
    # The agent rings; the callee is not dialled yet.
    (_AR, Progress, A): CallFlow._agent_progress,
    (_AR, Answered, A): CallFlow._agent_answered,
    (_AR, Failed, A): CallFlow._agent_failed,
    (_AR, PeerEnded, A): CallFlow._agent_vanished_early,
    (_AR, PeerRequest, A): CallFlow._early_request,
    (_AR, Hangup, None): CallFlow._hangup,
    (_AR, Tick, None): CallFlow._tick,
    (_AR, Abort, None): CallFlow._abort,
    # The agent answered; the callee rings.
    (_CR, Progress, C): CallFlow._callee_progress,
    (_CR, Answered, C): CallFlow._callee_answered,
    (_CR, Failed, C): CallFlow._callee_failed,
    (_CR, PeerEnded, A): CallFlow._peer_ended,
    (_CR, PeerEnded, C): CallFlow._callee_vanished_early,
    (_CR, PeerRequest, A): CallFlow._early_request,
    (_CR, PeerRequest, C): CallFlow._early_request,
    (_CR, RequestDone, A): CallFlow._request_done,
    (_CR, Hangup, None): CallFlow._hangup,
    (_CR, Tick, None): CallFlow._tick,
    (_CR, Abort, None): CallFlow._abort,
    # An agent-placed call: the agent's INVITE waits while the callee rings.
    (_I, StartIncoming, None): CallFlow._start_incoming,
    (_AC, Progress, C): CallFlow._callee_progress_to_agent,
    (_AC, Answered, C): CallFlow._callee_answered_to_agent,
    (_AC, Failed, C): CallFlow._callee_failed,
    (_AC, PeerEnded, A): CallFlow._agent_cancelled,
    (_AC, PeerEnded, C): CallFlow._callee_vanished_early,
    (_AC, PeerRequest, C): CallFlow._early_request,
    (_AC, Hangup, None): CallFlow._hangup,
    (_AC, Tick, None): CallFlow._tick,
    (_AC, Abort, None): CallFlow._abort,
    # ...the callee answered, and so did we the agent: its ACK is awaited.
    (_CN, PeerAck, A): CallFlow._agent_acked,
    (_CN, PeerEnded, A): CallFlow._peer_ended,
    (_CN, PeerEnded, C): CallFlow._peer_ended,
    (_CN, PeerRequest, A): CallFlow._early_request,
    (_CN, PeerRequest, C): CallFlow._early_request,
    (_CN, RequestDone, C): CallFlow._request_done,  # the callee's OPTIONS probe
    (_CN, Hangup, None): CallFlow._hangup,
    (_CN, Tick, None): CallFlow._tick,
    (_CN, Abort, None): CallFlow._abort,
    # Both answered: relay everything.
    (_T, PeerEnded, A): CallFlow._peer_ended,
    (_T, PeerEnded, C): CallFlow._peer_ended,
    (_T, PeerRequest, A): CallFlow._peer_request,
    (_T, PeerRequest, C): CallFlow._peer_request,
    (_T, PeerAck, A): CallFlow._peer_ack,
    (_T, PeerAck, C): CallFlow._peer_ack,
    (_T, RequestDone, A): CallFlow._request_done,
    (_T, RequestDone, C): CallFlow._request_done,
    (_T, Hangup, None): CallFlow._hangup,
    (_T, Tick, None): CallFlow._tick,
    (_T, Abort, None): CallFlow._abort,
    # Ended: tear the legs down, answer what still arrives, wait for them to go.
    (_E, Progress, A): CallFlow._ignore,
    (_E, Progress, C): CallFlow._ignore,
    (_E, Answered, A): CallFlow._answered_while_ending,
    (_E, Answered, C): CallFlow._answered_while_ending,
    (_E, Failed, A): CallFlow._gone_while_ending,
    (_E, Failed, C): CallFlow._gone_while_ending,
    (_E, PeerEnded, A): CallFlow._gone_while_ending,
    (_E, PeerEnded, C): CallFlow._gone_while_ending,
    (_E, PeerRequest, A): CallFlow._request_while_ending,
    (_E, PeerRequest, C): CallFlow._request_while_ending,
    (_E, PeerAck, A): CallFlow._ignore,
    (_E, PeerAck, C): CallFlow._ignore,
    (_E, RequestDone, A): CallFlow._request_done_ending,
    (_E, RequestDone, C): CallFlow._request_done_ending,
    (_E, Hangup, None): CallFlow._ignore,
    (_E, Tick, None): CallFlow._teardown_tick,
    (_E, Abort, None): CallFlow._ignore,
}
