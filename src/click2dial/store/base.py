"""The persistence contract: the :class:`Store` interface every backend
implements, its errors, and the helpers both backends share (the pagination
cursor, checks on what a caller may write).

The guarantees the rest of Click2Dial builds on are stated here once:

* ``create_call`` is idempotent per ``(integrator, idempotency_key)`` and
  refuses a second live call for the same ``(integrator, agent)``; both rules
  are enforced by UNIQUE indexes, so they hold across tasks, processes and
  nodes sharing one database.
* ``finish_call`` ends a call and writes its outbox rows in one transaction,
  and does so at most once per call: exactly one CDR per call.
* ``save_dialog`` keeps a leg's SIP dialog with its live call, so that the
  next start after a crash can hang the leg up; ``finish_call`` drops the
  saved dialogs in the same statement that ends the call, so they live
  exactly as long as the call does.
* ``due_notifications`` claims the rows it returns for a lease, so several
  nodes draining one outbox do not deliver the same row at the same time;
  a row is claimed only while no older undelivered row of its
  ``(integrator, target)`` is out of reach (claimed by a worker, or in
  back-off), so one group is in one worker's hands at a time and its rows
  reach their target in outbox order whichever nodes deliver them.
* On a store several nodes share (:attr:`Store.shared`: PostgreSQL),
  ``create_call`` also decides the integrator's limits (:class:`CallLimits`)
  atomically with the insert, and :meth:`Store.notify` /
  :meth:`Store.listen` carry messages between the nodes.
* ``take_over`` claims a silent node and moves its live calls to the
  claimer in one transaction: of several survivors racing for one dead
  node, exactly one gets its calls.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypedDict

from click2dial.store.model import (
    DIALOG_COLUMNS,
    END_REASONS,
    ENDED,
    STATES,
    UPDATABLE_CALL_FIELDS,
    Binding,
    CallRecord,
    NodeRecord,
    Notification,
)

MAX_PAGE: Final = 1000
DEFAULT_LEASE: Final = 30.0
"""Seconds a claimed notification stays invisible to other workers."""


class StoreError(Exception):
    """The store cannot do what was asked (bad URL, schema too new, ...)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached now (connection refused or lost, server
    shutting down or starting): a transient outage, worth a retry."""


class AgentBusyError(StoreError):
    """The agent already has a live call for this integrator."""

    def __init__(self, call_ref: str) -> None:
        super().__init__(f"the agent already has a live call: {call_ref}")
        self.call_ref = call_ref


class LimitExceededError(StoreError):
    """A new call would break one of the integrator's :class:`CallLimits`."""

    def __init__(self, limit: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.limit = limit
        """``"max_concurrent"`` or ``"max_cps"``."""
        self.retry_after = retry_after
        """Whole seconds after which the call may pass."""


@dataclass(frozen=True, slots=True)
class CallLimits:
    """An integrator's limits, decided by ``create_call`` under one lock per
    integrator on a shared store, so they hold across every node.

    ``max_cps`` is counted over a sliding window: at most
    ``max(1, floor(max_cps))`` calls created in the ``max(1, 1/max_cps)``
    seconds before a new one."""

    max_concurrent: int
    max_cps: float
    ending: tuple[str, ...] = ()
    """Live calls whose end this node has decided but not stored yet: they
    do not count against ``max_concurrent``."""

    @property
    def window(self) -> float:
        return max(1.0, 1.0 / self.max_cps)

    @property
    def per_window(self) -> int:
        return max(1, math.floor(self.max_cps))

    def over_concurrent(self) -> LimitExceededError:
        return LimitExceededError(
            "max_concurrent",
            f"over the limit of {self.max_concurrent} concurrent calls",
            retry_after=5,
        )

    def over_rate(self, oldest: float, created_at: float) -> LimitExceededError:
        """``oldest``: the first call of the window; the refused one was
        created at ``created_at``."""
        return LimitExceededError(
            "max_cps",
            f"over the limit of {self.max_cps:g} calls per second",
            retry_after=max(1, math.ceil(oldest + self.window - created_at)),
        )


class Listening(Protocol):
    """A subscription made by :meth:`Store.listen`."""

    async def wait_closed(self) -> None:
        """Return when the subscription is lost (the connection dropped)."""

    async def close(self) -> None: ...


class InvalidCursorError(StoreError, ValueError):
    """A pagination cursor that this store did not hand out."""


class OutboxStats(TypedDict):
    pending: int
    """Rows not delivered yet."""
    delivered: int
    retries: int
    """Pending rows that have failed at least once (in back-off)."""
    oldest_pending_age: float
    """Seconds since the oldest pending row was created; 0.0 if none."""


def encode_cursor(call: CallRecord) -> str:
    raw = json.dumps([call.created_at, call.call_ref], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, call_ref = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursorError(f"invalid cursor {cursor!r}") from exc
    if (
        not isinstance(created_at, int | float)
        or isinstance(created_at, bool)
        or not math.isfinite(created_at)
        or not isinstance(call_ref, str)
    ):
        raise InvalidCursorError(f"invalid cursor {cursor!r}")
    return float(created_at), call_ref


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")


def check_notifications(notifications: Sequence[Notification]) -> None:
    """Refuse a misspelt kind or target before anything is written."""
    for n in notifications:
        n.validate()


def check_finish(
    end_reason: str,
    notifications: Sequence[Notification],
    fields: Mapping[str, Any] | None = None,
) -> None:
    if end_reason not in END_REASONS:
        raise ValueError(f"unknown end_reason {end_reason!r}")
    check_notifications(notifications)
    if fields:
        if "state" in fields:
            raise ValueError("finish_call sets the state itself")
        check_update(dict(fields))


_DIALOG_COLUMN_NAMES = frozenset(DIALOG_COLUMNS.values())


def check_dialog(leg: str, state: Mapping[str, Any]) -> str:
    """The column that keeps ``leg``'s dialog."""
    column = DIALOG_COLUMNS.get(leg)
    if column is None:
        raise ValueError(f"leg must be one of {sorted(DIALOG_COLUMNS)}, got {leg!r}")
    if not isinstance(state, Mapping):
        raise ValueError("a dialog state must be a JSON object (dict)")
    return column


def check_update(fields: dict[str, Any]) -> None:
    """``fields`` may include a leg's dialog column (``DIALOG_COLUMNS``), so
    that a dialog is kept in the same write as the state it came with."""
    unknown = set(fields) - UPDATABLE_CALL_FIELDS - _DIALOG_COLUMN_NAMES
    if unknown:
        raise ValueError(f"update_call cannot set {sorted(unknown)}")
    state = fields.get("state")
    if state == ENDED:
        raise ValueError("use finish_call() to end a call: it writes the CDR")
    if "state" in fields and state not in STATES:
        raise ValueError(f"unknown call state {state!r}")
    warnings = fields.get("warnings")
    if "warnings" in fields and not (
        isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)
    ):
        raise ValueError("warnings must be a list of strings")


class Store(ABC):
    """Calls and the notification outbox, behind one async interface.

    Create one with :func:`click2dial.store.open_store`, then ``await
    store.open()`` (or ``async with store:``) before use.
    """

    #: Whether several nodes may share this store: ``create_call`` decides
    #: :class:`CallLimits` and :meth:`notify`/:meth:`listen` work.  SQLite is
    #: one node only, or the workers of one node on one machine.
    shared: bool = False

    #: Called with each :class:`StoreUnavailableError` a backend raises,
    #: whoever made the call, so that readiness learns of an outage at once.
    on_unavailable: Callable[[StoreUnavailableError], None] | None = None

    def _unavailable(self, message: str) -> StoreUnavailableError:
        error = StoreUnavailableError(message)
        if self.on_unavailable is not None:
            self.on_unavailable(error)
        return error

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- life cycle ---------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def schema_version(self) -> int: ...

    # -- calls --------------------------------------------------------------

    @abstractmethod
    async def create_call(
        self, call: CallRecord, limits: CallLimits | None = None
    ) -> tuple[CallRecord, bool]:
        """Insert ``call``; ``(stored, True)`` when new.

        With an ``idempotency_key`` already used by this integrator, returns
        ``(the first call, False)`` and inserts nothing.  Raises
        :class:`AgentBusyError` when the agent already has a live call, and
        (given ``limits``) :class:`LimitExceededError` when the call would
        break them; a replay is never over a limit.  A store that is not
        :attr:`shared` checks only ``max_concurrent``: its one process keeps
        the rate in memory.
        """

    @abstractmethod
    async def find_by_idempotency_key(self, integrator: str, key: str) -> CallRecord | None:
        """The call this integrator created with ``key``, if any.  A fast path
        for retries; :meth:`create_call` is what makes idempotency hold."""

    @abstractmethod
    async def update_call(self, call_ref: str, /, **fields: Any) -> bool:
        """Change fields of a live call; ``False`` if it is unknown or ended.

        The identity fields and the end fields cannot be changed here (ending
        a call is :meth:`finish_call`'s job); ``ValueError`` if tried.
        """

    @abstractmethod
    async def get_call(self, integrator: str, call_ref: str) -> CallRecord | None:
        """The call, or ``None`` if it does not exist *for this integrator*."""

    @abstractmethod
    async def list_calls(
        self,
        integrator: str,
        *,
        contact_ref: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[CallRecord], str | None]:
        """The integrator's calls, newest first, and the cursor of the next
        page (``None`` on the last page).  ``since`` keeps calls created at or
        after that time.  Raises :class:`InvalidCursorError` for a bad cursor.
        """

    @abstractmethod
    async def finish_call(
        self,
        call_ref: str,
        *,
        ended_at: float,
        end_reason: str,
        end_code: int | None,
        sip_status: int | None,
        sip_reason: str | None,
        hangup_side: str | None,
        notifications: Sequence[Notification] = (),
        fields: Mapping[str, Any] | None = None,
        lazy: bool = False,
    ) -> CallRecord | None:
        """End a live call and queue its notifications, in one transaction.
        ``fields`` are other columns to set with the end (as ``update_call``
        would: times and leg states the call reached).

        ``lazy``: the caller is in no hurry (the node's end writer), so a
        store that commits in groups may hold the write briefly to share a
        commit with other work.  It still returns only once durable.

        Returns the ended record, or ``None`` (and writes nothing) if the call
        is unknown or already ended.
        """

    @abstractmethod
    async def save_dialog(self, call_ref: str, leg: str, state: dict[str, Any]) -> None:
        """Keep the established SIP dialog of a live call's leg (``"agent"``
        or ``"callee"``): ``state`` is ``Dialog.snapshot()``.  One small
        write; a later save of the same leg replaces it; nothing is written
        for a call that is unknown or ended (its dialogs are gone with it).
        """

    @abstractmethod
    async def dialogs_of(self, call_ref: str) -> dict[str, dict[str, Any]]:
        """The saved dialogs of a live call, by leg; empty once it ended."""

    @abstractmethod
    async def live_calls(self, node_id: str | None = None) -> list[CallRecord]:
        """Calls not ended, oldest first; only ``node_id``'s if given."""

    @abstractmethod
    async def count_live(self, integrator: str) -> int: ...

    # -- node to node ---------------------------------------------------------

    async def notify(self, payload: str) -> None:
        """Send ``payload`` to every node listening on this store (its
        schema): PostgreSQL ``NOTIFY``.  Only a :attr:`shared` store can."""
        raise StoreError("this store serves one node only: there is no other node to tell")

    async def listen(self, callback: Callable[[str], None]) -> Listening:
        """Call ``callback`` with each payload :meth:`notify` sends, until
        the returned subscription is closed or lost."""
        raise StoreError("this store serves one node only: there is no other node to hear")

    # -- outbox -------------------------------------------------------------

    @abstractmethod
    async def enqueue(self, notifications: Sequence[Notification]) -> None:
        """Queue notifications that are not tied to the end of a call (the
        agent connection notification)."""

    @abstractmethod
    async def due_notifications(
        self, now: float, limit: int = 100, *, lease: float = DEFAULT_LEASE
    ) -> list[Notification]:
        """Claim up to ``limit`` undelivered rows due at ``now``, oldest first.

        A claimed row's ``next_attempt_at`` moves to ``now + lease``: other
        workers skip it until then, and if this worker dies before
        :meth:`mark_delivered` / :meth:`mark_failed` it comes due again.
        """

    @abstractmethod
    async def mark_delivered(self, id: str, at: float) -> bool: ...

    @abstractmethod
    async def mark_failed(self, id: str, error: str, next_attempt_at: float) -> bool:
        """Record a failed attempt (``attempts += 1``) and when to retry."""

    @abstractmethod
    async def undelivered(self, integrator: str, limit: int = 100) -> list[Notification]:
        """The integrator's pending rows, oldest first."""

    @abstractmethod
    async def redeliver(self, integrator: str, id: str, *, now: float | None = None) -> bool:
        """Queue a row (delivered or not) to be sent again at once, with a
        fresh retry budget.  The id is kept: it is the same document."""

    @abstractmethod
    async def outbox_stats(
        self, *, now: float | None = None, integrator: str | None = None
    ) -> OutboxStats: ...

    # -- registrar bindings --------------------------------------------------

    @abstractmethod
    async def save_binding(self, binding: Binding) -> None:
        """Insert or replace the binding of (agent, contact)."""

    @abstractmethod
    async def delete_binding(self, agent: str, contact: str) -> bool: ...

    @abstractmethod
    async def bindings(self, agent: str | None = None, *, now: float) -> list[Binding]:
        """The bindings not expired at ``now``, of one agent or of all."""

    @abstractmethod
    async def purge_bindings(self, now: float) -> int:
        """Delete the bindings expired at ``now``; how many went."""

    # -- node liveness (click2dial.cluster) -----------------------------------

    @abstractmethod
    async def node_started(self, node_id: str, now: float) -> None:
        """Record a new life of ``node_id``: ``started_at`` and ``last_seen``
        are ``now``, and the takeover marker of an earlier life is cleared."""

    @abstractmethod
    async def heartbeat(self, node_id: str, now: float) -> NodeRecord:
        """``last_seen = now`` (the row is created if missing); the row as
        it is now, takeover marker included."""

    @abstractmethod
    async def nodes(self) -> list[NodeRecord]:
        """Every node's row, by ``node_id``."""

    @abstractmethod
    async def silent_nodes(self, now: float, silence: float, *, exclude: str) -> list[str]:
        """Nodes not seen for more than ``silence`` seconds before ``now``,
        not taken over since they were last seen, that still own live calls;
        never ``exclude``."""

    @abstractmethod
    async def take_over(
        self, node_id: str, *, by: str, now: float, silence: float
    ) -> list[CallRecord]:
        """Claim the silent ``node_id`` for ``by`` and move its live calls to
        ``by``, in one transaction; the moved calls (``node_id`` now ``by``),
        oldest first.  Empty when the node is not silent for ``silence``
        seconds, was already claimed since it was last seen, or is ``by``
        itself: of concurrent claimers, one wins."""
