"""The registrar (``[extensions] mode = "registrar"``): agents' phones
REGISTER here, and calls to an agent ring the contacts they bound.

It owns REGISTER handling (RFC 3261 §10.3): the digest challenge with the
agent's ``password`` (SHA-256 and MD5 offered, nonces and replay protection
from :class:`~click2dial.sip.auth.DigestServer`), binding expiry
(``423 Interval Too Brief`` under ``min_expires``, clamped to
``max_expires``), several contacts per agent, un-REGISTER (``expires=0``) and
``Contact: *``; and the blocking of sources and extensions that keep failing
authentication (password guessing).

Bindings live in the store (every node sees them) with an in-memory copy
here; the copy is refreshed from the store every ``refresh_interval``
seconds and expired rows are purged then.  Before a call rings an agent,
:meth:`Registrar.lookup` reads that agent's bindings from the store when the
copy has none or is older than ``lookup_ttl`` seconds: with several nodes
(behind a SIP edge that sends each REGISTER to any of them), a binding taken
on one node is used by the next call on another.  A binding keeps the
flow its REGISTER came over (transport, source address and port): requests
to the agent go there, the Contact URI being only their Request-URI (RFC 5626
ideas: behind NAT, and over TCP, the Contact itself is not reachable).

The SIP side is :meth:`Registrar.on_register`, called by the application's
out-of-dialog request handler; the sans-IO core knows nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .sip.auth import DigestServer
from .sip.message import Request
from .sip.transaction import ServerTransaction, Target
from .store import Binding, Store, StoreError

log = logging.getLogger(__name__)

#: Respond to a request: (transaction, status, headers).
Responder = Callable[[ServerTransaction, int, list[tuple[str, str]]], None]


@dataclass
class RegistrarConfig:
    realm: str
    node_id: str = "node"
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    #: Failed authentications (``max_failures`` within ``failure_window``
    #: seconds) from one source address, or for one extension, block it for
    #: ``block_for`` seconds.
    max_failures: int = 5
    failure_window: float = 60.0
    block_for: float = 300.0
    refresh_interval: float = 30.0
    #: Seconds an agent's copy is trusted before a call reads the store again.
    lookup_ttl: float = 5.0
    #: Addresses of SIP edges (``[sip] edges``): a request relayed by one of
    #: them counts its failures against the client it received it from.
    edges: frozenset[str] = frozenset()
    #: The challenges of a 401, in this order.  MD5 alone by default: phones
    #: that know only MD5 (baresip 1.0's libre, SIP.js) give up on a 401
    #: carrying any challenge they cannot answer, or read only the first.
    algorithms: tuple[str, ...] = ("MD5",)
    nonce_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


class _Failures:
    """Recent failure times per key, and the keys blocked until when."""

    def __init__(self, limit: int, window: float, block_for: float) -> None:
        self.limit, self.window, self.block_for = limit, window, block_for
        self._recent: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}

    def blocked(self, key: str, now: float) -> bool:
        until = self._blocked.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self._blocked[key]
        return False

    def fail(self, key: str, now: float) -> bool:
        """Count one failure; True when it blocks ``key``."""
        recent = self._recent.setdefault(key, deque())
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.limit:
            del self._recent[key]
            self._blocked[key] = now + self.block_for
            return True
        return False

    def prune(self, now: float) -> None:
        for key in [k for k, v in self._recent.items() if not v or v[-1] <= now - self.window]:
            del self._recent[key]
        for key in [k for k, until in self._blocked.items() if until <= now]:
            del self._blocked[key]


class Registrar:
    """Bindings of agents to contacts, kept in ``store`` and cached here."""

    def __init__(
        self,
        store: Store,
        passwords: Mapping[str, str],
        config: RegistrarConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.passwords = dict(passwords)
        self.config = config
        self.clock = clock
        self.digest = DigestServer(config.realm, config.nonce_secret)
        self._cache: dict[str, dict[str, Binding]] = {}
        #: When the whole copy, and each agent's part of it, was last read.
        self._refreshed_at = float("-inf")
        self._read_at: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._failures = _Failures(config.max_failures, config.failure_window, config.block_for)
        self._task: asyncio.Task[None] | None = None
        #: Counted refusals (tests and logs): source blocked, bad credentials.
        self.blocked_count = 0
        self.failed_count = 0

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._maintain())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        """Reload the cache from the store and purge what expired."""
        now = self.clock()
        await self.store.purge_bindings(now)
        cache: dict[str, dict[str, Binding]] = {}
        for b in await self.store.bindings(now=now):
            cache.setdefault(b.agent, {})[b.contact] = b
        self._cache = cache
        self._refreshed_at, self._read_at = now, {}
        self._failures.prune(now)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            try:
                async with self._lock:
                    await self.refresh()
            except StoreError as exc:
                log.warning("registrar: bindings not refreshed: %s", exc)

    # ---------------------------------------------------------------- lookup
    def contacts(self, agent: str) -> list[Binding]:
        """The agent's bindings not expired now (no I/O)."""
        bound = self._cache.get(agent)
        if not bound:
            return []
        now = self.clock()
        return [b for b in bound.values() if b.expires_at > now]

    async def lookup(self, agent: str) -> None:
        """Bring ``agent``'s copy up to date before a call rings it: one read
        of the store when this node knows no binding of the agent or its copy
        is older than ``lookup_ttl``.  A store that cannot answer leaves the
        copy as it is (the call rings what is known)."""
        now = self.clock()
        read_at = max(self._refreshed_at, self._read_at.get(agent, float("-inf")))
        if self.contacts(agent) and now - read_at < self.config.lookup_ttl:
            return
        try:
            found = await self.store.bindings(agent, now=now)
        except StoreError as exc:
            log.warning("registrar: bindings of %s not read: %s", agent, exc)
            return
        if found:
            self._cache[agent] = {b.contact: b for b in found}
        else:
            self._cache.pop(agent, None)
        self._read_at[agent] = now

    # -------------------------------------------------------------- REGISTER
    async def on_register(
        self, request: Request, tx: ServerTransaction, respond: Responder
    ) -> None:
        """Answer one REGISTER (with ``respond``)."""
        status, headers = await self._register(request, tx)
        respond(tx, status, headers)

    def _challenge(
        self, stale: bool = False, header: str = "WWW-Authenticate"
    ) -> list[tuple[str, str]]:
        now = self.clock()
        return [
            (header, self.digest.challenge(stale=stale, algorithm=a, now=now))
            for a in self.config.algorithms
        ]

    def _failed(self, source: str, agent: str, now: float) -> None:
        self.failed_count += 1
        for key in (f"ip:{source}", f"ext:{agent}"):
            if self._failures.fail(key, now):
                log.warning("registrar: %s blocked for %.0f s after failed authentications",
                            key, self.config.block_for)  # fmt: skip

    def client_of(self, request: Request, source: str) -> str:
        """The address failures are counted against: ``source``, or, when it
        is a SIP edge that relayed the request, the client the edge received
        it from (its ``received`` in the Via below the edge's own).  Behind an
        edge every phone shares the edge's address: counting there would let
        one phone with a wrong password block them all."""
        if source not in self.config.edges or len(request.via) < 2:
            return source
        via = request.via[1]
        return via.params.get("received") or via.host

    def authenticate(
        self, request: Request, source: str, claimed: str
    ) -> tuple[str | None, int, list[tuple[str, str]]]:
        """Digest-check a request other than REGISTER (an agent's INVITE) with
        a proxy challenge (RFC 3261 §22.3): ``(agent, 0, [])`` when it carries
        valid credentials of an agent, else ``(None, status, headers)`` to
        refuse it with: 407 and a challenge, or 403 for wrong credentials and
        while ``source`` (see :meth:`client_of`) or the ``claimed`` extension
        is blocked.  Failures count towards blocking as a REGISTER's do."""
        now = self.clock()
        source = self.client_of(request, source)
        if self._failures.blocked(f"ip:{source}", now) or self._failures.blocked(
            f"ext:{claimed}", now
        ):
            self.blocked_count += 1
            return None, 403, []
        authorization = request.headers.get("Proxy-Authorization")
        if authorization is None:
            return None, 407, self._challenge(header="Proxy-Authenticate")
        result = self.digest.verify(request.method, authorization, self.passwords.get, now=now)
        if result.stale:
            return None, 407, self._challenge(stale=True, header="Proxy-Authenticate")
        if not result.ok or not result.username:
            log.info("registrar: %s from %s for %r refused: %s", request.method, source,
                     claimed, result.reason)  # fmt: skip
            self._failed(source, result.username or claimed, now)
            return None, 403, []
        return result.username, 0, []

    async def _register(
        self, request: Request, tx: ServerTransaction
    ) -> tuple[int, list[tuple[str, str]]]:
        now = self.clock()
        source = self.client_of(request, tx.target.host)
        agent = request.to.uri.user or ""
        # 403, not silence, while blocked: a scanner learns nothing from it
        # (the same answer whatever it sends), and a phone with a mistyped
        # password shows an error instead of retrying in a loop.
        if self._failures.blocked(f"ip:{source}", now) or self._failures.blocked(
            f"ext:{agent}", now
        ):
            self.blocked_count += 1
            return 403, []
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return 401, self._challenge()
        result = self.digest.verify("REGISTER", authorization, self.passwords.get, now=now)
        if result.stale:
            return 401, self._challenge(stale=True)
        if not result.ok or result.username != agent:
            why = result.reason if not result.ok else "username is not the AOR"
            log.info("registrar: REGISTER for %r from %s refused: %s", agent, source, why)
            self._failed(source, agent, now)
            return 403, []
        async with self._lock:
            # The bindings another node took count too (a refresh, a "*").
            await self.lookup(agent)
            try:
                return await self._update(request, tx.target, agent, now)
            except StoreError as exc:
                log.warning("registrar: REGISTER for %s not stored: %s", agent, exc)
                return 500, [("Retry-After", "5")]

    def _expires_of(self, request: Request, params: Mapping[str, str | None]) -> int | None:
        value = params.get("expires")
        if value is None:
            value = request.headers.get("Expires")
        if value is None:
            return self.config.default_expires
        try:
            return max(int(value.strip()), 0)
        except ValueError:
            return None

    async def _update(
        self, request: Request, flow: Target, agent: str, now: float
    ) -> tuple[int, list[tuple[str, str]]]:
        store = self.store
        current = {b.contact: b for b in self.contacts(agent)}
        call_id, cseq = request.call_id, request.cseq.seq
        star = not request.contact and (request.headers.get("Contact") or "").strip() == "*"
        if star:
            if (request.headers.get("Expires") or "").strip() != "0":
                return 400, []
            for contact in current:
                await store.delete_binding(agent, contact)
            current = {}
        elif request.contact:
            changes: list[tuple[str, int]] = []
            for address in request.contact:
                expires = self._expires_of(request, address.params)
                if expires is None:
                    return 400, []
                if 0 < expires < self.config.min_expires:
                    return 423, [("Min-Expires", str(self.config.min_expires))]
                contact = str(address.uri)
                old = current.get(contact)
                if old is not None and old.call_id == call_id and old.cseq >= cseq:
                    return 500, []  # an older REGISTER, reordered (§10.3 step 7)
                changes.append((contact, min(expires, self.config.max_expires)))
            for contact, expires in changes:
                if expires == 0:
                    if contact in current:
                        await store.delete_binding(agent, contact)
                        del current[contact]
                    continue
                binding = Binding(
                    agent=agent,
                    contact=contact,
                    expires_at=now + expires,
                    transport=flow.transport,
                    host=flow.host,
                    port=flow.port,
                    call_id=call_id,
                    cseq=cseq,
                    node_id=self.config.node_id,
                    updated_at=now,
                )
                await store.save_binding(binding)
                current[contact] = binding
        # else: a query, answered with the current bindings.
        if current:
            self._cache[agent] = current
        else:
            self._cache.pop(agent, None)
        self._read_at[agent] = now
        headers = [
            ("Contact", f"<{b.contact}>;expires={max(int(b.expires_at - now), 0)}")
            for b in current.values()
        ]
        return 200, headers


def binding_target(binding: Binding) -> Target:
    return Target(binding.transport, binding.host, binding.port)
