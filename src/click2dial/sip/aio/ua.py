"""The asyncio user-agent API the call layer uses.

A :class:`UserAgent` runs one sans-IO :class:`~click2dial.sip.endpoint.Endpoint`
on a :class:`~.transport.SipTransport`.  Calls are :class:`Call` objects:

* outgoing: ``call = ua.invite(uri, sdp=...)`` then ``await call.next_event()``
  yields :class:`Progress` (ringing, early media), :class:`Answered`,
  :class:`Failed` (final error, time-out, transport failure) and finally
  :class:`Ended`; ``call.cancel()``, ``call.ack(sdp)`` (late offer),
  ``await call.reinvite(sdp)``, ``await call.update(sdp)``, ``await call.bye()``;
* incoming: the ``on_invite`` coroutine gets a :class:`Call` and answers it
  with ``call.ring()``, ``call.answer(sdp)`` or ``call.reject(status)``;
* after a restart: ``await ua.bye_restored(state)`` hangs up a dialog saved
  with ``Dialog.snapshot()`` before it.

Requests arriving inside a call (re-INVITE, UPDATE, INFO, OPTIONS) go to the
call's ``on_request`` coroutine when one is set; otherwise they are answered
here: re-INVITE and UPDATE with the call's current local SDP (an UPDATE
without SDP, a session refresh, with none), others 200.
BYE and CANCEL are answered by the endpoint and show up as :class:`Ended`;
so are PRACK, session refreshes and a session interval below ``min_se``
(422).  A session that expires without the peer's refresh ends with
``Ended("local", "session-expired")``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import events as ev
from ..auth import DigestClient
from ..dialog import Dialog, DialogState
from ..endpoint import ClientRequest, Endpoint, EndpointConfig, OutgoingInvite
from ..errors import SipError
from ..headers import Address
from ..message import Request, Response
from ..transaction import ServerTransaction, Target, TimerConfig
from ..uri import Uri, parse_uri
from .transport import Listen, SipTransport

log = logging.getLogger(__name__)
_T = TypeVar("_T")
#: CSeq numbers are below 2**31 (RFC 3261 §8.1.1.5).
MAX_CSEQ = 2**31


@dataclass(frozen=True, slots=True)
class Progress:
    status: int
    reason: str
    sdp: bytes | None
    response: Response


@dataclass(frozen=True, slots=True)
class Answered:
    sdp: bytes | None
    response: Response


@dataclass(frozen=True, slots=True)
class Failed:
    status: int
    reason: str
    response: Response | None

    @property
    def timed_out(self) -> bool:
        return self.status == 408 and self.response is None


@dataclass(frozen=True, slots=True)
class Acked:
    sdp: bytes | None
    request: Request


@dataclass(frozen=True, slots=True)
class Ended:
    by: str  # "local" | "remote"
    reason: str  # "bye", "cancelled", "no-ack", "failed", "session-expired" (by "local")
    request: Request | None = None


CallEvent = Progress | Answered | Failed | Acked | Ended
RequestHandler = Callable[["Call", Request, ServerTransaction], Awaitable[None]]


class Call:
    """One INVITE session, outgoing or incoming."""

    def __init__(self, ua: UserAgent, direction: str) -> None:
        self.ua = ua
        self.direction = direction  # "out" | "in"
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.dialog: Dialog | None = None
        self.invite: OutgoingInvite | None = None
        self.server_tx: ServerTransaction | None = None
        self.request: Request | None = None
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        self.ended: asyncio.Future[Ended] = ua.loop.create_future()
        self.on_request: RequestHandler | None = None
        # A driver that wants the call's events as they happen, in order and
        # with no task in between, sets these two instead of reading
        # ``events`` and setting ``on_request``: ``on_event`` gets every
        # event, ``on_peer_request`` every in-dialog request, which it must
        # answer (now or later) with :meth:`UserAgent.respond`.
        self.on_event: Callable[[CallEvent], None] | None = None
        self.on_peer_request: Callable[[Request, ServerTransaction], None] | None = None
        #: Set by an ``on_invite`` handler that handed the incoming call to a
        #: driver which answers it later: its return is then not an omission.
        self.handed_off = False

    # ------------------------------------------------------------- events
    def _push(self, event: CallEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        else:
            self.events.put_nowait(event)
        if isinstance(event, Ended) and not self.ended.done():
            self.ended.set_result(event)
            self._release()

    def _release(self) -> None:
        """The call is over.  The endpoint keeps its INVITE and the last
        in-dialog transactions for up to 64*T1 (RFC 6026 timers M and J,
        absorbing retransmissions); from now on they no longer lead to this
        call, nor to what the application hung on it.  Kept reachable, a
        whole call's objects lived 32 s past its end, and at 150 calls/s the
        garbage collector walked half a million of them again and again,
        stopping the event loop for up to half a second."""
        if self.invite is not None:
            if self.invite.user_data is self:
                self.invite.user_data = None
            self.invite.let_go()
        if self.server_tx is not None and self.server_tx.user_data is self:
            self.server_tx.user_data = None
        if self.dialog is not None and self.dialog.user_data is self:
            self.dialog.user_data = None
        self.on_event = None
        self.on_peer_request = None
        self.on_request = None

    async def next_event(self, timeout: float | None = None) -> CallEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def wait_for(self, kind: type[CallEvent], timeout: float | None = None) -> CallEvent:
        """Skip events until one of ``kind`` (or a terminal one) arrives."""
        while True:
            event = await self.next_event(timeout)
            if isinstance(event, kind | Failed | Ended):
                return event

    @property
    def established(self) -> bool:
        return self.dialog is not None and self.dialog.state is DialogState.CONFIRMED

    # ------------------------------------------------------ outgoing call
    def cancel(self) -> None:
        if self.invite is not None:
            self.ua._run(lambda e: e.cancel(self.invite))  # type: ignore[arg-type]

    def ack(self, sdp: bytes | None = None, cseq: int | None = None) -> None:
        """ACK a late-offer 2xx; ``sdp`` is the answer to the offer in it.
        ``cseq`` names the re-INVITE whose 2xx this is (default: the last)."""
        if self.dialog is None:
            raise SipError("no answered dialog to ACK")
        if sdp is not None:
            self.local_sdp = sdp
        dialog = self.dialog
        self.ua._run(lambda e: e.ack(dialog, sdp or b"", cseq=cseq))

    def prack(self, sdp: bytes) -> None:
        """Answer, in the PRACK, the offer a reliable provisional response
        brought to a late-offer INVITE (its :class:`Progress` has the SDP and
        ``call.invite.offer_prack`` is set); other PRACKs are automatic."""
        invite = self.invite
        if invite is None:
            raise SipError("not an outgoing call")
        self.local_sdp = sdp
        self.ua._run(lambda e: e.prack(invite, sdp))

    def send(
        self,
        method: str,
        body: bytes = b"",
        on_done: Callable[[int, Response | None], None] | None = None,
        content_type: str = "application/sdp",
    ) -> None:
        """Send an in-dialog request now; ``on_done(status, response)`` gets
        its final outcome (408 for a time-out), called from the event
        dispatch itself, so that it is ordered with the call's events."""
        if self.dialog is None:
            raise SipError("the call has no dialog")
        dialog = self.dialog
        if method in ("INVITE", "UPDATE") and body:
            self.local_sdp = body
        handle: ClientRequest = self.ua._run(
            lambda e: e.request_in_dialog(dialog, method, body=body, content_type=content_type)
        )
        handle.user_data = on_done

    def bye_now(self) -> None:
        """Hang up at once (BYE, CANCEL or reject as :meth:`bye`), without
        waiting for the BYE's answer."""
        if self.ended.done():
            return
        if self.direction == "out" and not self.established:
            self.cancel()
            return
        if self.direction == "in" and not self.established:
            self.reject(480)
            return
        dialog = self.dialog
        assert dialog is not None
        self.ua._run(lambda e: e.bye(dialog))
        self._push(Ended("local", "bye"))

    async def _in_dialog(
        self, method: str, body: bytes = b"", content_type: str = "application/sdp"
    ) -> tuple[int, Response | None]:
        if self.dialog is None:
            raise SipError("the call has no dialog")
        dialog = self.dialog
        handle: ClientRequest = self.ua._run(
            lambda e: e.request_in_dialog(dialog, method, body=body, content_type=content_type)
        )
        return await self.ua._await_request(handle)

    async def reinvite(self, sdp: bytes | None = None) -> tuple[int, Response | None]:
        """Send a re-INVITE (with an offer, or without for a late offer that
        the caller must then :meth:`ack`)."""
        if sdp is not None:
            self.local_sdp = sdp
        status, response = await self._in_dialog("INVITE", sdp or b"")
        if response is not None and 200 <= status < 300 and response.sdp:
            self.remote_sdp = response.sdp
        return status, response

    async def update(self, sdp: bytes) -> tuple[int, Response | None]:
        self.local_sdp = sdp
        status, response = await self._in_dialog("UPDATE", sdp)
        if response is not None and response.sdp:
            self.remote_sdp = response.sdp
        return status, response

    async def info(self, body: bytes, content_type: str) -> tuple[int, Response | None]:
        return await self._in_dialog("INFO", body, content_type)

    async def options(self) -> tuple[int, Response | None]:
        return await self._in_dialog("OPTIONS")

    async def bye(self) -> int:
        """Hang up: BYE when answered, CANCEL while ringing, reject when ours
        to answer.  Returns the status of the BYE (0 when none was sent)."""
        if self.ended.done():
            return 0
        if self.direction == "out" and not self.established:
            self.cancel()
            return 0
        if self.direction == "in" and not self.established:
            self.reject(480)
            return 0
        dialog = self.dialog
        assert dialog is not None
        handle = self.ua._run(lambda e: e.bye(dialog))
        self._push(Ended("local", "bye"))
        if handle is None:
            return 0
        status, _ = await self.ua._await_request(handle)
        return status

    # ------------------------------------------------------ incoming call
    def _respond(
        self,
        status: int,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        tx = self.server_tx
        if tx is None:
            raise SipError("not an incoming call")
        self.ua._run(lambda e: e.respond(tx, status, reason, body=body, headers=headers))
        if 100 < status < 300 and self.dialog is None and self.request is not None:
            dialog = self.ua.endpoint.dialogs.get(
                (self.request.call_id, tx.to_tag or "", self.request.from_.tag or "")
            )
            if dialog is not None:
                self.dialog = dialog
                dialog.user_data = self

    def ring(self, status: int = 180, sdp: bytes | None = None) -> None:
        self._respond(status, sdp or b"")

    def answer(
        self, sdp: bytes | None = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """200 OK.  Without an offer in the INVITE, ``sdp`` is our offer and
        the answer arrives in the ACK (:class:`Acked`)."""
        if sdp is not None:
            self.local_sdp = sdp
        self._respond(200, self.local_sdp or b"", headers)

    def reject(
        self,
        status: int = 486,
        headers: list[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        self._respond(status, b"", headers, reason)
        self._push(Ended("local", "failed"))


@dataclass
class UserAgentConfig:
    listen: list[Listen]
    public_host: str | None = None
    user_agent: str = "Click2Dial"
    contact_user: str = "click2dial"
    timers: TimerConfig = field(default_factory=TimerConfig)
    max_connections: int = 4096
    idle_timeout: float = 600.0
    #: Limits (issue 11, see transport.py and pike.py): inbound TCP
    #: connections per source (0: no cap), the idle timeout of connections
    #: whose host has no dialog (None: ``idle_timeout``), out-of-dialog
    #: requests a second per source (0: no limit) and their burst, and the
    #: hosts none of these apply to (the trunk).
    max_connections_per_source: int = 0
    idle_timeout_without_dialog: float | None = None
    request_rate: float = 0.0
    request_burst: int = 50
    exempt_hosts: frozenset[str] = frozenset()
    #: Bytes asked for each UDP socket's receive buffer (0: the system's).
    udp_receive_buffer: int = 0
    #: RFC 4028 session timers: the interval we ask for (0: off) and the
    #: smallest we accept.
    session_expires: int = 1800
    min_se: int = 90
    #: PEM files of the ``tls``/``wss`` listeners, and the CA certificates
    #: outgoing TLS trusts instead of the system's (None: the system's).
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_ca_file: str | None = None


class UserAgent:
    """An asyncio SIP user agent.  Use as ``async with UserAgent(...) as ua``."""

    def __init__(
        self,
        config: UserAgentConfig,
        *,
        on_invite: Callable[[Call], Awaitable[None]] | None = None,
        on_request: Callable[[Request, ServerTransaction], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.on_invite = on_invite
        self.on_request = on_request
        self.loop = asyncio.get_running_loop()
        self._transport: SipTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls: set[Call] = set()

    async def __aenter__(self) -> UserAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        addresses: dict[str, tuple[str, int]] = {}

        def factory(clock: Callable[[], float]) -> Endpoint:
            return Endpoint(
                EndpointConfig(
                    addresses,
                    contact_user=self.config.contact_user,
                    user_agent=self.config.user_agent,
                    timers=self.config.timers,
                    session_expires=self.config.session_expires,
                    min_se=self.config.min_se,
                    request_rate=self.config.request_rate,
                    request_burst=self.config.request_burst,
                    rate_exempt=self.config.exempt_hosts,
                ),
                clock,
            )

        self._transport = SipTransport(
            factory,
            self.config.listen,
            self._on_event,
            max_connections=self.config.max_connections,
            idle_timeout=self.config.idle_timeout,
            max_per_source=self.config.max_connections_per_source,
            idle_timeout_without_dialog=self.config.idle_timeout_without_dialog,
            exempt_hosts=self.config.exempt_hosts,
            udp_receive_buffer=self.config.udp_receive_buffer,
            tls_certificate=self.config.tls_certificate,
            tls_private_key=self.config.tls_private_key,
            tls_ca_file=self.config.tls_ca_file,
        )
        try:
            await self._transport.start()
        except BaseException:
            # A listener that cannot start (ListenerError): close the others.
            started, self._transport = self._transport, None
            await started.close()
            raise
        # Advertise the bound ports (port 0 in the configuration means "any").
        for transport, (host, port) in self._transport.bound.items():
            addresses[transport] = (self.config.public_host or host, port)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            await self._transport.close()

    @property
    def endpoint(self) -> Endpoint:
        assert self._transport is not None, "UserAgent not started"
        return self._transport.endpoint

    def address(self, transport: str = "udp") -> tuple[str, int]:
        assert self._transport is not None
        return self._transport.bound[transport]

    def listening(self) -> dict[str, bool]:
        """Per transport this agent was asked to listen on: whether its
        socket is bound and open now (readiness)."""
        transport = self._transport
        if transport is None:
            return dict.fromkeys((item.transport for item in self.config.listen), False)
        return transport.listening()

    def _local_host(self, transport: str) -> str:
        """Our host for a From URI; any bound one for a transport we do not
        serve (the request then fails with 503 instead of raising here)."""
        assert self._transport is not None
        bound = self._transport.bound
        return (bound.get(transport) or bound.get("udp") or next(iter(bound.values())))[0]

    def _run(self, command: Callable[[Endpoint], _T]) -> _T:
        """Run a core command, then flush what it queued."""
        assert self._transport is not None
        result = command(self._transport.endpoint)
        self._transport.flush()
        return result

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_request(self, handle: ClientRequest) -> tuple[int, Response | None]:
        future: asyncio.Future[tuple[int, Response | None]] = self.loop.create_future()
        handle.user_data = future
        return await future

    # --------------------------------------------------------------- API
    def invite(
        self,
        uri: Uri | str,
        *,
        sdp: bytes | None = None,
        from_: Address | str | None = None,
        to: Address | str | None = None,
        headers: list[tuple[str, str]] | None = None,
        target: Target | None = None,
        credentials: DigestClient | None = None,
        nat: bool = False,
    ) -> Call:
        """Start an outgoing call.  Without ``sdp`` the INVITE is a late
        offer: answer the 2xx's SDP with :meth:`Call.ack`.  ``nat``: the
        peer may sit behind NAT (an agent's phone): the ACK and in-dialog
        requests go to where its responses come from, not to its Contact."""
        if isinstance(uri, str):
            uri = parse_uri(uri)
        to_addr = to if isinstance(to, Address) else Address(parse_uri(to) if to else uri.copy())
        if isinstance(from_, Address):
            from_addr = from_
        else:
            host = self._local_host(target.transport if target else uri.transport or "udp")
            from_uri = parse_uri(from_) if from_ else Uri("sip", host, self.config.contact_user)
            from_addr = Address(from_uri)
        call = Call(self, "out")
        call.local_sdp = sdp
        invite = self._run(
            lambda e: e.invite(
                uri,
                from_=from_addr,
                to=to_addr,
                body=sdp or b"",
                headers=headers,
                target=target,
                credentials=credentials,
                nat=nat,
            )
        )
        invite.user_data = call
        call.invite = invite
        call.request = invite.request
        self.calls.add(call)
        call.ended.add_done_callback(lambda _: self.calls.discard(call))
        return call

    def invite_fork(
        self,
        branches: Sequence[tuple[Uri, Target | None, bool]],
        *,
        sdp: bytes | None = None,
        from_: Address | str | None = None,
        to: Address | None = None,
        headers: list[tuple[str, str]] | None = None,
        credentials: DigestClient | None = None,
    ) -> Call:
        """Ring several ``(uri, target, nat)`` contacts at once, as one
        :class:`Call` (see :mod:`.fork`): the first to answer wins, the
        others get CANCEL."""
        from .fork import invite_fork

        return invite_fork(
            self, branches, sdp=sdp, from_=from_, to=to, headers=headers, credentials=credentials
        )

    async def request(
        self,
        method: str,
        uri: Uri | str,
        *,
        from_: Address | None = None,
        to: Address | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        target: Target | None = None,
        credentials: DigestClient | None = None,
    ) -> tuple[int, Response | None]:
        """Send a request outside any dialog and wait for its final answer."""
        if isinstance(uri, str):
            uri = parse_uri(uri)
        host = self._local_host(target.transport if target else uri.transport or "udp")
        from_addr = from_ or Address(Uri("sip", host, self.config.contact_user))
        handle = self._run(
            lambda e: e.request(
                method,
                uri,
                from_=from_addr,
                to=to or Address(uri.copy()),
                body=body,
                content_type=content_type,
                headers=headers,
                target=target,
                credentials=credentials,
            )
        )
        return await self._await_request(handle)

    async def bye_restored(self, state: dict[str, Any], *, cseq_skip: int = 1) -> int:
        """Hang up a dialog kept by :meth:`Dialog.snapshot` before a restart:
        BYE in it, and the BYE's final status (408 when nobody answers).

        The BYE's CSeq is the saved local CSeq plus ``cseq_skip``: requests
        sent in the dialog after the snapshot used numbers above the saved
        one, and a peer refuses a CSeq that is not above the last it saw
        (RFC 3261 §12.2.2, with 500).  Raises what :meth:`Dialog.restore`
        raises for a state that is not a dialog.
        """
        dialog = Dialog.restore(state)
        dialog.local_cseq = min(dialog.local_cseq + max(cseq_skip, 1), MAX_CSEQ - 1)
        dialog = self.endpoint.adopt(dialog)
        handle = self._run(lambda e: e.bye(dialog))
        if handle is None:
            return 0  # a dialog of that id is known here and has ended already
        status, _ = await self._await_request(handle)
        return status

    def respond(
        self,
        tx: ServerTransaction,
        status: int,
        *,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self._run(
            lambda e: e.respond(tx, status, body=body, content_type=content_type, headers=headers)
        )

    # ------------------------------------------------------------ events
    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.InviteProgress):
            call = event.invite.user_data
            if isinstance(call, Call):
                response = event.response
                if response.sdp:
                    call.remote_sdp = response.sdp
                call._push(Progress(response.status, response.reason, response.sdp, response))
        elif isinstance(event, ev.InviteAnswered):
            call = event.invite.user_data
            if isinstance(call, Call):
                call.dialog = event.dialog
                event.dialog.user_data = call
                if event.response.sdp:
                    call.remote_sdp = event.response.sdp
                call._push(Answered(event.response.sdp, event.response))
        elif isinstance(event, ev.InviteFailed):
            call = event.invite.user_data
            if isinstance(call, Call):
                call._push(Failed(event.status, event.reason, event.response))
                call._push(Ended("remote", "failed"))
        elif isinstance(event, ev.RequestCompleted):
            future = event.request.user_data
            # Told once: the request's transaction may outlive the call (timer K).
            event.request.user_data = None
            if isinstance(future, asyncio.Future):
                if not future.done():
                    future.set_result((event.status, event.response))
            elif callable(future):
                future(event.status, event.response)
        elif isinstance(event, ev.DialogEnded):
            call = event.dialog.user_data
            if isinstance(call, Call):
                call._push(Ended("remote" if event.reason == "bye" else "local", event.reason,
                                 event.request))  # fmt: skip
        elif isinstance(event, ev.AckReceived):
            call = event.dialog.user_data
            if isinstance(call, Call):
                if event.request.sdp:
                    call.remote_sdp = event.request.sdp
                call._push(Acked(event.request.sdp, event.request))
        elif isinstance(event, ev.IncomingCancelled):
            call = event.transaction.user_data
            if isinstance(call, Call):
                call._push(Ended("remote", "cancelled", event.request))
        elif isinstance(event, ev.IncomingRequest):
            self._incoming(event)

    def _incoming(self, event: ev.IncomingRequest) -> None:
        request, tx, dialog = event.request, event.transaction, event.dialog
        if dialog is not None:
            call = dialog.user_data
            if isinstance(call, Call):
                if call.on_peer_request is not None:
                    call.on_peer_request(request, tx)
                elif call.on_request is not None:
                    self._spawn(self._guard(call.on_request(call, request, tx), tx))
                else:
                    self._default_in_dialog(call, request, tx)
                return
            self.respond(tx, 481)
            return
        if request.method == "INVITE":
            call = Call(self, "in")
            call.server_tx = tx
            call.request = request
            call.remote_sdp = request.sdp
            tx.user_data = call
            self.calls.add(call)
            call.ended.add_done_callback(lambda _: self.calls.discard(call))
            if self.on_invite is None:
                self.respond(tx, 480)
                call._push(Ended("local", "failed"))
            else:
                self._spawn(self._guard(self.on_invite(call), tx))
            return
        if self.on_request is not None:
            self._spawn(self._guard(self.on_request(request, tx), tx))
        elif request.method == "OPTIONS":
            self.respond(tx, 200, headers=[("Accept", "application/sdp")])
        else:
            self.respond(tx, 405 if request.method in ("MESSAGE", "SUBSCRIBE") else 501)

    def _default_in_dialog(self, call: Call, request: Request, tx: ServerTransaction) -> None:
        if request.method == "UPDATE" and not request.sdp:
            self.respond(tx, 200)  # a session refresh: no offer, so no answer
        elif request.method in ("INVITE", "UPDATE"):
            if request.sdp:
                call.remote_sdp = request.sdp
            self.respond(tx, 200, body=call.local_sdp or b"")
        else:
            self.respond(tx, 200)

    async def _guard(self, coro: Awaitable[None], tx: ServerTransaction) -> None:
        """Run a handler; if it fails or returns without answering, answer
        500 so that no transaction is left hanging.  An INVITE handler may
        return after a provisional response and answer later."""
        try:
            await coro
        except Exception:
            log.exception("SIP request handler failed")
        if isinstance(tx.user_data, Call) and tx.user_data.handed_off:
            return
        last = tx.last_status
        if last is None or last == 100 or (last < 200 and tx.request.method != "INVITE"):
            self.respond(tx, 500)
