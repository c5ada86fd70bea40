"""SIP transactions (RFC 3261 §17 as updated by RFC 6026).

Theory of operation
-------------------
A transaction owns one request and its responses, and nothing else: it
retransmits over unreliable transports, absorbs retransmissions from the
peer, and tells its *transaction user* (the endpoint) about responses,
time-outs and its own end.  It never builds a request other than the ACK of a
non-2xx final response, which RFC 3261 §17.1.1.3 puts in the transaction.

Every transaction is one of four state machines.  The transitions, with the
timer that drives each (T1, T2, T4 from :class:`TimerConfig`)::

  INVITE client      CALLING --1xx--> PROCEEDING --2xx--> ACCEPTED --M--> TERMINATED
                     CALLING/PROCEEDING --300-699 (ACK)--> COMPLETED --D--> TERMINATED
                     CALLING --B (64*T1)--> TERMINATED (time-out)
                     timer A: retransmit the INVITE, doubling, while CALLING (UDP only)
  non-INVITE client  TRYING --1xx--> PROCEEDING --final--> COMPLETED --K--> TERMINATED
                     TRYING/PROCEEDING --F (64*T1)--> TERMINATED (time-out)
                     timer E: retransmit, doubling up to T2 (UDP only)
  INVITE server      PROCEEDING --2xx--> ACCEPTED --L--> TERMINATED
                     PROCEEDING --300-699--> COMPLETED --ACK--> CONFIRMED --I--> TERMINATED
                     COMPLETED --H (64*T1)--> TERMINATED (no ACK)
                     timer G: retransmit the final response, doubling up to T2 (UDP only)
  non-INVITE server  TRYING --1xx--> PROCEEDING --final--> COMPLETED --J--> TERMINATED

Over reliable transports (TCP, TLS, WebSocket) nothing is retransmitted and
timers D, I, J and K are zero, as §17 requires.  Timers are scheduled on the
endpoint's :class:`~click2dial.sip.timer.TimerQueue`; no I/O happens here:
bytes go out through the :class:`TransactionUser` interface.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from .message import Request, Response, parse_message
from .timer import Timer, TimerOwner

MAGIC_COOKIE = "z9hG4bK"
RELIABLE = frozenset({"tcp", "tls", "ws", "wss"})


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where bytes go: transport, host and port.  The adapter resolves names
    and, for stream transports, picks or opens the connection."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE


@lru_cache(maxsize=4096)
def shared_target(transport: str, host: str, port: int) -> Target:
    """The one :class:`Target` of an address (targets are values): a call's
    transactions, dialogs and responses share it instead of each holding a
    copy for the garbage collector to walk, and a hit costs less than
    building a frozen dataclass."""
    return Target(transport, host, port)


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TransactionUser(Protocol):
    """What a transaction needs from the layer above it."""

    timers: TimerConfig

    def now(self) -> float: ...
    def send(self, data: bytes, target: Target) -> None: ...
    def schedule(self, delay: float, callback: Callable[[], None], name: str) -> Timer: ...
    def schedule_for(self, delay: float, owner: TimerOwner, name: str) -> Timer: ...
    def tx_response(self, tx: ClientTransaction, response: Response) -> None: ...
    def tx_timeout(self, tx: ClientTransaction) -> None: ...
    def tx_ack_timeout(self, tx: ServerTransaction) -> None: ...
    def tx_terminated(self, tx: Transaction) -> None: ...


def client_key(branch: str, method: str) -> tuple[str, str]:
    # A CANCEL shares its INVITE's branch but is a transaction of its own.
    return (branch, method)


def server_key(request: Request) -> tuple[str, ...]:
    """RFC 3261 §17.2.3 matching key; RFC 2543 fallback for old branches."""
    via = request.via[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), str(via.port), method)
    return (
        "rfc2543",
        request.call_id,
        request.from_.tag or "",
        str(request.cseq.seq),
        via.host.lower(),
        str(via.port),
        method,
    )


class Transaction:
    __slots__ = ("_request", "_timers", "key", "state", "target", "tu", "user_data")

    def __init__(self, tu: TransactionUser, request: Request, target: Target) -> None:
        self.tu = tu
        self._request: Request | None = request
        self.target = target
        self.state = State.TRYING
        self._timers: dict[str, Timer] = {}
        self.key: tuple[str, ...] = ()
        self.user_data: object = None

    @property
    def request(self) -> Request:
        request = self._request
        if request is None:
            request = self._request = self._parse_again()
        return request

    def _parse_again(self) -> Request:
        raise AssertionError("only a client transaction lets its request go")

    @property
    def reliable(self) -> bool:
        return self.target.reliable

    def _start_timer(self, name: str, delay: float) -> None:
        old = self._timers.get(name)
        if old is not None:
            old.cancel()
        # The timer calls on_timer(name): no partial and bound method per
        # timer for the garbage collector to walk while a finished
        # transaction waits out timer D, J, K or M.
        self._timers[name] = self.tu.schedule_for(delay, self, name)

    def _stop_timer(self, *names: str) -> None:
        for name in names:
            timer = self._timers.pop(name, None)
            if timer is not None:
                timer.cancel()

    def on_timer(self, name: str) -> None:
        self._timers.pop(name, None)
        if self.state is not State.TERMINATED:
            self.timer_fired(name)

    def timer_fired(self, name: str) -> None:
        raise NotImplementedError

    def terminate(self) -> None:
        if self.state is State.TERMINATED:
            return
        self.state = State.TERMINATED
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.tu.tx_terminated(self)


class ClientTransaction(Transaction):
    # No response is kept: each goes to the TU as it comes, and a transaction
    # waits up to 64*T1 after its final one (timers D, K, M) with nothing
    # to do but absorb copies.  Kept, every call's answers stayed alive that
    # long for the garbage collector to walk.
    __slots__ = ("_data", "_interval")

    def __init__(self, tu: TransactionUser, request: Request, target: Target) -> None:
        super().__init__(tu, request, target)
        branch = request.via[0].branch or ""
        self.key = client_key(branch, request.method)
        self._data = request.to_bytes()
        self._interval = tu.timers.t1

    def start(self) -> None:
        raise NotImplementedError

    def receive_response(self, response: Response) -> None:
        raise NotImplementedError

    def let_request_go(self) -> bool:
        """Keep the request only as the bytes sent, once its final response
        came: an INVITE transaction waits 32 s more (timer M) and the parsed
        request, its headers and addresses were most of what the garbage
        collector walked per finished call.  Read again, it is parsed from
        those bytes (a stray 2xx, rare).  Whether it was let go (not before
        the final response)."""
        if self.state in (State.CALLING, State.TRYING, State.PROCEEDING):
            return False
        self._request = None
        return True

    def _parse_again(self) -> Request:
        request = parse_message(self._data)
        assert isinstance(request, Request)
        return request


class InviteClientTransaction(ClientTransaction):
    __slots__ = ("_ack",)

    def __init__(self, tu: TransactionUser, request: Request, target: Target) -> None:
        super().__init__(tu, request, target)
        self.state = State.CALLING
        self._ack: bytes | None = None

    def start(self) -> None:
        self.tu.send(self._data, self.target)
        if not self.reliable:
            self._start_timer("A", self._interval)
        self._start_timer("B", 64 * self.tu.timers.t1)

    def timer_fired(self, name: str) -> None:
        if name == "A" and self.state is State.CALLING:
            self.tu.send(self._data, self.target)
            self._interval *= 2
            self._start_timer("A", self._interval)
        elif name == "B" and self.state is State.CALLING:
            self.tu.tx_timeout(self)
            self.terminate()
        elif name in ("D", "M"):
            self.terminate()

    def receive_response(self, response: Response) -> None:
        status = response.status
        state = self.state
        if state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                self._stop_timer("A", "B")
                self.tu.tx_response(self, response)
            elif status < 300:
                self.state = State.ACCEPTED
                self._stop_timer("A", "B")
                self._start_timer("M", 64 * self.tu.timers.t1)
                self.tu.tx_response(self, response)
            else:
                self.state = State.COMPLETED
                self._stop_timer("A", "B")
                self._ack = self._build_ack(response).to_bytes()
                self.tu.send(self._ack, self.target)
                self._start_timer("D", 0 if self.reliable else 32.0)
                self.tu.tx_response(self, response)
        elif state is State.ACCEPTED:
            if 200 <= status < 300:
                # RFC 6026: retransmitted (or forked) 2xx go to the TU, which ACKs.
                self.tu.tx_response(self, response)
        elif state is State.COMPLETED and status >= 300 and self._ack is not None:
            self.tu.send(self._ack, self.target)

    def _build_ack(self, response: Response) -> Request:
        req = self.request
        ack = Request(
            "ACK",
            req.uri,
            [req.via[0]],
            req.from_,
            response.to,
            req.call_id,
            type(req.cseq)(req.cseq.seq, "ACK"),
        )
        for route in req.headers.get_all("Route"):
            ack.headers.add("Route", route)
        return ack


class NonInviteClientTransaction(ClientTransaction):
    __slots__ = ()

    def start(self) -> None:
        self.tu.send(self._data, self.target)
        if not self.reliable:
            self._start_timer("E", self._interval)
        self._start_timer("F", 64 * self.tu.timers.t1)

    def timer_fired(self, name: str) -> None:
        t = self.tu.timers
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            self.tu.send(self._data, self.target)
            if self.state is State.TRYING:
                self._interval = min(self._interval * 2, t.t2)
            else:
                self._interval = t.t2
            self._start_timer("E", self._interval)
        elif name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self.tu.tx_timeout(self)
            self.terminate()
        elif name == "K":
            self.terminate()

    def receive_response(self, response: Response) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        if response.status < 200:
            self.state = State.PROCEEDING
            self.tu.tx_response(self, response)
            return
        self.state = State.COMPLETED
        self._stop_timer("E", "F")
        self.tu.tx_response(self, response)
        self._start_timer("K", 0 if self.reliable else self.tu.timers.t4)


class ServerTransaction(Transaction):
    # The last response is kept as its bytes (to send again) and its status:
    # a parsed Response would stay alive for the garbage collector to walk
    # while the transaction waits out timer J or L (32 s over UDP).
    __slots__ = ("_interval", "_last_data", "last_status", "to_tag")

    def __init__(
        self, tu: TransactionUser, request: Request, target: Target, to_tag: str | None
    ) -> None:
        super().__init__(tu, request, target)
        self.key = server_key(request)
        self.to_tag = to_tag
        self.last_status: int | None = None
        """The status of the last response sent, if any."""
        self._last_data: bytes | None = None
        self._interval = tu.timers.t1

    @property
    def final_sent(self) -> bool:
        return self.last_status is not None and self.last_status >= 200

    def _transmit(self, response: Response) -> None:
        self.last_status = response.status
        self._last_data = response.to_bytes()
        self.tu.send(self._last_data, self.target)

    def _retransmit(self) -> None:
        if self._last_data is not None:
            self.tu.send(self._last_data, self.target)

    def receive_request(self, request: Request) -> None:
        raise NotImplementedError

    def send_response(self, response: Response) -> None:
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    __slots__ = ()

    def __init__(
        self, tu: TransactionUser, request: Request, target: Target, to_tag: str | None
    ) -> None:
        super().__init__(tu, request, target, to_tag)
        self.state = State.PROCEEDING

    def receive_request(self, request: Request) -> None:
        state = self.state
        if request.method == "ACK":
            if state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._stop_timer("G", "H")
                self._start_timer("I", 0 if self.reliable else self.tu.timers.t4)
            return
        if state in (State.PROCEEDING, State.COMPLETED):
            self._retransmit()

    def send_response(self, response: Response) -> None:
        if self.state is not State.PROCEEDING:
            return
        self._transmit(response)
        if response.status < 200:
            return
        t = self.tu.timers
        if response.status < 300:
            # RFC 6026: the TU retransmits the 2xx; we absorb INVITE copies.
            self.state = State.ACCEPTED
            self._start_timer("L", 64 * t.t1)
        else:
            self.state = State.COMPLETED
            if not self.reliable:
                self._start_timer("G", self._interval)
            self._start_timer("H", 64 * t.t1)

    def timer_fired(self, name: str) -> None:
        if name == "G" and self.state is State.COMPLETED:
            self._retransmit()
            self._interval = min(self._interval * 2, self.tu.timers.t2)
            self._start_timer("G", self._interval)
        elif name == "H" and self.state is State.COMPLETED:
            self.tu.tx_ack_timeout(self)
            self.terminate()
        elif name in ("I", "L"):
            self.terminate()


class NonInviteServerTransaction(ServerTransaction):
    __slots__ = ()

    def receive_request(self, request: Request) -> None:
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._retransmit()

    def send_response(self, response: Response) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        self._transmit(response)
        if response.status < 200:
            self.state = State.PROCEEDING
            return
        self.state = State.COMPLETED
        self._start_timer("J", 0 if self.reliable else 64 * self.tu.timers.t1)

    def timer_fired(self, name: str) -> None:
        if name == "J":
            self.terminate()
