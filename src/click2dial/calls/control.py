"""Call control: the driver that runs every live call's :class:`~.flow.CallFlow`.

Theory of operation
-------------------
Everything a call decides lives in :mod:`.flow`; this module only carries
it out, in the style of aioquic's asyncio adapter: *receive* (a leg's SIP
event, an in-dialog request, a timer, a hangup command), *process* (feed the
call's flow one event), *transmit* (carry out the actions it returns, in
order).  The user agent delivers a leg's events synchronously and in wire
order (``Call.on_event`` / ``Call.on_peer_request`` / ``send(on_done=...)``),
so a call needs no task and no queue of its own, and the order of a leg's
requests never depends on timing.

Per call, events are processed one at a time: an event that arrives while
the driver is still carrying out actions (a SIP command can report at once,
e.g. a refused connection) waits in the call's inbox.  Only one action has
to wait for I/O before the next may go: the agent-connection notification,
which must reach the integrator before the callee is dialled.  The rest of
the actions then continue from its completion.

What is written where:

* state changes (``Persist``) are kept in memory (this node answers for its
  own calls from there) and ride along with the next durable write;
* the end (``Finish``) goes to :class:`~.ending.EndWriter` with the fields
  the call reached, which writes it with its CDR whatever the store does;
  the call leaves the live set and frees its agent at that moment;
* an established leg's dialog (``PersistDialog``) is written, with the
  states reached so far, so that a crash can still BYE it at the next start.

A call the agent placed itself (:meth:`CallController.start_incoming`) runs
the same way: its agent leg is the agent's incoming INVITE, answered with
the flow's ``RingAgent`` / ``AnswerAgent`` / ``RejectAgent``.

Nothing here speaks HTTP or builds SIP messages: the API calls
:meth:`CallController.start` / :meth:`hangup` (through the service), the SIP side is the
:class:`~click2dial.sip.aio.UserAgent` API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ids
from ..config import IntegratorConfig
from ..media.rtpengine import RtpEngine
from ..sip.aio import Answered, Call, CallEvent, Ended, Failed, Progress, UserAgent
from ..sip.aio.ua import Acked
from ..sip.auth import DigestClient
from ..sip.endpoint import uri_target
from ..sip.errors import SipError
from ..sip.headers import Address
from ..sip.message import Request, Response
from ..sip.sdp import SessionDescription
from ..sip.transaction import ServerTransaction, Target
from ..sip.uri import Uri
from ..store import CallRecord, Notification, Store
from ..store.model import DIALOG_COLUMNS
from . import flow as f
from .ending import EndWriter, PendingEnd
from .flow import CallFlow, FlowError, FlowTimers, Leg
from .media_relay import MediaRelay, MediaRelayError, is_webrtc
from .outcome import Outcome
from .ringback import PCMA, PCMU, Ringback, RtpSockets

log = logging.getLogger(__name__)

AUTO_ANSWER_HEADERS: dict[str, Callable[[str], tuple[str, str]]] = {
    "answer-mode": lambda host: ("Answer-Mode", "Auto"),
    "call-info": lambda host: ("Call-Info", f"<sip:{host}>;answer-after=0"),
    "alert-info": lambda host: ("Alert-Info", f"<http://{host}/>;info=alert-autoanswer"),
}

#: Seconds before a dialog the store refused is offered again.
DIALOG_RETRY = 1.0
#: Fields a ``Persist`` may carry that ``finish_call`` writes with the end
#: (``state`` is the end's own).
_REACHED = frozenset(
    {"agent_answered_at", "callee_dialed_at", "callee_answered_at", "agent_leg", "callee_leg"}
)


@dataclass(frozen=True)
class Destination:
    uri: Uri
    credentials: DigestClient | None
    nat: bool = False
    target: Target | None = None
    """Where requests go when not to the URI's host (a registered flow)."""


@dataclass
class TelephonySettings:
    """What call control needs from the configuration."""

    public_host: str
    trunk_uri: Uri
    trunk_username: str = ""
    trunk_password: str = ""
    extensions_mode: str = "registrar"
    pbx_uri: Uri | None = None
    agent_contacts: dict[str, Uri] = field(default_factory=dict)
    agent_auto_answer: dict[str, str] = field(default_factory=dict)
    agent_nat: dict[str, bool] = field(default_factory=dict)
    """Per extension: send in-dialog requests to where its messages came
    from (default on: most agents of a hosted service sit behind NAT)."""
    node_id: str = "node"
    probe_interval: float = 45.0
    registered: Callable[[str], list[Destination]] | None = None
    """``[extensions] mode = "registrar"``: an extension's bound contacts."""

    @property
    def trunk_credentials(self) -> DigestClient | None:
        if self.trunk_username:
            return DigestClient(self.trunk_username, self.trunk_password)
        return None

    def trunk_destination(self, number: str) -> Destination:
        uri = self.trunk_uri.copy()
        uri.user = number
        return Destination(uri, self.trunk_credentials)

    def agent_destination(self, agent: str) -> Destination | None:
        if len(agent) > 4:  # an external number: the agent's mobile, via the trunk
            return self.trunk_destination(agent)
        nat = self.agent_nat.get(agent, True)
        contact = self.agent_contacts.get(agent)
        if contact is not None:
            return Destination(contact, None, nat)
        if self.extensions_mode == "pbx" and self.pbx_uri is not None:
            uri = self.pbx_uri.copy()
            uri.user = agent
            return Destination(uri, None)
        if self.extensions_mode == "registrar" and self.registered is not None:
            bound = self.registered(agent)
            return bound[0] if bound else None
        return None  # not registered

    def agent_destinations(self, agent: str) -> list[Destination]:
        """Every destination to ring at once for ``agent`` (its registered
        contacts), or the one of :meth:`agent_destination`."""
        if (
            len(agent) <= 4
            and agent not in self.agent_contacts
            and self.extensions_mode == "registrar"
            and self.registered is not None
        ):
            return self.registered(agent)
        one = self.agent_destination(agent)
        return [] if one is None else [one]


@dataclass(eq=False)
class LiveCall:
    """One call this node runs: its flow and the SIP legs carrying it out."""

    record: CallRecord
    flow: CallFlow
    integrator: IntegratorConfig
    legs: dict[Leg, Call] = field(default_factory=dict)
    ringback: Ringback | None = None
    inbox: deque[f.Event] = field(default_factory=deque)
    busy: bool = False
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    reached: dict[str, Any] = field(default_factory=dict)
    unwritten: dict[str, Any] = field(default_factory=dict)
    """State changes not in the store yet (see ``_write_states``)."""
    end: PendingEnd | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    relay: MediaRelay | None = None
    """rtpengine around the leg that is a browser (:mod:`.media_relay`)."""
    peer_offers: dict[int, bool] = field(default_factory=dict)
    """Per server transaction (``id``) of the relayed leg's in-dialog
    request: whether it carried an offer (our 2xx then answers it)."""

    @property
    def call_ref(self) -> str:
        return self.record.call_ref


def _retry_after(response: Response) -> float | None:
    """The seconds of a response's ``Retry-After`` (RFC 3261 §20.33), if any."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    seconds = value.split(";", 1)[0].split("(", 1)[0].strip()
    return float(seconds) if seconds.isdigit() else None


def new_call_ref() -> str:
    return ids.uuid4()


#: The events whose SDP is an offer or an answer of the agent's.
_SdpEvent = f.StartIncoming | f.Answered | f.PeerRequest | f.PeerAck | f.RequestDone
#: The actions that may carry an SDP to the agent.
_SdpAction = f.RingAgent | f.AnswerAgent | f.Send | f.Ack | f.Respond
_SDP_ACTIONS = (f.RingAgent, f.AnswerAgent, f.Send, f.Ack, f.Respond)


class CallController:
    """Runs every live call of this node."""

    def __init__(
        self,
        *,
        settings: TelephonySettings,
        store: Store,
        ua: UserAgent,
        rtpengine: RtpEngine | None = None,
        on_agent_connected: Callable[[CallRecord], Awaitable[None]] | None = None,
        on_call_ended: Callable[[CallRecord], Awaitable[None]] | None = None,
        on_answered: Callable[[CallRecord, Leg], None] | None = None,
        notifications_for: Callable[[CallRecord, Outcome, float], list[Notification]] | None = None,
        clock: Callable[[], float] = time.time,
        media_host: str = "127.0.0.1",
        spool: Path | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ua = ua
        self.rtpengine = rtpengine
        self.on_agent_connected = on_agent_connected
        self.on_call_ended = on_call_ended
        self.on_answered = on_answered
        self.notifications_for = notifications_for or (lambda record, outcome, now: [])
        self.clock = clock
        self.media_host = media_host
        self.rtp_sockets = RtpSockets(media_host)
        self.spool = spool
        self.live: dict[str, LiveCall] = {}
        self.ends = EndWriter(store, on_written=self._end_written)
        self._writes: deque[tuple[LiveCall, str, dict[str, Any]]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------- commands
    def start(self, record: CallRecord, integrator: IntegratorConfig) -> None:
        """Run a freshly stored call (state ``agent_ringing``)."""
        s = self.settings
        live = self._new_live(record, integrator)
        self._feed(
            live,
            f.Start(
                agent_reachable=s.agent_destination(record.agent) is not None,
                callee_reachable=self._callee_destination(record) is not None,
            ),
        )

    def start_incoming(self, record: CallRecord, integrator: IntegratorConfig, call: Call) -> None:
        """Run a freshly stored call that the agent placed: ``call`` is its
        INVITE, which carries the agent's offer and waits for our final
        response (we are the UAS of the agent leg)."""
        live = self._new_live(record, integrator)
        self._hook(live, Leg.AGENT, call)
        self._feed(
            live,
            f.StartIncoming(
                call.remote_sdp,
                callee_reachable=self._callee_destination(record) is not None,
                # The agent's CANCEL while the call was being admitted.
                cancelled=call.ended.done(),
            ),
        )

    def _new_live(self, record: CallRecord, integrator: IntegratorConfig) -> LiveCall:
        """A call of this node with its flow, on the integrator's timers."""
        s = self.settings
        timers = FlowTimers(
            agent_ring=float(integrator.agent_ring_timeout),
            callee_ring=float(integrator.callee_ring_timeout),
            max_duration=float(integrator.max_call_duration),
            probe_interval=float(s.probe_interval),
        )
        live = LiveCall(record, CallFlow(timers, s.public_host), integrator)
        self.live[record.call_ref] = live
        return live

    def _hook(self, live: LiveCall, leg: Leg, call: Call) -> None:
        live.legs[leg] = call
        call.on_event = lambda event: self._on_leg_event(live, leg, event)
        call.on_peer_request = lambda request, tx: self._on_peer_request(live, leg, request, tx)

    def hangup_now(self, call_ref: str, *, side: str = "api") -> bool:
        """Decide the end of a live call of this node at once (its legs are
        then cancelled or hung up); False if it is not live here."""
        live = self.live.get(call_ref)
        if live is None:
            return False
        if live.end is None:
            self._feed(live, f.Hangup(side))
        return True

    async def hangup(self, call_ref: str, timeout: float = 0.5, *, side: str = "api") -> bool:
        """:meth:`hangup_now`, then wait up to ``timeout`` for the end to be
        stored (never for the legs: a BYE nobody answers must not block)."""
        if not self.hangup_now(call_ref, side=side):
            return False
        await self.ends.flush(call_ref, timeout)
        return True

    def live_record(self, call_ref: str) -> CallRecord | None:
        """The record of a call this node runs, as it stands now."""
        live = self.live.get(call_ref)
        return live.record if live is not None and live.end is None else None

    def ending(self, call_ref: str) -> bool:
        """Whether the call's end is decided but not stored yet."""
        return self.ends.pending(call_ref) is not None

    async def close(self, timeout: float = 5.0) -> None:
        """Orderly shutdown: hang up everything, give the legs and the store
        a bounded time, keep what the store could not take in the spool."""
        for ref in list(self.live):
            self.hangup_now(ref, side="system")
        waits = [live.done.wait() for live in self.live.values()]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)
        for live in list(self.live.values()):
            self._drop(live)
        await self.ends.close(timeout, self.spool)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for task in list(self._tasks):
            task.cancel()
        self.rtp_sockets.close()

    # ------------------------------------------------- receive and process
    def _feed(self, live: LiveCall, event: f.Event) -> None:
        live.inbox.append(event)
        if not live.busy:
            self._process(live, deque())

    def _process(self, live: LiveCall, pending: deque[f.Action]) -> None:
        """Carry out ``pending``, then every event in the inbox, in order."""
        live.busy = True
        flow = live.flow
        while True:
            while pending:
                action = pending.popleft()
                if isinstance(action, f.AgentConnected) and self.on_agent_connected is not None:
                    self._spawn(self._then(live, self.on_agent_connected(live.record), pending))
                    return  # still busy: the rest continues when it is done
                if live.relay is not None and (rewrite := self._media_out(live, action)):
                    self._spawn(self._then_transmit(live, action, rewrite, pending))
                    return  # still busy: the rest goes once rtpengine answered
                self._transmit_or_report(live, action)
            if not live.inbox or flow.ended:
                break
            event = live.inbox.popleft()
            if (rewrite_in := self._media_in(live, event)) is not None:
                self._spawn(self._then_handle(live, rewrite_in, pending))
                return
            self._handle(live, event, pending)
        live.busy = False
        if flow.ended:
            live.inbox.clear()
        else:
            self._arm(live)

    def _handle(self, live: LiveCall, event: f.Event, pending: deque[f.Action]) -> None:
        flow = live.flow
        try:
            pending.extend(flow.handle(event, self.clock()))
        except FlowError:
            log.exception("call %s: no transition", live.call_ref)
            if not flow.ended:
                pending.extend(flow.handle(f.Abort("internal error"), self.clock()))

    def _transmit_or_report(self, live: LiveCall, action: f.Action) -> None:
        try:
            self._transmit(live, action)
        except Exception as exc:
            log.exception("call %s: %r failed", live.call_ref, action)
            live.inbox.appendleft(self._failed_action(action, exc))

    async def _then_handle(
        self, live: LiveCall, rewrite: Awaitable[f.Event], pending: deque[f.Action]
    ) -> None:
        """Feed the flow an event once its SDP came back from rtpengine."""
        event = await rewrite
        if not live.flow.ended:
            self._handle(live, event, pending)
        self._process(live, pending)

    async def _then_transmit(
        self,
        live: LiveCall,
        action: f.Action,
        rewrite: Callable[[], Awaitable[f.Action | None]],
        pending: deque[f.Action],
    ) -> None:
        """Carry out an action once its SDP came back from rtpengine."""
        try:
            rewritten = await rewrite()
        except Exception as exc:  # the call must go on to its end whatever failed
            if isinstance(exc, MediaRelayError):
                log.warning("call %s: %s", live.call_ref, exc)
            else:
                log.exception("call %s: media relay rewrite of %r failed", live.call_ref, action)
            try:
                self._media_failed(live, action)
            except Exception:
                log.exception("call %s: could not close %r", live.call_ref, action)
            live.inbox.appendleft(f.Abort(str(exc) or "media relay failed", 503))
        else:
            if rewritten is not None:
                self._transmit_or_report(live, rewritten)
        self._process(live, pending)

    async def _then(
        self, live: LiveCall, awaitable: Awaitable[None], rest: deque[f.Action]
    ) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("call %s: agent-connected hook failed", live.call_ref)
        self._process(live, rest)

    def _failed_action(self, action: f.Action, exc: Exception) -> f.Event:
        """The event that tells the flow an action could not be carried out."""
        if isinstance(action, f.Send):
            return f.RequestDone(action.leg, action.method, 481 if isinstance(exc, SipError)
                                 else 500)  # fmt: skip
        if isinstance(action, f.Invite):
            return f.Failed(action.leg, 503, str(exc) or "could not send the INVITE")
        return f.Abort(f"could not carry out {type(action).__name__}")

    # -------------------------------------------------- the media relay
    def _media_in(self, live: LiveCall, event: f.Event) -> Awaitable[f.Event] | None:
        """The rewrite of an agent's SDP through rtpengine, when the event
        carries one that needs it (:mod:`.media_relay`); None otherwise.

        The agent's first SDP (its INVITE's offer, or the offer in its 200
        to our late-offer INVITE) decides whether it is a browser."""
        if isinstance(event, f.StartIncoming):
            if not is_webrtc(event.offer):
                return None
            self._new_relay(live)
            return self._rewrite_in(live, event, event.offer, "offer")
        if getattr(event, "leg", None) is not Leg.AGENT:
            return None
        if isinstance(event, f.Answered):
            if live.relay is None:
                if not is_webrtc(event.sdp):
                    return None
                self._new_relay(live)
            # The agent's INVITE is always a late offer (flow ``Invite(AGENT,
            # None)``): its 2xx carries the agent's offer.
            return self._rewrite_in(live, event, event.sdp, "offer")
        relay = live.relay
        if relay is None:
            return None
        if isinstance(event, f.PeerRequest) and event.sdp:
            live.peer_offers[id(event.token)] = True
            return self._rewrite_in(live, event, event.sdp, "offer")
        if isinstance(event, f.PeerAck) and event.sdp:
            return self._rewrite_in(live, event, event.sdp, "answer")
        if isinstance(event, f.RequestDone) and event.sdp:
            role = "answer" if live.flow.offered_to(Leg.AGENT) else "offer"
            return self._rewrite_in(live, event, event.sdp, role)
        # A provisional's SDP from the agent is never used: no offer of
        # ours is pending when the agent rings (late offer).
        return None

    def _new_relay(self, live: LiveCall) -> MediaRelay | None:
        if self.rtpengine is not None:
            live.relay = MediaRelay(self.rtpengine, live.call_ref, Leg.AGENT, Leg.CALLEE)
        return live.relay

    async def _rewrite_in(
        self, live: LiveCall, event: _SdpEvent, sdp: bytes | None, role: str
    ) -> f.Event:
        assert sdp is not None
        relay = live.relay
        try:
            if relay is None:
                raise MediaRelayError(
                    "the agent is a browser (WebRTC media) and no media relay is "
                    "configured ([sip] rtpengine)"
                )
            if role == "offer":
                rewritten = await relay.received_offer(sdp)
            else:
                rewritten = await relay.received_answer(sdp)
        except Exception as exc:  # a call waiting on this must still get an event
            if isinstance(exc, MediaRelayError):
                log.warning("call %s: %s", live.call_ref, exc)
            else:
                log.exception("call %s: media relay rewrite failed", live.call_ref)
            detail = str(exc) if isinstance(exc, MediaRelayError) else "media relay failed"
            if isinstance(event, f.StartIncoming):
                return dataclasses.replace(event, offer=None, media_error=detail)
            if isinstance(event, f.Answered):
                return dataclasses.replace(event, sdp=None, media_error=detail)
            if isinstance(event, f.PeerRequest):
                self.ua.respond(event.token, 500)
            return f.Abort(detail, 503)
        if isinstance(event, f.StartIncoming):
            return dataclasses.replace(event, offer=rewritten)
        return dataclasses.replace(event, sdp=rewritten)

    def _media_out(
        self, live: LiveCall, action: f.Action
    ) -> Callable[[], Awaitable[f.Action | None]] | None:
        """The rewrite of an SDP we send to the agent, when it is a browser;
        None for an action that needs none."""
        relay = live.relay
        assert relay is not None
        if isinstance(action, f.AckAgent) and action.offer is not None:
            offer = action.offer

            async def ack() -> None:
                body, ringback = self._agent_answer(live, offer)
                live.legs[Leg.AGENT].ack(await relay.sending_answer(body))
                if ringback is not None:
                    ringback.play(*offer.connection(0))

            return ack
        if not isinstance(action, _SDP_ACTIONS):
            return None
        # Asked even without an SDP: it forgets the agent's request a
        # Respond answers (see ``peer_offers``).
        rewrite = self._outgoing_rewrite(live, relay, action)
        if rewrite is None or not action.sdp:
            return None
        sdp, carrier = action.sdp, action

        async def rewritten() -> f.Action:
            return dataclasses.replace(carrier, sdp=await rewrite(sdp))

        return rewritten

    @staticmethod
    def _outgoing_rewrite(
        live: LiveCall, relay: MediaRelay, action: _SdpAction
    ) -> Callable[[bytes], Awaitable[bytes]] | None:
        """Whether the SDP of ``action`` goes to the agent as an offer or an
        answer, as the rewrite it needs; None when it goes to the callee."""
        if isinstance(action, (f.RingAgent, f.AnswerAgent)):
            return relay.sending_answer
        if action.leg is not Leg.AGENT:
            return None
        if isinstance(action, f.Send):
            return relay.sending_offer  # a re-INVITE or UPDATE (an OPTIONS has none)
        if isinstance(action, f.Ack):
            return relay.sending_answer
        # Respond: our 2xx answers the agent's offer, or carries ours.
        answers = live.peer_offers.pop(id(action.token), False)
        if not 200 <= action.status < 300:
            return None
        return relay.sending_answer if answers else relay.sending_offer

    def _media_failed(self, live: LiveCall, action: f.Action) -> None:
        """Complete what ``action`` left open when rtpengine failed it (the
        call is then aborted)."""
        agent = live.legs.get(Leg.AGENT)
        if agent is None:
            return
        if isinstance(action, f.AckAgent):
            agent.ack()  # ends the INVITE transaction; the BYE follows
        elif isinstance(action, f.AnswerAgent):
            if not agent.ended.done():
                agent.reject(503)
        elif isinstance(action, f.Respond):
            self.ua.respond(action.token, 500)
        elif isinstance(action, f.Send):
            live.inbox.append(f.RequestDone(action.leg, action.method, 500))

    def _arm(self, live: LiveCall) -> None:
        when = live.flow.next_timer
        if when == live.timer_at:
            return
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        live.timer_at = when
        if when is not None:
            delay = max(0.0, when - self.clock())
            live.timer = asyncio.get_running_loop().call_later(delay, self._tick, live)

    def _tick(self, live: LiveCall) -> None:
        live.timer = None
        live.timer_at = None
        if not live.flow.ended:
            self._feed(live, f.Tick())

    # ------------------------------------------------------------ receive
    def _on_leg_event(self, live: LiveCall, leg: Leg, event: CallEvent) -> None:
        if live.flow.ended:
            return
        if isinstance(event, Progress):
            if event.status > 100:
                self._feed(live, f.Progress(leg, event.status, event.sdp))
        elif isinstance(event, Answered):
            dialog = live.legs[leg].dialog
            interval = dialog.session_interval if dialog is not None else None
            # A session timer replaces the OPTIONS probes only when it notices
            # a dead peer as soon as they would: with the usual 1800 s it
            # would take up to half an hour.
            timer = interval is not None and interval <= 2 * self.settings.probe_interval
            self._feed(live, f.Answered(leg, event.sdp, session_timer=timer))
        elif isinstance(event, Failed):
            self._feed(live, f.Failed(leg, event.status, event.reason))
        elif isinstance(event, Acked):
            self._feed(live, f.PeerAck(leg, event.sdp))
        elif isinstance(event, Ended):
            ended = self._peer_ended(leg, event)
            if ended is not None:
                self._feed(live, ended)

    @staticmethod
    def _peer_ended(leg: Leg, event: Ended) -> f.PeerEnded | None:
        if event.reason == "failed" or (event.by == "local" and event.reason == "bye"):
            return None  # reported by Failed already, or our own BYE
        if event.reason == "bye" and event.request is not None:
            return f.PeerEnded(leg)
        if event.reason == "bye":  # a 408/481 to an in-dialog request ended it
            return f.PeerEnded(leg, 408, f"{leg.value} unreachable")
        if event.reason == "no-ack":
            return f.PeerEnded(leg, 408, f"{leg.value} sent no ACK")
        if event.reason == "cancelled":  # the agent's CANCEL of the call it placed
            return f.PeerEnded(leg, 487, "cancelled")
        if event.reason == "session-expired":
            return f.PeerEnded(leg, 408, f"{leg.value} session expired")
        return f.PeerEnded(leg, 408, event.reason)

    def _on_peer_request(
        self, live: LiveCall, leg: Leg, request: Request, tx: ServerTransaction
    ) -> None:
        method = request.method
        if method in ("INVITE", "UPDATE") and not live.flow.ended:
            self._feed(live, f.PeerRequest(leg, method, request.sdp, tx))
        elif method in ("INVITE", "UPDATE"):
            self.ua.respond(tx, 481)
        else:  # OPTIONS keep-alives, INFO, NOTIFY...: the dialog is alive
            self.ua.respond(tx, 200)

    def _on_request_done(
        self, live: LiveCall, leg: Leg, method: str, status: int, response: Response | None
    ) -> None:
        if live.flow.ended:
            return
        if response is None and status >= 300:
            # No answer at all (a time-out, or a refused connection or port
            # reported by the transport): the peer is unreachable, whatever
            # status stands for it.
            status = 408
        sdp = response.sdp if response is not None and 200 <= status < 300 else None
        cseq = response.cseq.seq if response is not None else 0
        retry_after = _retry_after(response) if response is not None and status >= 300 else None
        self._feed(live, f.RequestDone(leg, method, status, sdp or None, cseq, retry_after))

    # ----------------------------------------------------------- transmit
    def _transmit(self, live: LiveCall, action: f.Action) -> None:
        if isinstance(action, f.Invite):
            self._invite(live, action)
        elif isinstance(action, f.AckAgent):
            self._ack_agent(live, action.offer)
        elif isinstance(action, f.RingAgent):
            live.legs[Leg.AGENT].ring(action.status, action.sdp)
        elif isinstance(action, f.AnswerAgent):
            live.legs[Leg.AGENT].answer(action.sdp)
        elif isinstance(action, f.RejectAgent):
            call = live.legs[Leg.AGENT]
            if not call.ended.done():
                call.reject(action.status)
        elif isinstance(action, f.StopRingback):
            self._stop_ringback(live)
        elif isinstance(action, f.Cancel):
            live.legs[action.leg].cancel()
        elif isinstance(action, f.Bye):
            live.legs[action.leg].bye_now()
        elif isinstance(action, f.Send):
            leg, method = action.leg, action.method
            live.legs[leg].send(
                method,
                action.sdp or b"",
                on_done=lambda status, response: self._on_request_done(
                    live, leg, method, status, response
                ),
            )
        elif isinstance(action, f.Ack):
            live.legs[action.leg].ack(action.sdp, cseq=action.cseq or None)
        elif isinstance(action, f.Respond):
            self.ua.respond(action.token, action.status, body=action.sdp or b"")
        elif isinstance(action, f.Persist):
            self._persist(live, action.fields)
        elif isinstance(action, f.PersistDialog):
            self._persist_dialog(live, action.leg)
        elif isinstance(action, f.AgentConnected):
            pass  # no hook configured
        elif isinstance(action, f.Finish):
            self._finish(live, action)
        elif isinstance(action, f.Done):
            self._done(live)

    def _invite(self, live: LiveCall, action: f.Invite) -> None:
        s = self.settings
        record = live.record
        headers = self._headers(record)
        if action.leg is Leg.AGENT:
            destination = s.agent_destination(record.agent)
            style = s.agent_auto_answer.get(record.agent, "none")
            if style in AUTO_ANSWER_HEADERS:
                headers.append(AUTO_ANSWER_HEADERS[style](s.public_host))
            # An extension's phone shows the number it is about to be
            # connected to; an agent's mobile, reached through the trunk, gets
            # the caller ID the carrier expects, like the callee.
            external_agent = len(record.agent) > 4
            shown = record.outbound_id if external_agent else record.callee
            if external_agent:
                headers.append(("P-Asserted-Identity", f"<sip:{shown}@{s.public_host}>"))
            caller = Address(Uri("sip", s.public_host, shown))
            # A late offer: a reliable provisional carrying the phone's offer
            # would have to be answered in its PRACK, before the callee's
            # media is known.  Not offering 100rel keeps the offer in the 200.
            headers.append(("Supported", "timer"))
        else:
            destination = self._callee_destination(record)
            caller = Address(Uri("sip", s.public_host, record.outbound_id))
            headers.insert(0, ("P-Asserted-Identity", f"<{caller.uri}>"))
        if destination is None:
            raise SipError(f"no destination for the {action.leg.value}")
        if action.leg is Leg.AGENT:
            forks = s.agent_destinations(record.agent)
        elif record.call_type == "internal":
            forks = s.agent_destinations(record.callee)
        else:
            forks = []
        if len(forks) > 1:  # an extension's registered phones ring at once
            call = self.ua.invite_fork(
                [(d.uri, d.target or uri_target(d.uri), d.nat) for d in forks],
                sdp=action.sdp, from_=caller, headers=headers,
            )  # fmt: skip
        else:
            call = self.ua.invite(
                destination.uri,
                sdp=action.sdp,
                from_=caller,
                to=Address(destination.uri.copy()),
                headers=headers,
                target=destination.target or uri_target(destination.uri),
                credentials=destination.credentials,
                nat=destination.nat,
            )
        self._hook(live, action.leg, call)

    def _callee_destination(self, record: CallRecord) -> Destination | None:
        """The trunk, or another extension for an internal call."""
        s = self.settings
        if record.call_type == "internal":
            return s.agent_destination(record.callee)
        return s.trunk_destination(record.callee)

    def _ack_agent(self, live: LiveCall, offer: SessionDescription | None) -> None:
        call = live.legs[Leg.AGENT]
        if offer is None:
            call.ack()
            return
        body, ringback = self._agent_answer(live, offer)
        call.ack(body)
        if ringback is not None:
            ringback.play(*offer.connection(0))

    def _agent_answer(
        self, live: LiveCall, offer: SessionDescription
    ) -> tuple[bytes, Ringback | None]:
        """Our answer to the agent's offer while the callee is dialled:
        ringback, or an inactive placeholder."""
        session = live.flow.sessions[Leg.AGENT]
        ringback = self._ringback_for(offer)
        if ringback is None:
            return session.placeholder_answer(offer.to_bytes()), None
        live.ringback = ringback
        return session.ringback_answer(offer, ringback), ringback

    def _ringback_for(self, offer: SessionDescription) -> Ringback | None:
        """A ringback player for the agent's first audio stream, if it takes
        G.711 (PCMU preferred); None otherwise (the agent then waits on an
        inactive stream)."""
        for media in offer.media[:1]:
            if media.media != "audio" or media.port == 0 or media.proto != "RTP/AVP":
                return None
            names = {fmt: enc.split("/")[0].upper() for fmt, enc in media.rtpmap().items()}
            for pt, name in ((PCMU, "PCMU"), (PCMA, "PCMA")):
                if str(pt) in media.fmts and names.get(str(pt), name) == name:
                    ringback = Ringback(self.media_host, pt, self.rtp_sockets)
                    try:
                        ringback.bind()
                    except OSError:
                        log.warning("no socket for ringback: the agent waits on silence")
                        return None
                    return ringback
        return None

    @staticmethod
    def _stop_ringback(live: LiveCall) -> None:
        if live.ringback is not None:
            ringback, live.ringback = live.ringback, None
            ringback.stop_now()

    def _headers(self, record: CallRecord) -> list[tuple[str, str]]:
        r = record
        return [
            ("X-Teleforge-Call-Ref", r.call_ref),
            ("X-Teleforge-Contact-Ref", r.contact_ref),
            ("X-Teleforge-Callee", r.callee),
            ("X-Teleforge-Outbound-Id", r.outbound_id),
        ]

    # -------------------------------------------------------------- store
    def _persist(self, live: LiveCall, fields: dict[str, Any]) -> None:
        record = live.record
        for name, value in fields.items():
            setattr(record, name, value)
            if name in _REACHED:
                live.reached[name] = value
        if self.on_answered is not None:
            # Metrics and the log line of an answer (a leg answers once).
            if "agent_answered_at" in fields:
                self.on_answered(record, Leg.AGENT)
            elif "callee_answered_at" in fields:
                self.on_answered(record, Leg.CALLEE)
        live.unwritten.update(fields)  # rides along with the next durable write

    async def _write_states(self) -> None:
        """The one writer of established dialogs, in the order they happened.

        A call's row is written where a crash must find it: at creation (the
        service), when a leg's dialog is established (here, so that a restart
        can BYE it) and at the end (:class:`~.ending.EndWriter`).  The states
        reached in between ride along with the next of those writes: they
        only serve other readers of the store (this node shows its own calls
        from memory), and the end carries them all anyway.  A dialog the
        store refuses is offered again while its call is live.

        What is queued when the writer comes round is written at once: one
        update per call (a call's later fields win), the calls' updates side
        by side, so that under load they share the store's commits instead
        of queueing one commit each behind the other."""
        while self._writes:
            batch: dict[str, tuple[LiveCall, dict[str, Any], list[tuple[str, dict[str, Any]]]]]
            batch = {}
            while self._writes:
                live, leg, state = self._writes.popleft()
                if live.end is not None:
                    continue  # the end is on its way: it carries the fields
                entry = batch.get(live.call_ref)
                if entry is None:
                    entry = batch[live.call_ref] = (live, {}, [])
                entry[1].update(live.unwritten)
                entry[1][DIALOG_COLUMNS[leg]] = state
                entry[2].append((leg, state))
                live.unwritten.clear()
            if not batch:
                return
            results = await asyncio.gather(
                *(self.store.update_call(ref, **update) for ref, (_, update, _) in batch.items()),
                return_exceptions=True,
            )
            for (ref, (live, update, legs)), result in zip(batch.items(), results, strict=True):
                if not isinstance(result, BaseException):
                    continue
                if not isinstance(result, Exception):
                    raise result  # cancelled: the controller is stopping
                log.warning(
                    "call %s: %s dialog not stored yet (%s)",
                    ref, " and ".join(leg for leg, _ in legs), result,
                )  # fmt: skip
                for name, value in update.items():
                    if name not in DIALOG_COLUMNS.values():
                        live.unwritten.setdefault(name, value)
                for leg, state in legs:
                    asyncio.get_running_loop().call_later(
                        DIALOG_RETRY, self._retry_write, live, leg, state
                    )

    def _retry_write(self, live: LiveCall, leg: str, state: dict[str, Any]) -> None:
        if live.end is None and live.call_ref in self.live:
            self._queue_write(live, leg, state)

    def _queue_write(self, live: LiveCall, leg: str, state: dict[str, Any]) -> None:
        self._writes.append((live, leg, state))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_states())

    def _persist_dialog(self, live: LiveCall, leg: Leg) -> None:
        """Keep the leg's established dialog, so that after a crash the next
        start can still BYE it (``Click2Dial.recover``)."""
        dialog = live.legs[leg].dialog
        if dialog is not None:
            self._queue_write(live, leg.value, dialog.snapshot())

    def _finish(self, live: LiveCall, action: f.Finish) -> None:
        record = live.record
        end = PendingEnd(
            record=record,
            outcome=action.outcome,
            ended_at=action.ended_at,
            fields=dict(live.reached),
            notifications=self.notifications_for(record, action.outcome, action.ended_at),
        )
        live.end = end
        self.ends.submit(end)

    async def _end_written(self, end: PendingEnd) -> None:
        if end.final is not None and self.on_call_ended is not None:
            await self.on_call_ended(end.final)

    def _done(self, live: LiveCall) -> None:
        self._drop(live)

    def _drop(self, live: LiveCall) -> None:
        """Forget the call: its flow has nothing more to do."""
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        self._stop_ringback(live)
        if live.relay is not None:
            self._spawn(live.relay.delete())
        for call in live.legs.values():
            call.on_event = None
            call.on_peer_request = None
            if not call.ended.done():
                call.bye_now()
        self.live.pop(live.call_ref, None)
        live.done.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
