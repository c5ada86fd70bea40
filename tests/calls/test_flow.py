"""The sans-IO call flow, driven directly: every transition of its table and
the races between the two legs, the API and the clock.  No sockets: events
in, actions out, time as a number."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from click2dial.calls import flow as f
from click2dial.calls.flow import (
    TRANSITIONS,
    Abort,
    Ack,
    AckAgent,
    AgentConnected,
    AnswerAgent,
    Answered,
    Bye,
    CallFlow,
    Cancel,
    Done,
    Failed,
    Finish,
    FlowError,
    FlowTimers,
    Hangup,
    Invite,
    Leg,
    PeerAck,
    PeerEnded,
    PeerRequest,
    Persist,
    PersistDialog,
    Phase,
    Progress,
    RejectAgent,
    RequestDone,
    Respond,
    RingAgent,
    Send,
    Start,
    StartIncoming,
    StopRingback,
    Tick,
)
from click2dial.sip.sdp import build_offer, parse_sdp

A, C = Leg.AGENT, Leg.CALLEE
TIMERS = FlowTimers(agent_ring=30, callee_ring=60, max_duration=3600, probe_interval=60)


def sdp(port: int, codecs: tuple[tuple[int, str], ...] = ((0, "PCMU/8000"),), **kw: Any) -> bytes:
    return build_offer("192.0.2.1", port, session_id=port, codecs=codecs, **kw).to_bytes()


AGENT_OFFER = sdp(4000, ((0, "PCMU/8000"), (8, "PCMA/8000"), (101, "telephone-event/8000")))
EARLY = sdp(5000)
ANSWER = sdp(5002)


class Driver:
    """Feeds a flow and keeps every action it returned."""

    def __init__(self, timers: FlowTimers = TIMERS) -> None:
        self.flow = CallFlow(timers, "203.0.113.5")
        self.now = 1000.0
        self.actions: list[Any] = []

    def feed(self, event: Any, dt: float = 0.0) -> list[Any]:
        self.now += dt
        out = self.flow.handle(event, self.now)
        self.actions.extend(out)
        return out

    def tick_to(self, when: float | None) -> list[Any]:
        assert when is not None
        self.now = max(self.now, when)
        return self.feed(Tick())

    def finishes(self) -> list[Finish]:
        return [a for a in self.actions if isinstance(a, Finish)]

    def sent_to(self, leg: Leg) -> list[Any]:
        kinds = (Invite, Cancel, Bye, Send, Ack, Respond)
        return [a for a in self.actions if isinstance(a, kinds) and a.leg is leg]

    # ------------------------------------------------ paths to each phase
    def agent_ringing(self) -> Driver:
        out = self.feed(Start())
        assert out == [Invite(A, None)]
        return self

    def callee_ringing(self) -> Driver:
        self.agent_ringing()
        self.feed(Progress(A, 180))
        self.feed(Answered(A, AGENT_OFFER), dt=2)
        assert self.flow.phase is Phase.CALLEE_RINGING
        return self

    def talking(self) -> Driver:
        self.callee_ringing()
        self.feed(Progress(C, 183, EARLY), dt=1)
        self.feed(RequestDone(A, "INVITE", 200, AGENT_OFFER))  # the media sync's answer
        self.feed(Answered(C, ANSWER), dt=3)
        self.feed(RequestDone(A, "INVITE", 200, AGENT_OFFER))
        assert self.flow.phase is Phase.TALKING
        self.actions.clear()
        return self


def only(actions: list[Any], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


# ------------------------------------------------------- the happy path
def scenario_whole_call() -> None:
    d = Driver().agent_ringing()
    assert d.feed(Progress(A, 100)) == []
    assert d.feed(Progress(A, 180)) == [Persist({"agent_leg": "ringing"})]
    assert d.feed(Progress(A, 183)) == []  # alerted once
    out = d.feed(Answered(A, AGENT_OFFER), dt=2)
    assert [type(a) for a in out] == [PersistDialog, AckAgent, Persist, AgentConnected, Invite,
                                      Persist]  # fmt: skip
    ack = out[1]
    assert isinstance(ack, AckAgent) and ack.offer is not None
    invite = out[4]
    assert isinstance(invite, Invite) and invite.leg is C and invite.sdp is not None
    relayed = parse_sdp(invite.sdp)
    assert relayed.media[0].port == 4000 and relayed.origin.address == "203.0.113.5"
    assert out[2] == Persist({"state": "agent_answered", "agent_answered_at": 1002.0,
                              "agent_leg": "answered"})  # fmt: skip
    # Early media: the agent is moved onto it, the local ringback stops first.
    out = d.feed(Progress(C, 183, EARLY), dt=1)
    assert [type(a) for a in out] == [Persist, StopRingback, Send]
    assert out[2].leg is A and out[2].method == "INVITE"
    assert parse_sdp(out[2].sdp).media[0].port == 5000
    assert d.feed(RequestDone(A, "INVITE", 200, AGENT_OFFER)) == []
    out = d.feed(Answered(C, ANSWER), dt=3)
    assert [type(a) for a in out] == [PersistDialog, Persist, Send]
    assert out[1].fields["state"] == "talking"
    sync = out[2]
    assert sync.leg is A and parse_sdp(sync.sdp).media[0].port == 5002
    # The agent's o= version moved with the change (RFC 3264 §8).
    early_sync, answer_sync = (a for a in d.sent_to(A) if isinstance(a, Send))
    versions = [parse_sdp(a.sdp).origin.sess_version for a in (early_sync, answer_sync)]
    assert versions[1] == versions[0] + 1
    d.feed(RequestDone(A, "INVITE", 200, AGENT_OFFER))
    out = d.feed(PeerEnded(C), dt=10)
    assert out == [Finish(f.Outcome.hangup("callee"), d.now), Bye(A), Done()]
    assert d.flow.ended


def scenario_agent_hangs_up_while_talking() -> None:
    d = Driver().talking()
    out = d.feed(PeerEnded(A))
    assert [type(a) for a in out] == [Finish, Bye, Done]
    assert out[0].outcome.end_reason == "agent_hungup" and out[1].leg is C


def scenario_media_sync_skips_superseded_versions() -> None:
    d = Driver().callee_ringing()
    first = d.feed(Progress(C, 183, EARLY))
    assert only(first, Send)
    # Two newer descriptions while the first re-INVITE is in flight: only the
    # last is sent, after the first completes.
    assert only(d.feed(Progress(C, 183, sdp(5010))), Send) == []
    assert only(d.feed(Progress(C, 183, sdp(5020))), Send) == []
    out = d.feed(RequestDone(A, "INVITE", 200, AGENT_OFFER))
    assert [parse_sdp(a.sdp).media[0].port for a in only(out, Send)] == [5020]


def scenario_agent_refuses_media_sync() -> None:
    d = Driver().callee_ringing()
    d.feed(Progress(C, 183, EARLY))
    assert d.feed(RequestDone(A, "INVITE", 488)) == []  # the call goes on
    assert d.flow.phase is Phase.CALLEE_RINGING


def scenario_refused_media_sync_is_retried_when_the_agent_says_later() -> None:
    d = Driver().callee_ringing()
    first = d.feed(Progress(C, 183, EARLY))
    (sync,) = only(first, Send)
    # A browser still applying the ACK's answer: 500 with Retry-After.
    assert d.feed(RequestDone(A, "INVITE", 500, retry_after=3)) == []
    assert d.flow.next_timer is not None and d.flow.next_timer == d.now + 3
    again = d.tick_to(d.flow.next_timer)
    assert only(again, Send) == [Send(A, "INVITE", sync.sdp)]
    # A glare is retried too, after 2.1 s; a plain 500 is not.
    d.feed(RequestDone(A, "INVITE", 491))
    assert only(d.tick_to(d.now + 2.1), Send) == [Send(A, "INVITE", sync.sdp)]
    d.feed(RequestDone(A, "INVITE", 500))
    later = d.tick_to(d.now + 11)
    assert [a for a in only(later, Send) if a.method == "INVITE"] == []


def scenario_media_sync_retries_are_bounded() -> None:
    d = Driver().callee_ringing()
    d.feed(Progress(C, 183, EARLY))
    sent = 1
    for _ in range(10):
        d.feed(RequestDone(A, "INVITE", 491))
        sent += len([a for a in only(d.tick_to(d.now + 2.1), Send) if a.method == "INVITE"])
    assert sent == 1 + f.MEDIA_SYNC_RETRIES


# ---------------------------------------------------- failures and timers
def scenario_agent_unreachable() -> None:
    d = Driver()
    out = d.feed(Start(agent_reachable=False))
    assert [type(a) for a in out] == [StopRingback, Finish, Done]
    assert out[1].outcome.sip_status == 480 and out[1].outcome.hangup_side == "agent"
    assert (out[1].outcome.end_reason, out[1].outcome.end_code) == ("error", 20)


def scenario_agent_rejects() -> None:
    d = Driver().agent_ringing()
    out = d.feed(Failed(A, 486, "Busy Here"))
    assert [type(a) for a in out] == [StopRingback, Finish, Done]
    assert out[1].outcome.end_reason == "busy"


def scenario_agent_ring_timeout() -> None:
    d = Driver().agent_ringing()
    d.feed(Progress(A, 180))
    assert d.feed(Tick(), dt=29.9) == []
    out = d.tick_to(d.flow.next_timer)
    assert d.now == 1030.0
    assert only(out, Finish)[0].outcome.end_code == 19 and only(out, Cancel) == [Cancel(A)]
    assert d.flow.phase is Phase.ENDING
    assert d.feed(Failed(A, 487, "Request Terminated")) == [Done()]


def scenario_agent_leg_ends_before_answer() -> None:
    d = Driver().agent_ringing()
    out = d.feed(PeerEnded(A, None, "cancelled"))
    assert only(out, Finish)[0].outcome.end_reason == "failed" and out[-1] == Done()


def scenario_agent_sends_no_offer() -> None:
    d = Driver().agent_ringing()
    out = d.feed(Answered(A, None))
    assert AckAgent(None) in out and Bye(A) in out
    assert only(out, Finish)[0].outcome.sip_status == 488
    assert only(out, Invite) == []


def scenario_agent_offer_unparsable() -> None:
    d = Driver().agent_ringing()
    out = d.feed(Answered(A, b"v=0\r\nnonsense"))
    assert AckAgent(None) in out and only(out, Finish)[0].outcome.sip_status == 488


def scenario_agent_offer_not_through_the_media_relay() -> None:
    d = Driver().agent_ringing()
    out = d.feed(Answered(A, None, media_error="media relay: no reply"))
    assert AckAgent(None) in out and Bye(A) in out and only(out, Invite) == []
    outcome = only(out, Finish)[0].outcome
    assert (outcome.end_reason, outcome.sip_status) == ("failed", 503)
    assert outcome.sip_reason == "media relay: no reply"


def scenario_callee_unreachable() -> None:
    # An internal call to an extension with no binding: the agent is not
    # even rung (nobody to connect it to).
    out = Driver().feed(Start(callee_reachable=False))
    assert [type(a) for a in out] == [StopRingback, Finish, Done]
    assert out[1].outcome.sip_status == 480 and out[1].outcome.hangup_side == "callee"
    assert (out[1].outcome.end_reason, out[1].outcome.end_code) == ("error", 20)


def scenario_callee_busy() -> None:
    d = Driver().callee_ringing()
    out = d.feed(Failed(C, 486, "Busy Here"))
    assert only(out, Finish)[0].outcome.end_reason == "busy"
    assert out[-2:] == [Bye(A), Done()]


def scenario_callee_ring_timeout() -> None:
    d = Driver().callee_ringing()
    out = d.tick_to(d.flow.next_timer)
    finish = only(out, Finish)[0]
    assert finish.outcome.end_code == 18 and finish.outcome.hangup_side == "callee"
    assert Cancel(C) in out and Bye(A) in out


def scenario_callee_leg_vanishes_before_answer() -> None:
    d = Driver().callee_ringing()
    out = d.feed(PeerEnded(C, None, "failed"))
    assert only(out, Finish)[0].outcome.end_reason == "failed" and Bye(A) in out


def scenario_agent_hangs_up_while_callee_rings() -> None:
    d = Driver().callee_ringing()
    out = d.feed(PeerEnded(A))
    assert only(out, Finish)[0].outcome.end_reason == "agent_hungup"
    assert Cancel(C) in out and Bye(A) not in out


def scenario_no_codec_in_common() -> None:
    d = Driver().callee_ringing()
    g729 = sdp(5002, ((18, "G729/8000"),))
    out = d.feed(Answered(C, g729))
    finish = only(out, Finish)[0]
    assert finish.outcome.end_reason == "error" and finish.outcome.end_code == 88
    assert finish.outcome.sip_status == 488
    assert Bye(C) in out and Bye(A) in out and out[-1] == Done()


def scenario_rejected_stream_is_no_codec() -> None:
    d = Driver().callee_ringing()
    rejected = sdp(5002)
    rejected = rejected.replace(b"m=audio 5002", b"m=audio 0")
    assert only(d.feed(Answered(C, rejected)), Finish)[0].outcome.end_code == 88


def scenario_max_duration() -> None:
    d = Driver().talking()
    out = d.tick_to(d.now + 3600)
    assert only(out, Finish)[0].outcome.hangup_side == "system"
    assert Bye(A) in out and Bye(C) in out


def scenario_api_hangup_while_talking() -> None:
    d = Driver().talking()
    out = d.feed(Hangup("api"))
    assert only(out, Finish)[0].outcome.end_reason == "hungup"
    assert out[-1] == Done() and d.flow.ended


def scenario_api_hangup_while_callee_rings() -> None:
    d = Driver().callee_ringing()
    out = d.feed(Hangup("api"))
    assert Cancel(C) in out and Bye(A) in out
    assert d.feed(Progress(C, 180)) == []
    assert d.feed(PeerAck(C, None)) == []
    assert d.feed(Failed(C, 487, "Request Terminated")) == [Done()]


# ------------------------------------------------------------ liveness
def scenario_probe_finds_a_dead_agent() -> None:
    d = Driver().talking()
    out = d.tick_to(d.flow.next_timer)
    assert only(out, Send) == [Send(A, "OPTIONS")] or Send(A, "OPTIONS") in out
    d.tick_to(d.flow.next_timer)  # the callee's probe, armed when it answered
    assert Send(C, "OPTIONS") in d.actions
    assert d.feed(RequestDone(C, "OPTIONS", 200)) == []  # alive (any answer will do)
    out = d.feed(RequestDone(A, "OPTIONS", 408), dt=32)
    finish = only(out, Finish)[0]
    assert finish.outcome.hangup_side == "agent" and finish.outcome.sip_status == 408
    assert finish.outcome.end_reason == "error" and finish.outcome.end_code == 102
    assert Bye(C) in out and Bye(A) in out


def scenario_probe_answered_481() -> None:
    d = Driver().talking()
    d.tick_to(d.flow.next_timer)
    out = d.feed(RequestDone(C, "OPTIONS", 481))
    assert only(out, Finish)[0].outcome.sip_status == 481


def scenario_probe_rearms_and_is_off_with_session_timer() -> None:
    d = Driver().agent_ringing()
    d.feed(Answered(A, AGENT_OFFER, session_timer=True))
    d.feed(Answered(C, ANSWER))
    # Only the callee is probed: the agent's dialog has a session timer.
    assert d.flow.legs[A].next_probe is None
    first = d.flow.next_timer
    out = d.tick_to(first)
    assert Send(C, "OPTIONS") in out
    d.feed(RequestDone(C, "OPTIONS", 200), dt=1)
    assert d.flow.next_timer == d.now + 60


def scenario_session_expiry_reported() -> None:
    d = Driver().talking()
    out = d.feed(PeerEnded(C, 408, "session-expired"))
    finish = only(out, Finish)[0]
    assert finish.outcome.hangup_side == "callee" and finish.outcome.sip_reason == "session-expired"
    assert out[-2:] == [Bye(A), Done()]


def scenario_relayed_request_finds_dead_leg() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(C, "INVITE", sdp(6000), "tx1"))
    out = d.feed(RequestDone(A, "INVITE", 408))
    assert Respond(C, "tx1", 500) in out  # not the agent's 408 on the callee's dialog
    assert only(out, Finish)[0].outcome.hangup_side == "agent"


# ---------------------------------------------------------------- relay
def scenario_trunk_reinvite_relayed() -> None:
    d = Driver().talking()
    moved = sdp(7000, ((8, "PCMA/8000"),))
    out = d.feed(PeerRequest(C, "INVITE", moved, "tx1"))
    assert len(out) == 1 and out[0].leg is A and out[0].method == "INVITE"
    assert parse_sdp(out[0].sdp).media[0].port == 7000
    agent_answer = sdp(4000, ((8, "PCMA/8000"),))
    out = d.feed(RequestDone(A, "INVITE", 200, agent_answer))
    assert len(out) == 1 and isinstance(out[0], Respond) and out[0].status == 200
    assert out[0].leg is C and parse_sdp(out[0].sdp).media[0].port == 4000
    assert d.feed(PeerAck(C, None)) == []


def scenario_hold_and_resume_keep_directions() -> None:
    d = Driver().talking()
    hold = sdp(4000, direction="sendonly")
    out = d.feed(PeerRequest(A, "INVITE", hold, "tx-hold"))
    assert out[0].leg is C and parse_sdp(out[0].sdp).direction() == "sendonly"
    out = d.feed(RequestDone(C, "INVITE", 200, sdp(5002, direction="recvonly")))
    assert out[0].leg is A and parse_sdp(out[0].sdp).direction() == "recvonly"
    resume = sdp(4000)
    out = d.feed(PeerRequest(A, "INVITE", resume, "tx-resume"))
    assert parse_sdp(out[0].sdp).direction() == "sendrecv"


def scenario_update_without_sdp_is_a_refresh() -> None:
    d = Driver().talking()
    assert d.feed(PeerRequest(C, "UPDATE", None, "u1")) == [Respond(C, "u1", 200)]


def scenario_update_with_sdp_relayed() -> None:
    d = Driver().talking()
    out = d.feed(PeerRequest(A, "UPDATE", sdp(4100), "u1"))
    assert out[0] == Send(C, "UPDATE", out[0].sdp) and out[0].sdp is not None
    out = d.feed(RequestDone(C, "UPDATE", 200, sdp(5100)))
    assert out[0].status == 200 and parse_sdp(out[0].sdp).media[0].port == 5100


def scenario_reinvite_without_sdp() -> None:
    """The offer comes back in the other leg's 2xx; the answer in the ACK."""
    d = Driver().talking()
    out = d.feed(PeerRequest(C, "INVITE", None, "tx1"))
    assert out == [Send(A, "INVITE", None)]
    out = d.feed(RequestDone(A, "INVITE", 200, sdp(4200), cseq=7))
    assert out[0].leg is C and parse_sdp(out[0].sdp).media[0].port == 4200  # our offer
    out = d.feed(PeerAck(C, sdp(5200)))
    assert len(out) == 1 and isinstance(out[0], Ack) and out[0].cseq == 7
    assert out[0].leg is A and parse_sdp(out[0].sdp).media[0].port == 5200


def scenario_agent_reinvite_without_sdp() -> None:
    d = Driver().talking()
    assert d.feed(PeerRequest(A, "INVITE", None, "tx1")) == [Send(C, "INVITE", None)]
    out = d.feed(RequestDone(C, "INVITE", 200, sdp(5300), cseq=3))
    assert out[0].leg is A and out[0].status == 200
    out = d.feed(PeerAck(A, sdp(4300)))
    assert [(type(a), a.leg, a.cseq) for a in out] == [(Ack, C, 3)]
    assert d.feed(PeerAck(A, None)) == []  # a retransmitted ACK needs nothing


def scenario_relayed_failure_passes_back() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(A, "INVITE", sdp(4300), "tx1"))
    assert d.feed(RequestDone(C, "INVITE", 488)) == [Respond(A, "tx1", 488)]
    d.feed(PeerRequest(A, "INVITE", sdp(4300), "tx2"))
    assert d.feed(RequestDone(C, "INVITE", 407)) == [Respond(A, "tx2", 500)]


def scenario_glare_between_legs() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(C, "INVITE", sdp(7000), "tx-c"))
    # The agent's own re-INVITE crosses ours: it must retry later.
    assert d.feed(PeerRequest(A, "INVITE", sdp(4400), "tx-a")) == [Respond(A, "tx-a", 491)]
    assert d.feed(PeerRequest(A, "UPDATE", sdp(4400), "u-a")) == [Respond(A, "u-a", 491)]
    # ...and our relayed re-INVITE was refused 491 by the agent: so is the callee's.
    assert d.feed(RequestDone(A, "INVITE", 491)) == [Respond(C, "tx-c", 491)]
    # Once nothing is in flight an offer goes through again.
    assert only(d.feed(PeerRequest(A, "INVITE", sdp(4400), "tx-a2")), Send)


def scenario_offer_while_media_sync_in_flight() -> None:
    d = Driver().callee_ringing()
    d.feed(Progress(C, 183, EARLY))
    d.feed(Answered(C, ANSWER))  # the answer's sync waits for the early one
    assert d.flow.phase is Phase.TALKING
    assert d.feed(PeerRequest(C, "INVITE", sdp(7000), "tx1")) == [Respond(C, "tx1", 491)]
    out = d.feed(RequestDone(A, "INVITE", 200, AGENT_OFFER))
    assert parse_sdp(only(out, Send)[0].sdp).media[0].port == 5002


def scenario_early_requests() -> None:
    d = Driver().agent_ringing()
    assert d.feed(PeerRequest(A, "UPDATE", None, "u")) == [Respond(A, "u", 200)]
    d = Driver().callee_ringing()
    assert d.feed(PeerRequest(A, "INVITE", sdp(4000), "t")) == [Respond(A, "t", 491)]
    assert d.feed(PeerRequest(C, "UPDATE", sdp(5000), "u")) == [Respond(C, "u", 491)]


def scenario_unrelayable_sdp() -> None:
    d = Driver().talking()
    assert d.feed(PeerRequest(C, "INVITE", b"garbage", "tx")) == [Respond(C, "tx", 488)]


# ---------------------------------------------------------------- races
def scenario_delete_while_agent_rings() -> None:
    d = Driver().agent_ringing()
    out = d.feed(Hangup("api"))
    assert only(out, Finish)[0].outcome.hangup_side == "api" and Cancel(A) in out
    assert not d.flow.ended
    # The agent answers anyway (its 200 crossed our CANCEL): ACK and BYE it.
    out = d.feed(Answered(A, AGENT_OFFER))
    assert out == [AckAgent(None), Bye(A), Done()]
    assert len(d.finishes()) == 1 and only(d.actions, Invite) == [Invite(A, None)]


def scenario_agent_hangs_up_during_callee_183() -> None:
    d = Driver().callee_ringing()
    d.feed(Progress(C, 183, EARLY))  # the agent's media sync is in flight
    out = d.feed(PeerEnded(A))
    assert only(out, Finish)[0].outcome.end_reason == "agent_hungup"
    assert Cancel(C) in out and Bye(A) not in out
    # The sync's failure and the callee's late answer arrive after the end.
    assert d.feed(RequestDone(A, "INVITE", 481)) == []
    out = d.feed(Answered(C, ANSWER))
    assert out == [Bye(C), Done()]
    assert [type(a) for a in d.sent_to(A)][-1] is Send  # nothing after the agent's BYE


def scenario_callee_answers_while_delete_in_flight() -> None:
    d = Driver().callee_ringing()
    d.feed(Hangup("api"))
    out = d.feed(Answered(C, ANSWER))
    assert out == [Bye(C), Done()]
    assert len(d.finishes()) == 1 and d.finishes()[0].outcome.hangup_side == "api"


def scenario_max_duration_during_reinvite() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(C, "INVITE", sdp(7000), "tx1"))  # relayed to the agent
    out = d.tick_to(d.now + 3600)
    assert only(out, Finish)[0].outcome.hangup_side == "system"
    # The callee's pending re-INVITE is answered, then it gets its BYE; the
    # agent's BYE waits for the final response to our re-INVITE.
    assert out.index(Respond(C, "tx1", 487)) < out.index(Bye(C))
    assert Bye(A) not in out
    out = d.feed(RequestDone(A, "INVITE", 200, sdp(4000)))
    assert out == [Bye(A), Done()]


def scenario_callee_hangs_up_while_agent_reinvite_in_flight() -> None:
    d = Driver().callee_ringing()
    d.feed(Answered(C, ANSWER))  # media sync to the agent in flight
    out = d.feed(PeerEnded(C))
    assert only(out, Finish)[0].outcome.end_reason == "callee_hungup" and Bye(A) not in out
    # The re-INVITE's 2xx is ACKed by the SIP layer (it carried our offer);
    # only then the BYE.
    assert d.feed(RequestDone(A, "INVITE", 200, AGENT_OFFER)) == [Bye(A), Done()]
    assert d.sent_to(A)[-1] == Bye(A)


def scenario_offerless_reinvite_pending_when_call_ends() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(C, "INVITE", None, "tx1"))
    d.feed(RequestDone(A, "INVITE", 200, sdp(4200), cseq=9))  # our 200 with the offer
    out = d.feed(PeerEnded(C))  # the callee leaves before its ACK
    assert out.index(Ack(A, None, 9)) < out.index(Bye(A))


def scenario_offerless_reinvite_in_flight_when_call_ends() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(C, "INVITE", None, "tx1"))
    d.feed(Hangup("api"))
    out = d.feed(RequestDone(A, "INVITE", 200, sdp(4200), cseq=9))
    assert out == [Ack(A, None, 9), Bye(A), Done()]


def scenario_requests_while_ending() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(C, "INVITE", sdp(7000), "tx1"))
    d.feed(Hangup("system"))
    assert d.feed(PeerRequest(A, "INVITE", sdp(4000), "t2")) == [Respond(A, "t2", 487)]
    assert d.feed(PeerRequest(C, "UPDATE", None, "u3")) == [Respond(C, "u3", 487)]
    assert d.feed(PeerAck(A, None)) == []
    assert d.feed(RequestDone(C, "OPTIONS", 200)) == []
    assert d.feed(PeerEnded(C)) == []  # its BYE crossed ours
    assert d.feed(PeerEnded(A)) == [Done()]  # gone by itself before our BYE


def scenario_progress_after_cancel() -> None:
    d = Driver().agent_ringing()
    d.feed(Hangup("api"))
    assert d.feed(Progress(A, 180)) == []
    assert d.feed(Failed(A, 487, "Request Terminated")) == [Done()]


def scenario_teardown_gives_up() -> None:
    d = Driver().agent_ringing()
    d.feed(Hangup("api"))
    out = d.tick_to(d.flow.next_timer)  # the CANCEL is never answered
    assert out == [Done()] and d.now == 1040.0


def scenario_every_end_is_decided_once() -> None:
    d = Driver().talking()
    d.feed(PeerRequest(C, "INVITE", sdp(7000), "tx1"))  # keeps the agent leg busy
    d.feed(PeerEnded(C))
    assert d.feed(Hangup("api")) == []
    assert d.feed(Tick(), dt=1) == []
    assert d.feed(RequestDone(A, "INVITE", 200, sdp(4000))) == [Bye(A), Done()]
    assert len(d.finishes()) == 1 and d.finishes()[0].outcome.hangup_side == "callee"


def scenario_abort_in_every_live_phase_ends_once_as_failed() -> None:
    for reach in ("agent_ringing", "callee_ringing", "talking"):
        d = getattr(Driver(), reach)()
        out = d.feed(Abort("driver fault"))
        finish = only(out, Finish)
        assert len(finish) == 1, reach
        assert finish[0].outcome.end_reason == "failed"
        assert finish[0].outcome.sip_reason == "driver fault"
        if d.flow.phase is Phase.ENDING:  # a leg still to go: nothing more
            assert d.feed(Abort("again")) == []
        assert len(d.finishes()) == 1


# ------------------------------------------- calls placed by the agent
def agent_calling() -> Driver:
    d = Driver()
    out = d.feed(StartIncoming(AGENT_OFFER))
    assert [type(a) for a in out] == [Persist, AgentConnected, Invite, Persist]
    invite = out[2]
    assert invite.leg is C and parse_sdp(invite.sdp).media[0].port == 4000
    assert parse_sdp(invite.sdp).origin.address == "203.0.113.5"
    assert d.flow.phase is Phase.AGENT_CALLING
    return d


def connecting() -> Driver:
    d = agent_calling()
    d.feed(Answered(C, ANSWER), dt=3)
    assert d.flow.phase is Phase.CONNECTING
    d.actions.clear()
    return d


def scenario_agent_placed_call_whole() -> None:
    d = agent_calling()
    assert d.feed(Progress(C, 100)) == []
    assert d.feed(Progress(C, 180)) == [Persist({"callee_leg": "ringing"}), RingAgent(180)]
    out = d.feed(Progress(C, 183, EARLY), dt=1)
    assert [type(a) for a in out] == [RingAgent]
    assert out[0].status == 183 and parse_sdp(out[0].sdp).media[0].port == 5000
    assert parse_sdp(out[0].sdp).origin.username == "click2dial"
    out = d.feed(Answered(C, ANSWER), dt=3)
    assert [type(a) for a in out] == [PersistDialog, AnswerAgent, Persist]
    assert parse_sdp(out[1].sdp).media[0].port == 5002
    assert out[2].fields["state"] == "talking"
    assert d.flow.phase is Phase.CONNECTING
    assert d.feed(PeerAck(A, None)) == [PersistDialog(A)]
    assert d.flow.phase is Phase.TALKING
    # From here on the call is any call: a re-INVITE is relayed, a BYE ends it.
    out = d.feed(PeerRequest(C, "INVITE", sdp(7000), "tx1"))
    assert [type(a) for a in out] == [Send] and out[0].leg is A
    d.feed(RequestDone(A, "INVITE", 200, sdp(4100)))
    out = d.feed(PeerEnded(A))
    assert Bye(C) in out and d.finishes()[0].outcome.end_reason == "agent_hungup"
    assert not [a for a in d.actions if isinstance(a, (Cancel, RejectAgent, StopRingback))]


def scenario_agent_placed_call_without_offer_is_refused() -> None:
    for offer in (None, b"not sdp"):
        d = Driver()
        out = d.feed(StartIncoming(offer))
        assert [type(a) for a in out] == [Finish, RejectAgent, Done]
        assert out[1].status == 488 and not only(out, Invite)


def scenario_agent_placed_call_offer_not_through_the_media_relay() -> None:
    out = Driver().feed(StartIncoming(None, media_error="media relay: no reply"))
    assert [type(a) for a in out] == [Finish, RejectAgent, Done]
    assert out[1].status == 503 and out[0].outcome.end_reason == "failed"


def scenario_media_relay_failure_mid_call_is_our_fault() -> None:
    d = Driver().talking()
    out = d.feed(Abort("media relay: no reply", 503))
    outcome = only(out, Finish)[0].outcome
    assert (outcome.end_reason, outcome.sip_status) == ("failed", 503)
    assert Bye(A) in out and Bye(C) in out


def scenario_agent_placed_call_cancelled_before_start() -> None:
    out = Driver().feed(StartIncoming(AGENT_OFFER, cancelled=True))
    assert [type(a) for a in out] == [Finish, Done]
    assert out[0].outcome.hangup_side == "agent"


def scenario_agent_placed_call_to_unreachable_callee() -> None:
    d = Driver()
    out = d.feed(StartIncoming(AGENT_OFFER, callee_reachable=False))
    assert RejectAgent(480) in out and not only(out, Invite) and out[-1] == Done()
    outcome = only(out, Finish)[0].outcome
    assert (outcome.end_reason, outcome.end_code, outcome.hangup_side) == ("error", 20, "callee")


def scenario_agent_placed_call_callee_fails() -> None:
    for status, expected in ((486, 486), (404, 404), (407, 500), (503, 503)):
        d = agent_calling()
        out = d.feed(Failed(C, status, "no"))
        assert out[-2:] == [RejectAgent(expected), Done()], status
        assert d.finishes()[0].outcome.sip_status == status


def scenario_agent_placed_call_cancelled_by_agent() -> None:
    d = agent_calling()
    d.feed(Progress(C, 180))
    out = d.feed(PeerEnded(A, 487, "cancelled"), dt=2)
    assert Cancel(C) in out and not only(out, RejectAgent)
    assert d.finishes()[0].outcome.hangup_side == "agent"
    assert d.feed(Failed(C, 487, "Request Terminated")) == [Done()]


def scenario_agent_placed_call_deleted_or_timed_out() -> None:
    d = agent_calling()
    out = d.feed(Hangup("api"))
    assert RejectAgent(487) in out and Cancel(C) in out
    d = agent_calling()
    d.feed(Progress(C, 180))
    assert d.flow.next_timer == 1060.0
    out = d.tick_to(d.flow.next_timer)
    assert RejectAgent(480) in out and Cancel(C) in out
    assert d.finishes()[0].outcome.end_reason == "timeout"
    d = agent_calling()
    out = d.feed(Abort("bug"))
    assert RejectAgent(500) in out


def scenario_agent_placed_call_callee_vanishes_or_offers_early() -> None:
    d = agent_calling()
    assert d.feed(PeerRequest(C, "UPDATE", None, "u1")) == [Respond(C, "u1", 200)]
    out = d.feed(PeerEnded(C))
    assert RejectAgent(500) in out and d.finishes()[0].outcome.end_reason == "failed"


def scenario_agent_placed_call_incompatible_answer() -> None:
    d = agent_calling()
    out = d.feed(Answered(C, sdp(5002, ((9, "G722/8000"),))))
    assert [type(a) for a in out] == [PersistDialog, Finish, RejectAgent, Bye, Done]
    assert out[2].status == 488


def scenario_agent_placed_call_ends_before_ack() -> None:
    d = connecting()
    assert d.feed(PeerRequest(A, "INVITE", sdp(4200), "t1")) == [Respond(A, "t1", 491)]
    assert d.feed(PeerRequest(C, "INVITE", sdp(7000), "t2")) == [Respond(C, "t2", 491)]
    out = d.feed(PeerEnded(A, 408, "agent sent no ACK"))
    assert out[-2:] == [Bye(C), Done()] and d.finishes()[0].outcome.end_code == 102
    d = connecting()
    out = d.feed(PeerEnded(C))
    assert out[-2:] == [Bye(A), Done()] and d.finishes()[0].outcome.hangup_side == "callee"
    d = connecting()
    assert Bye(A) in d.feed(Hangup("api")) and Bye(C) in d.actions
    d = connecting()
    assert d.tick_to(d.flow.next_timer) == [Send(C, "OPTIONS")]  # the callee is probed
    assert d.feed(RequestDone(C, "OPTIONS", 200)) == []
    d.tick_to(d.flow.deadline)  # max_call_duration
    assert d.finishes()[0].outcome.hangup_side == "system"
    d = connecting()
    assert only(d.feed(Abort("bug")), Finish)


SCENARIOS: dict[str, Callable[[], None]] = {
    name.removeprefix("scenario_"): fn
    for name, fn in list(globals().items())
    if name.startswith("scenario_") and callable(fn)
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_flow(name: str) -> None:
    SCENARIOS[name]()


@contextmanager
def recording() -> Iterator[set[tuple[Phase, type, Leg | None]]]:
    seen: set[tuple[Phase, type, Leg | None]] = set()
    original = CallFlow.handle

    def handle(self: CallFlow, event: Any, now: float) -> list[Any]:
        seen.add((self.phase, type(event), getattr(event, "leg", None)))
        return original(self, event, now)

    CallFlow.handle = handle  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        CallFlow.handle = original  # type: ignore[method-assign]


def test_every_transition_is_exercised() -> None:
    with recording() as seen:
        for scenario in SCENARIOS.values():
            scenario()
    assert set(TRANSITIONS) - seen == set()


@pytest.mark.parametrize(
    "event",
    [RequestDone(C, "INVITE", 200), Answered(C, ANSWER), PeerAck(A, None), Start()],
)
def test_an_event_without_transition_is_an_error(event: Any) -> None:
    d = Driver().agent_ringing()
    with pytest.raises(FlowError):
        d.feed(event)
