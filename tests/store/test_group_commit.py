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
from tests.store.support import T0, make_call


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
