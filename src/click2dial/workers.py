"""Several processes for one node (``[server] workers``): the supervisor
that starts, watches and stops them, and the configuration each one runs.

One event loop saturates one core (docs/benchmarks.md).  With ``workers =
N`` the ``click2dial serve`` process becomes a supervisor that runs N
worker processes of the same configuration; each is a full Click2Dial node
of the cluster (docs/scaling.md) on the shared PostgreSQL, so limits,
DELETE of another worker's call, registrations and takeover already hold
between them.  What makes them one node to the outside:

* the HTTP listeners are shared: every worker binds the same ports with
  ``SO_REUSEPORT`` and the kernel spreads connections over them;
* worker ``i`` is node ``<node_id>-w<i>``; worker 0 binds the configured SIP
  listeners, worker ``i`` the same ones with the port plus ``i`` (its Via
  and Contact name them, so its calls' messages come back to it), and the
  operator listener likewise; each keeps its own spool file.

A worker that dies is started again after a second; on start it ends its
own calls that were live (BYE from the saved dialogs, a ``failed`` CDR), as
after any crash.  A worker that exits before it has ever started (it writes
a byte to the pipe named by ``CLICK2DIAL_WORKER_READY_FD`` once it serves)
stops the node instead: a configuration that cannot bind would only fail
again.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Final

from .calls.admission import BUCKET_FD_ENV, SharedBucket
from .config import Config
from .sip.aio.transport import Listen

log = logging.getLogger("click2dial.workers")

#: The environment variable naming the worker's readiness pipe.
READY_FD_ENV = "CLICK2DIAL_WORKER_READY_FD"
#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0
#: Seconds the supervisor waits for its workers after SIGTERM before SIGKILL.
STOP_TIMEOUT = 30.0


def worker_config(config: Config, index: int) -> Config:
    """The configuration worker ``index`` runs."""
    server, sip = config.server, config.sip
    listen = tuple(str(_shifted(Listen.parse(item), index)) for item in sip.listen)
    operator = server.operator_listen
    if operator and index:
        host, _, port = operator.rpartition(":")
        operator = f"{host}:{int(port) + index}"
    spool = server.spool if not index else f"{server.spool}.w{index}"
    return dataclasses.replace(
        config,
        server=dataclasses.replace(
            server,
            node_id=f"{server.node_id[:60]}-w{index}",
            operator_listen=operator,
            spool=spool,
            worker=index,
        ),
        sip=dataclasses.replace(sip, listen=listen),
    )


def _shifted(item: Listen, index: int) -> Listen:
    return dataclasses.replace(item, port=item.port + index) if item.port else item


class Supervisor:
    """Runs ``workers`` copies of ``argv`` (each given ``--worker i``)."""

    def __init__(self, argv: list[str], workers: int) -> None:
        self.argv = argv
        self.workers = workers
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.ready: dict[int, int] = {}
        """Worker index -> the read end of its readiness pipe."""
        self.stopping = False
        self.bucket = SharedBucket.create()
        """The node's calls-per-second bucket, which every worker shares."""

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for index in range(self.workers):
            self._spawn(index)
        log.info("node of %d workers started", self.workers)
        status = 0
        while self.children:
            try:
                pid, code = os.wait()
            except ChildProcessError:
                break
            found = [i for i, c in self.children.items() if c.pid == pid]
            if not found:
                continue
            index = found[0]
            child = self.children.pop(index)
            exit_code = child.returncode = os.waitstatus_to_exitcode(code)
            if self.stopping:
                continue
            failed = f"worker {index} (pid {pid}) exited with {exit_code}"
            if not self._was_ready(index):
                log.error("%s before it started: stopping the node", failed)
                status = exit_code if exit_code > 0 else 1
                self._stop(signal.SIGTERM, None)
                continue
            log.warning("%s: starting it again in %g s", failed, RESTART_DELAY)
            time.sleep(RESTART_DELAY)
            if not self.stopping:
                self._spawn(index)
        for read in self.ready.values():
            os.close(read)
        return status

    def _spawn(self, index: int) -> None:
        read, write = os.pipe()
        try:
            self.children[index] = subprocess.Popen(
                [*self.argv, "--worker", str(index)],
                pass_fds=(write, self.bucket.fd),
                env={
                    **os.environ,
                    READY_FD_ENV: str(write),
                    BUCKET_FD_ENV: str(self.bucket.fd),
                },
                # The supervisor runs no threads: preexec_fn is safe here.
                preexec_fn=_stop_with(os.getpid()),  # noqa: PLW1509
            )
        finally:
            os.close(write)
        self.ready[index] = read

    def _was_ready(self, index: int) -> bool:
        read = self.ready.pop(index)
        try:
            return os.read(read, 1) == b"1"  # the child is gone: this cannot block
        finally:
            os.close(read)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        signal.signal(signal.SIGALRM, self._kill)
        signal.alarm(int(STOP_TIMEOUT))

    def _kill(self, signum: int, frame: FrameType | None) -> None:
        if self.children:
            log.warning("workers did not stop in %g s: killing them", STOP_TIMEOUT)
        self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: int) -> None:
        # os.kill, not Popen.send_signal: that one polls, and a child it reaps
        # would never reach the os.wait() of run().
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)


#: prctl(2): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG: Final = 1


def _stop_with(supervisor: int) -> Callable[[], None]:
    """What a worker runs before exec: a supervisor that dies without
    stopping its workers (SIGKILL, a crash) takes them down with SIGTERM,
    so that they end their calls and free the ports instead of serving on
    unsupervised."""

    def in_child() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it died before prctl took effect
            os._exit(1)

    return in_child


def worker_argv(config_path: str | None, log_args: list[str]) -> list[str]:
    """The command line of a worker of this ``serve``."""
    argv = [sys.executable, "-m", "click2dial.cli", "serve", *log_args]
    if config_path is not None:
        argv += ["--config", config_path]
    return argv


def report_ready() -> None:
    """In a worker: tell the supervisor that this worker serves."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(int(fd), b"1")
            os.close(int(fd))
