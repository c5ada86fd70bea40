"""Clean click-to-dials per second with 1, 2 and 3 Click2Dial nodes on one
PostgreSQL: the figures of docs/scaling.md.

For each node count of ``--nodes`` it creates a fresh schema in the
PostgreSQL of ``--postgres``, starts that many ``click2dial serve`` processes
on it (distinct ``node_id``, HTTP and SIP ports) in front of the same two sipp
peers as ``bench/c2d_load.py`` (agent answers at once; the callee answers at
once and hangs up after ``--talk-ms``), and for each rate of ``--rates``
places click-to-dials open loop, spread evenly over the nodes' HTTP ports.
A rate is clean when every POST got 201, every call completed on both sipp
legs, no leg failed and the sender kept up; the table gives the highest clean
rate per node count.  The nodes, PostgreSQL, the peers and this load
generator all share the machine's cores: compare runs made one after the
other, not absolute figures.

Run (the project's venv: asyncpg)::

    .venv/bin/python bench/scale_load.py --nodes 1,2,3 --rates 50,100,150,200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))

# c2d_load is a sibling script, not a package: found through sys.path.
from c2d_load import (
    HERE,
    HOST,
    LegStats,
    LoadResult,
    Peer,
    cpu_seconds,
    free_port,
    place_calls,
    server_config,
    stop_process,
    wait_until,
)


class Node:
    """One ``click2dial serve`` on the shared PostgreSQL schema."""

    def __init__(self, exe: str, workdir: Path, n: int, database: str, agent: Peer, trunk: Peer):
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port(socket.SOCK_STREAM)
        config = server_config(
            self.http_port, free_port(socket.SOCK_DGRAM), agent.port, trunk.port, False
        ).replace(
            'database = "sqlite:///./bench.db"', f'database = "{database}"\nnode_id = "bench-{n}"'
        )
        (workdir / "c2d.toml").write_text(config)
        self.log = workdir / "server.log"
        self.out: IO[bytes] = open(self.log, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [exe, "serve", "--config", "c2d.toml"], cwd=workdir, stdout=self.out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"node exited ({self.proc.returncode}); see {self.log}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            c = http.client.HTTPConnection(HOST, self.http_port, timeout=1)
            c.request("GET", "/readyz")
            ok = c.getresponse().status == 200
            c.close()
            return ok
        return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.out.close()


async def schema(url: str, create: bool, name: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"' if create else f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@contextlib.contextmanager
def cluster(args: argparse.Namespace, count: int, workdir: Path) -> Iterator[list[Node]]:
    name = f"c2d_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(schema(args.postgres, True, name))
    nodes: list[Node] = []
    try:
        for n in range(count):
            nodes.append(
                Node(args.exe, workdir / f"node{n}", n, f"{args.postgres}?search_path={name}",
                     args.agent, args.trunk)
            )  # fmt: skip
            # One at a time: the first one migrates the empty schema.
            if not wait_until(nodes[-1].ready, 30):
                raise SystemExit(f"node {n} not ready; see {nodes[-1].log}")
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        asyncio.run(schema(args.postgres, False, name))


async def spread(
    nodes: list[Node], total: int, rate: float, seq: int, args: argparse.Namespace
) -> list[LoadResult]:
    """``total`` calls at ``rate``, each node taking its share at rate/N;
    disjoint sequence numbers keep agents and idempotency keys distinct."""
    share = total // len(nodes)
    return await asyncio.gather(*(
        place_calls(node.http_port, share, rate / len(nodes), seq + i * share, args.conns,
                    args.timeout)
        for i, node in enumerate(nodes)
    ))  # fmt: skip


def measure(args: argparse.Namespace, nodes: list[Node], rate: float, seq: int) -> tuple[bool, str]:
    agent, trunk = args.agent, args.trunk
    total = int(rate * args.duration) // len(nodes) * len(nodes)
    a0, t0 = agent.stats(), trunk.stats()
    cpu0 = sum(cpu_seconds(node.proc.pid) for node in nodes)
    results: list[LoadResult] = asyncio.run(spread(nodes, total, rate, seq, args))
    accepted = sum(r.status["201"] for r in results)

    def ended(a0: LegStats = a0) -> bool:
        a, t = agent.stats(), trunk.stats()
        return a.ok + a.failed - a0.ok - a0.failed >= accepted and a.current == t.current == 0

    drained = wait_until(ended, args.talk_ms / 1000 + 30)
    cpu = sum(cpu_seconds(node.proc.pid) for node in nodes) - cpu0
    a1, t1 = agent.stats(), trunk.stats()
    completed = min(a1.ok - a0.ok, t1.ok - t0.ok)
    failed = (a1.failed - a0.failed) + (t1.failed - t0.failed)
    send_s = max(r.send_s for r in results)
    late = max(r.late_max_s for r in results)
    statuses = sum((r.status for r in results), start=results[0].status.__class__())
    clean = completed == accepted == total and failed == 0 and drained and late < 0.5
    line = (
        f"{len(nodes)} node(s) {rate:6g}/s offered: {completed / send_s:7.1f}/s completed"
        f" ({completed}/{total}), failed legs {failed}, HTTP {dict(statuses)},"
        f" CPU/call {cpu * 1000 / max(1, accepted):.2f} ms, late {late * 1e3:.0f} ms"
        f" -> {'CLEAN' if clean else 'NOT CLEAN'}"
    )
    return clean, line


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--exe", default=str(HERE.parent / ".venv" / "bin" / "click2dial"))
    ap.add_argument("--postgres", default=os.environ.get(
        "CLICK2DIAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))  # fmt: skip
    ap.add_argument("--nodes", default="1,2,3", help="node counts, comma-separated")
    ap.add_argument("--rates", default="50,100,150,200", help="offered POSTs/s, comma-separated")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per rate")
    ap.add_argument("--talk-ms", type=int, default=500, help="the callee talks this long")
    ap.add_argument("--conns", type=int, default=32, help="HTTP connections per node at most")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds for one HTTP answer")
    args = ap.parse_args()
    best: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="c2d-scale-") as tmp:
        workdir = Path(tmp)
        args.agent = Peer("agent", "c2d_agent.xml", workdir, [])
        args.trunk = Peer("trunk", "c2d_trunk.xml", workdir, ["-set", "talk_ms", str(args.talk_ms)])
        try:
            time.sleep(0.3)  # both sipp bound before the first INVITE
            seq = 0
            for count in (int(n) for n in args.nodes.split(",")):
                with cluster(args, count, workdir / f"n{count}") as nodes:
                    for rate in (float(r) for r in args.rates.split(",")):
                        clean, line = measure(args, nodes, rate, seq)
                        seq += int(rate * args.duration)
                        print(line, flush=True)
                        if not clean:
                            break
                        best[count] = rate
        finally:
            args.agent.stop()
            args.trunk.stop()
    print("\n| nodes | highest clean rate (click-to-dials/s) |\n|---|---|")
    for count, rate in best.items():
        print(f"| {count} | {rate:g} |")


if __name__ == "__main__":
    main()
