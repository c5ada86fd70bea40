"""baresip (Debian ``baresip-core``) as a real registering phone for tests.

``Baresip(...)`` writes a minimal configuration (G.711, a 440 Hz sine as the
microphone, no speaker, RTP statistics printed at the end of each call) and
one account for ``<ext>@127.0.0.1:<server port>`` with digest credentials
and ``answermode=auto``, runs ``baresip -f DIR`` without a console, and
collects its output so that tests can wait for lines in it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from tests.processes import stop
from tests.sipp.harness import free_port_both

CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{port}
audio_source\t\tausine,440
audio_alert\t\taufile,/dev/null
ausrc_srate\t\t48000
auplay_srate\t\t48000
ausrc_channels\t\t2
auplay_channels\t\t1
rtp_stats\t\tyes
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taufile.so
module_app\t\taccount.so
module_app\t\tmenu.so
module_app\t\trtcpsummary.so
"""


class Baresip:
    def __init__(
        self,
        extension: str,
        password: str,
        server_port: int,
        *,
        transport: str = "udp",
        regint: int = 600,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="baresip-"))
        # baresip listens for SIP over TLS on the next port up.
        self.port = free_port_both(also=(1,))
        (self.dir / "config").write_text(CONFIG.format(port=self.port))
        aor = f"sip:{extension}@127.0.0.1:{server_port};transport={transport}"
        (self.dir / "accounts").write_text(
            f"<{aor}>;auth_pass={password};answermode=auto;regint={regint}\n"
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Baresip:
        self.process = subprocess.Popen(
            ["baresip", "-s", "-n", "127.0.0.1", "-f", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            # Strip the colour escapes.
            line = re.sub(r"\x1b\[[0-9;]*m", "", raw.decode(errors="replace")).rstrip()
            with self._lock:
                self.lines.append(line)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stop(self.process, 5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    async def wait_for(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The first output line matching ``pattern`` (a regex), waiting up
        to ``timeout`` seconds for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        regex = re.compile(pattern)
        while True:
            with self._lock:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
            if loop.time() > deadline:
                raise AssertionError(f"baresip never printed {pattern!r}:\n{self.output()}")
            await asyncio.sleep(0.05)
