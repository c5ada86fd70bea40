"""The sans-IO SIP endpoint: transactions and dialogs of one user agent.

Theory of operation
-------------------
The adapter feeds the endpoint bytes (:meth:`Endpoint.receive`) and clock
ticks (:meth:`Endpoint.handle_timer`); the application gives it commands
(:meth:`invite`, :meth:`ack`, :meth:`cancel`, :meth:`request`,
:meth:`respond`, :meth:`bye`, :meth:`adopt` for a dialog restored after a
restart...).  Everything the endpoint wants done comes
out of two queues the adapter drains after each call: :meth:`pop_outgoing`
(bytes and where to send them) and :meth:`pop_events` (what happened, see
:mod:`.events`).  :meth:`next_timer` says when to tick next.

The endpoint is the transaction user of RFC 3261: it matches messages to
transactions (§17.1.3, §17.2.3), creates and ends dialogs (§12), ACKs 2xx
responses (§13.2.2.4) and re-ACKs their retransmissions, retransmits its own
2xx until ACKed (§13.3.1.4), CANCELs (§9.1, including the race with a 200),
answers 401/407 challenges with digest credentials (§22.2), detects re-INVITE
glare and retries after a 491 (§14.1), and answers the requests it can answer
by itself: CANCEL, ACK, BYE, PRACK, and in-dialog requests without a dialog
(481).

It also owns two extensions the application never sees at work: reliable
provisional responses (RFC 3262, UAC side: PRACK, RSeq order, the 421 retry)
and session timers (RFC 4028, both roles: Session-Expires negotiation, the
422 retry and answer, refreshes by UPDATE or re-INVITE, BYE on expiry).
Their requests and answers are not reported; only their outcome is (the
dialog's ``session_interval``, or ``DialogEnded(..., "session-expired")``).

Protocol hygiene the endpoint applies to every request, before the
application sees it: a final response to a request outside a dialog carries a
To tag (a 100 Trying none); a ``Require`` naming an option tag outside
:data:`SUPPORTED` gets 420 with ``Unsupported`` (§8.2.2.3; never for ACK or
CANCEL); BYE, UPDATE, PRACK and INFO without a To tag, and any request whose
To tag names no dialog we know, get 481; every 2xx to OPTIONS gets ``Allow``,
``Supported`` and ``Accept`` unless the application set them.  UDP datagrams
made only of CRLFs are keep-alives (RFC 5626 §4.4.1 style): dropped silently,
not parse errors.  Over TCP the adapter's framer answers the CRLFCRLF ping.

NAT: where in-dialog requests go
--------------------------------
A phone behind NAT advertises a Contact nobody can reach (a private address,
or a port nothing listens on) while its packets come from another
address:port.  A dialog therefore has a ``flow``: the transport address its
peer's messages came from.  When a dialog has a flow and no route set, the ACK
and every request in it go to the flow; the Request-URI stays the remote
target (the Contact).  With a route set the first proxy (which Record-Routed)
owns the NAT problem, as Kamailio's nathelper does there, so we follow the
route.  The flow is recorded:

* as UAC only for an INVITE sent with ``nat=True`` (RFC 3581 symmetric
  response routing, the idea of Kamailio's ``fix_nated_contact``): each early
  dialog from the source of its first 1xx, the confirmed one from the source
  of its 2xx (UDP: source ip:port; TCP: the connection's peer, so the
  connection is reused).  A trunk is invited with ``nat=False`` and follows
  its Contact and Record-Route;
* as UAS always when that address came from the packet itself: over a stream
  transport (the connection's peer), and over UDP when the INVITE's top Via
  has ``rport`` (source ip:port) or a ``received`` (received host, Via port),
  i.e. exactly where our responses to it go.

Every handle the application sees (:class:`OutgoingInvite`,
:class:`ClientRequest`, :class:`~.dialog.Dialog`,
:class:`~.transaction.ServerTransaction`) has a ``user_data`` slot free for
the layer above.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .. import ids
from . import events as ev
from .auth import DigestClient, parse_challenge
from .dialog import Dialog, DialogId, DialogState
from .errors import SipError, SipParseError
from .headers import Address, CSeq, Via, parse_header_params
from .message import Headers, Request, Response, parse_message
from .pike import Pike
from .timer import Timer, TimerOwner, TimerQueue
from .transaction import (
    MAGIC_COOKIE,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
    Target,
    TimerConfig,
    Transaction,
    server_key,
    shared_target,
)
from .uri import Uri

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK"
#: Option tags of the extensions this endpoint implements (``Supported``,
#: and what a peer may ``Require`` without getting 420).
SUPPORTED = ("100rel", "timer")
_SUPPORTED_HEADER = ", ".join(SUPPORTED)
#: Methods that only exist inside a dialog: without a To tag they get 481.
IN_DIALOG_ONLY = frozenset({"BYE", "UPDATE", "PRACK", "INFO"})
#: Limit on challenge rounds for one request, so a peer that keeps
#: challenging cannot loop us.
MAX_AUTH_ROUNDS = 2


def new_branch() -> str:
    return MAGIC_COOKIE + ids.token_hex(8)


def new_tag() -> str:
    return ids.token_hex(6)


def uri_target(uri: Uri, default_transport: str = "udp") -> Target:
    """Where to send a request for ``uri`` (RFC 3263 without DNS: the adapter
    resolves the host name)."""
    transport = uri.transport or ("tls" if uri.scheme == "sips" else default_transport)
    port = uri.port or (5061 if transport in ("tls", "wss") else 5060)
    host = uri.params.get("maddr") or uri.host
    if host.startswith("["):
        host = host[1:-1]
    return shared_target(transport, host, port)


@dataclass(slots=True)
class EndpointConfig:
    """What the endpoint puts in Via and Contact, per transport."""

    addresses: dict[str, tuple[str, int]]  # transport -> advertised (host, port)
    contact_user: str = "click2dial"
    user_agent: str = "Click2Dial"
    timers: TimerConfig = field(default_factory=TimerConfig)
    #: RFC 4028: the session interval we ask for (0 turns session timers
    #: off) and the smallest one we accept.
    session_expires: int = 1800
    min_se: int = 90
    #: Requests outside known dialogs a second per source address (0: no
    #: limit), the burst allowed, and the sources never limited (the trunk):
    #: see :mod:`.pike`.
    request_rate: float = 0.0
    request_burst: int = 50
    rate_exempt: frozenset[str] = frozenset()


class _Sent:
    """What :class:`OutgoingInvite` and :class:`ClientRequest` share: their
    request, which they let go once answered
    (:meth:`~.transaction.ClientTransaction.let_request_go`); read again,
    it is parsed from the bytes their transaction sent."""

    __slots__ = ("_request",)
    tx: ClientTransaction | None

    def __init__(self, request: Request) -> None:
        self._request: Request | None = request

    @property
    def request(self) -> Request:
        request = self._request
        if request is None:
            assert self.tx is not None  # only a request with an answer lets go
            request = self._request = self.tx.request
        return request

    @request.setter
    def request(self, request: Request) -> None:
        self._request = request

    def _let_request_go(self) -> None:
        if self.tx is not None and self.tx.let_request_go():
            self._request = None


class OutgoingInvite(_Sent):
    """An INVITE we sent outside any dialog, through its whole life."""

    __slots__ = (
        "_cancel_guard",
        "auth_rounds",
        "cancel_requested",
        "cancel_sent",
        "credentials",
        "dialog",
        "early",
        "nat",
        "offer_prack",
        "provisional_seen",
        "retried",
        "state",
        "target",
        "tx",
        "user_data",
    )

    def __init__(
        self,
        request: Request,
        target: Target,
        credentials: DigestClient | None,
        nat: bool = False,
    ) -> None:
        super().__init__(request)
        self.target = target
        self.credentials = credentials
        self.nat = nat  # its dialogs send to where their responses came from
        self.tx: InviteClientTransaction | None = None
        self.state = "calling"  # calling | early | answered | failed
        self.dialog: Dialog | None = None
        self.early: dict[str, Dialog] = {}
        self.cancel_requested = False
        self.cancel_sent = False
        self.provisional_seen = False
        self.auth_rounds = 0
        # The 421/422 statuses this INVITE was already re-sent for.
        self.retried: set[int] = set()
        # A reliable provisional carrying the offer to our late-offer INVITE:
        # (early dialog, RSeq, CSeq); the application answers it in the PRACK.
        self.offer_prack: tuple[Dialog, int, int] | None = None
        self._cancel_guard: Timer | None = None
        self.user_data: Any = None

    def let_go(self) -> None:
        """The call is over: keep the INVITE only as the bytes sent while
        the endpoint waits out timer M."""
        if self.state in ("answered", "failed"):
            self._let_request_go()

    @property
    def offer_in_invite(self) -> bool:
        return bool(self.request.body)

    @property
    def call_id(self) -> str:
        return self.request.call_id


class ClientRequest(_Sent):
    """A request we sent (non-INVITE anywhere, or a re-INVITE in a dialog)."""

    __slots__ = ("auth_rounds", "credentials", "dialog", "done", "purpose", "target", "tx",
                 "user_data")  # fmt: skip

    def __init__(
        self,
        request: Request,
        target: Target,
        dialog: Dialog | None,
        credentials: DigestClient | None,
    ) -> None:
        super().__init__(request)
        self.target = target
        self.dialog = dialog
        self.credentials = credentials
        self.tx: ClientTransaction | None = None
        self.auth_rounds = 0
        self.done = False
        # "" for the application's requests; "prack" or "refresh" for the
        # endpoint's own, whose outcome is never reported.
        self.purpose = ""
        self.user_data: Any = None

    def let_go(self) -> None:
        """Completed: keep the request only as the bytes sent while its
        transaction absorbs copies of the answer (a re-INVITE's timer M)."""
        self._let_request_go()

    @property
    def method(self) -> str:
        return self.request.method


class Endpoint:
    """One SIP user agent, sans-IO.  See the module docstring."""

    def __init__(
        self,
        config: EndpointConfig,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.timers: TimerConfig = config.timers
        self._clock = clock
        self._rng = rng or random.Random()
        self._queue = TimerQueue()
        self._outgoing: list[tuple[bytes, Target]] = []
        self._events: list[ev.Event] = []
        self._client_tx: dict[tuple[str, ...], ClientTransaction] = {}
        self._server_tx: dict[tuple[str, ...], ServerTransaction] = {}
        self._owners: dict[int, OutgoingInvite | ClientRequest] = {}
        self._dialogs: dict[DialogId, Dialog] = {}
        self.parse_errors = 0
        self.rate_limited = 0
        self._pike = (
            Pike(config.request_rate, config.request_burst, config.rate_exempt)
            if config.request_rate > 0
            else None
        )
        # Where the response being processed came from (for NAT flows).
        self._rx_transport = "udp"
        self._rx_source: tuple[str, int] = ("", 0)

    # ------------------------------------------------------------------ I/O side
    def now(self) -> float:
        return self._clock()

    def send(self, data: bytes, target: Target) -> None:
        self._outgoing.append((data, target))

    def schedule(self, delay: float, callback: Callable[[], None], name: str = "") -> Timer:
        return self._queue.schedule(self._clock() + delay, callback, name)

    def schedule_for(self, delay: float, owner: TimerOwner, name: str) -> Timer:
        return self._queue.schedule_for(self._clock() + delay, owner, name)

    def pop_outgoing(self) -> list[tuple[bytes, Target]]:
        out, self._outgoing = self._outgoing, []
        return out

    def pop_events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def next_timer(self) -> float | None:
        return self._queue.next_deadline()

    def handle_timer(self, now: float | None = None) -> None:
        self._queue.fire(self._clock() if now is None else now)

    @property
    def dialogs(self) -> dict[DialogId, Dialog]:
        return self._dialogs

    def busy_hosts(self) -> set[str]:
        """Hosts of the peers we have a dialog or an open transaction with:
        the transport spares their connections from its short idle timeout
        and its per-source cap."""
        hosts: set[str] = set()
        for dialog in self._dialogs.values():
            if dialog.flow is not None:
                hosts.add(dialog.flow.host)
            hosts.add(self._dialog_target(dialog).host)
        for tx in self._client_tx.values():
            hosts.add(tx.target.host)
        for stx in self._server_tx.values():
            hosts.add(stx.target.host)
        return hosts

    @property
    def transaction_count(self) -> int:
        return len(self._client_tx) + len(self._server_tx)

    def receive(self, data: bytes, transport: str, source: tuple[str, int]) -> None:
        """Feed one datagram or one framed stream message from ``source``."""
        if data[:1] in (b"\r", b"\n") and transport == "udp" and not data.strip(b"\r\n"):
            return  # a CRLF keep-alive: nothing to parse, nothing to answer
        try:
            msg = parse_message(data, stream=transport != "udp")
        except SipParseError:
            # Nothing trustworthy to answer to: RFC 3261 §18.3 lets us drop it.
            self.parse_errors += 1
            return
        if isinstance(msg, Request):
            self._receive_request(msg, transport, source)
        else:
            self._receive_response(msg, transport, source)

    def transport_failed(self, target: Target) -> None:
        """The adapter could not deliver to ``target`` (connection refused or
        lost): every client transaction waiting on it fails at once, as a 503
        would (RFC 3261 §8.1.3.1)."""
        for tx in list(self._client_tx.values()):
            if tx.target == target and tx.state in (State.CALLING, State.TRYING):
                self.tx_timeout(tx, status=503)
                tx.terminate()

    # -------------------------------------------------- transaction-user hooks
    def tx_response(self, tx: ClientTransaction, response: Response) -> None:
        owner = self._owners.get(id(tx))
        if isinstance(owner, OutgoingInvite):
            self._invite_response(owner, tx, response)
        elif isinstance(owner, ClientRequest):
            self._request_response(owner, response)

    def tx_timeout(self, tx: ClientTransaction, status: int = 408) -> None:
        owner = self._owners.get(id(tx))
        reason = "Request Timeout" if status == 408 else "Service Unavailable"
        if isinstance(owner, OutgoingInvite):
            if owner.state in ("calling", "early"):
                if owner.cancel_requested:
                    status, reason = 487, "Request Terminated"
                self._fail_invite(owner, status, reason, None)
        elif isinstance(owner, ClientRequest) and owner.purpose and not owner.done:
            self._internal_response(owner, status, None)
        elif isinstance(owner, ClientRequest) and not owner.done:
            self._complete(owner, status, None)
            if owner.dialog is not None and owner.method in ("BYE", "INVITE"):
                # RFC 3261 §12.2.1.2: a 408/481 to an in-dialog request ends it.
                if owner.method == "INVITE":
                    owner.dialog.client_invite = None
                self._end_dialog(owner.dialog, None)

    def tx_ack_timeout(self, tx: ServerTransaction) -> None:
        pass  # the INVITE was already answered with an error: nothing to undo

    def tx_terminated(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            if self._client_tx.get(tx.key) is tx:
                del self._client_tx[tx.key]
            self._owners.pop(id(tx), None)
        elif isinstance(tx, ServerTransaction) and self._server_tx.get(tx.key) is tx:
            del self._server_tx[tx.key]

    # ------------------------------------------------------------- UAC side
    def _via(self, transport: str) -> Via:
        host, port = self.config.addresses.get(transport) or self.config.addresses["udp"]
        return Via(transport.upper(), host, port, {"branch": new_branch(), "rport": None})

    def contact(self, transport: str, user: str | None = None) -> Address:
        host, port = self.config.addresses.get(transport) or self.config.addresses["udp"]
        params: dict[str, str | None] = {} if transport == "udp" else {"transport": transport}
        return Address(Uri("sip", host, user or self.config.contact_user, None, port, params))

    def _add_common(self, headers: Headers, method: str) -> None:
        if "User-Agent" not in headers:
            headers.add("User-Agent", self.config.user_agent)
        if method in ("INVITE", "UPDATE", "OPTIONS") and "Allow" not in headers:
            headers.add("Allow", ALLOW)

    def _start_client(self, tx: ClientTransaction, owner: OutgoingInvite | ClientRequest) -> None:
        self._client_tx[tx.key] = tx
        self._owners[id(tx)] = owner
        tx.start()

    def invite(
        self,
        uri: Uri,
        *,
        from_: Address,
        to: Address,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: list[tuple[str, str]] | None = None,
        target: Target | None = None,
        credentials: DigestClient | None = None,
        call_id: str | None = None,
        nat: bool = False,
    ) -> OutgoingInvite:
        """Send an INVITE outside any dialog.  Without ``body`` it is a late
        offer: the 2xx carries the offer and :meth:`ack` carries the answer.
        With ``nat`` its dialogs send the ACK and their requests to where
        their responses came from (see the module docstring)."""
        target = target or uri_target(uri)
        local = from_.copy()
        local.params.setdefault("tag", new_tag())
        hdrs = Headers()
        for name, value in headers or ():
            hdrs.add(name, value)
        if body:
            hdrs.set("Content-Type", content_type)
        self._add_common(hdrs, "INVITE")
        self._add_extensions(hdrs)
        host = self.config.addresses.get(target.transport, ("click2dial", 0))[0]
        request = Request(
            "INVITE",
            uri,
            [self._via(target.transport)],
            local,
            to,
            call_id or f"{ids.token_hex(12)}@{host}",
            CSeq(1, "INVITE"),
            hdrs,
            body,
            [self.contact(target.transport)],
        )
        invite = OutgoingInvite(request, target, credentials, nat)
        tx = InviteClientTransaction(self, request, target)
        invite.tx = tx
        self._start_client(tx, invite)
        return invite

    def cancel(self, invite: OutgoingInvite) -> None:
        """CANCEL an INVITE that has no final response yet (RFC 3261 §9.1).
        Before the first provisional response the CANCEL waits for one."""
        if invite.state not in ("calling", "early") or invite.cancel_requested:
            return
        invite.cancel_requested = True
        if invite.provisional_seen:
            self._send_cancel(invite)

    def _send_cancel(self, invite: OutgoingInvite) -> None:
        if invite.cancel_sent:
            return
        invite.cancel_sent = True
        req = invite.request
        hdrs = Headers()
        for route in req.headers.get_all("Route"):
            hdrs.add("Route", route)
        self._add_common(hdrs, "CANCEL")
        cancel = Request(
            "CANCEL",
            req.uri,
            [req.via[0]],
            req.from_,
            req.to,
            req.call_id,
            CSeq(req.cseq.seq, "CANCEL"),
            hdrs,
        )
        handle = ClientRequest(cancel, invite.target, None, None)
        self._start_client(NonInviteClientTransaction(self, cancel, invite.target), handle)
        # §9.1: no final response 64*T1 after the CANCEL: give the INVITE up.
        invite._cancel_guard = self.schedule(
            64 * self.timers.t1, lambda: self._cancel_expired(invite), "cancel"
        )

    def _cancel_expired(self, invite: OutgoingInvite) -> None:
        if invite.state in ("calling", "early"):
            if invite.tx is not None:
                invite.tx.terminate()
            self._fail_invite(invite, 487, "Request Terminated", None)

    def _fail_invite(
        self, invite: OutgoingInvite, status: int, reason: str, response: Response | None
    ) -> None:
        invite.state = "failed"
        if invite._cancel_guard is not None:
            invite._cancel_guard.cancel()
        for dialog in invite.early.values():
            dialog.state = DialogState.TERMINATED
            self._dialogs.pop(dialog.id, None)
        invite.early.clear()
        self._events.append(ev.InviteFailed(invite, status, reason, response))

    def _invite_response(
        self, invite: OutgoingInvite, tx: ClientTransaction, response: Response
    ) -> None:
        status = response.status
        if status < 200:
            if status == 100:
                invite.provisional_seen = True
            else:
                invite.provisional_seen = True
                dialog = None
                tag = response.to.tag
                if tag and invite.state in ("calling", "early"):
                    dialog = invite.early.get(tag)
                    if dialog is None:
                        dialog = Dialog.for_uac(invite.request, response, invite.target.transport)
                        if invite.nat:
                            dialog.flow = self._rx_flow()
                        invite.early[tag] = dialog
                        self._dialogs[dialog.id] = dialog
                    else:
                        dialog.refresh_target(response)
                if invite.state == "calling":
                    invite.state = "early"
                if dialog is None or self._reliable_provisional(invite, dialog, response):
                    self._events.append(ev.InviteProgress(invite, response, dialog))
            if invite.cancel_requested:
                self._send_cancel(invite)
            return
        if status < 300:
            self._invite_2xx(invite, response)
            return
        if status in (401, 407) and self._retry_with_auth(invite, response):
            return
        if status in (421, 422) and self._retry_extension(invite, response):
            return
        if invite.state in ("calling", "early"):
            self._fail_invite(invite, status, response.reason, response)

    def _invite_2xx(self, invite: OutgoingInvite, response: Response) -> None:
        tag = response.to.tag or ""
        if not tag and invite.state == "answered" and invite.dialog is not None:
            # A 2xx without a To tag starts no dialog (RFC 3261 §12.1.1).  Seen
            # from a UAS that answered our retransmitted INVITE once more (we
            # retransmit when the event loop reads its first 2xx late): it is
            # the answered dialog's, so re-ACK it.  Taken for a second fork,
            # it would be ACKed and BYE'd, and a peer that matches by Call-ID
            # would end the answered call.
            self._reack(invite.dialog, response.cseq.seq)
            return
        dialog = self._dialogs.get((invite.call_id, invite.request.from_.tag or "", tag))
        if dialog is not None and dialog.state is DialogState.CONFIRMED:
            self._reack(dialog, response.cseq.seq)  # retransmitted 2xx
            return
        if invite.state in {"answered", "failed"} or invite.cancel_requested:
            # A 2xx from a second fork, or one that crossed our CANCEL: the
            # dialog exists on the peer's side, so ACK it and hang up (§15).
            stray = dialog or Dialog.for_uac(invite.request, response, invite.target.transport)
            if invite.nat:
                stray.flow = self._rx_flow()
            stray.state = DialogState.CONFIRMED
            self._send_ack(stray, invite.request.cseq.seq, b"", None)
            self._send_bye(stray)
            if invite.state in ("calling", "early"):
                self._fail_invite(invite, 487, "Request Terminated", response)
            return
        if dialog is None:
            dialog = Dialog.for_uac(invite.request, response, invite.target.transport)
            self._dialogs[dialog.id] = dialog
        else:
            dialog.refresh_target(response)
            dialog.route_set = list(reversed(response.headers.addresses("Record-Route")))
        if invite.nat:
            dialog.flow = self._rx_flow()
        dialog.state = DialogState.CONFIRMED
        invite.early.pop(tag, None)
        for other in invite.early.values():
            other.state = DialogState.TERMINATED
            self._dialogs.pop(other.id, None)
        invite.early.clear()
        invite.state = "answered"
        invite.dialog = dialog
        if invite._cancel_guard is not None:
            invite._cancel_guard.cancel()
        invite.offer_prack = None
        if invite.request.sdp:
            dialog.last_sdp = invite.request.body
        dialog.min_se = _delta_seconds(invite.request.headers.get("Min-SE")) or 0
        self._note_allow(dialog, response)
        self._session_from_2xx(dialog, invite.request, response)
        if invite.offer_in_invite:
            self._send_ack(dialog, invite.request.cseq.seq, b"", None)
        self._events.append(ev.InviteAnswered(invite, dialog, response))

    def ack(
        self,
        dialog: Dialog,
        body: bytes = b"",
        content_type: str = "application/sdp",
        *,
        cseq: int | None = None,
    ) -> None:
        """ACK the 2xx of a late-offer INVITE, carrying the SDP answer.
        ``cseq`` names that INVITE when other requests followed it."""
        seq = self._last_invite_cseq(dialog) if cseq is None else cseq
        if dialog.ack is not None and dialog.ack[2] == seq:
            return
        self._send_ack(dialog, seq, body, content_type)

    def _last_invite_cseq(self, dialog: Dialog) -> int:
        pending = dialog.client_invite
        if isinstance(pending, ClientRequest):
            return pending.request.cseq.seq
        return dialog.local_cseq

    def _send_ack(self, dialog: Dialog, cseq: int, body: bytes, content_type: str | None) -> None:
        hdrs = Headers()
        if body:
            hdrs.add("Content-Type", content_type or "application/sdp")
        self._add_common(hdrs, "ACK")
        ack = dialog.build_request("ACK", self._via(dialog.transport), cseq=cseq, headers=hdrs,
                                   body=body)  # fmt: skip
        target = self._dialog_target(dialog)
        data = ack.to_bytes()
        dialog.ack = (data, target, cseq)
        if ack.sdp:
            dialog.last_sdp = body
        self.send(data, target)

    def _rx_flow(self) -> Target:
        """The transport address of the response being processed."""
        host, port = self._rx_source
        return shared_target(self._rx_transport, host, port)

    @staticmethod
    def _dialog_target(dialog: Dialog) -> Target:
        """Where a request in ``dialog`` goes: its flow (a NATed peer) unless
        a route set names a proxy, which then handles the NAT itself."""
        flow = dialog.flow
        if flow is not None and not dialog.route_set:
            return flow
        return uri_target(dialog.next_hop(), dialog.transport)

    def _reack(self, dialog: Dialog, cseq: int) -> None:
        if dialog.ack is not None and dialog.ack[2] == cseq:
            self.send(dialog.ack[0], dialog.ack[1])

    def _retry_with_auth(self, owner: OutgoingInvite | ClientRequest, response: Response) -> bool:
        if owner.credentials is None or owner.auth_rounds >= MAX_AUTH_ROUNDS:
            return False
        if isinstance(owner, OutgoingInvite) and owner.cancel_requested:
            return False
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        values = response.headers.get_all(header)
        if not values:
            return False
        old = owner.request
        try:
            challenge = parse_challenge(values[0])
            credentials = owner.credentials.authorization(
                challenge, old.method, str(old.uri), old.body
            )
        except SipError:
            return False
        owner.auth_rounds += 1
        hdrs = old.headers.copy()
        hdrs.set(answer, credentials)
        dialog = owner.dialog
        if dialog is not None:
            dialog.local_cseq += 1
            seq = dialog.local_cseq
        else:
            seq = old.cseq.seq + 1
        request = Request(
            old.method,
            old.uri,
            [self._via(owner.target.transport)],
            old.from_,
            old.to,
            old.call_id,
            CSeq(seq, old.method),
            hdrs,
            old.body,
            old.contact,
            old.max_forwards,
        )
        owner.request = request
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(self, request, owner.target)
        else:
            tx = NonInviteClientTransaction(self, request, owner.target)
        if isinstance(owner, OutgoingInvite):
            owner.tx = tx if isinstance(tx, InviteClientTransaction) else None
        else:
            owner.tx = tx
        self._start_client(tx, owner)
        return True

    # ------------------------------------------------- requests in general
    def request(
        self,
        method: str,
        uri: Uri,
        *,
        from_: Address,
        to: Address,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        target: Target | None = None,
        credentials: DigestClient | None = None,
    ) -> ClientRequest:
        """Send a non-INVITE request outside any dialog (OPTIONS, REGISTER,
        MESSAGE...)."""
        target = target or uri_target(uri)
        local = from_.copy()
        local.params.setdefault("tag", new_tag())
        hdrs = Headers()
        for name, value in headers or ():
            hdrs.add(name, value)
        if body:
            hdrs.set("Content-Type", content_type or "application/sdp")
        self._add_common(hdrs, method)
        host = self.config.addresses.get(target.transport, ("click2dial", 0))[0]
        request = Request(
            method,
            uri,
            [self._via(target.transport)],
            local,
            to,
            f"{ids.token_hex(12)}@{host}",
            CSeq(1, method),
            hdrs,
            body,
            [self.contact(target.transport)] if method == "REGISTER" else None,
        )
        handle = ClientRequest(request, target, None, credentials)
        self._start_client(NonInviteClientTransaction(self, request, target), handle)
        return handle

    def request_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: list[tuple[str, str]] | None = None,
        credentials: DigestClient | None = None,
    ) -> ClientRequest:
        """Send BYE, re-INVITE, UPDATE, INFO, OPTIONS... inside ``dialog``."""
        if dialog.state is DialogState.TERMINATED and method != "BYE":
            raise SipError(f"dialog {dialog.id} has ended")
        if method == "INVITE" and dialog.client_invite is not None:
            pending = dialog.client_invite
            if isinstance(pending, ClientRequest) and pending.purpose and not dialog.deferred:
                # Our own refresh is in flight, which the application cannot
                # know: send its re-INVITE when the refresh completes.
                return self._defer_reinvite(dialog, body, content_type, headers, credentials)
            raise SipError("a re-INVITE is already in progress in this dialog")
        hdrs = Headers()
        for name, value in headers or ():
            hdrs.add(name, value)
        if body:
            hdrs.set("Content-Type", content_type)
        self._add_common(hdrs, method)
        if method in ("INVITE", "UPDATE"):
            self._add_refresh_headers(dialog, hdrs)
        refresh = method in ("INVITE", "UPDATE")
        request = dialog.build_request(
            method,
            self._via(dialog.transport),
            contact=self.contact(dialog.transport) if refresh else None,
            headers=hdrs,
            body=body,
        )
        target = self._dialog_target(dialog)
        handle = ClientRequest(request, target, dialog, credentials)
        tx: ClientTransaction
        if method == "INVITE":
            dialog.client_invite = handle
            tx = InviteClientTransaction(self, request, target)
        else:
            tx = NonInviteClientTransaction(self, request, target)
        handle.tx = tx
        self._start_client(tx, handle)
        return handle

    def adopt(self, dialog: Dialog) -> Dialog:
        """Take over a dialog this endpoint did not create (one restored
        from :meth:`Dialog.snapshot` after a restart), so that requests can
        be sent in it and the peer's requests in it are matched to it.  A
        dialog already known under the same id is returned instead."""
        known = self._dialogs.get(dialog.id)
        if known is not None:
            return known
        self._dialogs[dialog.id] = dialog
        return dialog

    def bye(self, dialog: Dialog) -> ClientRequest | None:
        """Hang up a dialog (returns ``None`` if it had ended already)."""
        if dialog.state is DialogState.TERMINATED:
            return None
        return self._send_bye(dialog)

    def _send_bye(self, dialog: Dialog) -> ClientRequest:
        self._stop_2xx(dialog)
        handle = self.request_in_dialog(dialog, "BYE")
        self._close_dialog(dialog)
        return handle

    def _close_dialog(self, dialog: Dialog) -> None:
        dialog.state = DialogState.TERMINATED
        self._stop_2xx(dialog)
        self._stop_session_timer(dialog)
        deferred, dialog.deferred = dialog.deferred, []
        for handle, *_ in deferred:
            self._complete(handle, 481, None)
        # Kept in the table until the BYE transaction ends, so that the 200 of
        # a retransmitted INVITE can still be re-ACKed; dropped after 64*T1.
        self.schedule(64 * self.timers.t1, partial(self._forget, dialog), "dialog-gc")

    def _forget(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]

    def _end_dialog(self, dialog: Dialog, request: Request | None, reason: str = "bye") -> None:
        if dialog.state is DialogState.TERMINATED:
            return
        self._close_dialog(dialog)
        self._events.append(ev.DialogEnded(dialog, reason, request))

    def _complete(self, handle: ClientRequest, status: int, response: Response | None) -> None:
        handle.done = True
        handle.let_go()
        self._events.append(ev.RequestCompleted(handle, status, response))

    def _request_response(self, handle: ClientRequest, response: Response) -> None:
        status = response.status
        if handle.purpose and status >= 200:
            self._internal_response(handle, status, response)
            return
        if status < 200:
            return
        if handle.done:
            dialog = handle.dialog
            if handle.method == "INVITE" and dialog is not None and status < 300:
                # A 2xx retransmitted while our transaction still lives
                # (RFC 6026 Accepted): our ACK was lost, send it again.
                self._reack(dialog, response.cseq.seq)
            return
        if status in (401, 407) and self._retry_with_auth(handle, response):
            return
        dialog = handle.dialog
        if dialog is not None and status < 300 and handle.method in ("INVITE", "UPDATE"):
            self._refreshed_by_us(dialog, handle.request, response)
        if handle.method == "INVITE" and dialog is not None:
            if 200 <= status < 300:
                if dialog.ack is not None and dialog.ack[2] == response.cseq.seq:
                    self._reack(dialog, response.cseq.seq)
                    return
                dialog.refresh_target(response)
                if handle.request.body:
                    self._send_ack(dialog, response.cseq.seq, b"", None)
                dialog.client_invite = None
                self._complete(handle, status, response)
                return
            if status == 491:
                # Not in a transaction while we wait: the peer's re-INVITE,
                # which caused the glare, must now be accepted.
                dialog.client_invite = None
                self._schedule_glare_retry(handle)
                return
            dialog.client_invite = None
        self._complete(handle, status, response)
        if dialog is not None and status in (408, 481) and handle.method != "BYE":
            self._end_dialog(dialog, None, "bye")

    def _schedule_glare_retry(self, handle: ClientRequest) -> None:
        dialog = handle.dialog
        assert dialog is not None
        # RFC 3261 §14.1: the Call-ID owner waits 2.1-4 s, the other side 0-2 s.
        if dialog.role == "uac":
            delay = self._rng.randint(210, 400) / 100
        else:
            delay = self._rng.randint(0, 200) / 100
        self.schedule(delay, lambda: self._retry_reinvite(handle), "glare")

    def _retry_reinvite(self, handle: ClientRequest) -> None:
        dialog = handle.dialog
        assert dialog is not None
        if dialog.state is not DialogState.CONFIRMED:
            self._complete(handle, 491, None)
            return
        if dialog.client_invite is not None or dialog.server_invite is not None:
            self._schedule_glare_retry(handle)
            return
        old = handle.request
        hdrs = old.headers.copy()
        # Rebuilt by request_in_dialog from the dialog: copies would double.
        hdrs.remove("Content-Length")
        hdrs.remove("Route")
        new = self.request_in_dialog(dialog, "INVITE", body=old.body, headers=list(hdrs))
        # Keep the application's handle: move the new transaction onto it.
        handle.request, handle.tx, handle.target = new.request, new.tx, new.target
        dialog.client_invite = handle
        if new.tx is not None:
            self._owners[id(new.tx)] = handle

    def _receive_response(
        self, response: Response, transport: str, source: tuple[str, int]
    ) -> None:
        self._rx_transport = transport
        self._rx_source = source
        tx = self._client_tx.get((response.via[0].branch or "", response.cseq.method))
        if tx is not None:
            tx.receive_response(response)
            return
        # A 2xx retransmitted after its INVITE transaction ended (RFC 6026
        # §8.4 routes it to the dialog): re-send the ACK we sent for it.
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            dialog = self._dialogs.get(
                (response.call_id, response.from_.tag or "", response.to.tag or "")
            )
            if dialog is not None:
                self._reack(dialog, response.cseq.seq)

    # ------------------------------------------------------------- UAS side
    def _receive_request(self, request: Request, transport: str, source: tuple[str, int]) -> None:
        via = request.via[0]
        host, port = source
        if via.host != host:
            via.params["received"] = host
        if "rport" in via.params:
            via.params["rport"] = str(port)
            via.params["received"] = host
        key = server_key(request)
        tx = self._server_tx.get(key)
        if tx is not None:
            tx.receive_request(request)
            return
        method = request.method
        if method == "ACK":
            self._receive_ack(request)
            return
        target = self._response_target(request, transport, source)
        if method == "CANCEL":
            self._receive_cancel(request, target)
            return
        to_tag = request.to.tag
        dialog: Dialog | None = None
        if to_tag:
            dialog = self._dialogs.get((request.call_id, to_tag, request.from_.tag or ""))
        if dialog is None and self._pike is not None and not self._pike.allow(host, self.now()):
            self.rate_limited += 1  # dropped: see pike.py for why not a 503
            return
        if to_tag:
            if dialog is None or dialog.state is DialogState.TERMINATED:
                self._reply_stateless(request, target, 481)
                return
        elif method in IN_DIALOG_ONLY:
            self._reply_stateless(request, target, 481)
            return
        stx: ServerTransaction
        if method == "INVITE":
            stx = InviteServerTransaction(self, request, target, to_tag or new_tag())
        else:
            # A final response outside a dialog needs a To tag too (§8.2.6.2).
            stx = NonInviteServerTransaction(self, request, target, to_tag or new_tag())
        self._server_tx[stx.key] = stx
        if "Require" in request.headers:
            unsupported = [o for o in request.headers.get_all("Require") if o not in SUPPORTED]
            if unsupported:
                # §8.2.2.3; ACK and CANCEL never got this far.
                self.respond(stx, 420, headers=[("Unsupported", ", ".join(unsupported))])
                return
        if method == "INVITE":
            stx.send_response(request.response(100))
        if dialog is not None:
            if dialog.remote_cseq is not None and request.cseq.seq <= dialog.remote_cseq:
                self.respond(stx, 500, "Out of order CSeq")
                return
            dialog.remote_cseq = request.cseq.seq
            if method == "BYE":
                self.respond(stx, 200)
                self._end_dialog(dialog, request)
                return
            if method == "INVITE":
                if dialog.client_invite is not None:
                    self.respond(stx, 491)
                    return
                if dialog.server_invite is not None:
                    self.respond(stx, 500, headers=[("Retry-After", "1")])
                    return
                dialog.server_invite = stx
        if self._answered_here(request, stx, dialog):
            return
        self._events.append(ev.IncomingRequest(request, stx, dialog))

    def _response_target(self, request: Request, transport: str, source: tuple[str, int]) -> Target:
        if transport != "udp":
            return shared_target(transport, source[0], source[1])
        via = request.via[0]
        if "rport" in via.params:
            return shared_target("udp", source[0], source[1])
        return shared_target("udp", via.params.get("received") or via.host, via.port or 5060)

    def _reply_stateless(self, request: Request, target: Target, status: int) -> None:
        self.send(request.response(status, to_tag=new_tag()).to_bytes(), target)

    def _receive_cancel(self, request: Request, target: Target) -> None:
        invite_key = (*server_key(request)[:-1], "INVITE")
        invite_tx = self._server_tx.get(invite_key)
        cancel_tx = NonInviteServerTransaction(self, request, target, None)
        self._server_tx[cancel_tx.key] = cancel_tx
        if not isinstance(invite_tx, InviteServerTransaction):
            cancel_tx.send_response(request.response(481, to_tag=new_tag()))
            return
        cancel_tx.send_response(request.response(200, to_tag=invite_tx.to_tag))
        if invite_tx.state is State.PROCEEDING:
            self.respond(invite_tx, 487)
            self._events.append(ev.IncomingCancelled(invite_tx.request, invite_tx))

    def _receive_ack(self, request: Request) -> None:
        dialog = self._dialogs.get((request.call_id, request.to.tag or "", request.from_.tag or ""))
        if dialog is None or dialog.pending_2xx is None:
            return  # an ACK retransmission, or for a dialog we no longer know
        if dialog.pending_2xx[0] != request.cseq.seq:
            return
        self._stop_2xx(dialog)
        self._events.append(ev.AckReceived(dialog, request))

    def _stop_2xx(self, dialog: Dialog) -> None:
        if dialog.pending_2xx is not None:
            _, retransmit, give_up = dialog.pending_2xx
            if retransmit is not None:
                retransmit.cancel()
            give_up.cancel()
            dialog.pending_2xx = None

    def respond(
        self,
        tx: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        """Answer a request the endpoint reported.  1xx/2xx to an INVITE
        create (or confirm) the dialog; its 2xx is retransmitted until ACKed."""
        request = tx.request
        response = request.response(status, reason, tx.to_tag)
        for name, value in headers or ():
            response.headers.add(name, value)
        if body:
            response.headers.set("Content-Type", content_type)
            response.body = body
        method = request.method
        if 200 <= status < 300 and method in ("INVITE", "UPDATE"):
            self._echo_session(tx, response)
        dialog: Dialog | None = None
        if method == "INVITE" and 100 < status < 300:
            response.contact = [self.contact(tx.target.transport)]
            response.headers.add("Allow", ALLOW)
            dialog_id = (request.call_id, tx.to_tag or "", request.from_.tag or "")
            dialog = self._dialogs.get(dialog_id)
            if dialog is None:
                dialog = Dialog.for_uas(request, tx.to_tag or new_tag(), tx.target.transport)
                target = tx.target
                via = request.via[0].params
                if target.reliable or "rport" in via or "received" in via:
                    dialog.flow = target  # learnt from the packet: see the module doc
                self._dialogs[dialog.id] = dialog
            elif request.to.tag:
                dialog.refresh_target(request)  # a re-INVITE
            if status >= 200:
                dialog.state = DialogState.CONFIRMED
        elif method == "OPTIONS" and 200 <= status < 300:
            hdrs = response.headers
            if "Allow" not in hdrs:
                hdrs.add("Allow", ALLOW)
            if "Supported" not in hdrs:
                hdrs.add("Supported", _SUPPORTED_HEADER)
            if "Accept" not in hdrs:
                hdrs.add("Accept", "application/sdp")
        if "Server" not in response.headers and status >= 200:
            response.headers.add("Server", self.config.user_agent)
        tx.send_response(response)
        if method == "INVITE" and status >= 200:
            if request.to.tag:
                in_dialog = self._dialogs.get(
                    (request.call_id, request.to.tag, request.from_.tag or "")
                )
                if in_dialog is not None and in_dialog.server_invite is tx:
                    in_dialog.server_invite = None
                dialog = dialog or in_dialog
            elif status >= 300:
                early = self._dialogs.pop(
                    (request.call_id, tx.to_tag or "", request.from_.tag or ""), None
                )
                if early is not None:
                    early.state = DialogState.TERMINATED
            if dialog is not None and status < 300:
                self._start_2xx(dialog, tx, response)
        if 100 < status < 300 and method in ("INVITE", "UPDATE"):
            self._responded(tx, response)
        return response

    def _start_2xx(self, dialog: Dialog, tx: ServerTransaction, response: Response) -> None:
        """Retransmit our 2xx until the ACK arrives (RFC 3261 §13.3.1.4)."""
        self._stop_2xx(dialog)
        data = response.to_bytes()
        target = tx.target
        cseq = response.cseq.seq
        interval = [self.timers.t1]

        def retransmit() -> None:
            if dialog.pending_2xx is None:
                return
            self.send(data, target)
            interval[0] = min(interval[0] * 2, self.timers.t2)
            timer = self.schedule(interval[0], retransmit, "2xx")
            dialog.pending_2xx = (cseq, timer, give_up_timer)

        def give_up() -> None:
            if dialog.pending_2xx is None:
                return
            self._stop_2xx(dialog)
            # §13.3.1.4: no ACK, so the session is not established: BYE it.
            self._send_bye(dialog)
            self._events.append(ev.DialogEnded(dialog, "no-ack", None))

        give_up_timer = self.schedule(64 * self.timers.t1, give_up, "2xx-give-up")
        first = None if target.reliable else self.schedule(interval[0], retransmit, "2xx")
        dialog.pending_2xx = (cseq, first, give_up_timer)

    # ------------------------------------ reliable provisionals (RFC 3262)
    def _add_extensions(self, headers: Headers) -> None:
        """Supported, Session-Expires and Min-SE of an INVITE outside a dialog."""
        timers = self.config.session_expires > 0
        if "Supported" not in headers:
            headers.add("Supported", _SUPPORTED_HEADER if timers else "100rel")
        if timers and "Session-Expires" not in headers:
            # No refresher parameter: RFC 4028 §7.1 recommends leaving it out
            # so that the UAS picks (§9), which lets a peer that wants to
            # refresh do so instead of being told to rely on us.
            min_se = self.config.min_se
            headers.add("Session-Expires", str(max(self.config.session_expires, min_se)))
            headers.add("Min-SE", str(min_se))

    def _reliable_provisional(
        self, invite: OutgoingInvite, dialog: Dialog, response: Response
    ) -> bool:
        """PRACK a reliable provisional (RFC 3262 §4); returns whether it is
        new, i.e. to be reported."""
        if not _has_option(response.headers, "Require", "100rel"):
            return True
        rseq = _delta_seconds(response.headers.get("RSeq"))
        if rseq is None:
            return True  # nothing we could acknowledge: treat it as unreliable
        last = dialog.rseq
        if last is not None and rseq != last + 1:
            # §4: the same RSeq is a retransmission, any other one is out of
            # order; neither is PRACKed nor processed further.
            return False
        dialog.rseq = rseq
        cseq = response.cseq.seq
        if response.sdp and not invite.offer_in_invite and dialog.last_sdp is None:
            # The offer to our late-offer INVITE: its PRACK must carry the
            # answer (RFC 3262 §5), which the application gives in prack().
            invite.offer_prack = (dialog, rseq, cseq)
            return True
        self._send_prack(dialog, rseq, cseq)
        return True

    def prack(
        self, invite: OutgoingInvite, body: bytes, content_type: str = "application/sdp"
    ) -> None:
        """PRACK, with the answer in ``body``, the reliable provisional that
        carried the offer to a late-offer INVITE (``invite.offer_prack``)."""
        pending = invite.offer_prack
        if pending is None or pending[0].state is DialogState.TERMINATED:
            raise SipError("no reliable provisional response awaits an answer")
        invite.offer_prack = None
        dialog, rseq, cseq = pending
        self._send_prack(dialog, rseq, cseq, body, content_type)

    def _send_prack(
        self,
        dialog: Dialog,
        rseq: int,
        cseq: int,
        body: bytes = b"",
        content_type: str = "application/sdp",
    ) -> None:
        handle = self.request_in_dialog(
            dialog,
            "PRACK",
            body=body,
            content_type=content_type,
            headers=[("RAck", f"{rseq} {cseq} INVITE")],
        )
        handle.purpose = "prack"
        if body and content_type == "application/sdp":
            dialog.last_sdp = body

    def _retry_extension(self, invite: OutgoingInvite, response: Response) -> bool:
        """Re-send an INVITE refused with 421 (for 100rel) or 422 (session
        interval too small, RFC 4028 §7.4) as a new transaction, once."""
        status = response.status
        if invite.cancel_requested or status in invite.retried:
            return False
        if invite.state not in ("calling", "early"):
            return False
        old = invite.request
        hdrs = old.headers.copy()
        hdrs.remove("Content-Length")
        if status == 421:
            if not _has_option(response.headers, "Require", "100rel"):
                return False
            if _has_option(hdrs, "Require", "100rel"):
                return False
            hdrs.add("Require", "100rel")
        else:
            min_se = _delta_seconds(response.headers.get("Min-SE"))
            if min_se is None:
                return False
            ours = _session_expires(hdrs.get("Session-Expires"))
            hdrs.set("Session-Expires", str(max(min_se, ours[0] if ours else 0)))
            hdrs.set("Min-SE", str(min_se))
        invite.retried.add(status)
        request = Request(
            "INVITE",
            old.uri,
            [self._via(invite.target.transport)],
            old.from_,
            old.to,
            old.call_id,
            CSeq(old.cseq.seq + 1, "INVITE"),
            hdrs,
            old.body,
            old.contact,
            old.max_forwards,
        )
        # The refused transaction's early dialogs end with it.
        for dialog in invite.early.values():
            dialog.state = DialogState.TERMINATED
            self._dialogs.pop(dialog.id, None)
        invite.early.clear()
        invite.provisional_seen = False
        invite.offer_prack = None
        invite.request = request
        tx = InviteClientTransaction(self, request, invite.target)
        invite.tx = tx
        self._start_client(tx, invite)
        return True

    # ---------------------------------------------- session timers (RFC 4028)
    @staticmethod
    def _note_allow(dialog: Dialog, message: Request | Response) -> None:
        allow = message.headers.get_all("Allow")
        if allow:
            dialog.peer_allows_update = any(m.strip().upper() == "UPDATE" for m in allow)

    def _session_from_2xx(self, dialog: Dialog, request: Request, response: Response) -> None:
        """The session timer set by the 2xx to an INVITE or UPDATE we sent."""
        se = _session_expires(response.headers.get("Session-Expires"))
        if se is None:
            if "Session-Expires" in request.headers:
                # §7.2: a 2xx without Session-Expires means no expiration.
                self._stop_session_timer(dialog)
                dialog.session_interval = dialog.session_refresher = None
            return
        interval, refresher = se
        # We sent the request, so refresher=uac names us.  A 2xx without the
        # parameter breaks §9; refreshing ourselves is the reading that
        # cannot end a live call.
        self._arm_session(dialog, interval, "remote" if refresher == "uas" else "local")

    def _arm_session(self, dialog: Dialog, interval: int, refresher: str) -> None:
        self._stop_session_timer(dialog)
        if dialog.state is DialogState.TERMINATED or interval <= 0:
            return
        dialog.session_interval = interval
        dialog.session_refresher = refresher
        dialog.session_expires_at = self.now() + interval
        if refresher == "local":
            # §7.4 recommends refreshing at half the interval.
            dialog.session_timer = self.schedule(
                interval / 2, lambda: self._refresh_session(dialog), "session-refresh"
            )
        else:
            # §10: the refresher's last chance is this far before expiry.
            dialog.session_timer = self.schedule(
                interval - min(32, interval / 3),
                lambda: self._session_expired(dialog),
                "session-expiry",
            )

    @staticmethod
    def _stop_session_timer(dialog: Dialog) -> None:
        if dialog.session_timer is not None:
            dialog.session_timer.cancel()
            dialog.session_timer = None

    def _add_refresh_headers(self, dialog: Dialog, headers: Headers) -> None:
        """A re-INVITE or UPDATE of ours in a dialog with a session timer is
        a refresh (§7.4): it states the interval and keeps the roles."""
        if self.config.session_expires > 0 and "Supported" not in headers:
            headers.add("Supported", "timer")
        if dialog.session_interval is None or "Session-Expires" in headers:
            return
        who = "uac" if dialog.session_refresher == "local" else "uas"
        headers.add("Session-Expires", f"{dialog.session_interval};refresher={who}")
        min_se = max(dialog.min_se, self.config.min_se)
        if min_se > 0:
            headers.add("Min-SE", str(min_se))

    def _refresh_session(self, dialog: Dialog) -> None:
        dialog.session_timer = None
        if dialog.state is not DialogState.CONFIRMED or dialog.session_interval is None:
            return
        if dialog.peer_allows_update or dialog.last_sdp is None:
            handle = self.request_in_dialog(dialog, "UPDATE")
        elif dialog.client_invite is not None or dialog.server_invite is not None:
            # An INVITE transaction is under way (it may well refresh the
            # session itself): try again later.
            self._refresh_later(dialog)
            return
        else:
            # The same SDP, byte for byte: same o= version, no new offer.
            handle = self.request_in_dialog(dialog, "INVITE", body=dialog.last_sdp)
        handle.purpose = "refresh"

    def _refresh_later(self, dialog: Dialog) -> None:
        """A refresh could not be made or failed: try again halfway to the
        expiry, or end the session when there is no time left."""
        if dialog.session_expires_at is None:
            return
        remaining = dialog.session_expires_at - self.now()
        if remaining < 1.0:
            self._session_expired(dialog)
            return
        self._stop_session_timer(dialog)
        dialog.session_timer = self.schedule(
            remaining / 2, lambda: self._refresh_session(dialog), "session-refresh"
        )

    def _session_expired(self, dialog: Dialog) -> None:
        dialog.session_timer = None
        if dialog.state is not DialogState.CONFIRMED:
            return
        self._send_bye(dialog)
        self._events.append(ev.DialogEnded(dialog, "session-expired", None))

    def _refreshed_by_us(self, dialog: Dialog, request: Request, response: Response) -> None:
        """A 2xx to a re-INVITE or UPDATE we sent (the application's or ours)."""
        if request.sdp:
            dialog.last_sdp = request.body
        self._note_allow(dialog, response)
        self._session_from_2xx(dialog, request, response)

    def _internal_response(
        self, handle: ClientRequest, status: int, response: Response | None
    ) -> None:
        """The final outcome of a PRACK or a refresh: never reported."""
        dialog = handle.dialog
        if handle.done or dialog is None:
            if response is not None and dialog is not None and 200 <= status < 300:
                self._reack(dialog, response.cseq.seq)  # a retransmitted 2xx
            return
        handle.done = True
        if handle.purpose == "prack":
            return  # §4: the PRACK's own outcome changes nothing by itself
        invite = handle.method == "INVITE"
        if invite and dialog.client_invite is handle:
            dialog.client_invite = None
        if 200 <= status < 300 and response is not None:
            dialog.refresh_target(response)
            if invite:
                self._send_ack(dialog, response.cseq.seq, b"", None)
            if dialog.state is DialogState.CONFIRMED:
                self._refreshed_by_us(dialog, handle.request, response)
        elif dialog.state is not DialogState.CONFIRMED:
            pass
        elif status in (408, 481):
            self._end_dialog(dialog, None, "bye")  # §12.2.1.2, as for any request
        elif status == 422 and response is not None:
            min_se = _delta_seconds(response.headers.get("Min-SE"))
            current = dialog.session_interval or 0
            if min_se is not None and min_se > current:
                dialog.min_se = min_se
                dialog.session_interval = min_se
                self._refresh_session(dialog)
            else:
                self._refresh_later(dialog)
        elif status in (405, 501) and not invite and dialog.last_sdp is not None:
            dialog.peer_allows_update = False  # UPDATE refused: re-INVITE instead
            self._refresh_session(dialog)
        elif status == 491:
            # Glare with the peer's re-INVITE, which refreshes the session if
            # it succeeds; try ours again after the §14.1 delay otherwise.
            self._stop_session_timer(dialog)
            delay = self._rng.randint(210, 400) / 100 if dialog.role == "uac" else 1.0
            dialog.session_timer = self.schedule(
                delay, lambda: self._refresh_session(dialog), "session-refresh"
            )
        else:
            self._refresh_later(dialog)
        if invite:
            self._send_deferred(dialog)

    def _defer_reinvite(
        self,
        dialog: Dialog,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]] | None,
        credentials: DigestClient | None,
    ) -> ClientRequest:
        # The request is built for real (with its CSeq) when it is sent.
        placeholder = dialog.build_request(
            "INVITE", self._via(dialog.transport), cseq=dialog.local_cseq, body=body
        )
        target = uri_target(dialog.next_hop(), dialog.transport)
        handle = ClientRequest(placeholder, target, dialog, credentials)
        dialog.deferred.append((handle, body, content_type, list(headers or ())))
        return handle

    def _send_deferred(self, dialog: Dialog) -> None:
        if not dialog.deferred or dialog.client_invite is not None:
            return
        if dialog.state is not DialogState.CONFIRMED:
            return
        handle, body, content_type, headers = dialog.deferred.pop(0)
        new = self.request_in_dialog(
            dialog,
            "INVITE",
            body=body,
            content_type=content_type,
            headers=headers,
            credentials=handle.credentials,
        )
        handle.request, handle.tx, handle.target = new.request, new.tx, new.target
        dialog.client_invite = handle
        if new.tx is not None:
            self._owners[id(new.tx)] = handle

    def _answered_here(
        self, request: Request, tx: ServerTransaction, dialog: Dialog | None
    ) -> bool:
        """Requests the endpoint answers itself: PRACK, and a session
        interval below our Min-SE."""
        method = request.method
        if dialog is not None:
            self._note_allow(dialog, request)
        if method == "PRACK":
            # We send no reliable provisionals: acknowledge any PRACK in a
            # dialog we know; one for no dialog of ours gets 481 (§7.2).
            self.respond(tx, 200 if dialog is not None else 481)
            return True
        if method in ("INVITE", "UPDATE") and self.config.session_expires > 0:
            se = _session_expires(request.headers.get("Session-Expires"))
            if se is not None and se[0] < self.config.min_se:
                self.respond(
                    tx,
                    422,
                    "Session Interval Too Small",
                    headers=[("Min-SE", str(self.config.min_se))],
                )
                return True
        return False

    def _echo_session(self, tx: ServerTransaction, response: Response) -> None:
        """Session-Expires (and Require: timer) in our 2xx to an INVITE or
        UPDATE, as RFC 4028 §9 has the UAS choose them."""
        request = tx.request
        if self.config.session_expires <= 0 or "Session-Expires" in response.headers:
            return
        supported = _has_option(request.headers, "Supported", "timer")
        se = _session_expires(request.headers.get("Session-Expires"))
        dialog = self._dialogs.get((request.call_id, tx.to_tag or "", request.from_.tag or ""))
        refresher: str | None
        if se is not None:
            # The refresher the request asked for is kept.
            interval, refresher = se
        elif dialog is not None and dialog.session_interval is not None:
            # A refresh without Session-Expires would turn the timer off on
            # the peer's side if our 2xx had none either (§9): restate it,
            # roles unchanged.
            interval = dialog.session_interval
            refresher = "uac" if dialog.session_refresher == "remote" and supported else "uas"
        else:
            return
        if refresher is None:
            # §9: the UAS picks; a UAC that does not support timers cannot
            # refresh, so then we do.
            refresher = "uac" if supported else "uas"
        response.headers.add("Session-Expires", f"{interval};refresher={refresher}")
        if supported:
            response.headers.add("Require", "timer")

    def _responded(self, tx: ServerTransaction, response: Response) -> None:
        """Bookkeeping after our 1xx/2xx to an INVITE or UPDATE."""
        request = tx.request
        dialog = self._dialogs.get((request.call_id, tx.to_tag or "", request.from_.tag or ""))
        if dialog is None:
            return
        if response.sdp:
            dialog.last_sdp = response.body
        if response.status < 200:
            return
        self._note_allow(dialog, request)
        se = _session_expires(response.headers.get("Session-Expires"))
        if se is not None:
            # We are this transaction's UAS: refresher=uac names the peer.
            self._arm_session(dialog, se[0], "local" if se[1] == "uas" else "remote")


def _has_option(headers: Headers, name: str, tag: str) -> bool:
    """Whether a Require/Supported-style list header names option ``tag``."""
    return any(value.strip().lower() == tag for value in headers.get_all(name))


def _delta_seconds(value: str | None) -> int | None:
    """The number at the start of Min-SE, RSeq or Session-Expires; ``None``
    when absent or malformed."""
    if value is None:
        return None
    text = value.split(";", 1)[0].strip()
    if not text or len(text) > 10 or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``Session-Expires: delta;refresher=uac|uas`` as (seconds, refresher)."""
    seconds = _delta_seconds(value)
    if seconds is None or value is None:
        return None
    _, semi, rest = value.partition(";")
    refresher: str | None = None
    if semi:
        try:
            params = parse_header_params(";" + rest)
        except SipParseError:
            params = {}
        found = (params.get("refresher") or "").strip().lower()
        refresher = found if found in ("uac", "uas") else None
    return seconds, refresher
