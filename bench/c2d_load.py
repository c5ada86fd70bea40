"""Load benchmark of one Click2Dial node: capacity, cost and latency of click-to-dial.

It starts ``click2dial serve --config <generated toml>`` (SQLite in a temporary
directory, HTTP and SIP on free loopback ports) with two sipp peers: the agent's
phone (``bench/scenarios/c2d_agent.xml``: answers at once, never hangs up) and
the trunk (``c2d_trunk.xml``: the callee answers at once and hangs up after
``--talk-ms``). Then, for each rate of ``--rates``, it POSTs click-to-dials open
loop (request *i* is due at t0 + i/rate, whatever the earlier answers) over
HTTP/1.1 keep-alive connections for ``--duration`` seconds, waits for the calls
to end, and prints:

* completed click-to-dials per second: calls ended successfully on both sipp
  legs (sipp's ``-trace_stat`` counters), divided by the sending time, with the
  failed legs beside it;
* CPU ms per call of the server and its workers (``/proc/<pid>/stat`` utime+stime,
  before the first POST and after the last leg ended);
* POST latency p50/p99 (request written -> response read);
* POST -> agent INVITE p99: the ``call_ref`` of each 201 matched with the
  ``X-Teleforge-Call-Ref`` the agent sipp logged with its ``[timestamp]``.

``--hold N`` instead places N calls at ``--hold-rate`` with a trunk that never
hangs up (``c2d_trunk_hold.xml``), prints the server's VmRSS when all N are
talking, then ends them with ``DELETE /click2dial/calls/{call_ref}``.

The ``[admission]`` limits are off unless ``--admission`` keeps the defaults
(then a 503 counts as a right answer: a rate is clean when every POST got
201 or 503 and every 201 completed on both legs). The machine is usually
shared: compare runs made one after the other, not absolute figures.

Run (standard library + sipp on PATH)::

    make bench-load
    .venv/bin/python bench/c2d_load.py --rates 50,100,150,200 --duration 10
    .venv/bin/python bench/c2d_load.py --hold 10000 --hold-rate 150
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
API_KEY = "bench-load-key-0123456789"
CALLEE = "0820001234"
OUTBOUND_ID = "27820001234"
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int) -> int:
    """A port the kernel says is free now on 127.0.0.1 (UDP or TCP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: the server's workers
    (``[server] workers``, "auto" by default) are children of its
    supervisor."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants, in seconds."""
    total = 0.0
    for each in process_tree(pid):
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


#: Tries of one DELETE answered 503 (``Retry-After: 2``).
DELETE_ATTEMPTS = 5


def rss_mib(pid: int) -> float:
    """VmRSS of a process and its descendants."""
    total = 0
    for each in process_tree(pid):
        try:
            lines = Path(f"/proc/{each}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


def show(name: str, value: str) -> None:
    print(f"  {name:<34} {value}", flush=True)


def p50_p99(seconds: list[float]) -> str:
    return f"{pct(seconds, 50) * 1e3:.1f} / {pct(seconds, 99) * 1e3:.1f} ms"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


@dataclass
class LegStats:
    ok: int = 0
    failed: int = 0
    current: int = 0


def sipp_stats(path: Path) -> LegStats:
    """The cumulative counters of the last complete row of a sipp -trace_stat CSV."""
    try:
        lines = path.read_text().split("\n")
    except OSError:
        return LegStats()
    if len(lines) < 3:
        return LegStats()
    head = lines[0].split(";")
    for line in reversed(lines[1:-1]):
        row = line.split(";")
        if len(row) == len(head):
            g = dict(zip(head, row, strict=True))
            return LegStats(
                ok=int(g["SuccessfulCall(C)"]),
                failed=int(g["FailedCall(C)"]),
                current=int(g["CurrentCall"]),
            )
    return LegStats()


class Peer:
    """One sipp UAS on a free UDP port, its statistics and log files in workdir."""

    def __init__(self, name: str, scenario: str, workdir: Path, extra: list[str]) -> None:
        self.name = name
        self.port = free_port(socket.SOCK_DGRAM)
        self.stat = workdir / f"{name}.csv"
        self.log = workdir / f"{name}.log"
        argv = [
            "sipp",
            "-sf",
            str(SCENARIOS / scenario),
            "-i",
            HOST,
            "-p",
            str(self.port),
            "-cp",
            str(free_port(socket.SOCK_DGRAM)),
            "-mp",
            str(free_port(socket.SOCK_DGRAM)),
            "-nostdin",
            "-aa",
            "-max_socket",
            "60000",
            "-trace_stat",
            "-stf",
            str(self.stat),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(workdir / f"{name}.err"),
            "-trace_logs",
            "-log_file",
            str(self.log),
            *extra,
        ]
        # closed in stop(): the file lives as long as the process writing it
        self.out: IO[bytes] = open(workdir / f"{name}.out", "wb")  # noqa: SIM115
        # In workdir: sipp writes files of its own (e.g. a -trace_stat file
        # named after the scenario) into its working folder.
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, cwd=workdir)

    def stats(self) -> LegStats:
        return sipp_stats(self.stat)

    def stop(self) -> None:
        stop_process(self.proc, 5, signal.SIGUSR1)  # sipp: quit at once, writing its statistics
        self.out.close()


def stop_process(
    proc: subprocess.Popen[bytes], grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """``sig``, then SIGKILL if the process has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_config(http_port: int, sip_port: int, agent: int, trunk: int, admission: bool) -> str:
    limits = (
        ""
        if admission
        else (
            "\n[admission]\nmax_calls_per_second = 0\nmax_live_calls = 0\n"
            "max_loop_lag_ms = 0\nmax_sip_transactions = 0\n"
        )
    )
    return f"""# written by bench/c2d_load.py
[server]
http_host = "{HOST}"
http_port = {http_port}
database = "sqlite:///./bench.db"
operator_listen = ""

[sip]
listen = ["udp:{HOST}:{sip_port}"]
public_host = "{HOST}"

[trunk]
uri = "sip:{HOST}:{trunk};transport=udp"

[extensions]
mode = "pbx"
pbx_uri = "sip:{HOST}:{agent};transport=udp"

[integrators.bench]
api_keys = ["{API_KEY}"]
call_types = ["outbound", "external"]
max_cps = 100000
max_concurrent = 1000000
agent_ring_timeout = 10
callee_ring_timeout = 10
{limits}"""


class Server:
    def __init__(self, exe: str, workdir: Path, agent: Peer, trunk: Peer, admission: bool) -> None:
        self.http_port = free_port(socket.SOCK_STREAM)
        cfg = workdir / "c2d.toml"
        cfg.write_text(
            server_config(
                self.http_port, free_port(socket.SOCK_DGRAM), agent.port, trunk.port, admission
            )
        )
        self.log = workdir / "server.log"
        self.out: IO[bytes] = open(self.log, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [exe, "serve", "--config", str(cfg)],
            cwd=workdir,
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}); see {self.log}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                c = http.client.HTTPConnection(HOST, self.http_port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return
                c.close()
            if time.monotonic() > deadline:
                raise SystemExit(f"server: /healthz not 200 after 30 s; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc)
        self.out.close()


@dataclass
class LoadResult:
    status: collections.Counter[str] = field(default_factory=collections.Counter)
    latency_s: list[float] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)  # call_ref -> wall-clock send time
    send_s: float = 0.0
    late_max_s: float = 0.0


class Client:
    """Open-loop HTTP/1.1 keep-alive client: a pool of connections, one request each at a time."""

    def __init__(self, port: int, max_conns: int, timeout: float) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.sem = asyncio.Semaphore(max_conns)
        self.timeout = timeout

    async def request(self, method: str, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
        ).encode()
        async with self.sem:
            conn = self.idle.pop() if self.idle else None
            if conn is None:
                conn = await asyncio.open_connection(HOST, self.port)
                sock = conn[1].get_extra_info("socket")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader, writer = conn
            try:
                writer.write(head + body)
                status, payload, keep = await asyncio.wait_for(self._response(reader), self.timeout)
            except BaseException:
                writer.close()
                raise
            if keep:
                self.idle.append(conn)
            else:  # the server said Connection: close
                writer.close()
            return status, payload

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                keep = False
        return status, await reader.readexactly(length) if length else b"", keep

    def close(self) -> None:
        for _, w in self.idle:
            w.close()


def agent_for(k: int, hold: bool) -> str:
    """The agent of call k: an extension (rung on the agent peer), distinct among live calls.

    One agent has one live call at most (409 otherwise). Rate runs cycle over
    the 9,000 extensions 1000-9999 (their calls end within a second or so);
    --hold needs more distinct agents than there are extensions, so past 9,000
    it uses external agents ("0" + 9 digits), which the server rings through
    the trunk: the trunk peer then carries both legs of those calls.
    """
    if not hold:
        return str(1000 + k % 9000)
    return str(1000 + k) if k < 9000 else f"0{700000000 + k}"


async def place_calls(
    port: int, count: int, rate: float, seq0: int, conns: int, timeout: float, hold: bool = False
) -> LoadResult:
    """POST `count` click-to-dials at `rate` per second, open loop."""
    res = LoadResult()
    client = Client(port, conns, timeout)
    loop = asyncio.get_running_loop()

    async def one(k: int) -> None:
        body = json.dumps(
            {"agent": agent_for(k, hold), "callee": CALLEE, "outbound_id": OUTBOUND_ID}
        ).encode()
        headers = f"Content-Type: application/json\r\nIdempotency-Key: bench-{k}\r\n"
        wall = time.time()
        t = time.perf_counter()
        try:
            status, payload = await client.request("POST", "/click2dial/calls", body, headers)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            res.status[type(e).__name__] += 1
            return
        res.latency_s.append(time.perf_counter() - t)
        res.status[str(status)] += 1
        if status == 201:
            res.sent_at[json.loads(payload)["call_ref"]] = wall

    tasks = []
    t0 = loop.time()
    for i in range(count):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            res.late_max_s = max(res.late_max_s, -delay)
        tasks.append(asyncio.create_task(one(seq0 + i)))
    res.send_s = loop.time() - t0 + 1 / rate
    await asyncio.gather(*tasks)
    client.close()
    return res


async def end_calls(port: int, refs: list[str], conns: int) -> collections.Counter[str]:
    client = Client(port, conns, 30.0)
    out: collections.Counter[str] = collections.Counter()

    async def one(ref: str) -> None:
        # As a client must: a 503 (the worker that owns the call did not
        # answer the one asked within 1 s, the whole node busy with this
        # flood of DELETEs) changed nothing and is tried again.
        for attempt in range(DELETE_ATTEMPTS):
            try:
                status, _ = await client.request("DELETE", f"/click2dial/calls/{ref}", b"", "")
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                out[type(e).__name__] += 1
                return
            if status != 503 or attempt == DELETE_ATTEMPTS - 1:
                out[str(status)] += 1
                return
            out["503, tried again"] += 1
            await asyncio.sleep(2.0)  # the Retry-After of that 503

    await asyncio.gather(*(one(r) for r in refs))
    client.close()
    return out


def invite_times(log: Path, offset: int) -> tuple[dict[str, float], int]:
    """call_ref -> epoch seconds of the agent's INVITE, from the agent's log past `offset`."""
    seen: dict[str, float] = {}
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read()
    for line in data.decode("latin-1").splitlines():
        parts = line.split()
        # INV <ref> <date> <time> <epoch.usec>  (sipp 3.6.1 [timestamp])
        if len(parts) >= 5 and parts[0] == "INV":
            with contextlib.suppress(ValueError):
                seen[parts[1]] = float(parts[-1])
    return seen, offset + len(data)


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


@contextlib.contextmanager
def system(args: argparse.Namespace, trunk_scenario: str) -> Iterator[tuple[Server, Peer, Peer]]:
    with tempfile.TemporaryDirectory(prefix="c2d-load-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        agent = Peer("agent", "c2d_agent.xml", workdir, [])
        talk = [] if args.hold else ["-set", "talk_ms", str(args.talk_ms)]
        trunk = Peer("trunk", trunk_scenario, workdir, talk)
        server = None
        try:
            time.sleep(0.3)  # let both sipp bind before the server's first OPTIONS or INVITE
            for p in (agent, trunk):
                if p.proc.poll() is not None:
                    raise SystemExit(f"sipp {p.name} exited; see {workdir}/{p.name}.out")
            server = Server(args.exe, workdir, agent, trunk, args.admission)
            yield server, agent, trunk
        finally:
            if server is not None:
                server.stop()
            agent.stop()
            trunk.stop()


def run_rates(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    seq = 0
    with system(args, "c2d_trunk.xml") as (server, agent, trunk):
        log_offset = 0
        print(f"server pid {server.proc.pid}, admission {'on' if args.admission else 'off'}")
        for rate in rates:
            n = int(rate * args.duration)
            a0, t0 = agent.stats(), trunk.stats()
            cpu0 = cpu_seconds(server.proc.pid)
            res = asyncio.run(place_calls(server.http_port, n, rate, seq, args.conns, args.timeout))
            seq += n
            accepted = res.status["201"]

            # Every accepted call reached the agent peer and nothing is live on
            # either peer (a call whose agent leg failed never reaches the trunk).
            def ended(a0: LegStats = a0, accepted: int = accepted) -> bool:
                a, t = agent.stats(), trunk.stats()
                return (
                    a.ok + a.failed - a0.ok - a0.failed >= accepted
                    and a.current == 0
                    and t.current == 0
                )

            drained = wait_until(ended, args.talk_ms / 1000 + 30)
            cpu1 = cpu_seconds(server.proc.pid)
            a1, t1 = agent.stats(), trunk.stats()
            seen, log_offset = invite_times(agent.log, log_offset)
            setup = [seen[r] - w for r, w in res.sent_at.items() if r in seen]
            completed = min(a1.ok - a0.ok, t1.ok - t0.ok)
            failed = (a1.failed - a0.failed) + (t1.failed - t0.failed)
            cpu_ms = (cpu1 - cpu0) * 1000 / max(1, accepted)
            # With --admission a 503 is the right answer beyond capacity: clean
            # then means every POST got 201 or 503 and every 201 completed.
            refused = res.status["503"] if args.admission else 0
            clean = (
                completed == accepted
                and accepted + refused == n
                and failed == 0
                and drained
                and res.late_max_s < 0.5
            )
            print(f"\n== offered {rate:g}/s for {args.duration:g} s: {n} POSTs ==")
            show(
                "completed click-to-dials/s", f"{completed / res.send_s:.1f}  ({completed} of {n})"
            )
            show("failed legs (agent+trunk)", str(failed))
            show("HTTP status", ", ".join(f"{k}: {v}" for k, v in sorted(res.status.items())))
            show("server CPU per call", f"{cpu_ms:.2f} ms  ({cpu1 - cpu0:.2f} s)")
            show("POST p50 / p99", p50_p99(res.latency_s))
            show("POST -> agent INVITE p50 / p99", f"{p50_p99(setup)}  ({len(setup)} matched)")
            show("sender late by (max)", f"{res.late_max_s * 1e3:.1f} ms")
            show("server RSS", f"{rss_mib(server.proc.pid):.0f} MiB")
            verdict = "CLEAN" if clean else "NOT CLEAN"
            if clean and refused:
                verdict += f" ({refused} refused with 503)"
            show("verdict", verdict if drained else verdict + " (legs still live)")
            sys.stdout.flush()


def run_hold(args: argparse.Namespace) -> None:
    n = args.hold
    with system(args, "c2d_trunk_hold.xml") as (server, agent, trunk):
        pid = server.proc.pid
        rss0 = rss_mib(pid)
        print(
            f"server pid {pid}, RSS idle {rss0:.0f} MiB; placing {n} calls at {args.hold_rate:g}/s"
        )
        res = asyncio.run(
            place_calls(server.http_port, n, args.hold_rate, 0, args.conns, args.timeout, hold=True)
        )
        refs = list(res.sent_at)
        talking = wait_until(
            lambda: agent.stats().current + trunk.stats().current >= 2 * len(refs), 60
        )
        a, t = agent.stats(), trunk.stats()
        rss = rss_mib(pid)
        show("HTTP status", str(dict(res.status)))
        show("live legs on agent / trunk peer", f"{a.current} / {t.current}")
        show(f"all {2 * len(refs)} legs up", str(talking))
        per_call = (rss - rss0) * 1024 / max(1, len(refs))
        show(
            f"server VmRSS, {len(refs)} calls live", f"{rss:.0f} MiB ({per_call:.1f} KiB per call)"
        )
        t_end = time.monotonic()
        out = asyncio.run(end_calls(server.http_port, refs, args.conns))
        gone = wait_until(lambda: agent.stats().current == 0 and trunk.stats().current == 0, 120)
        a, t = agent.stats(), trunk.stats()
        show("DELETE statuses", str(dict(out)))
        show("all legs ended", f"{gone} (after {time.monotonic() - t_end:.1f} s)")
        show("legs ok / failed", f"agent peer {a.ok}/{a.failed}, trunk peer {t.ok}/{t.failed}")
        show("server VmRSS after", f"{rss_mib(pid):.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--exe", default=str(HERE.parent / ".venv" / "bin" / "click2dial"))
    ap.add_argument(
        "--rates", default="50,100,150,200", help="offered POSTs per second, comma-separated"
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate")
    ap.add_argument(
        "--talk-ms", type=int, default=500, help="how long the callee talks before hanging up"
    )
    ap.add_argument(
        "--conns", type=int, default=64, help="most HTTP keep-alive connections at once"
    )
    ap.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for one HTTP answer"
    )
    ap.add_argument(
        "--admission", action="store_true", help="keep the [admission] defaults (else off)"
    )
    ap.add_argument(
        "--hold", type=int, default=0, metavar="N", help="RSS with N live calls instead of rates"
    )
    ap.add_argument(
        "--hold-rate", type=float, default=100.0, help="calls per second placed in --hold"
    )
    ap.add_argument(
        "--workdir", help="keep configs, sipp statistics and logs here (default: a temp dir)"
    )
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found (Debian: sip-tester)")
    if not os.access(args.exe, os.X_OK):
        raise SystemExit(f"{args.exe}: not executable (make install, or --exe)")
    if args.hold:
        run_hold(args)
    else:
        run_rates(args)


if __name__ == "__main__":
    main()
