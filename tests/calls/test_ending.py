"""The end writer (calls/ending.py) on a real SQLite store: ends are written
oldest first, exactly once, across an outage of the store, and what an
orderly shutdown could not store is spooled and replayed with its recorded
times.

The outage is the store itself closed and reopened: its calls then fail the
way they do when the database is unreachable (an exception per attempt),
which is what the writer has to survive.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from click2dial.calls import ending
from click2dial.calls.ending import EndWriter, PendingEnd, read_spool, replay_spool
from click2dial.calls.outcome import Outcome
from click2dial.store import CallRecord, Store, open_store, sqlite
from tests.store.support import T0, make_call, make_notification


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ending, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(ending, "RETRY_MAX", 0.05)


def pending_end(call: CallRecord, ended_at: float) -> PendingEnd:
    outcome = Outcome.hangup("callee")
    return PendingEnd(
        record=call,
        outcome=outcome,
        ended_at=ended_at,
        fields={"callee_answered_at": T0 + 5, "callee_leg": "answered"},
        notifications=[make_notification(call, created_at=ended_at)],
    )


async def stored(store: Store, *calls: CallRecord) -> None:
    for call in calls:
        _, created = await store.create_call(call)
        assert created


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_ends_survive_a_store_outage_in_order_and_once(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path}/c.db")
        await store.open()
        calls = [make_call(agent=f"10{i:02d}") for i in range(3)]
        await stored(store, *calls)
        written: list[str] = []

        async def on_written(end: PendingEnd) -> None:
            assert end.final is not None
            written.append(end.final.call_ref)

        writer = EndWriter(store, on_written=on_written)
        await store.close()  # the outage
        for i, call in enumerate(calls):
            writer.submit(pending_end(call, T0 + 10 + i))
        await wait_until(lambda: writer.failures >= 3)
        assert written == [] and len(writer) == 3
        assert writer.pending_agent("acme", "1001") is not None
        assert writer.pending_of("acme") == 3
        await store.open()  # the store is back
        assert await writer.flush(calls[-1].call_ref, 5)
        assert written == [c.call_ref for c in calls]  # oldest first
        for i, call in enumerate(calls):
            final = await store.get_call("acme", call.call_ref)
            assert final is not None and final.state == "ended"
            assert final.ended_at == T0 + 10 + i  # the true time, not the write time
            assert final.callee_answered_at == T0 + 5
            assert final.end_reason == "callee_hungup"
        assert len(await store.undelivered("acme")) == 3  # one CDR row each
        assert await store.count_live("acme") == 0
        assert writer.pending_agent("acme", "1001") is None
        assert writer.pending_of("acme") == 0 and writer.pending_refs("acme") == ()
        await writer.close(1)
        await store.close()

    asyncio.run(main())


def test_ends_queued_together_share_one_commit_in_their_order(tmp_path: Path) -> None:
    """Ten ends submitted at once are ten jobs of one group commit, run in
    the order the calls ended (one at a time, they took ten commits)."""

    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path}/c.db")
        await store.open()
        calls = [make_call(agent=f"10{i:02d}") for i in range(10)]
        await stored(store, *calls)
        written: list[str] = []

        async def on_written(end: PendingEnd) -> None:
            written.append(end.call_ref)

        writer = EndWriter(store, on_written=on_written)
        groups = store.groups  # type: ignore[attr-defined]
        for i, call in enumerate(calls):
            writer.submit(pending_end(call, T0 + 10 + i))
        assert writer.pending_of("acme") == 10
        assert writer.pending_refs("acme") == tuple(c.call_ref for c in calls)
        assert await writer.flush(calls[-1].call_ref, 5)
        assert written == [c.call_ref for c in calls]
        assert store.groups - groups == 1  # type: ignore[attr-defined]
        assert writer.pending_of("acme") == 0
        ends = [await store.get_call("acme", c.call_ref) for c in calls]
        assert [e.ended_at for e in ends if e is not None] == [T0 + 10 + i for i in range(10)]
        await writer.close(1)
        await store.close()

    asyncio.run(main())


def test_an_end_rides_along_with_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end writer's write is lazy: it starts no commit of its own but
    rides along with the next one (a new call's insert: one group for
    both), and is durable once written."""
    monkeypatch.setattr(sqlite, "LAZY_COMMIT", 30.0)  # no lone commit during the test

    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path}/c.db")
        await store.open()
        call = make_call(agent="1001")
        await stored(store, call)
        writer = EndWriter(store)
        groups = store.groups  # type: ignore[attr-defined]
        writer.submit(pending_end(call, T0 + 10))
        while not store._jobs:  # type: ignore[attr-defined]  # the end's job is queued
            await asyncio.sleep(0)
        # Whatever the worker thread was handed before this has run after it.
        await store._run_alone(lambda: None)  # type: ignore[attr-defined]
        assert store.groups == groups  # type: ignore[attr-defined]  # no commit for the end alone
        assert not writer.pending(call.call_ref).written.is_set()  # type: ignore[union-attr]
        _, created = await store.create_call(make_call(agent="1002"))
        assert created
        assert await writer.flush(call.call_ref, 5)
        assert store.groups - groups == 1  # type: ignore[attr-defined]
        final = await store.get_call("acme", call.call_ref)
        assert final is not None and final.state == "ended"
        await writer.close(1)
        await store.close()

    asyncio.run(main())


def test_shutdown_spools_what_the_store_did_not_take_and_the_next_start_writes_it(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "ends.jsonl"

    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path}/c.db")
        await store.open()
        calls = [make_call(agent="1001"), make_call(agent="1002")]
        await stored(store, *calls)
        writer = EndWriter(store)
        await store.close()
        writer.submit(pending_end(calls[0], T0 + 20))
        writer.submit(pending_end(calls[1], T0 + 21))
        left = await writer.close(0.1, spool)
        assert [e.call_ref for e in left] == [c.call_ref for c in calls]
        kept = read_spool(spool)
        assert [(e.call_ref, e.ended_at) for e in kept] == [
            (calls[0].call_ref, T0 + 20),
            (calls[1].call_ref, T0 + 21),
        ]
        assert kept[0].notifications[0].id == left[0].notifications[0].id  # same document

        # The next start: the store is back.
        await store.open()
        finals = await replay_spool(store, spool)
        assert [f.call_ref for f in finals] == [c.call_ref for c in calls]
        assert not spool.exists()
        for call, ended_at in zip(calls, (T0 + 20, T0 + 21), strict=True):
            final = await store.get_call("acme", call.call_ref)
            assert final is not None and final.state == "ended" and final.ended_at == ended_at
        # Replaying again (a crash between the writes and the unlink) adds nothing.
        from click2dial.calls.ending import write_spool

        write_spool(spool, kept)
        assert await replay_spool(store, spool) == []
        assert len(await store.undelivered("acme")) == 2
        await store.close()

    asyncio.run(main())


def test_an_unreadable_spool_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    spool = tmp_path / "ends.jsonl"
    call = make_call()
    spool.write_text("not json\n" + pending_end(call, T0 + 3).to_json() + "\n")
    assert [e.call_ref for e in read_spool(spool)] == [call.call_ref]
