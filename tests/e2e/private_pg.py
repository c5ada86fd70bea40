"""A PostgreSQL server of the test's own, which it may stop and start.

The machine's PostgreSQL is shared and must never be restarted by a test, so
a test that needs a database outage runs its own server: Debian's binaries,
a cluster in a temporary folder (owned by ``postgres``: initdb refuses to
run as root), listening on a free loopback port with its socket in that
folder and trust authentication.  The ``private_pg`` fixture
(tests/e2e/conftest.py) starts it and always stops it and removes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.sipp.harness import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"


class PrivatePostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="c2d-pg-"))
        shutil.chown(self.root, PG_USER, PG_USER)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port("tcp")
        self.url = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"
        self.running = False

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            ["runuser", "-u", PG_USER, "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n{self.log_text()}"
            )

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER,
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w``)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            # Durability of this throw-away cluster does not matter; speed does.
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "30", "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, the server shuts down cleanly."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def close(self) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def usable() -> str | None:
    """Why a private server cannot run here, or None."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN}"
    if os.geteuid() != 0:
        return "starting a server as the postgres user needs root (runuser)"
    return None
