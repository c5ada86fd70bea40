"""Kamailio as the SIP edge in tests: the shipped contrib/kamailio/kamailio.cfg
run as a foreground process with its addresses overridden by ``-A`` defines
(free ports, a dispatcher list and a control socket in its own run folder),
and the dispatcher's view of the nodes read with ``kamcmd``."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.processes import stop
from tests.sipp.harness import free_port_both

CONFIG = Path(__file__).resolve().parents[2] / "contrib" / "kamailio" / "kamailio.cfg"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
_DEST = re.compile(r"URI: (\S+)\s+FLAGS: (\w+)")


class Kamailio:
    """One Kamailio dispatching to ``nodes`` (SIP ports on 127.0.0.1)."""

    def __init__(self, nodes: list[int], *, ping_interval: int = 1) -> None:
        self.port = free_port_both()
        self.rundir = Path(tempfile.mkdtemp(prefix="c2d-kamailio-"))
        self.nodes = nodes
        self.ping_interval = ping_interval
        self.ctl = f"unix:{self.rundir}/ctl"
        self.process: subprocess.Popen[bytes] | None = None

    def node_uri(self, port: int) -> str:
        return f"sip:127.0.0.1:{port};transport=udp"

    def command(self) -> list[str]:
        listen = f"127.0.0.1:{self.port}"
        defines = {
            "LISTEN_UDP": f"udp:{listen}",
            "LISTEN_TCP": f"tcp:{listen}",
            "DISPATCHER_LIST": f'"{self.rundir}/dispatcher.list"',
            "CTL_SOCKET": f'"{self.ctl}"',
            "PING_INTERVAL": str(self.ping_interval),
            "FR_TIMER": "1000",
            "WORKERS": "2",
        }
        command = [KAMAILIO, "-f", str(CONFIG)]
        for name, value in defines.items():
            command += ["-A", f"{name}={value}"]
        rundir = str(self.rundir)
        return [*command, "-Y", rundir, "-w", rundir, "-DD", "-E", "-m", "64", "-M", "8"]

    def start(self, timeout: float = 15) -> Self:
        (self.rundir / "dispatcher.list").write_text(
            "".join(f"1 {self.node_uri(port)} 0 0\n" for port in self.nodes)
        )
        log = open(self.rundir / "kamailio.log", "wb")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        # Up when every node answered a probe.
        self.wait_flags(dict.fromkeys(map(self.node_uri, self.nodes), "AP"), timeout)
        return self

    def destinations(self) -> dict[str, str]:
        """Each node's dispatcher flags: ``AP`` active, ``IP`` inactive (probing)..."""
        result = subprocess.run(
            [KAMCMD, "-s", self.ctl, "dispatcher.list"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return dict(_DEST.findall(result.stdout)) if result.returncode == 0 else {}

    def wait_flags(self, expected: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"kamailio exited:\n{self.log()}")
            seen = self.destinations()
            if all(seen.get(uri) == flags for uri, flags in expected.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"dispatcher never showed {expected}: {seen}")
            time.sleep(0.1)

    def log(self) -> str:
        return (self.rundir / "kamailio.log").read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.rundir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
