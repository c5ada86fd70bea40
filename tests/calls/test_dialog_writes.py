"""The controller's writer of established dialogs (``_write_states``),
against a real SQLite store: what is queued when the writer comes round
goes to the store at once, one update per call, and the updates share one
group commit instead of queueing one commit each; a call's later fields
win; a call whose end is on its way is left to the end.

The controller is built around the writer alone (no SIP user agent, no
flows): those parts are not used by it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from click2dial.calls.control import CallController, LiveCall
from click2dial.store.sqlite import SQLiteStore
from tests.store.support import T0, make_call


def dialog(call_id: str, local_seq: int) -> dict[str, object]:
    return {"call_id": call_id, "local_tag": "l", "remote_tag": "r", "local_seq": local_seq}


def test_queued_dialogs_are_written_together_one_update_per_call(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "d.db"))
        await store.open()
        gate = threading.Event()
        try:
            controller = CallController(settings=None, store=store, ua=None)  # type: ignore[arg-type]
            calls = [make_call(agent=f"4{i:03d}") for i in range(6)]
            for call in calls:
                await store.create_call(call)
            lives = [LiveCall(record=c, flow=None, integrator=None) for c in calls]  # type: ignore[arg-type]
            ending = lives[5]
            ending.end = object()  # type: ignore[assignment]
            # The store's worker waits at a gate until the writer has queued
            # everything it took.
            store._inbox.put(gate.wait)
            groups = store.groups
            for n, live in enumerate(lives):
                live.unwritten["agent_answered_at"] = T0 + n
                controller._queue_write(live, "agent", dialog(f"a{n}", 1))
            lives[0].unwritten["callee_answered_at"] = T0 + 9
            controller._queue_write(lives[0], "callee", dialog("c0", 7))
            for _ in range(100):  # turns of the loop, not time
                if len(store._jobs) >= 5:
                    break
                await asyncio.sleep(0)
            assert len(store._jobs) == 5  # calls 0-4, call 0 once, call 5 not at all
            gate.set()
            writer = controller._writer
            assert writer is not None
            await writer
            assert store.groups == groups + 1
            first = await store.dialogs_of(calls[0].call_ref)
            assert first["agent"]["call_id"] == "a0" and first["callee"]["local_seq"] == 7
            assert (await store.dialogs_of(calls[4].call_ref))["agent"]["call_id"] == "a4"
            assert await store.dialogs_of(calls[5].call_ref) == {}
            stored = {c.call_ref: c for c in await store.live_calls()}
            assert stored[calls[0].call_ref].callee_answered_at == T0 + 9
            assert stored[calls[3].call_ref].agent_answered_at == T0 + 3
            assert stored[calls[5].call_ref].agent_answered_at is None
            assert all(not live.unwritten for live in lives[:5])
        finally:
            gate.set()  # a failed assertion must not leave the worker waiting
            await store.close()

    asyncio.run(main())
