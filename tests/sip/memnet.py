"""An in-memory network and a manual clock for driving sans-IO endpoints.

Two (or more) real :class:`Endpoint` objects exchange their real bytes here;
the only thing simulated is the wire, so that tests can lose packets and move
time forward deterministically — faults and timings a live peer cannot be
made to produce on demand.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from click2dial.sip.endpoint import Endpoint, EndpointConfig
from click2dial.sip.events import Event
from click2dial.sip.message import Request, Response, parse_message
from click2dial.sip.transaction import Target, TimerConfig

T1 = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sent:
    at: float
    source: tuple[str, int]
    target: Target
    data: bytes

    @property
    def message(self) -> Request | Response:
        return parse_message(self.data, stream=self.target.transport != "udp")

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()


@dataclass
class Node:
    endpoint: Endpoint
    address: tuple[str, int]
    events: list[Event] = field(default_factory=list)

    def take(self, kind: type) -> list[Event]:
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found


class MemNet:
    """Delivers every queued message; ``drop`` decides which are lost."""

    def __init__(self, seed: int = 1) -> None:
        self.clock = Clock()
        self.nodes: dict[tuple[str, int], Node] = {}
        self.wire: list[Sent] = []
        self.drop: Callable[[Sent], bool] = lambda sent: False
        self.seed = seed

    def node(self, port: int, transport: str = "udp") -> Node:
        address = ("127.0.0.1", port)
        config = EndpointConfig({transport: address}, timers=TimerConfig(t1=T1))
        endpoint = Endpoint(config, self.clock, random.Random(self.seed + port))
        node = Node(endpoint, address)
        self.nodes[address] = node
        return node

    def settle(self) -> None:
        """Deliver until nothing is in flight (time does not move)."""
        for _ in range(1000):
            moved = False
            for node in list(self.nodes.values()):
                node.events.extend(node.endpoint.pop_events())
                for data, target in node.endpoint.pop_outgoing():
                    moved = True
                    sent = Sent(self.clock.now, node.address, target, data)
                    self.wire.append(sent)
                    if self.drop(sent):
                        continue
                    peer = self.nodes.get((target.host, target.port))
                    if peer is not None:
                        peer.endpoint.receive(data, target.transport, node.address)
            if not moved:
                return
        raise AssertionError("message storm: the endpoints never went quiet")

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing every timer at its own deadline."""
        end = self.clock.now + seconds
        self.settle()
        while True:
            deadlines = [
                d for n in self.nodes.values() if (d := n.endpoint.next_timer()) is not None
            ]
            upcoming = min(deadlines, default=None)
            if upcoming is None or upcoming > end:
                break
            self.clock.now = max(self.clock.now, upcoming)
            for node in self.nodes.values():
                node.endpoint.handle_timer(self.clock.now)
            self.settle()
        self.clock.now = end
        self.settle()

    def sent(self, first_line_prefix: str, source: tuple[str, int] | None = None) -> list[Sent]:
        return [
            s
            for s in self.wire
            if s.first_line.startswith(first_line_prefix) and (source is None or s.source == source)
        ]
