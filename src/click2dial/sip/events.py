"""Events the sans-IO endpoint reports to the layer above it.

They are small immutable records; the objects they point to (transactions,
dialogs, outgoing INVITEs, client requests) are the handles the application
passes back to the endpoint's commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .message import Request, Response

if TYPE_CHECKING:
    from .dialog import Dialog
    from .endpoint import ClientRequest, OutgoingInvite
    from .transaction import ServerTransaction


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A request the application must answer with ``Endpoint.respond``.
    ``dialog`` is set for requests inside an existing dialog."""

    request: Request
    transaction: ServerTransaction
    dialog: Dialog | None


@dataclass(frozen=True, slots=True)
class IncomingCancelled:
    """The peer cancelled an INVITE we had not answered; 487 was sent."""

    request: Request
    transaction: ServerTransaction


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for our 2xx; ``request.sdp`` holds a late-offer answer."""

    dialog: Dialog
    request: Request


@dataclass(frozen=True, slots=True)
class InviteProgress:
    """A provisional response (101-199) to our INVITE; with an SDP body it
    carries early media.  ``dialog`` is the early dialog when it has a tag."""

    invite: OutgoingInvite
    response: Response
    dialog: Dialog | None


@dataclass(frozen=True, slots=True)
class InviteAnswered:
    """A 2xx to our INVITE.  The ACK was sent already when the INVITE carried
    an offer; otherwise the application sends it with ``Endpoint.ack``."""

    invite: OutgoingInvite
    dialog: Dialog
    response: Response


@dataclass(frozen=True, slots=True)
class InviteFailed:
    """Our INVITE ended without a dialog: a final error response
    (``response`` set), a time-out (408) or a transport failure (503)."""

    invite: OutgoingInvite
    status: int
    reason: str
    response: Response | None


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """A non-INVITE request, or a re-INVITE, got its final outcome.
    ``response`` is ``None`` on a time-out (408) or transport failure (503)."""

    request: ClientRequest
    status: int
    response: Response | None


@dataclass(frozen=True, slots=True)
class DialogEnded:
    """A dialog ended by the peer or by a failure: ``reason`` is ``"bye"``
    (the peer hung up), ``"no-ack"`` (our 2xx was never ACKed) or
    ``"cancelled"``."""

    dialog: Dialog
    reason: str
    request: Request | None = None


Event = (
    IncomingRequest
    | IncomingCancelled
    | AckReceived
    | InviteProgress
    | InviteAnswered
    | InviteFailed
    | RequestCompleted
    | DialogEnded
)
