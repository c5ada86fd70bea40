"""Limits that keep the server reachable under load or attack (issue 11):
the file-descriptor budget, HTTP connection caps and read timeouts, the
request body cap, and rate-limited logging of accept() failures.

Theory of operation
-------------------
*File descriptors.*  At start :func:`fd_budget` raises the ``RLIMIT_NOFILE``
soft limit to the hard one and splits what is left, after a reserve for the
store, log files, outgoing sockets and the listeners themselves, between
the HTTP and SIP TCP connection caps.  The caps are taken as configured
when they fit, scaled down together when they do not.  Kept below the
limit, accept() never fails with EMFILE for want of a descriptor, and a
connection over a cap is accepted and closed at once (one descriptor for a
moment), so the listen queue never backs up behind a full table.

*HTTP connections.*  :class:`LimitedHttpProtocol` is uvicorn's httptools
protocol (llhttp, the parser of Node.js, in C: about 20 times cheaper per
request than the pure-Python h11 it replaced, docs/benchmarks.md) with
three additions, all at connection level where they cost one dict update
per connection and one attribute test per read:

* a cap per source address and a total cap (:class:`HttpLimits`).  At the
  per-source cap a new connection is reset at once.  At the total cap the
  newcomer takes the place of the oldest *idle* connection (no request
  being served: a head still arriving or a keep-alive wait) of the source
  that holds the most, when that source holds more than the newcomer's;
  otherwise it is reset.  One host opening hundreds of slow connections
  thus cannot keep a second host out.
* a header timeout: a connection that has not sent a complete request head
  ``header_timeout`` seconds after it opened (or after the first byte of a
  later request on a kept-alive connection) is closed.
* the keep-alive timeout is uvicorn's own (``timeout_keep_alive``).

*Bodies.*  :class:`BodyLimit` is ASGI middleware in front of the API: a
``Content-Length`` above the limit gets 413 before a byte of the body is
read; otherwise the body (``Content-Length`` or chunked) is read here,
counted as it arrives and cut off with 413 at the limit, and the whole read
is bounded by ``body_timeout`` (408).  Both close the connection.  uvicorn
pauses reading past 64 KiB until the application asks for more, so memory
stays at the limit plus one read whatever a client sends.  Doing this in
ASGI rather than in the protocol keeps it independent of the HTTP
implementation and hands the API a body it can trust.

*accept() failures.*  asyncio logs every failed accept() with a traceback,
and Python 3.11's accept loop retries up to the backlog (2,048 for uvicorn)
times per wake-up: under EMFILE that is thousands of lines a second.
:class:`AcceptErrorLog` is the loop's exception handler: these errors are
counted and logged once per interval; everything else goes to the default
handler.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .backlog import ACCEPT_BATCH

log = logging.getLogger(__name__)

#: Descriptors kept out of the connection caps: the store (a PostgreSQL pool
#: or SQLite files), log and spool files, Redis and webhook clients, outgoing
#: SIP connections, listeners, the event loop's own.
FD_RESERVE_MIN = 128
#: ... or this fraction of the limit, whichever is more.
FD_RESERVE_FRACTION = 0.125


# --- file descriptors --------------------------------------------------------


@dataclass(frozen=True)
class FdBudget:
    """The descriptor limit and the connection caps derived from it."""

    limit: int
    raised_from: int
    reserve: int
    http_connections: int
    sip_connections: int


def raise_nofile() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft, soft
        return soft, target
    return soft, soft


def fd_budget(http_wanted: int, sip_wanted: int, listeners: int = 2) -> FdBudget:
    """Raise the descriptor limit and fit the two caps below it."""
    before, limit = raise_nofile()
    reserve = max(FD_RESERVE_MIN, int(limit * FD_RESERVE_FRACTION))
    reserve += 3 * ACCEPT_BATCH * listeners
    room = max(limit - reserve, 2)
    http, sip = http_wanted, sip_wanted
    if http + sip > room:
        http = max(1, room * http // (http + sip))
        sip = max(1, room - http)
    return FdBudget(limit, before, reserve, http, sip)


def log_budget(budget: FdBudget, http_wanted: int, sip_wanted: int) -> None:
    raised = f" (raised from {budget.raised_from})" if budget.raised_from != budget.limit else ""
    fitted = (
        ""
        if (budget.http_connections, budget.sip_connections) == (http_wanted, sip_wanted)
        else f"; configured {http_wanted} + {sip_wanted} do not fit and were scaled down"
    )
    log.info("open-file limit %d%s: %d reserved, connection caps HTTP %d + SIP TCP %d%s",
             budget.limit, raised, budget.reserve, budget.http_connections,
             budget.sip_connections, fitted)  # fmt: skip


# --- accept() errors ---------------------------------------------------------


class AcceptErrorLog:
    """Event-loop exception handler that logs accept() failures once per
    ``interval`` seconds (with the count since the last line)."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.count = 0
        self._suppressed = 0
        self._last: float | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = loop.time()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        log.error("accept() failed: %s%s; new connections wait", context.get("exception"), more)
        self._last = now
        self._suppressed = 0


# --- HTTP connections --------------------------------------------------------


class HttpLimits:
    """Connection caps and timeouts shared by every HTTP listener."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_source: int,
        header_timeout: float,
        max_requests: int = 0,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_source = max_per_source  # 0: no per-source cap
        self.header_timeout = header_timeout
        self.max_requests = max_requests
        """Requests on one connection before its response says
        ``Connection: close`` (0: no limit)."""
        self.total = 0
        self.refused = 0
        self.evicted = 0
        # source -> its connections, oldest first (dicts keep insertion order)
        self._by_source: dict[str, dict[LimitedHttpProtocol, None]] = {}

    def admit(self, conn: LimitedHttpProtocol, source: str) -> bool:
        held = self._by_source.get(source)
        count = len(held) if held is not None else 0
        if self.max_per_source and count >= self.max_per_source:
            self.refused += 1
            return False
        if self.total >= self.max_connections and not self._evict_for(count):
            self.refused += 1
            return False
        if held is None:
            held = self._by_source[source] = {}
        held[conn] = None
        self.total += 1
        return True

    def release(self, conn: LimitedHttpProtocol, source: str) -> None:
        held = self._by_source.get(source)
        if held is not None and held.pop(conn, 0) is None:
            self.total -= 1
            if not held:
                del self._by_source[source]

    def _evict_for(self, newcomer_count: int) -> bool:
        """Close the oldest idle connection of the heaviest source, if that
        source holds more than the newcomer's.  Only at the total cap."""
        heaviest = max(self._by_source.values(), key=len, default=None)
        if heaviest is None or len(heaviest) <= newcomer_count + 1:
            return False
        for victim in heaviest:
            if victim.idle:
                victim.evict()
                self.evicted += 1
                return True
        return False


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with connection caps and a header
    timeout (module doc).  :func:`http_protocol` binds it to an
    :class:`HttpLimits`."""

    limits: HttpLimits

    _source = ""
    _admitted = False
    _head_timer: asyncio.TimerHandle | None = None
    _requests = 0
    # A request head is awaited or arriving: from the connection's start, and
    # from the first byte of each later request, until the head is complete.
    _head_pending = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if peer else ""
        if not self.limits.admit(self, self._source):
            transport.abort()  # a reset: nothing to linger on, the descriptor is freed now
            return
        self._admitted = True
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self.limits.release(self, self._source)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._head_pending = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before:  # a request to serve (not a WebSocket upgrade)
            self._requests += 1
            if self.limits.max_requests and self._requests >= self.limits.max_requests:
                # The response says Connection: close and the connection
                # closes after it; the client opens a new one, so long-lived
                # client pools are spread again over the workers of a node
                # (they share the port; the kernel places connections, not
                # requests).
                cycle.keep_alive = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_pending:
            if self._head_timer is None and not self.transport.is_closing():
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_expired
                )
        elif self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._head_pending and not self.transport.is_closing():
            self.transport.close()

    @property
    def idle(self) -> bool:
        """No request is being served (a head arriving, or kept alive)."""
        if self.transport.is_closing():
            return False  # already on its way out
        return self.cycle is None or self.cycle.response_complete

    def evict(self) -> None:
        self.transport.abort()


def http_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class for uvicorn's ``http=`` setting, bound to ``limits``."""

    class BoundProtocol(LimitedHttpProtocol):
        pass

    BoundProtocol.limits = limits
    return BoundProtocol


# --- request bodies ----------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: the body size cap and the body read timeout (module
    doc).  ``reject(status, title)`` builds the error response (an ASGI app)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        body_timeout: float,
        reject: Callable[[int, str], ASGIApp],
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is None and not chunked:
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        if length is not None and not chunked and int(length) > self.max_body:
            await self._refuse(scope, receive, send, 413)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self._refuse(scope, receive, send, 413)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(scope, receive, send, 408)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int) -> None:
        title = (
            f"body larger than {self.max_body} bytes"
            if status == 413
            else f"body not received within {self.body_timeout:g} s"
        )

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The rest of the body is not read: the connection cannot be reused.
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.reject(status, title)(scope, receive, closing)
