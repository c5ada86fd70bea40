"""Node-to-node requests over the store: what one Click2Dial node asks of
another that shares its PostgreSQL, carried by ``NOTIFY``/``LISTEN``
(:meth:`Store.notify <click2dial.store.Store.notify>`,
:meth:`Store.listen <click2dial.store.Store.listen>`), not by a protocol
of our own.

One request exists today: *hang up a call you run* (a ``DELETE`` that
reached a node that does not own the call).  Messages are JSON with the
addressee's ``node_id`` (``to``); every node hears every message on the
store and ignores those for others.  ``NOTIFY`` is fire-and-forget: a request
whose owner is dead, or not listening, simply gets no reply, and the asking
node says so to its client (:meth:`ClusterBus.hangup` returns ``None``).

A node keeps its subscription up for as long as it runs: when the
connection is lost (a PostgreSQL restart) it subscribes again, after
:data:`RESUBSCRIBE_DELAY` seconds between attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from .store import Store, StoreError
from .store.base import Listening

log = logging.getLogger(__name__)

#: Seconds between two attempts to subscribe again after a lost connection.
RESUBSCRIBE_DELAY: Final = 1.0
#: Seconds the start waits for the first subscription before going on
#: without it (it keeps trying in the background).
START_WAIT: Final = 5.0


@dataclass(frozen=True, slots=True)
class HangupReply:
    """What the owner of a call answered to a hang-up request."""

    running: bool
    """The owner ran the call and has decided its end."""
    ending: bool
    """The call's end is decided but not stored yet (the owner's store
    write is late): the call is ``ending``."""


#: The owner's side: hang up ``call_ref`` (hangup side ``side``), waiting
#: briefly for the end to be stored, and say how it went.
HangupHandler = Callable[[str, str], Awaitable[HangupReply]]


class ClusterBus:
    """This node's end of the bus.  ``await start()``, ``await close()``."""

    def __init__(self, store: Store, node_id: str, on_hangup: HangupHandler) -> None:
        self.store = store
        self.node_id = node_id
        self.on_hangup = on_hangup
        self._replies: dict[str, asyncio.Future[HangupReply]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._subscription: Listening | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="cluster-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), START_WAIT)
        if not self._subscribed.is_set():
            log.warning("cluster bus: not subscribed yet; calls of this node cannot be "
                        "hung up through other nodes until it is")  # fmt: skip

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        for task in list(self._tasks):
            task.cancel()
        for future in self._replies.values():
            future.cancel()
        self._replies.clear()

    async def _run(self) -> None:
        while True:
            try:
                self._subscription = await self.store.listen(self._on_message)
            except StoreError as exc:
                log.warning("cluster bus: cannot subscribe (%s); retrying", exc)
            else:
                self._subscribed.set()
                await self._subscription.wait_closed()
                self._subscribed.clear()
                log.warning("cluster bus: subscription lost; subscribing again")
                await self._subscription.close()
                self._subscription = None
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    # ---------------------------------------------------------------- asking
    async def hangup(
        self, owner: str, call_ref: str, *, side: str = "api", timeout: float = 1.0
    ) -> HangupReply | None:
        """Ask ``owner`` to hang up ``call_ref``; its reply, or ``None`` if
        none came within ``timeout`` seconds (the owner is dead, or cannot
        hear the bus).  Raises ``StoreError`` if the request cannot be sent."""
        ident = uuid.uuid4().hex
        future: asyncio.Future[HangupReply] = asyncio.get_running_loop().create_future()
        self._replies[ident] = future
        try:
            await self._send(
                {
                    "op": "hangup",
                    "id": ident,
                    "to": owner,
                    "from": self.node_id,
                    "call_ref": call_ref,
                    "side": side,
                }
            )
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._replies.pop(ident, None)

    async def _send(self, message: dict[str, Any]) -> None:
        await self.store.notify(json.dumps(message, separators=(",", ":")))

    # ------------------------------------------------------------- answering
    def _on_message(self, body: str) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("to") != self.node_id:
            return
        op = message.get("op")
        if op == "hangup":
            self._spawn(self._serve_hangup(message))
        elif op == "hangup_reply":
            future = self._replies.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(
                    HangupReply(bool(message.get("running")), bool(message.get("ending")))
                )

    async def _serve_hangup(self, message: dict[str, Any]) -> None:
        call_ref, side = message.get("call_ref"), message.get("side", "api")
        if not isinstance(call_ref, str) or not isinstance(side, str):
            return
        try:
            reply = await self.on_hangup(call_ref, side)
            await self._send(
                {
                    "op": "hangup_reply",
                    "id": message.get("id"),
                    "to": message.get("from"),
                    "running": reply.running,
                    "ending": reply.ending,
                }
            )
        except Exception:
            # The asking node gets no reply and tells its client to retry.
            log.exception("cluster bus: hang-up of %s asked by %s", call_ref, message.get("from"))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
