"""The records the store keeps: a call (:class:`CallRecord`) and an outbox row
(:class:`Notification`).

These are plain data.  The store refuses a value outside its vocabulary on
the way in, before it is written to disk and delivered to an integrator: the
call words (types, sources, states, end reasons) are the enums
of :mod:`click2dial.vocabulary`, and the sets below are computed from them;
the outbox words (kinds, targets) are the store's own and are defined here.
Rows read back are not re-validated: a newer node sharing the database may
know a value this one does not, and reading must not break on it, which is
also why the fields are typed ``str`` rather than as the enums.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Final

from click2dial.vocabulary import CallSource, CallState, CallType, EndReason

# Plain strings (the enums' values), so that messages list the bare words.
CALL_TYPES: Final = frozenset(t.value for t in CallType)
SOURCES: Final = frozenset(s.value for s in CallSource)
ENDED: Final = CallState.ENDED
LIVE_STATES: Final = frozenset(s.value for s in CallState if s is not ENDED)
STATES: Final = frozenset(s.value for s in CallState)
END_REASONS: Final = frozenset(r.value for r in EndReason)
NOTIFICATION_KINDS: Final = frozenset({"cdr", "agent"})
NOTIFICATION_TARGETS: Final = frozenset({"redis", "webhook"})


def _check(name: str, value: object, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


@dataclass(kw_only=True)
class CallRecord:
    """One click-to-dial call, live or ended; ``call_ref`` is our own id."""

    call_ref: str
    integrator: str
    agent: str
    callee: str
    outbound_id: str
    """The caller ID actually presented to the callee."""
    outbound_id_requested: str
    """What the integrator asked for: ``"random"`` or a number."""
    contact_ref: str
    call_type: str
    created_at: float
    node_id: str
    """The Click2Dial node that owns the call's SIP legs."""
    source: str = CallSource.API
    state: str = CallState.AGENT_RINGING
    agent_answered_at: float | None = None
    callee_dialed_at: float | None = None
    callee_answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    end_code: int | None = None
    """Q.850 cause."""
    sip_status: int | None = None
    sip_reason: str | None = None
    hangup_side: str | None = None
    idempotency_key: str | None = None
    warnings: list[str] = field(default_factory=list)
    agent_leg: str | None = None
    callee_leg: str | None = None

    @property
    def live(self) -> bool:
        return self.state != ENDED

    def validate(self) -> None:
        """Raise ``ValueError`` for a value outside the vocabularies above."""
        _check("call_type", self.call_type, CALL_TYPES)
        _check("source", self.source, SOURCES)
        _check("state", self.state, STATES)
        if self.end_reason is not None:
            _check("end_reason", self.end_reason, END_REASONS)
        if not all(isinstance(w, str) for w in self.warnings):
            raise ValueError("warnings must be a list of strings")


@dataclass(kw_only=True)
class Notification:
    """One document to deliver to one integrator target (an outbox row).

    ``id`` is unique per row and is what consumers deduplicate on: a CDR that
    goes to both Redis and a webhook is two rows with two ids.
    """

    integrator: str
    kind: str
    call_ref: str
    payload: dict[str, Any]
    target: str
    created_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0
    next_attempt_at: float = 0.0
    """When to try (again); 0.0 means at once."""
    delivered_at: float | None = None
    last_error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None

    def validate(self) -> None:
        _check("kind", self.kind, NOTIFICATION_KINDS)
        _check("target", self.target, NOTIFICATION_TARGETS)
        if not isinstance(self.payload, dict):
            raise ValueError("payload must be a JSON object (dict)")


DIALOG_COLUMNS: Final = {"agent": "agent_dialog", "callee": "callee_dialog"}
"""Where each leg's saved SIP dialog is kept: JSON columns of the call's row,
outside :class:`CallRecord` (only crash recovery reads them)."""

CALL_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(CallRecord))
NOTIFICATION_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(Notification))

# Fields fixed at creation: the identity of the call, and the end fields which
# only finish_call() may set, so that every ended call went through the path
# that writes its CDR.
IMMUTABLE_CALL_FIELDS: Final = frozenset(
    {
        "call_ref",
        "integrator",
        "agent",
        "created_at",
        "idempotency_key",
        "source",
        "ended_at",
        "end_reason",
        "end_code",
    }
)
UPDATABLE_CALL_FIELDS: Final = frozenset(CALL_COLUMNS) - IMMUTABLE_CALL_FIELDS


BINDING_COLUMNS: Final = (
    "agent",
    "contact",
    "expires_at",
    "transport",
    "host",
    "port",
    "call_id",
    "cseq",
    "node_id",
    "updated_at",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One registered contact of an agent (RFC 3261 §10): ``contact`` is the
    Contact URI (the Request-URI of requests to it), and ``transport``,
    ``host``, ``port`` the flow its REGISTER came over, where those requests
    are sent (behind NAT and over TCP the Contact is not reachable itself).
    ``call_id``/``cseq`` order the REGISTERs that refreshed it (§10.3)."""

    agent: str
    contact: str
    expires_at: float
    transport: str
    host: str
    port: int
    call_id: str
    cseq: int
    node_id: str
    updated_at: float = field(default_factory=time.time)


NODE_COLUMNS: Final = ("node_id", "started_at", "last_seen", "taken_over_by", "taken_over_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    """A node's liveness row: when its current life started, its last
    heartbeat, and who took over its live calls after it fell silent (kept
    as history until the node starts again)."""

    node_id: str
    started_at: float
    last_seen: float
    taken_over_by: str | None = None
    taken_over_at: float | None = None
