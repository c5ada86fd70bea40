"""asyncio adapter for the sans-IO endpoint: UDP, TCP, TLS and WebSocket
sockets, the clock.

Theory of operation
-------------------
:class:`SipTransport` owns the sockets and nothing else.  Every datagram or
framed stream message goes into :meth:`Endpoint.receive`; after each call
into the core, :meth:`SipTransport.flush` sends what the core queued,
hands its events to the ``on_event`` callback and re-arms one loop timer for
the core's next deadline.

Stream connections (TCP, TLS, WebSocket) are reused in both directions and
keyed by transport and the peer's address: a response or in-dialog request
to a peer goes over the connection that peer opened, and an outgoing TCP or
TLS request opens one when none exists.  Idle connections are closed after
``idle_timeout``; a cap on open connections protects the process from a
connection flood.

TLS (``ssl`` of the standard library, TLS 1.2 and later) is TCP with a
handshake: the same framing, caps and timeouts.  Outgoing TLS verifies the
peer's certificate against the system's CA store, or against ``ca_file``
alone when one is configured (a private CA), and checks the host name the
request was addressed to (before DNS).  A refused connection or a failed
handshake fails every transaction waiting on that target at once
(:meth:`Endpoint.transport_failed`, a 503).

WebSocket (RFC 7118, the ``websockets`` library: handshake, ping/pong,
close) is served only: browsers connect to us on path ``/ws`` with the
subprotocol ``sip`` (a handshake without it is refused with 400), and each
WebSocket message is one SIP message.  A browser has no address we could
connect to (its Contact is ``...@xyz.invalid;transport=ws``): its connection
is the flow, and a target ``Target("ws"|"wss", host, port)`` naming the
connection's source reaches it; with no such connection the target fails at
once, as does any ws/wss target named by host name.

Limits (issue 11): connections a peer opens are also capped per source
address, and one that stays idle ``idle_timeout_without_dialog`` seconds is
closed unless its host carries a dialog or an open transaction
(:meth:`Endpoint.busy_hosts`, asked only when a cap is hit or the sweep
finds such a connection, never per message).  Hosts in ``exempt_hosts``
(the trunk) and hosts with dialogs are never refused by either cap nor
closed early, and connections we open ourselves are never refused.  A TLS
connection is counted once its handshake is done; a WebSocket one before its
handshake is answered (503 over the caps).

A listener that cannot start (port taken, unreadable certificate) raises
:class:`ListenerError` naming it.

Unreachable UDP peers: Linux reports an ICMP port/host unreachable on an
unconnected socket only with ``IP_RECVERR`` (``IPV6_RECVERR``).  The UDP
socket sets it; the error then wakes the reader, and the error queue
(``MSG_ERRQUEUE``) names the original destination of each failed datagram,
which fails every request waiting on that target at once (RFC 3261 §18.4:
an ICMP error is a transport failure, §8.1.3.1: 503).  The cost is nothing
per datagram.  A connected socket per target would report errors without
the option but costs a socket and a new source port per peer, which NATed
peers and symmetric response routing forbid.  One catch: a pending error is
also returned by the next ``sendto``, to whatever destination, which then
did not send; our sends therefore go through :meth:`SipTransport._sendto`,
which reads the error queue and sends again.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers as WsHeaders
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.typing import Subprotocol

from ...backlog import ACCEPT_BATCH, widen_backlog
from ..endpoint import Endpoint
from ..errors import SipParseError
from ..events import Event
from ..message import StreamFramer
from ..transaction import Target

log = logging.getLogger(__name__)

# Linux values; Python 3.11 has no names for them.
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_RECVERR_CMSG = frozenset({(socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)})
_HAS_RECVERR = sys.platform.startswith("linux")
#: Linux reports (and accounts) twice the receive buffer it was given.
_RCVBUF_REPORTED = 2 if sys.platform.startswith("linux") else 1


def _widen_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a ``size`` byte receive buffer; say so when the system grants
    less (Linux caps it at ``net.core.rmem_max``): a burst that overflows
    it is dropped in the kernel, and every lost response comes back as a
    retransmission, a lost request as a timeout."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // _RCVBUF_REPORTED
    if granted < size:
        log.warning(
            "SIP UDP receive buffer: %d bytes granted of the %d asked for ([sip] "
            "udp_receive_buffer); the system caps it (Linux: sysctl net.core.rmem_max=%d "
            "lifts the cap)",
            granted,
            size,
            size,
        )


#: Errors (from ICMP) that mean nothing can be delivered to that target.
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
#: Names resolved to addresses, remembered so that a failure reported for the
#: address reaches the transactions that name the host; cleared beyond this.
_MAX_ALIASES = 1024
#: Seconds between two log lines about refused connections.
_REFUSAL_LOG_INTERVAL = 10.0
#: A SIP timer this late means the loop stalled: read UDP before it fires
#: (:meth:`SipTransport._tick`).  Far below T1, far above a busy loop's jitter.
_STALL = 0.05
#: Datagrams read that way at most, so that timers still run.
_STALL_READ = 256
_MAX_DATAGRAM = 65535
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
#: Seconds a TLS or WebSocket opening handshake may take.
HANDSHAKE_TIMEOUT = 10.0
#: RFC 7118: the WebSocket path we serve and the subprotocol we require.
WS_PATH = "/ws"
WS_SUBPROTOCOL = Subprotocol("sip")
#: The largest WebSocket message we take: a SIP message is far smaller.
_WS_MAX_MESSAGE = 65536


class ListenerError(OSError):
    """A listener could not start; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Listen:
    transport: str  # "udp" | "tcp" | "tls" | "ws" | "wss"
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        """``udp:127.0.0.1:5060`` (the configuration's ``sip.listen`` form)."""
        transport, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if transport not in TRANSPORTS or not host or not port.isdigit():
            raise ValueError(f"listen address must look like udp:HOST:PORT, got {text!r}")
        return cls(transport, host.strip("[]"), int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def server_tls_context(certificate: str, private_key: str) -> ssl.SSLContext:
    """The context of our ``tls:``/``wss:`` listeners (TLS 1.2+)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, private_key)
    return context


def client_tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The context of outgoing TLS: certificate and host name verified,
    against the system CA store or, when given, ``ca_file`` alone."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _subprotocols(headers: WsHeaders) -> list[str]:
    return [
        name.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for name in value.split(",")
    ]


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    # On every send: parsing the address each time was 2 % of a call's CPU.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.owner._received(data, "udp", (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        # With IP_RECVERR: an ICMP error for one of our datagrams.
        log.debug("UDP error: %s", exc)
        self.owner._udp_errors()
        self.owner.flush()


class _Stream(asyncio.Protocol):
    """A TCP or TLS connection (asyncio runs the TLS layer below it)."""

    def __init__(self, owner: SipTransport, kind: str = "tcp", inbound: bool = True) -> None:
        self.owner = owner
        self.kind = kind
        self.inbound = inbound
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.key: tuple[str, str, int] = (kind, "", 0)
        self.last_activity = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = stream = cast(asyncio.Transport, transport)
        peer = stream.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self.key = (self.kind, *self.peer)
        self.last_activity = self.owner.loop.time()
        if not self.owner._register(self):
            self.transport = None  # never registered: connection_lost has nothing to undo
            stream.abort()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            # A broken stream cannot be re-synchronised: drop the connection.
            log.info("closing %s connection from %s: %s", self.kind, self.peer, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        for message in messages:
            if not message:
                if self.transport is not None:
                    self.transport.write(b"\r\n")  # RFC 5626 keep-alive pong
                continue
            self.owner._received(message, self.kind, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.owner._unregister(self)

    def write(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _WebSocket:
    """A browser's WebSocket connection: one SIP message per WebSocket
    message.  Sends go through one writer task so they keep their order."""

    def __init__(self, owner: SipTransport, kind: str, ws: ServerConnection) -> None:
        self.owner = owner
        self.kind = kind
        self.ws = ws
        self.inbound = True
        address = ws.remote_address
        self.peer: tuple[str, int] = (str(address[0]), int(address[1]))
        self.key: tuple[str, str, int] = (kind, *self.peer)
        self.last_activity = owner.loop.time()
        self.transport: _WebSocket | None = self  # "open", as for _Stream
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def run(self) -> None:
        writer = self.owner.loop.create_task(self._write())
        try:
            async for message in self.ws:
                self.last_activity = self.owner.loop.time()
                data = message.encode() if isinstance(message, str) else message
                if not data.strip(b"\r\n"):
                    self.write(b"\r\n")  # RFC 5626 keep-alive (SIP.js sends it): pong
                    continue
                self.owner._received(data, self.kind, self.peer)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            self.transport = None

    async def _write(self) -> None:
        while True:
            data = await self._queue.get()
            message: str | bytes
            try:
                message = data.decode()  # a text frame: SIP is UTF-8 text
            except UnicodeDecodeError:
                message = data
            try:
                await self.ws.send(message)
            except ConnectionClosed:
                return

    def write(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        self._queue.put_nowait(data)

    def close(self) -> None:
        self.owner._spawn(self.ws.close())


class SipTransport:
    """Sockets and clock for one :class:`Endpoint`."""

    def __init__(
        self,
        endpoint_factory: Callable[[Callable[[], float]], Endpoint],
        listen: list[Listen],
        on_event: Callable[[Event], None],
        *,
        max_connections: int = 4096,
        idle_timeout: float = 600.0,
        max_per_source: int = 0,
        idle_timeout_without_dialog: float | None = None,
        exempt_hosts: frozenset[str] = frozenset(),
        udp_receive_buffer: int = 0,
        tls_certificate: str | None = None,
        tls_private_key: str | None = None,
        tls_ca_file: str | None = None,
    ) -> None:
        """``tls_certificate``/``tls_private_key``: the PEM files of the
        ``tls``/``wss`` listeners; ``tls_ca_file``: the CA certificates that
        outgoing TLS trusts instead of the system's; ``udp_receive_buffer``:
        the bytes asked for each UDP socket's receive buffer (0: the
        system's)."""
        self.loop = asyncio.get_running_loop()
        self.endpoint = endpoint_factory(self.loop.time)
        self.listen = listen
        self.on_event = on_event
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_per_source = max_per_source  # 0: no per-source cap
        self.idle_timeout_without_dialog = (
            idle_timeout if idle_timeout_without_dialog is None else idle_timeout_without_dialog
        )
        self.exempt_hosts = exempt_hosts
        self.udp_receive_buffer = udp_receive_buffer
        self.refused = 0
        self._per_source: dict[str, int] = {}
        self._busy: tuple[float, set[str]] | None = None
        self._refusal_logged = -_REFUSAL_LOG_INTERVAL
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_sock: socket.socket | None = None
        self._aliases: dict[Target, Target] = {}
        self._udp_buffered: Callable[[], int] = lambda: 1
        self.tls_certificate = tls_certificate
        self.tls_private_key = tls_private_key
        self.tls_ca_file = tls_ca_file
        self._client_tls: ssl.SSLContext | None = None
        self._servers: list[asyncio.Server] = []
        self._ws_servers: list[WsServer] = []
        #: transport -> the listening asyncio server of a stream listener
        self._listeners: dict[str, asyncio.Server] = {}
        self._connections: dict[tuple[str, str, int], _Stream | _WebSocket] = {}
        self._connecting: dict[tuple[str, str, int], list[bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.bound: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        """Open every listener; raises :class:`ListenerError` naming the
        first that cannot start (the caller then closes this transport)."""
        if self.tls_ca_file is not None:
            try:
                self._client_tls = client_tls_context(self.tls_ca_file)
            except OSError as exc:  # ssl.SSLError too
                raise OSError(f"TLS CA file {self.tls_ca_file} unusable: {exc}") from exc
        for item in self.listen:
            try:
                sock = await self._start_listener(item)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ListenerError(f"SIP listener {item} cannot start: {reason}") from exc
            self.bound[item.transport] = (str(sock[0]), int(sock[1]))
        self._sweeper = self.loop.create_task(self._sweep())

    async def _start_listener(self, item: Listen) -> tuple[Any, ...]:
        if item.transport == "udp":
            udp_sock = await self._udp_socket(item.host, item.port)
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: _Udp(self), sock=udp_sock
            )
            self._udp = transport
            self._udp_sock = udp_sock
            # asyncio's datagram transports have it; typeshed does not say so.
            self._udp_buffered = getattr(transport, "get_write_buffer_size", lambda: 1)
            return tuple(transport.get_extra_info("sockname"))
        context = None
        if item.transport in ("tls", "wss"):
            if not self.tls_certificate or not self.tls_private_key:
                raise ValueError("no TLS certificate and private key configured")
            try:
                context = server_tls_context(self.tls_certificate, self.tls_private_key)
            except OSError as exc:
                raise ValueError(f"TLS certificate or key unusable: {exc}") from exc
        listening = await self._tcp_socket(item.host, item.port)
        try:
            server = await self._serve_stream(item.transport, listening, context)
        except BaseException:
            listening.close()
            raise
        widen_backlog(listening)
        self._listeners[item.transport] = server
        return tuple(server.sockets[0].getsockname())

    async def _serve_stream(
        self, kind: str, listening: socket.socket, context: ssl.SSLContext | None
    ) -> asyncio.Server:
        if kind in ("tcp", "tls"):
            server = await self.loop.create_server(
                lambda: _Stream(self, kind),
                sock=listening,
                backlog=ACCEPT_BATCH,
                ssl=context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if context else None,
            )
            self._servers.append(server)
            return server

        async def handler(ws: ServerConnection) -> None:
            conn = _WebSocket(self, kind, ws)
            if not self._register(conn):
                await ws.close(1013, "connection caps reached")
                return
            try:
                await conn.run()
            finally:
                self._unregister(conn)

        ws_server = await serve(
            handler,
            sock=listening,
            backlog=ACCEPT_BATCH,
            ssl=context,
            subprotocols=[WS_SUBPROTOCOL],
            process_request=self._ws_handshake,
            open_timeout=HANDSHAKE_TIMEOUT,
            max_size=_WS_MAX_MESSAGE,
            compression=None,
        )
        self._ws_servers.append(ws_server)
        return ws_server.server

    def _ws_handshake(self, ws: ServerConnection, request: WsRequest) -> WsResponse | None:
        """Refuse a handshake on another path, without the ``sip``
        subprotocol, or over the connection caps."""
        if request.path.partition("?")[0] != WS_PATH:
            return ws.respond(HTTPStatus.NOT_FOUND, f"SIP over WebSocket is on {WS_PATH}\n")
        offered = _subprotocols(request.headers)
        if WS_SUBPROTOCOL not in offered:
            return ws.respond(HTTPStatus.BAD_REQUEST, "the subprotocol 'sip' is required\n")
        if not self._admits(str(ws.remote_address[0]), inbound=True):
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    def listening(self) -> dict[str, bool]:
        """Per transport listened on: whether its socket is open now."""
        state: dict[str, bool] = {}
        for item in self.listen:
            if item.transport == "udp":
                udp = self._udp
                state["udp"] = udp is not None and not udp.is_closing()
            else:
                server = self._listeners.get(item.transport)
                state[item.transport] = server is not None and server.is_serving()
        return state

    async def _tcp_socket(self, host: str, port: int) -> socket.socket:
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        return sock

    async def _udp_socket(self, host: str, port: int) -> socket.socket:
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if self.udp_receive_buffer:
                _widen_receive_buffer(sock, self.udp_receive_buffer)
            if _HAS_RECVERR:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        return sock

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections.values()):
            if isinstance(conn, _Stream):
                conn.close()
        for ws_server in self._ws_servers:
            ws_server.close()
            await ws_server.wait_closed()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    # ------------------------------------------------------------ inbound
    def _received(self, data: bytes, transport: str, source: tuple[str, int]) -> None:
        try:
            self.endpoint.receive(data, transport, source)
        except Exception:  # a bug must not take the listener down with it
            log.exception("SIP core failed on a message from %s", source)
        self.flush()

    def _admits(self, host: str, inbound: bool) -> bool:
        """Whether the connection caps let a new connection from ``host`` in."""
        count = self._per_source.get(host, 0)
        over = inbound and (
            len(self._connections) >= self.max_connections
            or (self.max_per_source and count >= self.max_per_source)
        )
        # The cheap test first; who is spared is asked only when over a cap.
        if over and host not in self.exempt_hosts and host not in self._busy_hosts():
            self.refused += 1
            now = self.loop.time()
            if now - self._refusal_logged >= _REFUSAL_LOG_INTERVAL:
                self._refusal_logged = now
                log.warning("SIP connection caps reached (%d open, %d from %s): "
                            "refusing new connections (%d so far)", len(self._connections),
                            count, host, self.refused)  # fmt: skip
            return False
        return True

    def _register(self, conn: _Stream | _WebSocket) -> bool:
        host = conn.peer[0]
        if not self._admits(host, conn.inbound):
            return False
        self._connections[conn.key] = conn
        self._per_source[host] = self._per_source.get(host, 0) + 1
        return True

    def _busy_hosts(self) -> set[str]:
        """:meth:`Endpoint.busy_hosts`, recomputed at most once a second
        however many connections a flood brings."""
        now = self.loop.time()
        if self._busy is None or now - self._busy[0] >= 1.0:
            self._busy = (now, self.endpoint.busy_hosts())
        return self._busy[1]

    def _unregister(self, conn: _Stream | _WebSocket) -> None:
        if self._connections.get(conn.key) is conn:
            del self._connections[conn.key]
        host = conn.peer[0]
        count = self._per_source.get(host, 0) - 1
        if count > 0:
            self._per_source[host] = count
        else:
            self._per_source.pop(host, None)

    async def _sweep(self) -> None:
        interval = min(self.idle_timeout_without_dialog / 2, 30.0)
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> None:
        """Close the connections idle past their timeout (module doc)."""
        now = self.loop.time()
        long_deadline = now - self.idle_timeout
        short_deadline = now - self.idle_timeout_without_dialog
        busy: set[str] | None = None
        for conn in list(self._connections.values()):
            if conn.transport is None or conn.last_activity >= short_deadline:
                continue
            if conn.last_activity >= long_deadline:
                host = conn.peer[0]
                if host in self.exempt_hosts:
                    continue
                if busy is None:
                    busy = self.endpoint.busy_hosts()
                if host in busy:
                    continue
            conn.close()

    # ----------------------------------------------------------- outbound
    def flush(self) -> None:
        """Send what the core queued, deliver its events, re-arm the timer."""
        endpoint = self.endpoint
        while True:
            outgoing = endpoint.pop_outgoing()
            events = endpoint.pop_events()
            if not outgoing and not events:
                break
            for data, target in outgoing:
                self._send(data, target)
            for event in events:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("SIP event handler failed on %r", event)
        deadline = endpoint.next_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if deadline is None else self.loop.call_at(deadline, self._tick)
            self._timer_at = deadline

    def _tick(self) -> None:
        due = self._timer_at
        self._timer = None
        self._timer_at = None
        if due is not None and self.loop.time() - due > _STALL:
            # Input first.  When a callback stalls the loop (a long
            # collection, a burst), libuv runs the timers that fell due
            # before it polls the sockets again: a retransmission timer
            # would fire for a request whose answer is already waiting, and
            # some peers take the copy for a new request (sipp aborts the
            # call).
            self._read_udp()
        try:
            self.endpoint.handle_timer(self.loop.time())
        except Exception:
            log.exception("SIP core failed in a timer")
        self.flush()

    def _read_udp(self) -> None:
        """Process the datagrams waiting in the UDP socket, now."""
        sock = self._udp_sock
        if sock is None:
            return
        for _ in range(_STALL_READ):
            try:
                data, address = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an earlier datagram's ICMP error (IP_RECVERR)
                self._udp_errors()
                return
            self._received(data, "udp", (str(address[0]), int(address[1])))

    def _send(self, data: bytes, target: Target, hostname: str | None = None) -> None:
        """``hostname``: the name ``target`` was resolved from (TLS checks
        the certificate against it)."""
        transport = target.transport
        if transport in ("ws", "wss"):
            # Only a connection the peer opened reaches it (module doc).
            ws = self._connections.get((transport, target.host, target.port))
            if ws is None:
                log.info("no %s connection from %s:%d", transport, target.host, target.port)
                self._fail(target)
            else:
                ws.write(data)
            return
        if not _is_ip(target.host):
            self._spawn(self._resolve_and_send(data, target))
            return
        if transport == "udp":
            if self._udp is None:
                self._fail(target)
                return
            self._sendto(data, target)
        elif transport in ("tcp", "tls"):
            key = (transport, target.host, target.port)
            conn = self._connections.get(key)
            if conn is not None:
                conn.write(data)
            elif key in self._connecting:
                self._connecting[key].append(data)
            else:
                self._connecting[key] = [data]
                self._spawn(self._connect(target, hostname or target.host))
        else:
            log.warning("no %s transport for %s", transport, target)
            self._fail(target)

    def _sendto(self, data: bytes, target: Target) -> None:
        udp, sock = self._udp, self._udp_sock
        assert udp is not None
        address = (target.host, target.port)
        if sock is not None and not self._udp_buffered() and not udp.is_closing():
            for attempt in range(2):
                try:
                    sock.sendto(data, address)
                    return
                except (BlockingIOError, InterruptedError):
                    break  # the transport queues it
                except OSError as exc:
                    if exc.errno not in _UNREACHABLE or attempt:
                        # Our own error (no route...), not an earlier one.
                        log.info("UDP send to %s:%d failed: %s", *address, exc)
                        if exc.errno in _UNREACHABLE:
                            self._fail(target)
                        return
                    # The error of an earlier datagram (see the module doc):
                    # nothing was sent; read the error queue, then try again.
                    self._udp_errors()
        udp.sendto(data, address)

    def _udp_errors(self) -> None:
        """Fail the targets named in the socket's error queue (IP_RECVERR)."""
        sock = self._udp_sock
        if sock is None or not _HAS_RECVERR:
            return
        while True:
            try:
                _, ancdata, _, address = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
            except OSError:  # BlockingIOError: the queue is empty
                return
            for level, kind, cdata in ancdata:
                # struct sock_extended_err starts with the u32 ee_errno.
                if (level, kind) in _RECVERR_CMSG and len(cdata) >= 4:
                    err = int.from_bytes(cdata[:4], sys.byteorder)
                    if err in _UNREACHABLE and address:
                        log.info("UDP %s:%s unreachable: %s", address[0], address[1],
                                 errno.errorcode.get(err, err))  # fmt: skip
                        self._fail(Target("udp", str(address[0]), int(address[1])))

    def _fail(self, target: Target) -> None:
        """Report that ``target`` cannot be reached, from a callback of its
        own: a failure found inside a send must not reach the core (and its
        events the application) before the command that sent has returned
        and the application has tied its handle to what it got back."""
        self.loop.call_soon(self._report_failure, target)

    def _report_failure(self, target: Target) -> None:
        self.endpoint.transport_failed(target)
        alias = self._aliases.get(target)
        if alias is not None:
            self.endpoint.transport_failed(alias)
        self.flush()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_send(self, data: bytes, target: Target) -> None:
        try:
            infos = await self.loop.getaddrinfo(
                target.host, target.port, type=socket.SOCK_DGRAM, family=socket.AF_INET
            )
        except OSError:
            infos = []
        if not infos:
            self.endpoint.transport_failed(target)
        else:
            resolved = Target(target.transport, str(infos[0][4][0]), target.port)
            if resolved not in self._aliases:
                if len(self._aliases) >= _MAX_ALIASES:
                    self._aliases.clear()
                self._aliases[resolved] = target
            self._send(data, resolved, target.host)
        self.flush()

    async def _connect(self, target: Target, hostname: str) -> None:
        kind = target.transport
        key = (kind, target.host, target.port)
        tls: dict[str, Any] = {}
        if kind == "tls":
            if self._client_tls is None:
                self._client_tls = client_tls_context()
            tls = {"ssl": self._client_tls, "server_hostname": hostname,
                   "ssl_handshake_timeout": HANDSHAKE_TIMEOUT}  # fmt: skip
        try:
            await self.loop.create_connection(
                lambda: _Stream(self, kind, inbound=False), target.host, target.port, **tls
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.info("%s connect to %s:%d failed: %s", kind.upper(), target.host, target.port,
                     exc)  # fmt: skip
            self._connecting.pop(key, None)
            self._fail(target)
            return
        pending = self._connecting.pop(key, [])
        conn = self._connections.get(key)
        if conn is None:  # refused by the connection cap
            self._fail(target)
            self.flush()
            return
        for data in pending:
            conn.write(data)
