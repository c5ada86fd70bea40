"""Call control: the two-leg click-to-dial state machine (SPEC §1, §4).

Theory of operation
-------------------
Each call is one asyncio task that drives two SIP legs through the user
agent and persists every step::

    agent_ringing ──agent answers──▶ agent_answered ──callee INVITE──▶ callee_ringing
         │                                                            │
         └─ no answer / busy / error / DELETE ─▶ ended ◀── fail ──────┤
                                                                      ▼
                                         ended ◀── either hangs up ── talking

* The agent leg is a late-offer INVITE (no SDP): the phone's 200 carries its
  offer, which becomes the callee leg's offer; the agent's ACK carries an
  inactive placeholder answer (RFC 3725's held first leg).  When the callee's
  early media (183 with SDP) or answer arrives, the agent is re-INVITEd with
  the callee's media, so the agent hears the far end's ringback and then the
  callee, and both phones send RTP to each other.
* The callee leg goes to the trunk with ``outbound_id`` in From and
  P-Asserted-Identity, and digest credentials when the trunk has some.
* Ring timers per leg, a maximum duration, and ``DELETE`` all end the call
  through the same path; whichever way it ends, :meth:`CallController._finish`
  writes the end and its CDR in one store transaction, exactly once.

Nothing here speaks HTTP or builds SIP messages: the API calls
:meth:`CallController.place` / :meth:`hangup`, the SIP side is the
:class:`~click2dial.sip.aio.UserAgent` API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..config import IntegratorConfig
from ..sip.aio import Answered, Call, CallEvent, Ended, Failed, Progress, UserAgent
from ..sip.auth import DigestClient
from ..sip.endpoint import uri_target
from ..sip.errors import SipError
from ..sip.headers import Address
from ..sip.sdp import SessionDescription, parse_sdp
from ..sip.uri import Uri
from ..store import CallRecord, Notification, Store
from .media import LegSession
from .outcome import Outcome
from .ringback import PCMA, PCMU, Ringback

log = logging.getLogger(__name__)

#: Who, besides the two phones, can end a call: an integrator's DELETE or
#: Click2Dial itself (shutdown, maximum duration).
HANGUP_SIDES = frozenset({"api", "system"})

AUTO_ANSWER_HEADERS: dict[str, Callable[[str], tuple[str, str]]] = {
    "answer-mode": lambda host: ("Answer-Mode", "Auto"),
    "call-info": lambda host: ("Call-Info", f"<sip:{host}>;answer-after=0"),
    "alert-info": lambda host: ("Alert-Info", f"<http://{host}/>;info=alert-autoanswer"),
}


@dataclass(frozen=True)
class Destination:
    uri: Uri
    credentials: DigestClient | None


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
    node_id: str = "node"

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
        contact = self.agent_contacts.get(agent)
        if contact is not None:
            return Destination(contact, None)
        if self.extensions_mode == "pbx" and self.pbx_uri is not None:
            uri = self.pbx_uri.copy()
            uri.user = agent
            return Destination(uri, None)
        return None  # not registered (the registrar arrives with the WebRTC work)


@dataclass
class LiveCall:
    record: CallRecord
    timeouts: tuple[float, float, float]  # agent ring, callee ring, max duration
    queue: asyncio.Queue[tuple[str, CallEvent | None]] = field(default_factory=asyncio.Queue)
    agent: Call | None = None
    callee: Call | None = None
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    ringback: Ringback | None = None


def new_call_ref() -> str:
    return str(uuid.uuid4())


class CallController:
    """Runs every live call of this node."""

    def __init__(
        self,
        *,
        settings: TelephonySettings,
        store: Store,
        ua: UserAgent,
        on_agent_connected: Callable[[CallRecord], Awaitable[None]] | None = None,
        on_call_ended: Callable[[CallRecord], Awaitable[None]] | None = None,
        notifications_for: Callable[[CallRecord, Outcome, float], list[Notification]] | None = None,
        clock: Callable[[], float] = time.time,
        media_host: str = "127.0.0.1",
    ) -> None:
        self.settings = settings
        self.store = store
        self.ua = ua
        self.on_agent_connected = on_agent_connected
        self.on_call_ended = on_call_ended
        self.notifications_for = notifications_for or (lambda record, outcome, now: [])
        self.clock = clock
        self.media_host = media_host
        self.live: dict[str, LiveCall] = {}

    # ------------------------------------------------------------- commands
    def start(self, record: CallRecord, integrator: IntegratorConfig) -> None:
        """Run a freshly stored call (state ``agent_ringing``)."""
        timeouts = (
            float(integrator.agent_ring_timeout),
            float(integrator.callee_ring_timeout),
            float(integrator.max_call_duration),
        )
        live = LiveCall(record, timeouts)
        self.live[record.call_ref] = live
        live.task = asyncio.get_running_loop().create_task(self._run(live, integrator))

    async def hangup(self, call_ref: str, timeout: float = 10.0, *, side: str = "api") -> bool:
        """End a live call of this node (cancel or BYE); False if not live here.
        ``side`` is who asked: ``"api"`` (an integrator) or ``"system"``."""
        live = self.live.get(call_ref)
        if live is None:
            return False
        live.queue.put_nowait((side, None))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.done.wait(), timeout)
        return True

    async def close(self) -> None:
        """Hang up everything (orderly shutdown)."""
        await asyncio.gather(*(self.hangup(ref, side="system") for ref in list(self.live)))

    # ------------------------------------------------------------ the task
    async def _run(self, live: LiveCall, integrator: IntegratorConfig) -> None:
        record = live.record
        try:
            outcome = await self._drive(live, integrator)
        except asyncio.CancelledError:
            outcome = Outcome.failure("call task cancelled")
            await self._drop_legs(live)
            await self._finish(live, outcome)
            raise
        except Exception:
            log.exception("call %s failed", record.call_ref)
            outcome = Outcome.failure("internal error")
            await self._drop_legs(live)
        await self._finish(live, outcome)

    async def _open_ringback(self, offer: SessionDescription) -> Ringback | None:
        """A ringback player for the agent's first audio stream, if it takes
        G.711 (PCMU preferred); None otherwise (the agent then waits on an
        inactive stream)."""
        for media in offer.media[:1]:
            if media.media != "audio" or media.port == 0 or media.proto != "RTP/AVP":
                return None
            names = {fmt: enc.split("/")[0].upper() for fmt, enc in media.rtpmap().items()}
            for pt, name in ((PCMU, "PCMU"), (PCMA, "PCMA")):
                if str(pt) in media.fmts and names.get(str(pt), name) == name:
                    ringback = Ringback(self.media_host, pt)
                    await ringback.open()
                    return ringback
        return None

    async def _stop_ringback(self, live: LiveCall) -> None:
        if live.ringback is not None:
            ringback, live.ringback = live.ringback, None
            await ringback.stop()

    async def _finish(self, live: LiveCall, outcome: Outcome) -> None:
        await self._stop_ringback(live)
        record = live.record
        ref = record.call_ref
        ended_at = self.clock()
        try:
            final = await self.store.finish_call(
                ref,
                ended_at=ended_at,
                end_reason=outcome.end_reason,
                end_code=outcome.end_code,
                sip_status=outcome.sip_status,
                sip_reason=outcome.sip_reason,
                hangup_side=outcome.hangup_side,
                notifications=self.notifications_for(record, outcome, ended_at),
            )
            if final is not None and self.on_call_ended is not None:
                await self.on_call_ended(final)
        except Exception:
            log.exception("could not store the end of call %s", ref)
        finally:
            for pump in live.pumps:
                pump.cancel()
            self.live.pop(ref, None)
            live.done.set()

    async def _drop_legs(self, live: LiveCall) -> None:
        for leg in (live.agent, live.callee):
            if leg is not None and not leg.ended.done():
                with contextlib.suppress(Exception):
                    await leg.bye()

    def _pump(self, live: LiveCall, name: str, call: Call) -> None:
        """Forward one leg's events into the call's single queue, tagged."""

        async def forward() -> None:
            while True:
                event = await call.events.get()
                live.queue.put_nowait((name, event))
                if isinstance(event, Ended):
                    return

        live.pumps.append(asyncio.get_running_loop().create_task(forward()))

    async def _next(self, live: LiveCall, deadline: float) -> tuple[str, CallEvent | None]:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return ("timeout", None)
        try:
            return await asyncio.wait_for(live.queue.get(), remaining)
        except TimeoutError:
            return ("timeout", None)

    async def _update(self, live: LiveCall, **fields: object) -> None:
        record = live.record
        for name, value in fields.items():
            setattr(record, name, value)
        await self.store.update_call(record.call_ref, **fields)

    def _headers(self, record: CallRecord) -> list[tuple[str, str]]:
        r = record
        return [
            ("X-Teleforge-Call-Ref", r.call_ref),
            ("X-Teleforge-Contact-Ref", r.contact_ref),
            ("X-Teleforge-Callee", r.callee),
            ("X-Teleforge-Outbound-Id", r.outbound_id),
        ]

    async def _drive(self, live: LiveCall, integrator: IntegratorConfig) -> Outcome:
        s = self.settings
        record = live.record
        loop = asyncio.get_running_loop()
        agent_ring, callee_ring, max_duration = live.timeouts
        agent_number: str = record.agent

        # 1. Ring the agent.
        destination = s.agent_destination(agent_number)
        if destination is None:
            return Outcome.from_sip(480, "Agent not registered", "agent")
        headers = self._headers(record)
        style = s.agent_auto_answer.get(agent_number, "none")
        if style in AUTO_ANSWER_HEADERS:
            headers.append(AUTO_ANSWER_HEADERS[style](s.public_host))
        to_agent = LegSession(s.public_host)
        to_callee = LegSession(s.public_host)
        # An extension's phone shows the number it is about to be connected
        # to; an agent's mobile, reached through the trunk, gets the caller ID
        # the carrier expects, like the callee.
        external_agent = len(agent_number) > 4
        shown = record.outbound_id if external_agent else record.callee
        if external_agent:
            headers.append(("P-Asserted-Identity", f"<sip:{shown}@{s.public_host}>"))
        agent = self.ua.invite(
            destination.uri,
            from_=Address(Uri("sip", s.public_host, shown)),
            to=Address(destination.uri.copy()),
            headers=headers,
            target=uri_target(destination.uri),
            credentials=destination.credentials,
        )
        live.agent = agent
        self._pump(live, "agent", agent)
        deadline = loop.time() + agent_ring
        alerted = False
        answered: Answered | None = None
        while answered is None:
            source, event = await self._next(live, deadline)
            if source in HANGUP_SIDES:
                agent.cancel()
                return Outcome.hangup(source)
            if source == "timeout":
                agent.cancel()
                return Outcome.no_answer("agent", alerted)
            if isinstance(event, Progress) and event.status in (180, 183):
                if not alerted:
                    alerted = True
                    await self._update(live, agent_leg="ringing")
            elif isinstance(event, Failed):
                return Outcome.from_sip(event.status, event.reason, "agent")
            elif isinstance(event, Ended):
                return Outcome.failure("agent leg ended before answer")
            elif isinstance(event, Answered):
                answered = event
        if not answered.sdp:
            agent.ack()
            await self._drop_legs(live)
            return Outcome.from_sip(488, "Agent sent no SDP offer", "agent")
        agent_offer = answered.sdp
        try:
            offer = parse_sdp(agent_offer)
            live.ringback = await self._open_ringback(offer)
            if live.ringback is not None:
                agent.ack(to_agent.ringback_answer(offer, live.ringback))
                live.ringback.play(*offer.connection(0))
            else:
                agent.ack(to_agent.placeholder_answer(agent_offer))
            callee_offer = to_callee.relay(agent_offer)
        except SipError:
            await self._drop_legs(live)
            return Outcome.from_sip(488, "Agent SDP offer unusable", "agent")
        await self._update(live, state="agent_answered", agent_answered_at=self.clock(),
                           agent_leg="answered")  # fmt: skip
        if self.on_agent_connected is not None:
            await self.on_agent_connected(record)

        # 2. Dial the callee: through the trunk, or another extension for an
        # internal call.
        trunk = (
            s.agent_destination(record.callee)
            if record.call_type == "internal"
            else s.trunk_destination(record.callee)
        )
        if trunk is None:
            await agent.bye()
            return Outcome.from_sip(480, "Callee extension not reachable", "callee")
        caller = Address(Uri("sip", s.public_host, record.outbound_id))
        callee = self.ua.invite(
            trunk.uri,
            sdp=callee_offer,
            from_=caller,
            to=Address(trunk.uri.copy()),
            headers=[("P-Asserted-Identity", f"<{caller.uri}>"), *self._headers(record)],
            target=uri_target(trunk.uri),
            credentials=trunk.credentials,
        )
        live.callee = callee
        self._pump(live, "callee", callee)
        await self._update(live, state="callee_ringing", callee_dialed_at=self.clock(),
                           callee_leg="dialing")  # fmt: skip
        deadline = loop.time() + callee_ring
        callee_alerted = False
        media = _MediaSync(agent, to_agent, lambda: self._stop_ringback(live))
        try:
            while True:
                source, event = await self._next(live, deadline)
                if source in HANGUP_SIDES or source == "timeout":
                    callee.cancel()
                    await agent.bye()
                    if source in HANGUP_SIDES:
                        return Outcome.hangup(source)
                    return Outcome.no_answer("callee", callee_alerted)
                if source == "agent":
                    if isinstance(event, Ended):
                        callee.cancel()
                        return Outcome.hangup("agent")
                    continue
                if isinstance(event, Progress):
                    if event.status in (180, 183) and not callee_alerted:
                        callee_alerted = True
                        await self._update(live, callee_leg="ringing")
                    if event.sdp:
                        media.want(event.sdp)
                elif isinstance(event, Failed):
                    await agent.bye()
                    return Outcome.from_sip(event.status, event.reason, "callee")
                elif isinstance(event, Ended):
                    await agent.bye()
                    return Outcome.failure("callee leg ended before answer")
                elif isinstance(event, Answered):
                    if event.sdp:
                        media.want(event.sdp)
                    break

            # 3. Talking.
            await self._update(live, state="talking", callee_answered_at=self.clock(),
                               callee_leg="answered")  # fmt: skip
            deadline = loop.time() + max_duration
            while True:
                source, event = await self._next(live, deadline)
                if source == "agent" and isinstance(event, Ended):
                    await callee.bye()
                    return Outcome.hangup("agent")
                if source == "callee" and isinstance(event, Ended):
                    await agent.bye()
                    return Outcome.hangup("callee")
                if source in HANGUP_SIDES or source == "timeout":
                    # Past max_call_duration Click2Dial itself hangs up.
                    await asyncio.gather(agent.bye(), callee.bye())
                    return Outcome.hangup("system" if source == "timeout" else source)
        finally:
            await media.close()


class _MediaSync:
    """Keeps the agent's session pointed at the callee's latest media with
    re-INVITEs, one at a time, skipping intermediate versions; the local
    ringback stops as the first one goes out."""

    def __init__(
        self, agent: Call, session: LegSession, before_first: Callable[[], Awaitable[None]]
    ) -> None:
        self.agent = agent
        self.session = session
        self.before_first = before_first
        self.wanted: bytes | None = None
        self.applied: bytes | None = None
        self.task: asyncio.Task[None] | None = None

    def want(self, sdp: bytes) -> None:
        self.wanted = sdp
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._apply())

    async def _apply(self) -> None:
        while self.wanted is not None and self.wanted != self.applied:
            target = self.wanted
            await self.before_first()
            try:
                body = self.session.relay(target)
                status, _ = await self.agent.reinvite(body)
            except SipError as exc:
                log.warning("could not update the agent's media: %s", exc)
                return
            if status >= 300:
                log.warning("agent refused the media update with %d", status)
            self.applied = target

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
