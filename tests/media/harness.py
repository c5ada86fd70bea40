"""A real rtpengine per test: its own configuration in a temporary
directory, its own ng control port and media port range, never the
packaged configuration or service (kernel table, fixed ports).

``table = -1`` keeps it in userspace, so it needs no kernel module.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.processes import stop
from tests.sipp.harness import free_port

RTPENGINE = shutil.which("rtpengine") or "/usr/bin/rtpengine"
#: Media ports per instance: two per stream and side, so plenty for tests.
PORT_SPAN = 100


@dataclass
class RunningRtpEngine:
    address: str
    """``127.0.0.1:PORT`` of its ng control socket."""
    port_min: int
    port_max: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.process)


def _media_range() -> int:
    """The first port of a range of PORT_SPAN UDP ports free right now
    (rtpengine also steps over ports that became busy since)."""
    for _ in range(50):
        base = free_port("udp") // 2 * 2
        if base + PORT_SPAN >= 65536:
            continue
        probes = []
        try:
            for port in range(base, base + PORT_SPAN, 7):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
        return base
    raise RuntimeError("no free range of UDP ports for rtpengine")


def _pings(address: tuple[str, int]) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(b"probe d7:command4:pinge", address)
            return sock.recv(1000) == b"probe d6:result4:ponge"
        except OSError:
            return False


@contextmanager
def rtpengine(directory: Path, port: int | None = None) -> Iterator[RunningRtpEngine]:
    """rtpengine running in the foreground until the block ends, its ng
    control socket on ``port`` (a free one by default)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port("udp")
    port_min = _media_range()
    port_max = port_min + PORT_SPAN - 1
    config = directory / "rtpengine.conf"
    config.write_text(
        "[rtpengine]\n"
        "table = -1\n"
        "interface = 127.0.0.1\n"
        f"listen-ng = 127.0.0.1:{port}\n"
        f"port-min = {port_min}\n"
        f"port-max = {port_max}\n"
        "log-level = 6\n"
        "num-threads = 2\n"
    )
    log_path = directory / "rtpengine.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                RTPENGINE,
                f"--config-file={config}",
                "--foreground",
                "--log-stderr",
                f"--pidfile={directory / 'rtpengine.pid'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningRtpEngine(f"127.0.0.1:{port}", port_min, port_max, process, log_path)
    try:
        deadline = time.monotonic() + 10
        while not _pings(("127.0.0.1", port)):
            if process.poll() is not None:
                raise RuntimeError(f"rtpengine exited {process.returncode}:\n{running.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rtpengine did not answer ping:\n{running.log()}")
        yield running
    finally:
        running.stop()
