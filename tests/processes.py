"""Stopping the processes the tests start (servers, relays, phones): one
way for all of them, so that none is left running and none is waited for
forever."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop(
    process: subprocess.Popen[Any] | None, grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig`` (SIGTERM: an orderly shutdown) and give the process
    ``grace`` seconds to exit; SIGKILL it after that.  A process that has
    already exited (or was never started) is left alone."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
