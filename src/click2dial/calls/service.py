"""The call service: what the API (and the WebRTC edge) may ask of call
control, with every business rule applied in one place.

Order of checks for a new call, so that each failure gets its precise status:
validation (422) → permissions (403) → telephony ready (503) → idempotency
replay → node capacity (503, :mod:`.admission`) → the integrator's rate and
concurrency limits (429) → agent busy (409).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cluster_bus import ClusterBus
from ..config import IntegratorConfig
from ..sip.aio import Call
from ..store import AgentBusyError, CallRecord, Store, StoreError
from ..store.base import CallLimits, LimitExceededError
from ..vocabulary import CallState
from .admission import Admission
from .control import CallController, new_call_ref
from .policy import may_use_agent, may_use_outbound_id
from .rules import CallRequest, FieldError, is_extension, validate_call_request

#: What call control knows of a live call before the store does.
LIVE_FIELDS = ("state", "agent_leg", "callee_leg", "agent_answered_at", "callee_dialed_at",
               "callee_answered_at")  # fmt: skip
#: Seconds a DELETE waits for the end to be stored before answering ``ending``.
HANGUP_STORE_WAIT = 0.5
#: Seconds a DELETE of another node's call waits for that node's answer: it
#: waits up to ``HANGUP_STORE_WAIT`` for its store write, then replies.
REMOTE_HANGUP_WAIT = 1.0
#: ``Retry-After`` of a DELETE whose owner did not answer: the node is being
#: taken over, or the bus is reconnecting.
REMOTE_RETRY_AFTER = 2
#: Seconds a new call waits for the store to take its agent's previous end.
PREVIOUS_END_WAIT = 2.0


class CallError(Exception):
    """A refused call request: HTTP status, a title, and per-field errors."""

    def __init__(
        self,
        status: int,
        title: str,
        errors: list[FieldError] | None = None,
        *,
        retry_after: int | None = None,
        call_ref: str | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or []
        self.retry_after = retry_after
        self.call_ref = call_ref
        self.admission: str | None = None
        """The node's reason, for a refusal by admission control."""


@dataclass
class _Bucket:
    """Token bucket for calls per second (burst = one second's worth)."""

    rate: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0 if a token was taken, else seconds until one is available."""
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def refund(self) -> None:
        self.tokens = min(self.rate, self.tokens + 1)


@dataclass
class PlaceResult:
    call: CallRecord
    created: bool
    warnings: list[str] = field(default_factory=list)


class CallService:
    def __init__(
        self,
        *,
        store: Store,
        controller: CallController,
        node_id: str,
        ready: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_placed: Callable[[CallRecord], None] = lambda record: None,
        admission: Admission | None = None,
        bus: ClusterBus | None = None,
        lookup: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.admission = admission
        self.bus = bus
        """How a DELETE of a call another node runs reaches that node."""
        #: Refreshes an extension's registered contacts before it is rung
        #: (another node may have taken its REGISTER).
        self.lookup = lookup
        self.on_placed = on_placed
        self.store = store
        self.controller = controller
        self.node_id = node_id
        self.ready = ready
        self.clock = clock
        self.monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def _rate_limit(self, integrator: IntegratorConfig) -> _Bucket:
        rate = float(integrator.max_cps)
        now = self.monotonic()
        bucket = self._buckets.get(integrator.name)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[integrator.name] = _Bucket(rate, rate, now)
        wait = bucket.take(now)
        if wait > 0:
            raise CallError(
                429, f"over the limit of {rate:g} calls per second", retry_after=math.ceil(wait)
            )
        return bucket

    async def place(
        self,
        integrator: IntegratorConfig,
        data: Mapping[str, object],
        *,
        idempotency_key: str | None = None,
        source: str = "api",
        agent_call: Call | None = None,
    ) -> PlaceResult:
        """Place a call, or raise :class:`CallError`.  ``agent_call``: the
        call is the agent's own INVITE (we are its UAS), not one we ring."""
        checked = validate_call_request(
            data,
            default_outbound_id=integrator.default_outbound_id,
            allow_internal="internal" in integrator.call_types,
        )
        if isinstance(checked, list):
            if all(e.rule == "not_allowed" for e in checked):
                raise CallError(403, "the integrator may not place this call", checked)
            raise CallError(422, "the call request breaks the validation rules", checked)
        request: CallRequest = checked
        self._authorise(integrator, request)
        if not self.ready():
            raise CallError(503, "the telephony side cannot take calls now", retry_after=5)
        # A replay of a request already taken is found by create_call, in
        # the same store job as the insert: a new call costs no extra read.
        # Only a refusal looks for it first: a replay is never refused.
        try:
            self._admit()
            try:
                bucket = self._integrator_rate(integrator)
            except CallError:
                self._refund()
                raise
        except CallError as refusal:
            existing = await self._replayed(integrator, idempotency_key)
            if existing is None:
                raise
            if refusal.admission is not None and self.admission is not None:
                self.admission.forgive(refusal.admission)
            return PlaceResult(existing, False, list(existing.warnings))
        ends = self.controller.ends
        outbound_id = request.outbound_id
        if outbound_id == "random":
            outbound_id = secrets.choice(integrator.clid_pool)
        record = CallRecord(
            call_ref=new_call_ref(),
            integrator=integrator.name,
            agent=request.agent,
            callee=request.callee,
            outbound_id=outbound_id,
            outbound_id_requested=request.outbound_id,
            contact_ref=request.contact_ref,
            call_type=request.call_type,
            source=source,
            state="agent_ringing",
            created_at=self.clock(),
            idempotency_key=idempotency_key,
            node_id=self.node_id,
            warnings=list(request.warnings),
        )
        if self.lookup is not None and agent_call is None:
            for extension in (request.agent, request.callee):
                if is_extension(extension):
                    await self.lookup(extension)
        previous = ends.pending_agent(integrator.name, request.agent)
        if previous is not None:
            # The agent's last call has ended, but the store does not know
            # yet (it is being written, or the store is coming back).
            await ends.flush(previous.call_ref, PREVIOUS_END_WAIT)
        limits = CallLimits(
            integrator.max_concurrent,
            float(integrator.max_cps),
            ending=ends.pending_refs(integrator.name),
        )
        try:
            stored, created = await self.store.create_call(record, limits)
        except LimitExceededError as exc:
            if bucket is not None:
                bucket.refund()  # nothing was dialled
            self._refund()
            raise CallError(429, str(exc), retry_after=exc.retry_after) from exc
        except AgentBusyError as exc:
            if bucket is not None:
                bucket.refund()
            self._refund()
            raise CallError(
                409,
                f"agent {request.agent} already has a live call",
                [FieldError("agent", "busy", request.agent, "the agent is already on a call")],
                call_ref=exc.call_ref,
            ) from exc
        if not created:  # a replay: nothing new was dialled
            if bucket is not None:
                bucket.refund()
            self._refund()
        elif agent_call is not None:
            self.controller.start_incoming(stored, integrator, agent_call)
            self.on_placed(stored)
        else:
            self.controller.start(stored, integrator)
            self.on_placed(stored)
        return PlaceResult(stored, created, list(stored.warnings))

    def _admit(self) -> None:
        """503 when the node is over capacity (before anything is written)."""
        if self.admission is None:
            return
        reason = self.admission.check()
        if reason is not None:
            refusal = CallError(
                503,
                f"this node cannot take more calls now: {reason}",
                retry_after=self.admission.config.retry_after,
            )
            refusal.admission = reason
            raise refusal

    def _refund(self) -> None:
        if self.admission is not None:
            self.admission.refund()

    def _integrator_rate(self, integrator: IntegratorConfig) -> _Bucket | None:
        """429 over the integrator's rate; its rate token.  The concurrency
        limit is decided with the insert (``create_call``), and so is the
        rate on a store several nodes share, so that it holds across them."""
        if self.store.shared:
            return None
        return self._rate_limit(integrator)

    async def _replayed(
        self, integrator: IntegratorConfig, idempotency_key: str | None
    ) -> CallRecord | None:
        if idempotency_key is None:
            return None
        return await self.store.find_by_idempotency_key(integrator.name, idempotency_key)

    def _authorise(self, integrator: IntegratorConfig, request: CallRequest) -> None:
        errors: list[FieldError] = []
        if request.call_type not in integrator.call_types:
            errors.append(
                FieldError(
                    "agent",
                    "call_type",
                    request.agent,
                    f"{request.call_type} calls are not enabled for this integrator",
                )
            )
        if not may_use_agent(integrator, request.agent):
            errors.append(
                FieldError("agent", "not_allowed", request.agent, "this agent is not allowed")
            )
        if request.outbound_id == "random":
            if not integrator.clid_pool:
                errors.append(
                    FieldError(
                        "outbound_id", "no_pool", "random", "no caller-ID pool is configured"
                    )
                )
        elif not may_use_outbound_id(integrator, request.outbound_id):
            errors.append(
                FieldError(
                    "outbound_id",
                    "not_allowed",
                    request.outbound_id,
                    "this caller ID is not allowed for this integrator",
                )
            )
        if errors:
            raise CallError(403, "the integrator may not place this call", errors)

    async def get(self, integrator: IntegratorConfig, call_ref: str) -> CallRecord | None:
        return self._view(await self.store.get_call(integrator.name, call_ref))

    async def hangup(self, integrator: IntegratorConfig, call_ref: str) -> CallRecord | None:
        """Hang up (or cancel) a call; answers as soon as the end is decided
        and, within a short wait, stored; never waits for the legs."""
        call = await self.store.get_call(integrator.name, call_ref)
        if call is None:
            return None
        if call.state == CallState.ENDED:
            return call
        if call.node_id != self.node_id and self.bus is not None:
            return await self._hangup_elsewhere(integrator, call)
        await self.controller.hangup(call_ref, HANGUP_STORE_WAIT)
        call = await self.store.get_call(integrator.name, call_ref) or call
        return self._view(call)

    async def _hangup_elsewhere(self, integrator: IntegratorConfig, call: CallRecord) -> CallRecord:
        """Hang up a call another node runs, through the bus: the answer is
        the owner's (``ended``, or ``ending`` while the owner's store write
        is late); 503 with ``Retry-After`` if the owner does not answer."""
        assert self.bus is not None
        owner = call.node_id
        try:
            reply = await self.bus.hangup(owner, call.call_ref, timeout=REMOTE_HANGUP_WAIT)
        except StoreError as exc:
            # The request could not be sent: the store is unreachable.
            raise CallError(
                503, f"cannot reach node {owner}, which runs this call: {exc}", retry_after=2
            ) from exc
        stored = await self.store.get_call(integrator.name, call.call_ref) or call
        if stored.state == CallState.ENDED:
            return stored
        if reply is not None and (reply.running or reply.ending):
            stored.state = CallState.ENDING
            return stored
        title = (
            f"node {owner}, which runs this call, does not answer; try again"
            if reply is None
            else f"node {owner} does not run this call any more; try again"
        )
        raise CallError(503, title, retry_after=REMOTE_RETRY_AFTER)

    def _view(self, call: CallRecord | None) -> CallRecord | None:
        """The call as the integrator should see it: a call this node runs is
        shown as call control knows it (the store's copy of its progress may
        lag a write behind), and ``ending`` while its decided end is not
        stored yet."""
        if call is None or call.state == CallState.ENDED:
            return call
        if self.controller.ending(call.call_ref):
            call.state = CallState.ENDING
            return call
        live = self.controller.live_record(call.call_ref)
        if live is not None:
            for name in LIVE_FIELDS:
                setattr(call, name, getattr(live, name))
        return call

    async def list(
        self, integrator: IntegratorConfig, **filters: Any
    ) -> tuple[list[CallRecord], str | None]:
        calls, cursor = await self.store.list_calls(integrator.name, **filters)
        for call in calls:
            self._view(call)
        return calls, cursor
