"""One SQLite file shared by the workers of a node (issue 10,
``[server] workers`` on the default database): the bus between them and
the turns they take at the write lock.  Limits across them are in
tests/store/test_shared_limits.py; the node end to end in
tests/e2e/test_workers.py."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from click2dial.store import local_bus, open_store
from tests.store.support import make_call

TIMEOUT = 10.0


def test_the_bus_reaches_every_worker_of_the_file_and_no_other(tmp_path: Path) -> None:
    path = tmp_path / "node.db"

    async def main() -> tuple[list[str], list[str], list[str]]:
        heard: tuple[list[str], list[str], list[str]] = ([], [], [])
        a = open_store(f"sqlite:///{path}", shared=True)
        b = open_store(f"sqlite:///{path}", shared=True)
        elsewhere = open_store(f"sqlite:///{tmp_path / 'other.db'}", shared=True)
        for store in (a, b, elsewhere):
            await store.open()
        try:
            subs = [
                await store.listen(sink.append)
                for store, sink in zip((a, b, elsewhere), heard, strict=True)
            ]
            await a.notify('{"to": "w1"}')
            deadline = time.monotonic() + TIMEOUT
            while not (heard[0] and heard[1]):
                assert time.monotonic() < deadline, heard
                await asyncio.sleep(0.01)
            for sub in subs:
                await sub.close()
            await subs[1].wait_closed()  # a closed subscription says so
            await b.notify("after")  # nobody listens: not an error
        finally:
            for store in (a, b, elsewhere):
                await store.close()
        return heard

    to_a, to_b, to_other = asyncio.run(main())
    assert to_a == ['{"to": "w1"}'] and to_b == ['{"to": "w1"}']  # the sender's own too
    assert to_other == []
    assert local_bus.bound_names(local_bus.bus_prefix(str(path))) == []  # closed: gone


# A worker process that opens the file, then takes the write lock when
# told: it prints what it does and waits for a line on stdin at each step.
_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from click2dial.store.sqlite import SQLiteStore

    async def main():
        store = SQLiteStore(sys.argv[1], shared=True)
        await store.open()
        print("open", flush=True)
        sys.stdin.readline()
        try:
            for turn in range(int(sys.argv[2])):
                with store._writer():
                    print("holding", turn, flush=True)
                    sys.stdin.readline()
        finally:
            await store.close()

    asyncio.run(main())
    """
)


class _Worker:
    def __init__(self, path: Path, turns: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(path), str(turns)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )

    def said(self, timeout: float = TIMEOUT) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "no word from the worker"
        return self.proc.stdout.readline().strip()

    def go_on(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def waiting(self) -> bool:
        """Whether this process waits for a lock (``->`` in /proc/locks)."""
        pid = str(self.proc.pid)
        return any(
            "->" in line and pid in line.split()
            for line in Path("/proc/locks").read_text().splitlines()
        )

    def wait_until_waiting(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.waiting():
            assert self.proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)


def test_a_worker_that_asks_again_waits_for_the_one_already_waiting(tmp_path: Path) -> None:
    """SQLite's busy handler, and a bare kernel lock, let a worker whose
    groups follow each other take the lock again before the waiting one
    gets it: under load the other worker's calls starved for seconds."""
    path = tmp_path / "node.db"
    first, second = _Worker(path, turns=2), _Worker(path, turns=1)
    try:
        assert first.said() == "open" and second.said() == "open"
        first.go_on()
        assert first.said() == "holding 0"
        second.go_on()
        second.wait_until_waiting()
        first.go_on()  # it releases, and at once asks again
        assert second.said() == "holding 0"  # the waiting one got it first
        first.wait_until_waiting()
        second.go_on()
        assert first.said() == "holding 1"
        first.go_on()
        assert first.proc.wait(TIMEOUT) == 0 and second.proc.wait(TIMEOUT) == 0
    finally:
        for worker in (first, second):
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()


def test_a_read_takes_no_write_lock(tmp_path: Path) -> None:
    """At capacity every refused POST with an Idempotency-Key looks its key
    up (a replay is answered, not refused): those reads run on their own
    snapshot, without the file's write lock, so they never take a turn
    from the writes of the calls in progress.  Here another worker holds
    the lock, and the reads are answered all the same."""
    path = tmp_path / "node.db"
    holder = _Worker(path, turns=1)
    try:
        assert holder.said() == "open"

        async def main() -> None:
            store = open_store(f"sqlite:///{path}", shared=True)
            await store.open()
            try:
                call, _ = await store.create_call(make_call(idempotency_key="k-1"))
                holder.go_on()
                assert await asyncio.to_thread(holder.said) == "holding 0"
                found = await asyncio.wait_for(store.find_by_idempotency_key("acme", "k-1"), 5)
                got = await asyncio.wait_for(store.get_call("acme", call.call_ref), 5)
                listed, _ = await asyncio.wait_for(store.list_calls("acme"), 5)
                assert found is not None and got is not None
                assert found.call_ref == got.call_ref == listed[0].call_ref == call.call_ref
                holder.go_on()
                assert await asyncio.wait_for(store.update_call(call.call_ref, state="talking"), 5)
            finally:
                if holder.proc.poll() is None:
                    holder.proc.kill()  # its lock goes with it: the close can run
                await store.close()

        asyncio.run(main())
    finally:
        if holder.proc.poll() is None:
            holder.proc.kill()
            holder.proc.wait()
