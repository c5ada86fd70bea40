"""The delivery worker against a real redis-server and a real HTTP receiver:
order per group, back-off, isolation between groups, exactly-once across a
crash, redelivery, outages, and the inline agent notification.

Rounds are driven with ``Notifier.deliver_due()`` and a fake clock where the
schedule matters; the running worker (``start()``) where its liveness does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from click2dial.config import IntegratorConfig
from click2dial.metrics import render
from click2dial.notify import CDR_LIST, MARKER_PREFIX, DeliveryError, Notifier, verify_signature
from click2dial.notify.redis_target import RedisLink
from click2dial.store import CallRecord, Notification, Store, open_store
from click2dial.store.sqlite import SQLiteStore
from tests.notify.support import (
    BlackHole,
    FakeClock,
    HttpReceiver,
    RedisServer,
    ScriptedRandom,
    brpop_all,
    cdr_row,
    wait_until,
)

SECRET = "whsec-0123456789abcdef0123456789"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def opened(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite:///{tmp_path}/outbox.db") as store:
        yield store


@asynccontextmanager
async def notifier_for(
    store: Store, integrators: dict[str, IntegratorConfig], *, start: bool = False, **options: Any
) -> AsyncIterator[Notifier]:
    notifier = Notifier(store, integrators, **options)
    if start:
        await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.close()


def ids(documents: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in documents]


def call_record(integrator: str = "acme", agent: str = "1001") -> CallRecord:
    return CallRecord(
        call_ref="call-agent-1",
        integrator=integrator,
        agent=agent,
        callee="0821234567",
        outbound_id="27110000001",
        outbound_id_requested="27110000001",
        contact_ref="ticket-4711",
        call_type="outbound",
        created_at=time.time(),
        node_id="test",
        state="agent_answered",
    )


# --------------------------------------------------------------- Redis CDRs


def test_cdrs_reach_the_integrators_database_once_each_in_commit_order(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        acme = IntegratorConfig(name="acme", redis=redis_server.url(3))
        rows = [cdr_row("acme", n) for n in range(25)]
        async with opened(tmp_path) as store:
            await store.enqueue(rows[:10])
            await store.enqueue(rows[10:])
            # Batches smaller than the backlog: order must hold across claims.
            async with notifier_for(store, {"acme": acme}, batch=7) as notifier:
                await notifier.deliver_due()
            assert await store.undelivered("acme") == []
        docs = await brpop_all(redis_server.client(3), 25, CDR_LIST)
        assert ids(docs) == [row.id for row in rows]
        assert docs[0] == {"id": rows[0].id, "type": "cdr", "payload": rows[0].payload["payload"]}
        assert redis_server.client(3).llen(CDR_LIST) == 0
        assert redis_server.client(0).dbsize() == 0  # nobody else's database
        assert notifier.counters.delivered[("acme", "redis")] == 25
        assert notifier.counters.failed[("acme", "redis")] == 0
        text = render(notifier.metric_families())
        labels = '{integrator="acme",target="redis"}'
        assert f"click2dial_notifications_delivered_total{labels} 25\n" in text

    run(main())


def test_a_crash_between_lpush_and_mark_delivered_does_not_push_twice(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        acme = IntegratorConfig(name="acme", redis=redis_server.url(2))
        row = cdr_row("acme", 1)
        clock = FakeClock()
        async with opened(tmp_path) as store:
            await store.enqueue([row])
            # A worker claims the row, pushes it, and dies before marking it.
            (claimed,) = await store.due_notifications(clock(), lease=30)
            link = RedisLink(acme.redis or "")
            try:
                assert await link.deliver(claimed) is True
                assert await link.deliver(claimed) is False  # a repeat pushes nothing
            finally:
                await link.close()
            clock.now += 31  # its lease ran out: the row is due again
            async with notifier_for(store, {"acme": acme}, clock=clock) as notifier:
                await notifier.deliver_due()
            assert await store.undelivered("acme") == []
        client = redis_server.client(2)
        assert client.llen(CDR_LIST) == 1
        assert client.ttl(MARKER_PREFIX + row.id) > 6 * 24 * 3600
        assert notifier.counters.delivered[("acme", "redis")] == 1

    run(main())


def test_redeliver_pushes_the_same_document_again(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        acme = IntegratorConfig(name="acme", redis=redis_server.url(1))
        beta = IntegratorConfig(name="beta", redis=redis_server.url(2))
        row = cdr_row("acme", 1)
        client = redis_server.client(1)
        async with opened(tmp_path) as store:
            await store.enqueue([row])
            async with notifier_for(store, {"acme": acme, "beta": beta}) as notifier:
                await notifier.deliver_due()
                (first,) = await brpop_all(client, 1, CDR_LIST)

                assert await notifier.redeliver("acme", row.id) is True
                await notifier.deliver_due()
                (again,) = await brpop_all(client, 1, CDR_LIST)
                assert again == first

                # The marker cannot be cleared (say Redis was down when the
                # integrator asked): the send is forced all the same.
                async def broken(self: RedisLink, id: str) -> None:
                    raise DeliveryError("redis: ConnectionError")

                monkeypatch.setattr(RedisLink, "forget", broken)
                assert await notifier.redeliver("acme", row.id) is True
                await notifier.deliver_due()
                (forced,) = await brpop_all(client, 1, CDR_LIST)
                assert forced == first

                # Only the integrator's own rows, and only rows that exist.
                assert await notifier.redeliver("beta", row.id) is False
                assert await notifier.redeliver("acme", "no-such-id") is False
            assert await store.undelivered("acme") == []
        assert client.llen(CDR_LIST) == 0

    run(main())


def test_the_worker_rides_out_a_redis_outage(tmp_path: Path, redis_server: RedisServer) -> None:
    async def main() -> None:
        acme = IntegratorConfig(name="acme", redis=redis_server.url(4))
        rows = [cdr_row("acme", n) for n in range(10)]
        redis_server.stop()
        async with (
            opened(tmp_path) as store,
            notifier_for(store, {"acme": acme}, start=True, backoff_base=0.05,
                         backoff_max=0.3, poll_interval=0.1) as notifier,
        ):  # fmt: skip
            for row in rows:
                await store.enqueue([row])
                notifier.wake()

            async def all_tried() -> bool:
                pending = await store.undelivered("acme")
                return len(pending) == 10 and all(p.attempts >= 1 for p in pending)

            await wait_until(all_tried, what="every row to have been tried")
            redis_server.start()
            docs = await brpop_all(redis_server.client(4), 10, CDR_LIST)
            assert ids(docs) == [row.id for row in rows]

            async def drained() -> bool:
                return await store.undelivered("acme") == []

            await wait_until(drained, what="the outbox to drain")
            assert notifier.counters.failed[("acme", "redis")] >= 1
            assert notifier.counters.delivered[("acme", "redis")] == 10
        assert redis_server.client(4).llen(CDR_LIST) == 0

    run(main())


class FlakyStore(SQLiteStore):
    """Fails the worker's store calls a few times, as a database under strain does."""

    claim_failures = 2
    mark_failures = 1

    async def due_notifications(self, now: float, limit: int = 100, *,
                                lease: float = 30.0) -> list[Notification]:  # fmt: skip
        if self.claim_failures:
            self.claim_failures -= 1
            raise RuntimeError("database is locked")
        return await super().due_notifications(now, limit, lease=lease)

    async def mark_delivered(self, id: str, at: float) -> bool:
        if self.mark_failures:
            self.mark_failures -= 1
            raise RuntimeError("database is locked")
        return await super().mark_delivered(id, at)


def test_the_worker_survives_store_errors_and_still_pushes_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        acme = IntegratorConfig(name="acme", redis=redis_server.url(5))
        row = cdr_row("acme", 1)
        async with FlakyStore(str(tmp_path / "flaky.db")) as store:
            await store.enqueue([row])
            async with notifier_for(store, {"acme": acme}, start=True, poll_interval=0.05,
                                    lease=0.5, backoff_base=0.05) as notifier:  # fmt: skip
                # Claims fail twice, then the push works but marking it fails:
                # the row comes back when its lease ends and is not pushed again.
                async def drained() -> bool:
                    return await store.undelivered("acme") == []

                await wait_until(drained, what="the row to be marked delivered")
                assert notifier._dispatcher is not None and not notifier._dispatcher.done()
        assert store.claim_failures == 0 and store.mark_failures == 0
        assert redis_server.client(5).llen(CDR_LIST) == 1

    run(main())


# ---------------------------------------------------------------- ordering


def test_back_off_doubles_with_jitter_up_to_the_cap_and_nothing_overtakes(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock, rng = FakeClock(), ScriptedRandom(0.75)
        async with HttpReceiver([500] * 5) as hook, opened(tmp_path) as store:
            acme = IntegratorConfig(name="acme", webhook_url=hook.url, webhook_secret=SECRET)
            first, second = cdr_row("acme", 1, "webhook"), cdr_row("acme", 2, "webhook")
            await store.enqueue([first, second])
            async with notifier_for(store, {"acme": acme}, clock=clock, rng=rng,
                                    backoff_base=1.0, backoff_max=5.0) as notifier:  # fmt: skip
                delays = []
                for attempt in range(1, 6):
                    started = clock.now
                    await notifier.deliver_due()
                    head, follower = await store.undelivered("acme")
                    assert (head.id, follower.id) == (first.id, second.id)
                    assert head.attempts == attempt and "500" in (head.last_error or "")
                    # The younger row waits behind the failed one, untried.
                    assert follower.next_attempt_at == head.next_attempt_at
                    assert (follower.last_error or "").startswith("not attempted")
                    delays.append(head.next_attempt_at - started)
                    clock.now = head.next_attempt_at - 0.001
                    await notifier.deliver_due()  # not due yet: nothing is sent
                    clock.now = head.next_attempt_at
                assert delays == pytest.approx([0.75, 1.5, 3.0, 3.75, 3.75])
                assert rng.bounds == [(0.5, 1.0)] * 5
                assert len(hook.requests) == 5
                assert {r.headers["x-click2dial-notification-id"] for r in hook.requests} == {
                    first.id
                }
                await notifier.deliver_due()  # the receiver is back (200)
            sent = [r.headers["x-click2dial-notification-id"] for r in hook.requests[5:]]
            assert sent == [first.id, second.id]
            assert await store.undelivered("acme") == []
            assert notifier.counters.failed[("acme", "webhook")] == 5
            assert notifier.counters.delivered[("acme", "webhook")] == 2

    run(main())


class SlowStore(SQLiteStore):
    """Each failure write takes a second of the fake clock, longer than the
    back-off it records."""

    clock: FakeClock

    async def mark_failed(self, id: str, error: str, next_attempt_at: float) -> bool:
        done = await super().mark_failed(id, error, next_attempt_at)
        self.clock.now += 1.0
        return done


def test_rows_wait_for_the_failed_one_even_when_its_back_off_ends_first(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with HttpReceiver([500]) as hook, SlowStore(str(tmp_path / "slow.db")) as store:
            store.clock = clock
            acme = IntegratorConfig(name="acme", webhook_url=hook.url, webhook_secret=SECRET)
            rows = [cdr_row("acme", n, "webhook") for n in range(4)]
            await store.enqueue(rows)
            async with notifier_for(store, {"acme": acme}, clock=clock,
                                    backoff_base=0.1) as notifier:  # fmt: skip
                await notifier.deliver_due()
                # The receiver answers 200 from its second request on, and the
                # first row's retry time passed while the others were put back.
                assert len(hook.requests) == 1
                clock.now += 1.0
                await notifier.deliver_due()
                await notifier.deliver_due()
            sent = [r.headers["x-click2dial-notification-id"] for r in hook.requests]
            assert sent == [rows[0].id] + [row.id for row in rows]
            assert await store.undelivered("acme") == []

    run(main())


class RacingStore(SQLiteStore):
    """Lets a test act at the moment the worker has put a row back: the
    running dispatcher can claim new rows while the group still puts back
    older ones."""

    race: Callable[[], Awaitable[None]] | None = None
    claimed: set[str]

    async def mark_failed(self, id: str, error: str, next_attempt_at: float) -> bool:
        done = await super().mark_failed(id, error, next_attempt_at)
        if self.race is not None and error.startswith("not attempted"):
            race, self.race = self.race, None
            await race()
        return done

    async def due_notifications(self, now: float, limit: int = 100, *,
                                lease: float = 30.0) -> list[Notification]:  # fmt: skip
        rows = await super().due_notifications(now, limit, lease=lease)
        self.claimed.update(row.id for row in rows)
        return rows


def test_a_new_row_claimed_with_the_retried_one_waits_for_the_rows_put_back(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with HttpReceiver([500]) as hook, RacingStore(str(tmp_path / "r.db")) as store:
            store.claimed = set()
            acme = IntegratorConfig(name="acme", webhook_url=hook.url, webhook_secret=SECRET)
            rows = [cdr_row("acme", n, "webhook") for n in range(4)]
            late = cdr_row("acme", 9, "webhook")
            await store.enqueue(rows)
            async with notifier_for(store, {"acme": acme}, clock=clock, poll_interval=0.05,
                                    backoff_base=0.1) as notifier:  # fmt: skip

                async def race() -> None:
                    # The first row failed and its second row is back in the
                    # outbox; its retry time comes, and a new row with it.
                    (first, *_) = await store.undelivered("acme")
                    clock.now = first.next_attempt_at
                    await store.enqueue([late])
                    store.claimed.clear()
                    notifier.wake()
                    await wait_until(lambda: first.id in store.claimed, what="the retry's claim")
                    # The store keeps the new row behind the rows still in hand.
                    assert late.id not in store.claimed

                store.race = race
                await notifier.start()

                async def drained() -> bool:
                    return await store.undelivered("acme") == []

                await wait_until(drained, what="the outbox to drain")
            sent = [r.headers["x-click2dial-notification-id"] for r in hook.requests]
            assert sent == [rows[0].id] + [row.id for row in rows] + [late.id]

    run(main())


def test_a_restarted_worker_keeps_new_rows_behind_one_in_back_off(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with HttpReceiver([500]) as hook, opened(tmp_path) as store:
            acme = IntegratorConfig(name="acme", webhook_url=hook.url, webhook_secret=SECRET)
            old = cdr_row("acme", 1, "webhook")
            await store.enqueue([old])
            async with notifier_for(store, {"acme": acme}, clock=clock) as before:
                await before.deliver_due()
            (failed,) = await store.undelivered("acme")
            # A new process, with nothing in memory, and a new row due at once.
            new = cdr_row("acme", 2, "webhook")
            await store.enqueue([new])
            async with notifier_for(store, {"acme": acme}, clock=clock) as after:
                await after.recover()
                await after.deliver_due()
                assert len(hook.requests) == 1  # the new row did not overtake
                clock.now = failed.next_attempt_at
                await after.deliver_due()
            sent = [r.headers["x-click2dial-notification-id"] for r in hook.requests]
            assert sent == [old.id, old.id, new.id]

    run(main())


def test_a_webhook_that_never_answers_delays_no_other_group(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        async with HttpReceiver(hang=True) as hook, opened(tmp_path) as store:
            integrators = {
                "slow": IntegratorConfig(name="slow", webhook_url=hook.url, webhook_secret=SECRET),
                "acme": IntegratorConfig(name="acme", redis=redis_server.url(1)),
            }
            slow_rows = [cdr_row("slow", n, "webhook") for n in range(3)]
            acme_rows = [cdr_row("acme", n) for n in range(3)]
            await store.enqueue(slow_rows + acme_rows)  # the slow group's rows are older
            async with notifier_for(store, integrators, start=True, http_timeout=5.0):
                await hook.wait_for(1)
                docs = await brpop_all(redis_server.client(1), 3, CDR_LIST, timeout=3)
                assert ids(docs) == [row.id for row in acme_rows]
                # ...while the receiver still sits on the slow group's first request.
                assert len(hook.requests) == 1 and hook.answered == []
                assert [p.attempts for p in await store.undelivered("slow")] == [0, 0, 0]

    run(main())


# ----------------------------------------------------------------- webhooks


def test_webhook_requests_are_signed_and_labelled(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(1_800_000_123.9)
        async with HttpReceiver() as hook, opened(tmp_path) as store:
            acme = IntegratorConfig(name="acme", webhook_url=hook.url, webhook_secret=SECRET)
            row = cdr_row("acme", 7, "webhook")
            await store.enqueue([row])
            async with notifier_for(store, {"acme": acme}, clock=clock) as notifier:
                await notifier.deliver_due()
            (request,) = hook.requests
        assert request.method == "POST" and request.path == "/hooks/click2dial"
        headers = request.headers
        assert headers["content-type"] == "application/json"
        assert headers["x-click2dial-notification-id"] == row.id
        assert headers["x-click2dial-event"] == "cdr"
        assert headers["x-click2dial-timestamp"] == "1800000123"
        signature = headers["x-click2dial-signature"]
        assert signature.startswith("sha256=")
        assert verify_signature(SECRET, request.body, signature)
        assert not verify_signature(SECRET + "x", request.body, signature)
        assert not verify_signature(SECRET, request.body + b" ", signature)
        assert json.loads(request.body) == {"id": row.id, **row.payload}
        assert notifier.counters.delivered[("acme", "webhook")] == 1

    run(main())


# ------------------------------------------------------- agent connection


def test_agent_connected_publishes_before_it_returns(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        record = call_record()
        subscriber = aioredis.Redis(host="127.0.0.1", port=redis_server.port, db=6)
        pubsub = subscriber.pubsub()
        await pubsub.subscribe("enigma:notifications:agents:1001")
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        async with HttpReceiver() as hook, opened(tmp_path) as store:
            acme = IntegratorConfig(name="acme", redis=redis_server.url(6),
                                    webhook_url=hook.url, webhook_secret=SECRET)  # fmt: skip
            async with notifier_for(store, {"acme": acme}) as notifier:
                await notifier.agent_connected(record)
                # Published already: no worker runs yet.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                assert message is not None, "not published when agent_connected returned"
                (webhook_row,) = await store.undelivered("acme")  # Redis's is delivered
                assert webhook_row.target == "webhook"
                await notifier.deliver_due()
            await pubsub.aclose()
            await subscriber.aclose()
            doc = json.loads(message["data"])
            assert doc == {
                "id": doc["id"],
                "type": "call",
                "payload": {"call_ref": record.call_ref, "agent": "1001",
                            "contact_ref": "ticket-4711", "number": "0821234567",
                            "ref": "click-dial"},
            }  # fmt: skip
            (request,) = hook.requests
            hooked = json.loads(request.body)
            assert request.headers["x-click2dial-event"] == "call"
            assert hooked["payload"] == doc["payload"] and hooked["id"] != doc["id"]
            assert await store.undelivered("acme") == []

    run(main())


def test_agent_connected_returns_at_once_when_redis_is_down(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        acme = IntegratorConfig(name="acme", redis=redis_server.url(7))
        redis_server.stop()
        async with opened(tmp_path) as store, notifier_for(store, {"acme": acme}) as notifier:
            started = time.monotonic()
            await notifier.agent_connected(call_record())
            assert time.monotonic() - started < 1.0
            (row,) = await store.undelivered("acme")
            assert row.attempts == 1 and row.next_attempt_at <= time.time()
            # The worker takes it from there once Redis is back.
            redis_server.start()
            subscriber = aioredis.Redis(host="127.0.0.1", port=redis_server.port, db=7)
            pubsub = subscriber.pubsub()
            await pubsub.subscribe("enigma:notifications:agents:1001")
            await pubsub.get_message(timeout=1)
            await notifier.deliver_due()
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            await pubsub.aclose()
            await subscriber.aclose()
            assert message is not None and json.loads(message["data"])["id"] == row.id
            assert await store.undelivered("acme") == []

    run(main())


def test_agent_connected_returns_in_time_when_redis_never_answers(tmp_path: Path) -> None:
    async def main() -> None:
        async with BlackHole() as hole, opened(tmp_path) as store:
            acme = IntegratorConfig(name="acme", redis=f"redis://127.0.0.1:{hole.port}/0")
            async with notifier_for(store, {"acme": acme}, inline_timeout=0.3) as notifier:
                started = time.monotonic()
                await notifier.agent_connected(call_record())
                elapsed = time.monotonic() - started
            (row,) = await store.undelivered("acme")
        assert elapsed < 1.0
        assert row.attempts == 1 and "no answer" in (row.last_error or "")

    run(main())
