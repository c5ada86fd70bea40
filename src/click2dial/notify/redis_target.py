"""The Redis target: one client per distinct Redis URL (so per integrator
database), and the exactly-once hand-over of a document to it.

Exactly once: the outbox marks a row delivered only after Redis has taken
it, so a crash in between makes the worker send it again.  Each send is
therefore one Lua script, atomic in Redis, that first sets
``enigma:notifications:delivered:<id>`` with ``NX`` and only pushes (or
publishes) when it was the one to set it.  A repeat finds the marker, pushes
nothing, and still counts as delivered.  The marker expires after a week: a
row is never retried that long after Redis has taken it.

An integrator's explicit redelivery must push again: :meth:`RedisLink.forget`
deletes the marker, and a ``force`` send sets it without the ``NX`` check
(for when the marker could not be deleted, Redis being down at the time).

A connection failure puts the link in back-off (a short, growing pause) so
that the call path, which only ever tries inline with a deadline, does not
wait on a Redis that was down a moment ago; the worker ignores the pause:
its own retry schedule is what probes a Redis that came back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..store import Notification
from .documents import CDR_LIST, MARKER_PREFIX, DeliveryError, agent_channel, encode

MARKER_TTL: Final = 7 * 24 * 3600
_PAUSE_FIRST: Final = 0.1
_PAUSE_MAX: Final = 5.0

# KEYS[1] marker, KEYS[2] list; ARGV[1] ttl, ARGV[2] document, ARGV[3] "1" = force.
_PUSH: Final = """
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
elseif not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

# A channel is not a key, so it travels in ARGV.
# KEYS[1] marker; ARGV[1] ttl, ARGV[2] document, ARGV[3] "1" = force, ARGV[4] channel.
_PUBLISH: Final = """
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
elseif not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
"""


class RedisLink:
    """One Redis URL (host, port and database): its client and its health."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        marker_ttl: int = MARKER_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # One immediate retry: after a Redis restart the pooled connection is
        # dead and the first command on it fails even though Redis is up.
        # More retries would only stretch one attempt; the outbox retries.
        self.client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self.timeout = timeout
        self.marker_ttl = marker_ttl
        self.clock = clock
        self.failures = 0
        self.paused_until = 0.0

    def available(self) -> bool:
        """False while in back-off after a connection failure."""
        return self.clock() >= self.paused_until

    async def deliver(self, row: Notification, *, force: bool = False) -> bool:
        """Hand the row's document over; True if this call pushed it, False
        if an earlier attempt already had (a repeat after a crash).

        Raises :class:`DeliveryError` when Redis cannot be reached or refuses.
        """
        marker = MARKER_PREFIX + row.id
        body = encode(row)
        flag = "1" if force else "0"
        try:
            async with asyncio.timeout(self.timeout):
                if row.kind == "cdr":
                    done = await self.client.eval(
                        _PUSH, 2, marker, CDR_LIST, self.marker_ttl, body, flag
                    )
                else:
                    channel = agent_channel(row)
                    done = await self.client.eval(
                        _PUBLISH, 1, marker, self.marker_ttl, body, flag, channel
                    )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed()
            raise DeliveryError(f"redis: {type(exc).__name__}: {exc}") from exc
        self.failures = 0
        self.paused_until = 0.0
        return bool(done)

    async def forget(self, id: str) -> None:
        """Delete a delivery marker, so the next send of ``id`` pushes again."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.delete(MARKER_PREFIX + id)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed()
            raise DeliveryError(f"redis: {type(exc).__name__}: {exc}") from exc

    def _failed(self) -> None:
        self.failures += 1
        pause = min(_PAUSE_MAX, _PAUSE_FIRST * 2 ** (self.failures - 1))
        self.paused_until = self.clock() + pause

    async def close(self) -> None:
        await self.client.aclose()
