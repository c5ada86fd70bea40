"""SIP dialogs (RFC 3261 §12): identity, route set, remote target, CSeq
spaces, and building requests inside a dialog.

A :class:`Dialog` is plain state.  The endpoint decides when one is created,
confirmed or ended; this module knows how a dialog is derived from the
request/response that creates it and how its requests are formed, and how
an established one is kept across a crash (:meth:`Dialog.snapshot`, a plain
JSON-able dict, and :meth:`Dialog.restore`), so that the next start can still
send it a BYE.
"""

from __future__ import annotations

import enum
from typing import Any

from .headers import Address, CSeq, Via, parse_address
from .message import Headers, Request, Response
from .timer import Timer
from .transaction import Target
from .uri import Uri, parse_uri


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


DialogId = tuple[str, str, str]


class Dialog:
    """One dialog, seen from our side (``local`` is us, ``remote`` the peer)."""

    __slots__ = (
        "ack",
        "call_id",
        "client_invite",
        "deferred",
        "flow",
        "last_sdp",
        "local",
        "local_cseq",
        "min_se",
        "peer_allows_update",
        "pending_2xx",
        "remote",
        "remote_cseq",
        "remote_target",
        "role",
        "route_set",
        "rseq",
        "server_invite",
        "session_expires_at",
        "session_interval",
        "session_refresher",
        "session_timer",
        "state",
        "transport",
        "user_data",
    )

    def __init__(
        self,
        *,
        role: str,
        call_id: str,
        local: Address,
        remote: Address,
        remote_target: Uri,
        route_set: list[Address],
        local_cseq: int,
        remote_cseq: int | None,
        transport: str,
    ) -> None:
        self.role = role  # "uac": we sent the INVITE; "uas": we received it
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.transport = transport
        self.state = DialogState.EARLY
        # Where the peer's messages come from, when requests must go there
        # rather than to remote_target (a NATed phone; see endpoint).
        self.flow: Target | None = None
        # The ACK we sent for the last 2xx (bytes, target, CSeq), re-sent when
        # that 2xx is retransmitted.
        self.ack: tuple[bytes, Target, int] | None = None
        # Our 2xx to an INVITE awaiting its ACK: (CSeq, retransmit timer).
        self.pending_2xx: tuple[int, Timer | None, Timer] | None = None
        # The in-progress INVITE transactions of this dialog, for 491 glare.
        self.server_invite: object | None = None
        self.client_invite: object | None = None
        # RFC 4028 session timer: the interval in seconds (None: no session
        # timer, the call layer probes with OPTIONS instead), who refreshes
        # ("local" or "remote"), when the session expires, and the timer that
        # sends our next refresh or notices the peer's missing one.
        self.session_interval: int | None = None
        self.session_refresher: str | None = None
        self.session_expires_at: float | None = None
        self.session_timer: Timer | None = None
        # The Min-SE we put in refreshes (raised by a peer's 422).
        self.min_se = 0
        # Whether the peer listed UPDATE in an Allow header: refresh with a
        # body-less UPDATE rather than a re-INVITE.
        self.peer_allows_update = False
        # The last SDP body we sent in this dialog, re-sent unchanged (same
        # o= version) by a refresh re-INVITE.
        self.last_sdp: bytes | None = None
        # RFC 3262 (UAC): RSeq of the last in-order reliable provisional.
        self.rseq: int | None = None
        # Application re-INVITEs held while our refresh re-INVITE is pending.
        self.deferred: list[Any] = []
        self.user_data: Any = None

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local.tag or "", self.remote.tag or "")

    @property
    def established(self) -> bool:
        return self.state is DialogState.CONFIRMED

    @classmethod
    def for_uac(cls, request: Request, response: Response, transport: str) -> Dialog:
        """Dialog created by a response to our INVITE (§12.1.2)."""
        target = response.contact[0].uri if response.contact else request.uri
        routes = response.headers.addresses("Record-Route")
        routes.reverse()
        return cls(
            role="uac",
            call_id=request.call_id,
            local=request.from_,
            remote=response.to,
            remote_target=target,
            route_set=routes,
            local_cseq=request.cseq.seq,
            remote_cseq=None,
            transport=transport,
        )

    @classmethod
    def for_uas(cls, request: Request, local_tag: str, transport: str) -> Dialog:
        """Dialog created by our response to an INVITE (§12.1.1)."""
        local = request.to.copy()
        local.params["tag"] = local_tag
        target = request.contact[0].uri if request.contact else request.from_.uri
        return cls(
            role="uas",
            call_id=request.call_id,
            local=local,
            remote=request.from_,
            remote_target=target,
            route_set=request.headers.addresses("Record-Route"),
            local_cseq=0,
            remote_cseq=request.cseq.seq,
            transport=transport,
        )

    def snapshot(self) -> dict[str, Any]:
        """What it takes to send a request in this dialog after a restart:
        identity, route set, remote target, CSeq spaces, transport (and the
        flow its requests really go to, when one is known).  Strings and
        numbers only, so it can be stored as JSON."""
        data: dict[str, Any] = {
            "role": self.role,
            "call_id": self.call_id,
            "local": str(self.local),
            "remote": str(self.remote),
            "remote_target": str(self.remote_target),
            "route_set": [str(route) for route in self.route_set],
            "local_cseq": self.local_cseq,
            "remote_cseq": self.remote_cseq,
            "transport": self.transport,
        }
        # ``flow`` (where in-dialog requests go when the peer is behind NAT)
        # may not exist on this Dialog: read it without depending on it.
        flow = getattr(self, "flow", None)
        if isinstance(flow, Target):
            data["flow"] = [flow.transport, flow.host, flow.port]
        return data

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Dialog:
        """A CONFIRMED dialog from :meth:`snapshot`'s dict.  Raises
        ``KeyError``, ``TypeError``, ``ValueError`` or ``SipParseError`` for
        a dict that is not one."""
        remote_cseq = data["remote_cseq"]
        dialog = cls(
            role=str(data["role"]),
            call_id=str(data["call_id"]),
            local=parse_address(data["local"]),
            remote=parse_address(data["remote"]),
            remote_target=parse_uri(data["remote_target"]),
            route_set=[parse_address(route) for route in data["route_set"]],
            local_cseq=int(data["local_cseq"]),
            remote_cseq=None if remote_cseq is None else int(remote_cseq),
            transport=str(data["transport"]),
        )
        dialog.state = DialogState.CONFIRMED
        flow = data.get("flow")
        if flow is not None and "flow" in cls.__slots__:
            transport, host, port = flow
            setattr(dialog, "flow", Target(str(transport), str(host), int(port)))  # noqa: B010
        return dialog

    def refresh_target(self, message: Request | Response) -> None:
        """Remote target refresh from a re-INVITE/UPDATE or its 2xx (§12.2)."""
        if message.contact:
            self.remote_target = message.contact[0].uri

    def next_hop(self) -> Uri:
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target

    def build_request(
        self,
        method: str,
        via: Via,
        *,
        cseq: int | None = None,
        contact: Address | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> Request:
        """A request inside this dialog (§12.2.1.1).  ``cseq`` is given for
        ACK; otherwise the local sequence number advances."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        hdrs = headers.copy() if headers is not None else Headers()
        for route in reversed(self.route_set):
            hdrs.prepend("Route", str(route))
        return Request(
            method,
            self.remote_target,
            [via],
            self.local,
            self.remote,
            self.call_id,
            CSeq(cseq, method),
            hdrs,
            body,
            [contact] if contact is not None else None,
        )
