"""asyncio adapter for the sans-IO endpoint: UDP and TCP sockets, the clock.

Theory of operation
-------------------
:class:`SipTransport` owns the sockets and nothing else.  Every datagram or
framed stream message goes into :meth:`Endpoint.receive`; after each call
into the core, :meth:`SipTransport.flush` sends what the core queued,
hands its events to the ``on_event`` callback and re-arms one loop timer for
the core's next deadline.

TCP connections are reused in both directions and keyed by the peer's
address: a response or in-dialog request to a peer goes over the connection
that peer opened, and an outgoing request opens one when none exists.  Idle
connections are closed after ``idle_timeout``; a cap on open connections
protects the process from a connection flood.  TLS and WebSocket plug in here
as further stream transports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..endpoint import Endpoint
from ..errors import SipParseError
from ..events import Event
from ..message import StreamFramer
from ..transaction import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listen:
    transport: str  # "udp" | "tcp"
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        """``udp:127.0.0.1:5060`` (the configuration's ``sip.listen`` form)."""
        transport, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if transport not in ("udp", "tcp") or not host or not port.isdigit():
            raise ValueError(f"listen address must look like udp:HOST:PORT, got {text!r}")
        return cls(transport, host.strip("[]"), int(port))


def _is_ip(host: str) -> bool:
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
        # ICMP port unreachable and the like: retransmission timers cope.
        log.debug("UDP error: %s", exc)


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.last_activity = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self.last_activity = self.owner.loop.time()
        if not self.owner._register(self):
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            # A broken stream cannot be re-synchronised: drop the connection.
            log.info("closing TCP connection from %s: %s", self.peer, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        for message in messages:
            if not message:
                if self.transport is not None:
                    self.transport.write(b"\r\n")  # RFC 5626 keep-alive pong
                continue
            self.owner._received(message, "tcp", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._unregister(self)

    def write(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        if self.transport is not None:
            self.transport.write(data)


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
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.endpoint = endpoint_factory(self.loop.time)
        self.listen = listen
        self.on_event = on_event
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: dict[tuple[str, int], _Tcp] = {}
        self._connecting: dict[tuple[str, int], list[bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.bound: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        for item in self.listen:
            if item.transport == "udp":
                transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(item.host, item.port)
                )
                self._udp = transport
                sock = transport.get_extra_info("sockname")
            else:
                server = await self.loop.create_server(
                    lambda: _Tcp(self), item.host, item.port, reuse_address=True
                )
                self._servers.append(server)
                sock = server.sockets[0].getsockname()
            self.bound[item.transport] = (str(sock[0]), int(sock[1]))
        self._sweeper = self.loop.create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
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

    def _register(self, conn: _Tcp) -> bool:
        if len(self._connections) >= self.max_connections:
            log.warning("connection cap %d reached, refusing %s", self.max_connections, conn.peer)
            return False
        self._connections[conn.peer] = conn
        return True

    def _unregister(self, conn: _Tcp) -> None:
        if self._connections.get(conn.peer) is conn:
            del self._connections[conn.peer]

    async def _sweep(self) -> None:
        interval = min(self.idle_timeout / 2, 30.0)
        while True:
            await asyncio.sleep(interval)
            deadline = self.loop.time() - self.idle_timeout
            for conn in list(self._connections.values()):
                if conn.last_activity < deadline and conn.transport is not None:
                    conn.transport.close()

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
        self._timer = None
        self._timer_at = None
        try:
            self.endpoint.handle_timer(self.loop.time())
        except Exception:
            log.exception("SIP core failed in a timer")
        self.flush()

    def _send(self, data: bytes, target: Target) -> None:
        if not _is_ip(target.host):
            self._spawn(self._resolve_and_send(data, target))
            return
        if target.transport == "udp":
            if self._udp is None:
                self.endpoint.transport_failed(target)
                return
            self._udp.sendto(data, (target.host, target.port))
        elif target.transport == "tcp":
            key = (target.host, target.port)
            conn = self._connections.get(key)
            if conn is not None:
                conn.write(data)
            elif key in self._connecting:
                self._connecting[key].append(data)
            else:
                self._connecting[key] = [data]
                self._spawn(self._connect(target))
        else:
            log.warning("no %s transport configured for %s", target.transport, target)
            self.endpoint.transport_failed(target)

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
            address = str(infos[0][4][0])
            self._send(data, Target(target.transport, address, target.port))
        self.flush()

    async def _connect(self, target: Target) -> None:
        key = (target.host, target.port)
        try:
            await self.loop.create_connection(lambda: _Tcp(self), target.host, target.port)
        except OSError as exc:
            log.info("TCP connect to %s:%d failed: %s", target.host, target.port, exc)
            self._connecting.pop(key, None)
            self.endpoint.transport_failed(target)
            self.flush()
            return
        pending = self._connecting.pop(key, [])
        conn = self._connections.get(key)
        if conn is None:  # refused by the connection cap
            self.endpoint.transport_failed(target)
            self.flush()
            return
        for data in pending:
            conn.write(data)
