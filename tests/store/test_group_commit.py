"""SQLite group commit: calls that change at the same moment share one
transaction and one fsync, a job that fails in the group undoes only itself,
and no caller hears back before its group is durable (a second connection,
as after a crash, sees every acknowledged write)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from click2dial.store import AgentBusyError, StoreError
from click2dial.store.sqlite import SQLiteStore
from tests.store.support import T0, end_fields, make_call, make_notification


def test_concurrent_writes_share_commits_and_a_failure_undoes_only_itself(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"

    async def main() -> None:
        store = SQLiteStore(str(path))
        await store.open()
        calls = [make_call(agent=f"1{i:03d}") for i in range(60)]
        before = store.groups
        clash = make_call(agent="1000")  # the same agent as calls[0]: busy
        results = await asyncio.gather(
            *(store.create_call(call) for call in calls),
            store.create_call(clash),
            return_exceptions=True,
        )
        groups = store.groups - before
        assert all(isinstance(r, tuple) and r[1] for r in results[:-1]), results[:3]
        assert isinstance(results[-1], AgentBusyError)
        assert groups < len(calls) // 2, f"{groups} commits for {len(calls) + 1} writes"
        # Acknowledged means durable: a separate connection sees all of them.
        with sqlite3.connect(path) as other:
            (count,) = other.execute("SELECT COUNT(*) FROM calls").fetchone()
        assert count == len(calls)
        updated = await asyncio.gather(
            *(store.update_call(c.call_ref, agent_leg="ringing") for c in calls)
        )
        assert all(updated)
        assert await store.count_live("acme") == len(calls)
        final = await store.finish_call(
            calls[0].call_ref, ended_at=T0 + 5, end_reason="hungup", end_code=16,
            sip_status=None, sip_reason=None, hangup_side="api",
        )  # fmt: skip
        assert final is not None and final.agent_leg == "ringing"
        await store.close()

    asyncio.run(main())


def test_the_worker_thread_lives_from_open_to_close_and_a_failed_open_leaves_none(
    tmp_path: Path,
) -> None:
    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "click2dial-sqlite"]

    async def main() -> None:
        before = len(workers())
        store = SQLiteStore(str(tmp_path / "w.db"))
        await store.open()
        assert len(workers()) == before + 1
        # Jobs from many tasks at once all come back on the loop.
        calls = [make_call(agent=f"2{i:03d}") for i in range(20)]
        await asyncio.gather(*(store.create_call(call) for call in calls))
        assert len(await store.live_calls()) == 20
        await store.close()
        assert len(workers()) == before
        with pytest.raises(StoreError, match="not open"):
            await store.live_calls()
        # An open that fails (no such folder) takes its thread down with it.
        broken = SQLiteStore(str(tmp_path / "missing" / "w.db"))
        with pytest.raises(StoreError, match="no folder"):
            await broken.open()
        assert len(workers()) == before

    asyncio.run(main())


def test_a_job_that_fails_after_writing_is_undone_alone_by_running_its_group_again(
    tmp_path: Path,
) -> None:
    """Groups run without savepoints first.  A finish whose notification
    clashes with a queued one (its UPDATE done, its INSERT refused) must
    leave its call live while the finishes queued with it land."""

    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "r.db"))
        await store.open()
        try:
            clash, *others = [make_call(agent=f"3{i:03d}") for i in range(4)]
            for call in (clash, *others):
                await store.create_call(call)
            queued = make_notification(clash)
            await store.enqueue([queued])
            duplicate = make_notification(clash, id=queued.id)
            reruns = store.reruns
            # The worker waits at a gate until all four are queued: one group.
            gate = threading.Event()
            store._inbox.put(gate.wait)
            pending = asyncio.gather(
                *(store.finish_call(call.call_ref, **end_fields()) for call in others[:2]),
                store.finish_call(clash.call_ref, notifications=[duplicate], **end_fields()),
                store.finish_call(others[2].call_ref, **end_fields()),
                return_exceptions=True,
            )
            await asyncio.sleep(0)  # one turn of the loop: each task queues its job
            assert len(store._jobs) == 4
            gate.set()
            results = await pending
            assert isinstance(results[2], StoreError), results
            assert all(r is not None and r.end_reason == "callee_hungup" for r in results[:2])
            assert results[3] is not None and results[3].ended_at == T0 + 60
            assert store.reruns == reruns + 1  # the four shared one group, run twice
            live = {call.call_ref for call in await store.live_calls()}
            assert live == {clash.call_ref}  # its UPDATE was undone, nothing else
            # Alone in its group, the failure needs no second run.
            with pytest.raises(StoreError, match="cannot queue notifications"):
                await store.finish_call(clash.call_ref, notifications=[duplicate], **end_fields())
            assert store.reruns == reruns + 1
            assert {call.call_ref for call in await store.live_calls()} == {clash.call_ref}
            # A finish returns the ended row as stored (RETURNING).
            ended = await store.finish_call(clash.call_ref, **end_fields(end_code=17))
            assert ended is not None and ended.end_code == 17 and ended.state == "ended"
            assert await store.finish_call(clash.call_ref, **end_fields()) is None
        finally:
            await store.close()

    asyncio.run(main())


def test_a_dialog_write_rides_along_with_the_next_job_or_goes_alone_soon_after(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "l.db"))
        await store.open()
        try:
            first, second = make_call(agent="5001"), make_call(agent="5002")
            await store.create_call(first)
            await store.create_call(second)
            # Alone, it is committed on its own, without waiting for company.
            groups = store.groups
            assert await store.update_call(first.call_ref, agent_answered_at=T0 + 1)
            assert store.groups == groups + 1
            # Queued, it starts no group; the next call's creation takes it along.
            groups = store.groups
            update = asyncio.ensure_future(
                store.save_dialog(second.call_ref, "agent", {"call_id": "x", "local_seq": 1})
            )
            await asyncio.sleep(0)  # one turn of the loop: the write is queued
            assert len(store._jobs) == 1 and not store._group_due
            third = make_call(agent="5003")
            assert (await store.create_call(third))[1]
            await update
            assert store.groups == groups + 1
            assert (await store.dialogs_of(second.call_ref))["agent"]["call_id"] == "x"
            # A lazy write queued when the store closes is written before it closes.
            pending = asyncio.ensure_future(
                store.update_call(third.call_ref, agent_answered_at=T0 + 2)
            )
            await asyncio.sleep(0)
            await store.close()
            assert await pending
        finally:
            await store.close()
        reopened = SQLiteStore(str(tmp_path / "l.db"))
        await reopened.open()
        try:
            stored = {c.call_ref: c for c in await reopened.live_calls()}
            assert stored[third.call_ref].agent_answered_at == T0 + 2
            assert stored[first.call_ref].agent_answered_at == T0 + 1
        finally:
            await reopened.close()

    asyncio.run(main())
