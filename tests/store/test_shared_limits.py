"""Limits decided by a store that several nodes share (PostgreSQL, or one
SQLite file shared by the workers of one node): ``create_call`` counts and
inserts in one step, so ``max_concurrent`` and ``max_cps`` hold for two
nodes writing at once.  A SQLite file of one process counts
``max_concurrent`` with the insert too (tests/store/test_calls.py), and the
call service keeps the rate in memory (tests/e2e/test_api.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from click2dial.store import AgentBusyError, Store, StoreError, open_store
from click2dial.store.base import CallLimits, LimitExceededError
from tests.store.conftest import _opened
from tests.store.support import T0, Db, make_call


@pytest.fixture(params=["postgres", "sqlite"])
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A shared store: PostgreSQL, or a SQLite file opened as the workers
    of a node open it."""
    if request.param == "sqlite":
        with _opened("sqlite", f"sqlite:///{tmp_path / 'shared.db'}", shared=True) as db:
            yield db
    else:
        url: str = request.getfixturevalue("shared_pg_url")
        with _opened("postgres", url, empty_first=True) as db:
            yield db


@pytest.fixture
def postgres(shared_pg_url: str) -> Iterator[Db]:
    with _opened("postgres", shared_pg_url, empty_first=True) as db:
        yield db


def _other(db: Db) -> Store:
    """A second node's store on the same database."""
    return open_store(db.url, shared=True)


def test_postgresql_and_the_workers_sqlite_are_shared(pg: Db, tmp_path: object) -> None:
    assert pg.store.shared
    assert not open_store(f"sqlite:///{tmp_path}/x.db").shared
    assert open_store(f"sqlite:///{tmp_path}/x.db", shared=True).shared
    with pytest.raises(StoreError, match="in-memory database cannot be shared"):
        open_store("sqlite://:memory:", shared=True)


def test_max_concurrent_counts_every_node_and_not_the_ending_calls(pg: Db) -> None:
    limits = CallLimits(max_concurrent=2, max_cps=1000)
    a = pg.run(pg.store.create_call(make_call(agent="1001", node_id="node-a"), limits))[0]
    pg.run(pg.store.create_call(make_call(agent="1002", node_id="node-b"), limits))
    with pytest.raises(LimitExceededError) as refused:
        pg.run(pg.store.create_call(make_call(agent="1003", node_id="node-b"), limits))
    assert refused.value.limit == "max_concurrent" and refused.value.retry_after >= 1
    # This node decided the end of ``a`` and is still writing it: not counted.
    ending = CallLimits(max_concurrent=2, max_cps=1000, ending=(a.call_ref,))
    assert pg.run(pg.store.create_call(make_call(agent="1003", node_id="node-a"), ending))[1]
    # Another integrator has its own count.
    assert pg.run(pg.store.create_call(make_call(integrator="beta"), limits))[1]


def test_max_concurrent_holds_for_two_nodes_creating_at_once(pg: Db) -> None:
    limits = CallLimits(max_concurrent=3, max_cps=1000)

    async def main() -> list[object]:
        other = _other(pg)
        await other.open()
        try:
            stores = [pg.store, other]
            return await asyncio.gather(
                *(
                    stores[i % 2].create_call(
                        make_call(agent=f"2{i:03d}", node_id=f"node-{i % 2}"), limits
                    )
                    for i in range(16)
                ),
                return_exceptions=True,
            )
        finally:
            await other.close()

    results = pg.run(main())
    created = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, LimitExceededError)]
    assert (len(created), len(refused)) == (3, 13), results
    assert pg.run(pg.store.count_live("acme")) == 3


def test_max_cps_is_a_sliding_window_across_nodes(pg: Db) -> None:
    limits = CallLimits(max_concurrent=100, max_cps=2)
    store = pg.store
    pg.run(store.create_call(make_call(agent="1001", created_at=T0, node_id="node-a"), limits))
    other_node = make_call(agent="1002", created_at=T0 + 0.2, node_id="node-b")
    pg.run(store.create_call(other_node, limits))
    with pytest.raises(LimitExceededError) as refused:
        pg.run(store.create_call(make_call(agent="1003", created_at=T0 + 0.5), limits))
    assert (refused.value.limit, refused.value.retry_after) == ("max_cps", 1)
    # The refusal inserted nothing: one second after the first call, one more fits.
    assert pg.run(store.create_call(make_call(agent="1003", created_at=T0 + 1.0), limits))[1]
    with pytest.raises(LimitExceededError):
        pg.run(store.create_call(make_call(agent="1004", created_at=T0 + 1.1), limits))
    # Below one call per second: one call per 1/max_cps seconds.
    slow = CallLimits(max_concurrent=100, max_cps=0.25)
    pg.run(store.create_call(make_call(integrator="beta", created_at=T0), slow))
    with pytest.raises(LimitExceededError) as later:
        too_soon = make_call(integrator="beta", agent="1002", created_at=T0 + 1)
        pg.run(store.create_call(too_soon, slow))
    assert later.value.retry_after == 3
    assert pg.run(
        store.create_call(make_call(integrator="beta", agent="1002", created_at=T0 + 4), slow)
    )[1]


def test_a_replay_and_a_busy_agent_answer_as_without_limits(pg: Db) -> None:
    limits = CallLimits(max_concurrent=1, max_cps=1000)
    first, _ = pg.run(pg.store.create_call(make_call(idempotency_key="k-1"), limits))
    # Over the limit, but a replay of the first request: the first call.
    replay, created = pg.run(pg.store.create_call(make_call(idempotency_key="k-1"), limits))
    assert (replay.call_ref, created) == (first.call_ref, False)
    roomy = CallLimits(max_concurrent=10, max_cps=1000)
    with pytest.raises(AgentBusyError) as busy:
        pg.run(pg.store.create_call(make_call(node_id="node-b"), roomy))
    assert busy.value.call_ref == first.call_ref


def test_far_below_the_limits_no_lock_is_taken_and_near_them_the_lock_decides(
    postgres: Db,
) -> None:
    """With each node running at most its pool's worth of creates at once,
    a count that far below both limits cannot be overtaken: no lock, no
    queue behind it.  Near a limit the create waits for the integrator's
    lock, here held by another session.  (PostgreSQL: on SQLite every
    insert holds the file's one write lock.)"""
    pg = postgres

    async def main() -> None:
        import asyncpg  # type: ignore[import-untyped]

        holder = await asyncpg.connect(pg.url)
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute(
                "SELECT pg_advisory_xact_lock(hashtext('click2dial.limits:'"
                " || COALESCE(current_schema(), '') || ':acme'))"
            )
            roomy = CallLimits(max_concurrent=1000, max_cps=1000)
            _, created = await asyncio.wait_for(
                pg.store.create_call(make_call(agent="1001"), roomy), 10
            )
            assert created  # not held up by the lock
            tight = CallLimits(max_concurrent=5, max_cps=1000)
            near = asyncio.ensure_future(pg.store.create_call(make_call(agent="1002"), tight))
            waiting = 0
            for _ in range(500):
                waiting = await holder.fetchval(
                    "SELECT COUNT(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                    " AND query LIKE '%click2dial_limits%'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert waiting == 1 and not near.done()
            await lock.rollback()
            assert (await asyncio.wait_for(near, 10))[1]
        finally:
            await holder.close()

    pg.run(main())
