"""Run real sipp peers against our SIP user agent from pytest.

A :class:`Sipp` instance runs one sipp 3.6.1 process with one scenario from
``tests/sipp/scenarios`` (or any path, or a built-in scenario named
``builtin:uac`` / ``builtin:uas``) over UDP (``-t u1``) or TCP (``-t t1``) on
127.0.0.1 only.  Every instance gets its own SIP, control and media ports, a
global ``-timeout`` with ``-timeout_error`` so it can never hang a test run,
and its error, message, ``<log>`` and screen traces in a private directory.

Typical use, with sipp answering a call our UA places::

    with Sipp("uas_basic.xml", transport="tcp") as peer:   # started and bound
        ua.call(peer.uri())
        peer.assert_success(timeout=10)

The exit code is the verdict: a sipp run with ``-m N`` exits 0 only when all
N calls followed the scenario.  :meth:`Sipp.assert_success` (and
:meth:`Sipp.assert_exit`) put the exit code, sipp's error log, the message
trace and the last screen into the assertion message.  A run the harness
had to stop never passes: sipp exits 0 on SIGTERM when no call failed, even
when no call happened at all.

Over TCP the harness adds ``-reconnect_close false``: by default sipp fails
every call on a connection the peer closes, even a call that has nothing
left to do but wait (see ``fail_on_tcp_close``).

Scenario files may carry two harness directives in XML comments:

* ``sipp-harness-transports: udp`` -- the transports the scenario supports
  (default: ``udp tcp``); asking for another one raises ``ValueError``.
* ``sipp-harness-args: -nr`` -- extra sipp arguments the scenario needs.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

__all__ = [
    "AUTH_NONCE",
    "AUTH_PASSWORD",
    "AUTH_REALM",
    "AUTH_USERNAME",
    "EXIT_BIND_ERROR",
    "EXIT_CALL_FAILED",
    "EXIT_FATAL",
    "EXIT_INTERNAL_COMMAND",
    "EXIT_NO_CALLS",
    "EXIT_OK",
    "LOCALHOST",
    "SCENARIO_DIR",
    "DigestCredentials",
    "LoggedAuth",
    "Sipp",
    "SippError",
    "SippTimeoutError",
    "digest_response",
    "free_port",
    "free_port_both",
    "free_udp_port_pair",
    "resolve_scenario",
    "scenario_role",
    "sipp_binary",
    "stop_all",
]

LOCALHOST = "127.0.0.1"
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

# What uas_auth_401.xml / uas_auth_407.xml challenge with and accept.
AUTH_USERNAME = "alice"
AUTH_PASSWORD = "secret"
AUTH_REALM = "click2dial.test"
AUTH_NONCE = "c2d0e4f7a1b2c3d4e5f60718293a4b5c"

Transport = Literal["udp", "tcp"]
Role = Literal["uac", "uas"]
PortKind = Literal["udp", "tcp"]

# sipp's documented exit codes (``sipp -h``); -1 and -2 show up as 255/254.
EXIT_OK = 0
EXIT_CALL_FAILED = 1
EXIT_INTERNAL_COMMAND = 97
EXIT_NO_CALLS = 99
EXIT_FATAL = 255
EXIT_BIND_ERROR = 254

_TRANSPORT_FLAG: dict[Transport, str] = {"udp": "u1", "tcp": "t1"}
_BUILTIN_PREFIX = "builtin:"
_BUILTIN_ROLES: dict[str, Role] = {"uac": "uac", "uas": "uas"}
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DIRECTIVE = re.compile(r"sipp-harness-(transports|args):([^\n]*?)(?:-->|\n)")
# Seconds between SIGTERM and SIGKILL.  sipp normally exits at once (a
# shell that does not reap it promptly can make it look slower).
_STOP_GRACE = 5.0
_POLL_INTERVAL = 0.01
_TRACE_TAIL = 20_000

# Ports handed out recently by this process: the kernel may return a port
# that was just probed and closed, so two peers of one test could otherwise
# be given the same number.
_recent_ports: deque[int] = deque(maxlen=512)


class SippError(RuntimeError):
    """sipp could not be started, or did not become ready."""


class SippTimeoutError(SippError, AssertionError):
    """sipp did not exit within the time a test allowed it."""


def sipp_binary() -> str:
    """Path of the sipp executable (``$SIPP_BINARY`` overrides the PATH lookup)."""
    configured = os.environ.get("SIPP_BINARY")
    if configured:
        return configured
    found = shutil.which("sipp") or ("/usr/bin/sipp" if Path("/usr/bin/sipp").exists() else None)
    if found is None:
        raise SippError("sipp is not installed (Debian package sip-tester)")
    return found


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------


def _socket_type(kind: PortKind) -> int:
    if kind == "udp":
        return socket.SOCK_DGRAM
    if kind == "tcp":
        return socket.SOCK_STREAM
    raise ValueError(f"port kind must be 'udp' or 'tcp', not {kind!r}")


def _can_bind(port: int, kind: PortKind) -> bool:
    """True if ``127.0.0.1:port`` can be bound for ``kind`` right now."""
    with socket.socket(socket.AF_INET, _socket_type(kind)) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _is_free(port: int, kinds: Iterable[PortKind]) -> bool:
    return 1024 < port < 65536 and all(_can_bind(port, kind) for kind in kinds)


def _claim(port: int) -> int:
    _recent_ports.append(port)
    return port


def _pick(kinds: Sequence[PortKind], extra_offsets: Sequence[int] = ()) -> int:
    """A port (plus ``port + offset`` for each offset) free for all ``kinds``."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, _socket_type(kinds[0])) as probe:
            probe.bind((LOCALHOST, 0))
            port = int(probe.getsockname()[1])
        candidates = [port, *(port + offset for offset in extra_offsets)]
        if any(p in _recent_ports for p in candidates):
            continue
        if all(_is_free(p, kinds) for p in candidates):
            for p in candidates:
                _claim(p)
            return port
    raise SippError(f"no free {'+'.join(kinds)} port on {LOCALHOST}")


def free_port(kind: PortKind = "udp") -> int:
    """A port on 127.0.0.1 that is currently free for ``kind`` ("udp" or "tcp")."""
    return _pick([kind])


def free_port_both(*, also: Sequence[int] = ()) -> int:
    """A port on 127.0.0.1 free for both UDP and TCP (our UA listens on both),
    and ``port + offset`` too for each offset in ``also``."""
    return _pick(["udp", "tcp"], extra_offsets=also)


def free_udp_port_pair() -> int:
    """A UDP port ``p`` with ``p + 2`` also free: sipp's ``-mp`` binds both."""
    return _pick(["udp"], extra_offsets=(2,))


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


def resolve_scenario(scenario: str | os.PathLike[str]) -> Path:
    """Find a scenario: an existing path, or a name (``.xml`` optional) in SCENARIO_DIR."""
    path = Path(scenario)
    if path.is_file():
        return path.resolve()
    for candidate in (SCENARIO_DIR / path, SCENARIO_DIR / path.with_suffix(".xml")):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no sipp scenario {scenario!r} (looked in {SCENARIO_DIR})")


def scenario_role(path: Path) -> Role:
    """``uac`` if the scenario's first SIP command is a ``<send>``, else ``uas``.

    sipp itself decides client or server mode this way.
    """
    root = ET.parse(path).getroot()
    for element in root:
        if element.tag == "send":
            return "uac"
        if element.tag == "recv":
            return "uas"
    raise ValueError(f"{path}: no <send> or <recv> in the scenario")


def _directives(path: Path) -> dict[str, list[str]]:
    text = path.read_text(encoding="iso-8859-1")
    found: dict[str, list[str]] = {}
    for key, value in _DIRECTIVE.findall(text):
        found.setdefault(key, []).extend(shlex.split(value))
    return found


# --------------------------------------------------------------------------
# Reading sockets from /proc (readiness without sleeping)
# --------------------------------------------------------------------------

_TCP_LISTEN = "0A"


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for entry in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(entry)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes


def _bound_inodes(table: str, port: int, state: str | None) -> set[str]:
    """Inodes of sockets in /proc/net/<table> bound to 127.0.0.1:port."""
    local = f"0100007F:{port:04X}"
    inodes: set[str] = set()
    with contextlib.suppress(OSError), open(f"/proc/net/{table}", encoding="ascii") as lines:
        next(lines, None)
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[1] == local and (state is None or fields[3] == state):
                inodes.add(fields[9])
    return inodes


def _owns_socket(pid: int, table: str, port: int, state: str | None = None) -> bool:
    return bool(_bound_inodes(table, port, state) & _socket_inodes(pid))


# --------------------------------------------------------------------------
# Digest helpers (the 407 scenario logs Proxy-Authorization for Python to check)
# --------------------------------------------------------------------------


def _h(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()  # SIP digest is MD5


def digest_response(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """RFC 2617 / RFC 3261 MD5 digest ``response`` value (qop absent or ``auth``)."""
    ha1 = _h(f"{username}:{realm}:{password}")
    ha2 = _h(f"{method}:{uri}")
    if qop:
        if qop != "auth":
            raise ValueError(f"unsupported qop {qop!r}")
        return _h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(f"{ha1}:{nonce}:{ha2}")


_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*(?:,|$)')


@dataclass(frozen=True)
class DigestCredentials:
    """The parameters of one ``Authorization``/``Proxy-Authorization`` header value."""

    scheme: str
    params: dict[str, str]

    @classmethod
    def parse(cls, value: str) -> DigestCredentials:
        """Parse ``Digest username="alice", realm="...", ...`` (header name optional)."""
        value = value.strip()
        if ":" in value.split(None, 1)[0]:  # "Proxy-Authorization: Digest ..."
            value = value.split(":", 1)[1].strip()
        scheme, _, rest = value.partition(" ")
        params: dict[str, str] = {}
        position = 0
        rest = rest.strip()
        while position < len(rest):
            match = _PARAM.match(rest, position)
            if match is None:
                raise ValueError(f"cannot parse credentials at {rest[position:]!r}")
            raw = match.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[match.group(1).lower()] = raw
            position = match.end()
        return cls(scheme=scheme, params=params)

    def expected_response(self, password: str, method: str) -> str:
        """The response a correct client computes for these parameters."""
        p = self.params
        return digest_response(
            username=p["username"],
            realm=p["realm"],
            password=password,
            method=method,
            uri=p["uri"],
            nonce=p["nonce"],
            qop=p.get("qop"),
            nc=p.get("nc"),
            cnonce=p.get("cnonce"),
        )

    def is_valid(self, password: str, method: str) -> bool:
        """True if ``response`` matches ``password`` (MD5, qop none or auth)."""
        if self.scheme.lower() != "digest":
            return False
        if self.params.get("algorithm", "MD5").upper() != "MD5":
            return False
        return self.params.get("response", "").lower() == self.expected_response(password, method)


_AUTH_LOG = re.compile(r"^AUTH method=(\S+) ruri=(\S+) header=(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class LoggedAuth:
    """One ``AUTH ...`` line written by uas_auth_407.xml with ``<log>``."""

    method: str
    request_uri: str
    credentials: DigestCredentials

    @classmethod
    def parse_all(cls, log_text: str) -> list[LoggedAuth]:
        """All AUTH lines of a -trace_logs file, in order."""
        return [
            cls(m.group(1), m.group(2), DigestCredentials.parse(m.group(3).strip()))
            for m in _AUTH_LOG.finditer(log_text)
        ]


# --------------------------------------------------------------------------
# The sipp process
# --------------------------------------------------------------------------


def stop_all(peers: Iterable[Sipp], grace: float = _STOP_GRACE) -> None:
    """Stop several sipp processes at once: SIGTERM all, then wait for each.

    Signalling every process first bounds the total time by one grace
    period instead of one per process.
    """
    peers = list(peers)
    for peer in peers:
        peer.terminate()
    for peer in peers:
        peer.stop(grace)


_live: weakref.WeakSet[Sipp] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # last line of defence; tests use `with`
    for peer in list(_live):
        with contextlib.suppress(Exception):
            peer.stop()


class Sipp:
    """One sipp process playing a scenario on 127.0.0.1.

    Arguments:
        scenario: a scenario path, a file name in ``SCENARIO_DIR`` (``.xml``
            optional), or ``builtin:uac`` / ``builtin:uas`` for sipp's own.
        transport: ``"udp"`` (``-t u1``) or ``"tcp"`` (``-t t1``).
        remote_port: where a UAC scenario sends (``127.0.0.1:remote_port``);
            required for UAC scenarios, refused for UAS ones.
        calls: ``-m``: sipp exits after this many calls.
        variables: ``-set name value`` pairs for ``[$name]`` in the scenario
            (sipp refuses a name the scenario does not declare with
            ``<Global variables="..."/>``).
        username, password: ``-au``/``-ap``, used by ``[authentication]``.
        service: ``-s``, the ``[service]`` user part of the request URI.
        timeout: seconds; ``-timeout`` with ``-timeout_error`` makes sipp
            give up (exit 255) after this long whatever happens.
        port: our SIP port (default: a free one); -cp is always chosen.
        media_port: ``-mp`` (default: a free pair, see
            :func:`free_udp_port_pair`): fix it when the scenario's SDP must
            name it, e.g. for ``-rtp_echo``, which sends every RTP packet
            arriving there back to where it came from.
        extra_args: further sipp arguments, after the scenario's own.
        workdir: directory for traces (default: a new temporary directory,
            removed by :meth:`cleanup` / a clean ``with`` exit).
        fail_on_tcp_close: over TCP the harness passes ``-reconnect_close
            false`` so that the UA closing its connection does not fail the
            call; set this to keep sipp's default (fail the call).
    """

    def __init__(
        self,
        scenario: str | os.PathLike[str],
        *,
        transport: Transport = "udp",
        remote_port: int | None = None,
        calls: int = 1,
        variables: Mapping[str, str | int] | None = None,
        username: str | None = None,
        password: str | None = None,
        service: str | None = None,
        timeout: float = 30.0,
        port: int | None = None,
        media_port: int | None = None,
        extra_args: Sequence[str] = (),
        workdir: str | os.PathLike[str] | None = None,
        fail_on_tcp_close: bool = False,
    ) -> None:
        if transport not in _TRANSPORT_FLAG:
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
        if calls < 1:
            raise ValueError("calls must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.transport: Transport = transport
        self.calls = calls
        self.timeout = timeout
        self.variables = {str(k): str(v) for k, v in (variables or {}).items()}
        for name in self.variables:
            if not _VAR_NAME.match(name):
                raise ValueError(f"bad sipp variable name {name!r}")
        self.username = username
        self.password = password
        self.service = service
        self.extra_args = list(extra_args)
        self.fail_on_tcp_close = fail_on_tcp_close
        self._fixed_port = port
        self._fixed_media_port = media_port
        self.port: int = port or 0
        self.control_port = 0
        self.media_port = 0

        self.scenario_path: Path | None
        self.builtin: str | None
        scenario_text = os.fspath(scenario)
        directives: dict[str, list[str]] = {}
        if scenario_text.startswith(_BUILTIN_PREFIX):
            self.builtin = scenario_text[len(_BUILTIN_PREFIX) :]
            if self.builtin not in _BUILTIN_ROLES:
                raise ValueError(f"unknown built-in scenario {self.builtin!r}")
            self.scenario_path = None
            self.role: Role = _BUILTIN_ROLES[self.builtin]
            self.name = self.builtin
        else:
            self.builtin = None
            self.scenario_path = resolve_scenario(scenario)
            self.role = scenario_role(self.scenario_path)
            self.name = self.scenario_path.stem
            directives = _directives(self.scenario_path)
        supported = directives.get("transports", ["udp", "tcp"])
        if transport not in supported:
            raise ValueError(f"scenario {self.name} supports {supported}, not {transport}")
        self.scenario_args = directives.get("args", [])

        if self.role == "uac" and remote_port is None:
            raise ValueError(f"{self.name} is a UAC scenario: remote_port is required")
        if self.role == "uas" and remote_port is not None:
            raise ValueError(f"{self.name} is a UAS scenario: it takes no remote_port")
        self.remote_port = remote_port

        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"sipp-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.error_file = self.workdir / "errors.log"
        self.message_file = self.workdir / "messages.log"
        self.log_path = self.workdir / "logs.log"
        self.screen_file = self.workdir / "screen.log"
        self.calldebug_file = self.workdir / "calldebug.log"
        self.stdout_file = self.workdir / "stdout.log"
        self.stderr_file = self.workdir / "stderr.log"

        self.process: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []
        self._streams: list[IO[bytes]] = []
        self._stopped_by_us = False

    # ----------------------------------------------------------- addresses
    @property
    def address(self) -> tuple[str, int]:
        """sipp's SIP address, ``("127.0.0.1", port)``."""
        return (LOCALHOST, self.port)

    @property
    def hostport(self) -> str:
        """``127.0.0.1:PORT``, e.g. for the UA's outbound target."""
        return f"{LOCALHOST}:{self.port}"

    def uri(self, user: str = "service") -> str:
        """A SIP URI reaching this sipp over its transport."""
        return f"sip:{user}@{self.hostport};transport={self.transport}"

    # ------------------------------------------------------------- command
    def _choose_ports(self) -> None:
        self.port = self._fixed_port or (
            free_port_both() if self.transport == "tcp" else free_port("udp")
        )
        self.control_port = free_port("udp")
        self.media_port = self._fixed_media_port or free_udp_port_pair()

    def build_command(self) -> list[str]:
        """The sipp command line for the ports currently chosen."""
        cmd = [sipp_binary()]
        if self.role == "uac":
            cmd.append(f"{LOCALHOST}:{self.remote_port}")
        if self.builtin is not None:
            cmd += ["-sn", self.builtin]
        else:
            assert self.scenario_path is not None
            cmd += ["-sf", str(self.scenario_path)]
        cmd += [
            "-t", _TRANSPORT_FLAG[self.transport],
            "-i", LOCALHOST,
            "-bind_local",
            "-p", str(self.port),
            "-ci", LOCALHOST,
            "-cp", str(self.control_port),
            "-mi", LOCALHOST,
            "-mp", str(self.media_port),
            "-m", str(self.calls),
            "-nostdin",
            "-timeout", f"{max(1, round(self.timeout * 1000))}ms",
            "-timeout_error",
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_msg", "-message_file", str(self.message_file),
            "-trace_logs", "-log_file", str(self.log_path),
            "-trace_screen", "-screen_file", str(self.screen_file),
            "-trace_calldebug", "-calldebug_file", str(self.calldebug_file),
        ]  # fmt: skip
        if self.transport == "tcp" and not self.fail_on_tcp_close:
            # By default sipp fails every call on a TCP connection the peer
            # closes (E_FAILED_TCP_CLOSED), even a call that only has a
            # pause or a final recv left.  A UA may close an idle connection
            # whenever it likes; a scenario that still needs the connection
            # fails anyway (at the latest on -timeout).
            cmd += ["-reconnect_close", "false"]
        if self.service is not None:
            cmd += ["-s", self.service]
        if self.username is not None:
            cmd += ["-au", self.username]
        if self.password is not None:
            cmd += ["-ap", self.password]
        for name, value in self.variables.items():
            cmd += ["-set", name, value]
        cmd += self.scenario_args
        cmd += self.extra_args
        return cmd

    def command_line(self) -> str:
        """The command as a shell would show it (for reports)."""
        return shlex.join(self.command or self.build_command())

    # ------------------------------------------------------------ lifecycle
    def start(self, *, ready_timeout: float = 5.0) -> Self:
        """Start sipp and wait until it is bound (see :meth:`ready`)."""
        if self.process is not None:
            raise SippError(f"{self.name}: already started")
        for attempt in range(3):
            self._choose_ports()
            self._launch()
            try:
                self.ready(ready_timeout)
            except SippError:
                # 254: a port was taken between our probe and sipp's bind.
                code = self.process.poll() if self.process else None
                if code != EXIT_BIND_ERROR or attempt == 2:
                    self.stop()
                    raise
                self._close_streams()
                self.process = None
                continue
            return self
        raise SippError(f"{self.name}: could not start")  # pragma: no cover

    def _launch(self) -> None:
        self.command = self.build_command()
        for path in (self.error_file, self.message_file, self.log_path, self.screen_file):
            path.unlink(missing_ok=True)
        stdout = open(self.stdout_file, "wb")  # noqa: SIM115 - closed in _close_streams
        stderr = open(self.stderr_file, "wb")  # noqa: SIM115
        self._streams = [stdout, stderr]
        self.process = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._stopped_by_us = False
        _live.add(self)

    def is_bound(self) -> bool:
        """True once sipp owns its SIP socket (and, for UAC, its control socket).

        A UAS is ready when its UDP socket is bound or its TCP socket listens
        on ``127.0.0.1:port``.  A UAC starts sending at once; it counts as
        ready when its control socket exists (sipp opens it before it starts
        placing calls).
        """
        if self.process is None:
            return False
        pid = self.process.pid
        if self.role == "uas":
            if self.transport == "tcp":
                return _owns_socket(pid, "tcp", self.port, _TCP_LISTEN)
            return _owns_socket(pid, "udp", self.port)
        return _owns_socket(pid, "udp", self.control_port)

    def ready(self, timeout: float = 5.0) -> None:
        """Poll until sipp is bound; raise :class:`SippError` if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None:
                raise SippError(f"{self.name}: not started")
            if self.process.poll() is not None:
                if self.role == "uac":  # a fast UAC may already be done
                    return
                raise SippError(
                    f"{self.name}: sipp exited with {self.process.returncode} before it "
                    f"was ready\n{self.report()}"
                )
            if self.is_bound():
                return
            if time.monotonic() >= deadline:
                raise SippError(f"{self.name}: not bound after {timeout}s\n{self.report()}")
            time.sleep(_POLL_INTERVAL)

    def running(self) -> bool:
        """True while the sipp process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """sipp's exit code, or None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for sipp to exit and return its exit code.

        Raises :class:`SippTimeoutError` (an AssertionError, with the traces)
        if it is still running after ``timeout`` seconds; it keeps running
        then, and :meth:`stop` (or leaving the ``with`` block) ends it.
        """
        if self.process is None:
            raise SippError(f"{self.name}: not started")
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SippTimeoutError(
                f"{self.name}: sipp still running after {timeout}s\n{self.report()}"
            ) from None
        self._close_streams()
        return code

    def terminate(self) -> None:
        """Send SIGTERM without waiting (see :meth:`stop` and :func:`stop_all`)."""
        if self.process is not None and self.process.poll() is None:
            self._stopped_by_us = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def stop(self, grace: float = _STOP_GRACE) -> int | None:
        """SIGTERM, wait for the PID to exit; SIGKILL after ``grace`` seconds.

        Returns the exit code (None if never started).  Safe to call twice.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        self._close_streams()
        _live.discard(self)
        return process.returncode

    def _close_streams(self) -> None:
        for stream in self._streams:
            with contextlib.suppress(OSError):
                stream.close()
        self._streams = []

    def cleanup(self) -> None:
        """Stop sipp and remove the trace directory if the harness created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.cleanup()  # a failing test keeps the traces on disk
        else:
            self.stop()

    def __repr__(self) -> str:
        return (
            f"<Sipp {self.name} {self.role} {self.transport} {self.hostport} rc={self.returncode}>"
        )

    # --------------------------------------------------------------- traces
    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def messages_log(self) -> str:
        """Every SIP message sipp sent and received (``-trace_msg``)."""
        return self._read(self.message_file)

    def errors_log(self) -> str:
        """Unexpected messages, failed checks and aborted calls (``-trace_err``)."""
        return self._read(self.error_file)

    def log_file(self) -> Path:
        """Path of the ``-trace_logs`` file that ``<log message=...>`` writes."""
        return self.log_path

    def logs(self) -> str:
        """Text of the ``-trace_logs`` file."""
        return self._read(self.log_path)

    def screen_log(self) -> str:
        """Final statistics screens (``-trace_screen``), written when sipp exits."""
        return self._read(self.screen_file)

    def last_screen(self) -> str:
        """The last scenario screen: from -trace_screen, else from stdout.

        sipp writes the screen file only on an orderly exit (not on a
        ``-timeout_error`` or a fatal error); its stdout repaints the
        screens every second.
        """
        for text in (self.screen_log(), self._read(self.stdout_file)):
            start = text.rfind("Scenario Screen")
            if start >= 0:
                end = text.find("Test Terminated", start)
                block = text[start : end if end >= 0 else len(text)]
                return "\n".join(line.rstrip() for line in block.splitlines() if line.strip())
        return ""

    def calldebug_log(self) -> str:
        """Debug dumps of aborted calls (``-trace_calldebug``)."""
        return self._read(self.calldebug_file)

    def console(self) -> str:
        """sipp's stderr (fatal errors such as scenario syntax errors go here)."""
        return self._read(self.stderr_file)

    def logged_auth(self) -> list[LoggedAuth]:
        """The credentials uas_auth_407.xml wrote to its log, in order."""
        return LoggedAuth.parse_all(self.logs())

    def report(self) -> str:
        """Command, exit code and all traces, for assertion messages."""

        def section(title: str, text: str) -> str:
            text = text.strip()
            if len(text) > _TRACE_TAIL:
                text = f"[... {len(text) - _TRACE_TAIL} characters cut ...]\n{text[-_TRACE_TAIL:]}"
            return f"----- {title} -----\n{text or '(empty)'}\n"

        return "".join(
            [
                f"sipp {self.name} ({self.role}, {self.transport}, {self.hostport}) "
                f"exit code {self.returncode}"
                f"{' (stopped by the harness)' if self._stopped_by_us else ''}\n",
                f"command: {self.command_line()}\n",
                f"traces in {self.workdir}\n",
                section("sipp stderr", self.console()),
                section("error log (-trace_err)", self.errors_log()),
                section("<log> output (-trace_logs)", self.logs()),
                section("message trace (-trace_msg)", self.messages_log()),
                section("aborted calls (-trace_calldebug)", self.calldebug_log()),
                section("last scenario screen", self.last_screen()),
            ]
        )

    # ----------------------------------------------------------- assertions
    def assert_exit(self, expected: int | Callable[[int], bool], timeout: float = 30.0) -> int:
        """Wait (at most ``timeout`` s) and assert the exit code.

        ``expected`` is a code or a predicate.  On timeout sipp is stopped
        and the AssertionError carries the traces, as on a wrong code.
        """
        try:
            code = self.wait(timeout)
        except SippTimeoutError:
            self.stop()
            raise
        if self._stopped_by_us:
            # sipp exits 0 on SIGTERM when no call has failed, even with no
            # call at all: a stopped run proves nothing.
            raise AssertionError(
                f"sipp scenario {self.name} was stopped by the harness before it finished "
                f"(exit code {code})\n{self.report()}"
            )
        ok = expected(code) if callable(expected) else code == expected
        if not ok:
            want = "a matching code" if callable(expected) else str(expected)
            raise AssertionError(
                f"sipp scenario {self.name} exited with {code}, expected {want}\n{self.report()}"
            )
        return code

    def assert_success(self, timeout: float = 30.0) -> None:
        """Assert that sipp exits 0: every call followed the scenario."""
        self.assert_exit(EXIT_OK, timeout)

    def assert_failure(self, timeout: float = 30.0) -> int:
        """Assert that sipp exits non-zero (the scenario detected a fault)."""
        return self.assert_exit(lambda code: code != EXIT_OK, timeout)
