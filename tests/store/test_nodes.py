"""Node liveness in the store: heartbeats, a new life clearing the takeover
marker, and the takeover claim that only one survivor wins — on SQLite and
PostgreSQL alike (several nodes take over only on PostgreSQL, but the
store keeps the same promises on both)."""

from __future__ import annotations

import asyncio

from click2dial.store import NodeRecord
from tests.store.support import T0, Db, end_fields, make_call, make_notification

SILENCE = 10.0


def test_heartbeat_creates_then_refreshes_the_row_and_a_start_clears_the_marker(db: Db) -> None:
    async def main() -> None:
        store = db.store
        first = await store.heartbeat("node-a", T0)
        assert first == NodeRecord(node_id="node-a", started_at=T0, last_seen=T0)
        again = await store.heartbeat("node-a", T0 + 2)
        assert again == NodeRecord(node_id="node-a", started_at=T0, last_seen=T0 + 2)
        await store.node_started("node-b", T0 + 3)
        assert await store.nodes() == [
            again,
            NodeRecord(node_id="node-b", started_at=T0 + 3, last_seen=T0 + 3),
        ]
        # node-a falls silent and node-b takes it over (it has a live call).
        await store.create_call(make_call(node_id="node-a"))
        assert len(await store.take_over("node-a", by="node-b", now=T0 + 20, silence=SILENCE)) == 1
        # A heartbeat keeps the marker as history ...
        seen = await store.heartbeat("node-a", T0 + 21)
        assert (seen.taken_over_by, seen.taken_over_at, seen.last_seen) == (
            "node-b",
            T0 + 20,
            T0 + 21,
        )
        # ... a new life drops it.
        await store.node_started("node-a", T0 + 30)
        assert (await store.nodes())[0] == NodeRecord(
            node_id="node-a", started_at=T0 + 30, last_seen=T0 + 30
        )

    db.run(main())


def test_take_over_moves_the_silent_nodes_live_calls_only(db: Db) -> None:
    async def main() -> None:
        store = db.store
        await store.heartbeat("node-a", T0)
        await store.heartbeat("node-b", T0 + 15)
        older = make_call(node_id="node-a", created_at=T0 - 5, agent="1001")
        newer = make_call(node_id="node-a", created_at=T0 - 1, agent="1002")
        ended = make_call(node_id="node-a", agent="1003")
        mine = make_call(node_id="node-b", agent="1004")
        for call in (newer, older, ended, mine):
            await store.create_call(call)
        await store.finish_call(ended.call_ref, **end_fields())
        # Not silent long enough yet; and nobody takes itself over.
        assert await store.silent_nodes(T0 + 5, SILENCE, exclude="node-b") == []
        assert await store.take_over("node-a", by="node-b", now=T0 + 5, silence=SILENCE) == []
        assert await store.silent_nodes(T0 + 15, SILENCE, exclude="node-a") == []
        await store.heartbeat("node-b", T0 + 30)
        assert await store.take_over("node-b", by="node-b", now=T0 + 90, silence=SILENCE) == []
        assert await store.silent_nodes(T0 + 15, SILENCE, exclude="node-b") == ["node-a"]
        moved = await store.take_over("node-a", by="node-b", now=T0 + 15, silence=SILENCE)
        assert [(c.call_ref, c.node_id) for c in moved] == [
            (older.call_ref, "node-b"),
            (newer.call_ref, "node-b"),
        ]
        assert await store.live_calls("node-a") == []
        assert {c.call_ref for c in await store.live_calls("node-b")} == {
            older.call_ref,
            newer.call_ref,
            mine.call_ref,
        }
        # Claimed: no longer silent-and-unclaimed, and a second claim gets nothing.
        assert await store.silent_nodes(T0 + 16, SILENCE, exclude="node-c") == []
        assert await store.take_over("node-a", by="node-c", now=T0 + 16, silence=SILENCE) == []
        rows = {n.node_id: n for n in await store.nodes()}
        assert (rows["node-a"].taken_over_by, rows["node-a"].taken_over_at) == ("node-b", T0 + 15)

    db.run(main())


def test_a_node_seen_again_after_a_takeover_can_be_taken_over_again(db: Db) -> None:
    async def main() -> None:
        store = db.store
        await store.heartbeat("node-a", T0)
        await store.create_call(make_call(node_id="node-a", agent="1001"))
        assert len(await store.take_over("node-a", by="node-b", now=T0 + 11, silence=SILENCE)) == 1
        # It was only stalled: it beats again, places a call, then dies for good.
        await store.heartbeat("node-a", T0 + 12)
        late = make_call(node_id="node-a", agent="1002")
        await store.create_call(late)
        assert await store.silent_nodes(T0 + 30, SILENCE, exclude="node-c") == ["node-a"]
        moved = await store.take_over("node-a", by="node-c", now=T0 + 30, silence=SILENCE)
        assert [c.call_ref for c in moved] == [late.call_ref]

    db.run(main())


def test_concurrent_takeovers_of_one_node_have_one_winner(db: Db) -> None:
    async def main() -> tuple[list[str], list[list[str]]]:
        await db.store.heartbeat("dead", T0)
        calls = [make_call(node_id="dead", agent=f"10{i:02d}") for i in range(20)]
        for call in calls:
            await db.store.create_call(call)
        # Separate stores: separate connections (and on SQLite, separate
        # processes' worth of locking), as on separate nodes.
        others = [db.new_store() for _ in range(4)]
        for other in others:
            await other.open()
        try:
            results = await asyncio.gather(*(
                other.take_over("dead", by=f"survivor-{i}", now=T0 + 60, silence=SILENCE)
                for i, other in enumerate(others)
            ))  # fmt: skip
        finally:
            for other in others:
                await other.close()
        return [c.call_ref for c in calls], [[c.call_ref for c in r] for r in results]

    refs, results = db.run(main())
    winners = [r for r in results if r]
    assert len(winners) == 1, results
    assert sorted(winners[0]) == sorted(refs)


def test_a_call_taken_over_ends_once(db: Db) -> None:
    """The winner ends the calls it took; the dead node's own recovery at its
    next start (or a second finish) finds them ended and writes nothing."""

    async def main() -> None:
        store = db.store
        await store.heartbeat("dead", T0)
        call = make_call(node_id="dead")
        await store.create_call(call)
        (moved,) = await store.take_over("dead", by="alive", now=T0 + 60, silence=SILENCE)
        done = await store.finish_call(
            moved.call_ref, **end_fields(), notifications=[make_notification(moved)]
        )
        assert done is not None
        await store.node_started("dead", T0 + 70)
        assert await store.live_calls("dead") == []
        again = await store.finish_call(
            moved.call_ref, **end_fields(), notifications=[make_notification(moved)]
        )
        assert again is None
        assert len(await store.undelivered("acme")) == 1

    db.run(main())
