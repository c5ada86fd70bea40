"""Calls in the store: creation, idempotency, one live call per agent,
scoping by integrator, updates, the exactly-once end with its outbox rows,
listing and recovery queries — on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from click2dial.store import AgentBusyError, CallRecord, InvalidCursorError, StoreError
from click2dial.store.base import CallLimits, LimitExceededError
from tests.store.support import T0, Db, end_fields, make_call, make_notification


def test_create_and_get_round_trip_every_field(db: Db) -> None:
    call = make_call(
        source="webrtc",
        state="callee_ringing",
        agent_answered_at=T0 + 1.25,
        callee_dialed_at=T0 + 1.5,
        idempotency_key="k-1",
        warnings=["outbound_id 0111234567: carriers often reject it", "ünïcode"],
        agent_leg="answered",
        callee_leg="ringing 180",
        sip_status=180,
        sip_reason="Ringing",
    )

    async def main() -> None:
        stored, created = await db.store.create_call(call)
        assert created and stored == call
        got = await db.store.get_call("acme", call.call_ref)
        assert got is not None
        assert asdict(got) == asdict(call)
        assert got.live

    db.run(main())


def test_calls_are_scoped_to_their_integrator(db: Db) -> None:
    async def main() -> None:
        mine = make_call(integrator="acme")
        theirs = make_call(integrator="globex", idempotency_key="same")
        await db.store.create_call(mine)
        await db.store.create_call(theirs)
        assert await db.store.get_call("globex", mine.call_ref) is None
        assert await db.store.get_call("acme", theirs.call_ref) is None
        assert await db.store.get_call("acme", "no-such-call") is None
        listed, _ = await db.store.list_calls("acme")
        assert [c.call_ref for c in listed] == [mine.call_ref]
        assert await db.store.find_by_idempotency_key("acme", "same") is None
        assert await db.store.count_live("acme") == 1
        assert await db.store.count_live("globex") == 1

    db.run(main())


def test_a_retried_create_returns_the_first_call(db: Db) -> None:
    async def main() -> None:
        first = make_call(idempotency_key="retry-1")
        again = make_call(idempotency_key="retry-1", callee="27119999999")
        stored, created = await db.store.create_call(first)
        assert created
        stored, created = await db.store.create_call(again)
        assert not created
        assert stored.call_ref == first.call_ref and stored.callee == first.callee
        assert await db.store.get_call("acme", again.call_ref) is None
        found = await db.store.find_by_idempotency_key("acme", "retry-1")
        assert found is not None and found.call_ref == first.call_ref
        # Still the first call after it ended: the key is not reused.
        await db.store.finish_call(first.call_ref, **end_fields())
        stored, created = await db.store.create_call(make_call(idempotency_key="retry-1"))
        assert not created and stored.call_ref == first.call_ref and not stored.live
        # The same key belongs to each integrator separately.
        _, created = await db.store.create_call(
            make_call(integrator="globex", idempotency_key="retry-1")
        )
        assert created

    db.run(main())


def test_concurrent_retries_create_one_call(db: Db) -> None:
    async def main() -> list[tuple[CallRecord, bool]]:
        attempts = [make_call(idempotency_key="burst") for _ in range(20)]
        return await asyncio.gather(*(db.store.create_call(c) for c in attempts))

    results = db.run(main())
    assert sum(created for _, created in results) == 1
    assert len({call.call_ref for call, _ in results}) == 1
    listed, _ = db.run(db.store.list_calls("acme"))
    assert len(listed) == 1


def test_an_agent_has_one_live_call(db: Db) -> None:
    async def main() -> None:
        first = make_call(agent="1001")
        await db.store.create_call(first)
        with pytest.raises(AgentBusyError) as busy:
            await db.store.create_call(make_call(agent="1001", idempotency_key="other"))
        assert busy.value.call_ref == first.call_ref
        # The same extension number at another integrator is another agent.
        _, created = await db.store.create_call(make_call(integrator="globex", agent="1001"))
        assert created
        _, created = await db.store.create_call(make_call(agent="1002"))
        assert created

    db.run(main())


def test_concurrent_calls_for_one_agent_let_one_through(db: Db) -> None:
    async def main() -> list[tuple[CallRecord, bool] | BaseException]:
        attempts = [make_call(agent="2000", idempotency_key=f"k{i}") for i in range(20)]
        return await asyncio.gather(
            *(db.store.create_call(c) for c in attempts), return_exceptions=True
        )

    results = db.run(main())
    won = [r for r in results if isinstance(r, tuple)]
    busy = [r for r in results if isinstance(r, AgentBusyError)]
    assert len(won) == 1 and won[0][1]
    assert len(busy) == 19
    assert {e.call_ref for e in busy} == {won[0][0].call_ref}


def test_the_agent_is_free_again_after_the_call_ends(db: Db) -> None:
    async def main() -> None:
        first = make_call(agent="1001")
        await db.store.create_call(first)
        assert await db.store.finish_call(first.call_ref, **end_fields()) is not None
        _, created = await db.store.create_call(make_call(agent="1001"))
        assert created

    db.run(main())


def test_create_refuses_unknown_vocabulary_and_duplicate_refs(db: Db) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="state"):
            await db.store.create_call(make_call(state="dialing"))
        with pytest.raises(ValueError, match="call_type"):
            await db.store.create_call(make_call(call_type="inbound"))
        call = make_call()
        await db.store.create_call(call)
        with pytest.raises(StoreError):
            await db.store.create_call(make_call(call_ref=call.call_ref, agent="1009"))

    db.run(main())


def test_update_changes_live_calls_only(db: Db) -> None:
    async def main() -> None:
        call = make_call()
        await db.store.create_call(call)
        assert await db.store.update_call(
            call.call_ref,
            state="agent_answered",
            agent_answered_at=T0 + 3,
            agent_leg="answered",
            warnings=["w1"],
        )
        got = await db.store.get_call("acme", call.call_ref)
        assert got is not None
        assert (got.state, got.agent_answered_at, got.agent_leg, got.warnings) == (
            "agent_answered",
            T0 + 3,
            "answered",
            ["w1"],
        )
        assert await db.store.update_call(call.call_ref)
        assert not await db.store.update_call("no-such-call", agent_leg="x")
        await db.store.finish_call(call.call_ref, **end_fields())
        assert not await db.store.update_call(call.call_ref, callee_leg="late event")
        assert not await db.store.update_call(call.call_ref)
        got = await db.store.get_call("acme", call.call_ref)
        assert got is not None and got.callee_leg is None

    db.run(main())


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "ended"},
        {"state": "bogus"},
        {"end_reason": "busy"},
        {"ended_at": 1.0},
        {"integrator": "globex"},
        {"call_ref": "x"},
        {"agent": "1002"},
        {"no_such_column": 1},
        {"warnings": "not a list"},
    ],
)
def test_update_refuses_fields_it_does_not_own(db: Db, fields: dict[str, object]) -> None:
    async def main() -> None:
        call = make_call()
        await db.store.create_call(call)
        with pytest.raises(ValueError):
            await db.store.update_call(call.call_ref, **fields)

    db.run(main())


def test_finish_ends_the_call_and_queues_its_notifications(db: Db) -> None:
    async def main() -> None:
        call = make_call()
        await db.store.create_call(call)
        cdrs = [make_notification(call, target="redis"), make_notification(call, target="webhook")]
        final = await db.store.finish_call(call.call_ref, notifications=cdrs, **end_fields())
        assert final is not None and not final.live
        assert (final.end_reason, final.end_code, final.sip_status, final.hangup_side) == (
            "callee_hungup",
            16,
            200,
            "callee",
        )
        assert final.ended_at == T0 + 60
        assert await db.store.get_call("acme", call.call_ref) == final
        queued = await db.store.undelivered("acme")
        assert [(n.id, n.target, n.payload) for n in queued] == [
            (n.id, n.target, n.payload) for n in cdrs
        ]
        # Ending it again writes nothing: one CDR per call.
        again = await db.store.finish_call(
            call.call_ref, notifications=[make_notification(call)], **end_fields()
        )
        assert again is None
        assert len(await db.store.undelivered("acme")) == 2
        unknown = await db.store.finish_call(
            "no-such-call", notifications=[make_notification(call)], **end_fields()
        )
        assert unknown is None
        assert len(await db.store.undelivered("acme")) == 2

    db.run(main())


def test_finish_writes_the_times_the_call_reached_with_its_end(db: Db) -> None:
    async def main() -> None:
        call = make_call()
        await db.store.create_call(call)
        # The update_call of "talking" never landed (a store outage): the end
        # still carries the answer times, so the CDR row is complete.
        reached = {"agent_answered_at": T0 + 2, "callee_answered_at": T0 + 5,
                   "callee_leg": "answered"}  # fmt: skip
        final = await db.store.finish_call(call.call_ref, fields=reached, **end_fields())
        assert final is not None and final.state == "ended"
        assert (final.agent_answered_at, final.callee_answered_at, final.callee_leg) == (
            T0 + 2,
            T0 + 5,
            "answered",
        )
        assert await db.store.get_call("acme", call.call_ref) == final
        with pytest.raises(ValueError):
            await db.store.finish_call(call.call_ref, fields={"state": "talking"}, **end_fields())
        with pytest.raises(ValueError):
            await db.store.finish_call(call.call_ref, fields={"call_ref": "x"}, **end_fields())

    db.run(main())


def test_concurrent_finishes_end_the_call_once(db: Db) -> None:
    call = make_call()

    async def main() -> list[CallRecord | None]:
        await db.store.create_call(call)
        return await asyncio.gather(
            *(
                db.store.finish_call(
                    call.call_ref,
                    notifications=[make_notification(call, payload={"finisher": i})],
                    **end_fields(end_reason="timeout" if i % 2 else "agent_hungup"),
                )
                for i in range(10)
            )
        )

    results = db.run(main())
    finals = [r for r in results if r is not None]
    assert len(finals) == 1
    queued = db.run(db.store.undelivered("acme"))
    assert len(queued) == 1
    assert queued[0].payload == {"finisher": results.index(finals[0])}
    stored = db.run(db.store.get_call("acme", call.call_ref))
    assert stored is not None and stored.end_reason == finals[0].end_reason


def test_finish_is_all_or_nothing(db: Db) -> None:
    async def main() -> None:
        call = make_call()
        await db.store.create_call(call)
        taken = make_notification(call, kind="agent")
        await db.store.enqueue([taken])
        clash = [make_notification(call), make_notification(call, id=taken.id)]
        with pytest.raises(StoreError):
            await db.store.finish_call(call.call_ref, notifications=clash, **end_fields())
        got = await db.store.get_call("acme", call.call_ref)
        assert got is not None and got.live and got.ended_at is None
        assert [n.id for n in await db.store.undelivered("acme")] == [taken.id]
        with pytest.raises(ValueError):
            await db.store.finish_call(call.call_ref, **end_fields(end_reason="gone"))
        with pytest.raises(ValueError):
            await db.store.finish_call(
                call.call_ref, notifications=[make_notification(call, kind="x")], **end_fields()
            )

    db.run(main())


def test_list_is_newest_first_in_stable_pages(db: Db) -> None:
    async def main() -> None:
        calls = [
            make_call(agent=f"1{i:03d}", created_at=T0 + i // 2, contact_ref=f"t{i % 3}")
            for i in range(11)
        ]  # pairs share a created_at: the order falls back on call_ref
        for call in calls:
            await db.store.create_call(call)
        expected = sorted(calls, key=lambda c: (c.created_at, c.call_ref), reverse=True)
        pages: list[list[str]] = []
        cursor = None
        while True:
            page, cursor = await db.store.list_calls("acme", limit=3, cursor=cursor)
            pages.append([c.call_ref for c in page])
            if cursor is None:
                break
        assert [len(p) for p in pages] == [3, 3, 3, 2]
        assert [ref for page in pages for ref in page] == [c.call_ref for c in expected]

        exact, cursor = await db.store.list_calls("acme", limit=11)
        assert len(exact) == 11 and cursor is None

        by_contact, _ = await db.store.list_calls("acme", contact_ref="t1")
        assert [c.call_ref for c in by_contact] == [
            c.call_ref for c in expected if c.contact_ref == "t1"
        ]
        by_agent, _ = await db.store.list_calls("acme", agent="1004")
        assert [c.agent for c in by_agent] == ["1004"]
        recent, _ = await db.store.list_calls("acme", since=T0 + 3)
        assert {c.call_ref for c in recent} == {c.call_ref for c in calls if c.created_at >= T0 + 3}
        both, _ = await db.store.list_calls("acme", contact_ref="t0", since=T0 + 3, limit=1)
        assert len(both) == 1 and both[0].contact_ref == "t0" and both[0].created_at >= T0 + 3
        assert await db.store.list_calls("globex") == ([], None)

    db.run(main())


@pytest.mark.parametrize("cursor", ["not-a-cursor", "", "W10", "WyJ4IiwxXQ", "eyJhIjoxfQ"])
def test_list_refuses_a_cursor_it_did_not_make(db: Db, cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        db.run(db.store.list_calls("acme", cursor=cursor))


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_list_refuses_an_out_of_range_limit(db: Db, limit: int) -> None:
    with pytest.raises(ValueError):
        db.run(db.store.list_calls("acme", limit=limit))


def test_live_calls_for_recovery(db: Db) -> None:
    async def main() -> None:
        a1 = make_call(agent="1001", node_id="node-a", created_at=T0 + 2)
        a2 = make_call(agent="1002", node_id="node-a", created_at=T0 + 1)
        b1 = make_call(agent="1003", node_id="node-b", integrator="globex")
        ended = make_call(agent="1004", node_id="node-a")
        for call in (a1, a2, b1, ended):
            await db.store.create_call(call)
        await db.store.finish_call(ended.call_ref, **end_fields())
        assert [c.call_ref for c in await db.store.live_calls("node-a")] == [
            a2.call_ref,
            a1.call_ref,
        ]
        assert {c.call_ref for c in await db.store.live_calls()} == {
            a1.call_ref,
            a2.call_ref,
            b1.call_ref,
        }
        assert await db.store.live_calls("node-z") == []
        assert await db.store.count_live("acme") == 2
        assert await db.store.count_live("globex") == 1
        assert await db.store.count_live("nobody") == 0

    db.run(main())


def test_calls_survive_close_and_reopen(db: Db) -> None:
    live = make_call(agent="1001")
    done = make_call(agent="1002")

    async def write() -> None:
        await db.store.create_call(live)
        await db.store.create_call(done)
        await db.store.finish_call(
            done.call_ref, notifications=[make_notification(done)], **end_fields()
        )

    db.run(write())
    store = db.reopen()
    assert db.run(store.get_call("acme", live.call_ref)) == live
    ended = db.run(store.get_call("acme", done.call_ref))
    assert ended is not None and ended.end_reason == "callee_hungup"
    assert [c.call_ref for c in db.run(store.live_calls())] == [live.call_ref]
    assert [n.call_ref for n in db.run(store.undelivered("acme"))] == [done.call_ref]


def test_max_concurrent_is_decided_with_the_insert_and_a_replay_is_never_over_it(db: Db) -> None:
    """On every store the concurrency limit is counted in the insert's own
    step (SQLite: the same group-commit job), less the calls whose end is
    still being written; a replay of a key gets its first call instead."""
    limits = CallLimits(max_concurrent=2, max_cps=1000)

    async def main() -> None:
        a, _ = await db.store.create_call(make_call(agent="1001", idempotency_key="k-a"), limits)
        await db.store.create_call(make_call(agent="1002"), limits)
        with pytest.raises(LimitExceededError) as refused:
            await db.store.create_call(make_call(agent="1003"), limits)
        assert refused.value.limit == "max_concurrent" and refused.value.retry_after >= 1
        assert await db.store.count_live("acme") == 2  # nothing was inserted
        replay, created = await db.store.create_call(
            make_call(agent="1001", idempotency_key="k-a"), limits
        )
        assert (replay.call_ref, created) == (a.call_ref, False)
        ending = CallLimits(max_concurrent=2, max_cps=1000, ending=(a.call_ref,))
        assert (await db.store.create_call(make_call(agent="1003"), ending))[1]
        assert (await db.store.create_call(make_call(integrator="beta"), limits))[1]

    db.run(main())
