"""The issued configuration (SPEC §3 and §7): a TOML file in, typed, validated,
frozen settings out.

This module owns every configuration key: its name, type, default and rule.
``docs/configuration.md`` is the operator's copy of the same table; change
both together.

Theory of operation:

* A key that is absent takes its embedded default, the same value that
  :func:`default_config` uses, so a file needs only the keys it changes.  The
  exception is ``[integrators]``: a file must issue at least one integrator
  itself, so that a server started with a file never serves the keyless
  loopback integrator by accident.
* Reading never stops at the first problem.  Each bad key is reported as
  ``<file>: <dotted.key>: <problem>`` and replaced by its default so that
  reading can go on; :class:`ConfigError` carries the whole list.  Unknown
  keys are problems too: a misspelt key must not silently fall back to a
  default.
* Secrets (passwords, API keys, webhook secrets, passwords inside URLs) never
  appear in a message; a message says what is wrong with them instead.
* Each secret key ``X`` (``password``, ``api_keys``, ``webhook_secret``) may
  instead be given as ``X_env`` (the name of an environment variable holding
  it; for ``api_keys`` an array of names) or ``X_file`` (a file holding it; for
  ``api_keys`` one key per line), so that the file itself holds no secret.
  They are read while the file is read: a variable that is unset or empty, or
  a file that cannot be read or is empty, is a problem naming the key.
* Numbers in pools and agent lists are checked with :mod:`click2dial.calls.rules`,
  so a caller ID means the same thing in a file and in a request; the prefix
  patterns of ``allowed_agents`` and ``allowed_outbound_ids`` are those of
  :mod:`click2dial.calls.policy`, which also decides what the lists allow.
  The settings themselves carry no policy.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import importlib.util
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, TypeVar, cast
from urllib.parse import SplitResult, urlsplit

from .calls.policy import (
    NumberKind,
    is_prefix_pattern,
    may_use_agent,
    may_use_outbound_id,
    prefix_can_match,
)
from .calls.rules import (
    AGENT_FORMS,
    OUTBOUND_NUMBER_FORMS,
    is_agent,
    is_extension,
    is_outbound_number,
    number_text,
)
from .sip.errors import SipParseError
from .sip.uri import parse_uri
from .vocabulary import CallType
from .webhook_addresses import literal_address, refused_address

__all__ = [
    "AUTO_ANSWER_MODES",
    "CALL_TYPES",
    "ENV_VAR",
    "AgentConfig",
    "Config",
    "ConfigError",
    "ExtensionsConfig",
    "IntegratorConfig",
    "ServerConfig",
    "SipConfig",
    "SipListen",
    "TrunkConfig",
    "check_config",
    "default_config",
    "load_config",
    "load_effective_config",
    "parse_config",
    "resolve_config_path",
]

ENV_VAR: Final = "CLICK2DIAL_CONFIG"
EMBEDDED_SOURCE: Final = "<embedded defaults>"

AutoAnswer = Literal["none", "answer-mode", "call-info", "alert-info"]
ExtensionsMode = Literal["registrar", "pbx"]
Transport = Literal["udp", "tcp", "tls", "ws", "wss"]

AUTO_ANSWER_MODES: Final[tuple[AutoAnswer, ...]] = (
    "none",
    "answer-mode",
    "call-info",
    "alert-info",
)
CALL_TYPES: Final[tuple[CallType, ...]] = tuple(CallType)
TRANSPORTS: Final[tuple[Transport, ...]] = ("udp", "tcp", "tls", "ws", "wss")

DEFAULT_HTTP_HOST: Final = "127.0.0.1"
DEFAULT_HTTP_PORT: Final = 8300
DEFAULT_DATABASE: Final = "sqlite:///click2dial.db"
DEFAULT_SPOOL: Final = "click2dial-ends.jsonl"
DEFAULT_HEARTBEAT_INTERVAL: Final = 2.0
DEFAULT_TAKEOVER_AFTER: Final = 10.0
#: uvloop: about 10 % less CPU per call than the standard loop
#: (docs/benchmarks.md).
EVENT_LOOPS: Final = ("uvloop", "asyncio")
#: ``[server] workers``: at most one process per core is useful; this is a
#: sanity bound, not a recommendation.
MAX_WORKERS: Final = 64
#: ``workers = "auto"`` (the default): one per core this process may run on,
#: at most this many (measured up to 2 on the benchmark machine; a bigger
#: machine sets its number).
AUTO_WORKERS_MAX: Final = 4
DEFAULT_EVENT_LOOP: Final = "uvloop"
#: Admission defaults (docs/benchmarks.md says where they come from): the
#: node's calls per second, one bucket for all its workers.  On a 2-core
#: machine one process is clean at 400 calls/s offered steadily but,
#: offered 1,000 POSTs/s, stays responsive only when it takes at most 300;
#: its two workers (the "auto" default) are clean at 500/s steadily, and
#: at 1,000/s offered when they take at most 420 together, 210 each.
#: 10,000 live calls fit well under 1 GiB.
DEFAULT_MAX_CALLS_PER_SECOND: Final = 300
DEFAULT_CALLS_PER_SECOND_PER_WORKER: Final = 210
DEFAULT_MAX_LIVE_CALLS: Final = 10000
DEFAULT_MAX_LOOP_LAG_MS: Final = 300
DEFAULT_MAX_SIP_TRANSACTIONS: Final = 50000
DEFAULT_OPERATOR_LISTEN: Final = "127.0.0.1:9300"
DEFAULT_SIP_LISTEN: Final = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:8088")
DEFAULT_PUBLIC_HOST: Final = "127.0.0.1"
#: Seconds between in-dialog OPTIONS probes of a leg without a session timer:
#: a vanished peer is noticed within two probes plus a transaction time-out.
DEFAULT_PROBE_INTERVAL: Final = 45
#: RFC 4028: the interval we ask for, and the smallest we accept (its floor is 90).
DEFAULT_SESSION_EXPIRES: Final = 1800
DEFAULT_MIN_SE: Final = 90
DEFAULT_TRUNK_URI: Final = "sip:127.0.0.1:5080"
DEFAULT_CALL_TYPES: Final[frozenset[CallType]] = frozenset({CallType.OUTBOUND, CallType.EXTERNAL})
DEFAULT_MAX_CPS: Final = 10.0
DEFAULT_MAX_CONCURRENT: Final = 50
DEFAULT_AGENT_RING_TIMEOUT: Final = 30
DEFAULT_CALLEE_RING_TIMEOUT: Final = 60
DEFAULT_MAX_CALL_DURATION: Final = 14400
MAX_RING_TIMEOUT: Final = 600
MAX_CALL_DURATION: Final = 86400
MIN_SECRET_LENGTH: Final = 16
DEFAULT_REDIS_PORT: Final = 6379
# Limits (issue 11): see limits.py and docs/configuration.md.
DEFAULT_HTTP_KEEP_ALIVE_TIMEOUT: Final = 75
DEFAULT_HTTP_HEADER_TIMEOUT: Final = 10
DEFAULT_HTTP_BODY_TIMEOUT: Final = 30
DEFAULT_HTTP_MAX_CONNECTIONS: Final = 4096
DEFAULT_HTTP_MAX_CONNECTIONS_PER_SOURCE: Final = 128
#: Requests on one kept-alive connection before it is closed, with several
#: workers (nginx's keepalive_requests was 100 for years): spreads client
#: pools over them.  One process keeps connections open.
DEFAULT_HTTP_MAX_REQUESTS_PER_CONNECTION: Final = 100
DEFAULT_SIP_MAX_CONNECTIONS: Final = 4096
DEFAULT_SIP_MAX_CONNECTIONS_PER_SOURCE: Final = 64
DEFAULT_SIP_IDLE_TIMEOUT: Final = 600
DEFAULT_SIP_IDLE_TIMEOUT_WITHOUT_DIALOG: Final = 30
DEFAULT_SIP_REQUEST_RATE: Final = 20
DEFAULT_SIP_REQUEST_BURST: Final = 50
#: Bytes asked for the receive buffer of each UDP SIP socket.  The kernel's
#: default (about 208 KiB on Linux) holds a few hundred datagrams: a stall
#: of a few tens of milliseconds at a few hundred calls a second overflows
#: it, and the lost responses come back as retransmissions.  4 MiB holds
#: about half a second of 400 calls/s; Linux caps it at net.core.rmem_max.
DEFAULT_SIP_UDP_RECEIVE_BUFFER: Final = 4 << 20
MIN_NONCE_SECRET: Final = 16

_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# RFC 6750 b64token: what may follow "Authorization: Bearer ".
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


class ConfigError(Exception):
    """A configuration that cannot be used; :attr:`problems` lists every
    problem found, each naming the file, the key and what is wrong."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


# --- the settings ------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the shared HTTP listener, the database, this node."""

    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_HTTP_PORT
    database: str = DEFAULT_DATABASE
    node_id: str = field(default_factory=socket.gethostname)
    spool: str = DEFAULT_SPOOL
    """Where the ends of calls that the store could not take before an
    orderly shutdown are kept until the next start writes them."""
    operator_listen: str = DEFAULT_OPERATOR_LISTEN
    """``HOST:PORT`` of the operator listener (metrics, live calls); ``""``:
    none.  Never an integrator's port: it names every integrator."""

    @property
    def operator_address(self) -> tuple[str, int] | None:
        parsed = _split_host_port(self.operator_listen) if self.operator_listen else None
        if parsed is None or isinstance(parsed, str):
            return None
        host, port = parsed
        return host.strip("[]"), port

    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks of the reverse proxies whose X-Forwarded-For
    is believed (keyless loopback); none by default."""
    webhook_allow_link_local: bool = False
    """Whether webhook_url may point at link-local (cloud metadata) addresses."""
    keep_alive_timeout: int = DEFAULT_HTTP_KEEP_ALIVE_TIMEOUT
    header_timeout: int = DEFAULT_HTTP_HEADER_TIMEOUT
    body_timeout: int = DEFAULT_HTTP_BODY_TIMEOUT
    max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS
    max_connections_per_source: int = DEFAULT_HTTP_MAX_CONNECTIONS_PER_SOURCE
    max_requests_per_connection: int | None = None
    """Requests per kept-alive HTTP connection; ``None``: 0 (no limit) for
    one process, :data:`DEFAULT_HTTP_MAX_REQUESTS_PER_CONNECTION` with
    ``workers``."""
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    """Seconds between this node's heartbeats in the store."""
    takeover_after: float = DEFAULT_TAKEOVER_AFTER
    """Seconds of silence after which a node is dead and a survivor ends its
    live calls (PostgreSQL only)."""
    event_loop: str = DEFAULT_EVENT_LOOP
    """``uvloop`` (libuv) or ``asyncio`` (the standard library's)."""
    workers: int = 1
    """Processes of this node (:mod:`click2dial.workers`).  A configuration
    file's default is ``"auto"`` (:func:`auto_workers`); this one is for
    configurations built in code."""
    worker: int | None = None
    """Which worker this process is (set by the supervisor, not a key)."""

    @property
    def requests_per_connection(self) -> int:
        if self.max_requests_per_connection is not None:
            return self.max_requests_per_connection
        return DEFAULT_HTTP_MAX_REQUESTS_PER_CONNECTION if self.workers > 1 else 0

    @property
    def database_kind(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.database.startswith("sqlite:") else "postgresql"


def default_calls_per_second(workers: int) -> int:
    """``[admission] max_calls_per_second`` when not set: one process's
    figure, or each worker's share of the machine times the workers."""
    if workers <= 1:
        return DEFAULT_MAX_CALLS_PER_SECOND
    return DEFAULT_CALLS_PER_SECOND_PER_WORKER * workers


def _in_memory(database: str) -> bool:
    return (
        database.startswith("sqlite:")
        and database.removeprefix("sqlite://").lstrip("/") == ":memory:"
    )


def auto_workers(database: str) -> int:
    """``workers = "auto"``: one per core this process may run on (its CPU
    affinity, which containers narrow), at most :data:`AUTO_WORKERS_MAX`;
    one on an in-memory database."""
    if _in_memory(database):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(AUTO_WORKERS_MAX, cores))


@dataclass(frozen=True)
class AdmissionConfig:
    """``[admission]``: when this node refuses new calls with 503 and
    ``Retry-After`` instead of endangering the calls it already carries.
    0 turns a limit off."""

    max_calls_per_second: int = DEFAULT_MAX_CALLS_PER_SECOND
    max_live_calls: int = DEFAULT_MAX_LIVE_CALLS
    max_loop_lag_ms: int = DEFAULT_MAX_LOOP_LAG_MS
    max_sip_transactions: int = DEFAULT_MAX_SIP_TRANSACTIONS
    retry_after: int = 1


@dataclass(frozen=True)
class SipListen:
    """One ``sip.listen`` entry.  ``host`` is as written, IPv6 in brackets."""

    transport: Transport
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"

    @property
    def bind_host(self) -> str:
        """The host for ``bind()``: IPv6 without its brackets."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def is_stream(self) -> bool:
        """Whether it takes a TCP port (everything but UDP)."""
        return self.transport != "udp"


@dataclass(frozen=True)
class SipConfig:
    """``[sip]``: listeners, the host we put in Via/Contact/From, rtpengine,
    and the certificate for ``tls:``/``wss:`` listeners."""

    listen: tuple[str, ...] = DEFAULT_SIP_LISTEN
    public_host: str = DEFAULT_PUBLIC_HOST
    rtpengine: str | None = None
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_ca_file: str | None = None
    """CA certificates (PEM) that outgoing TLS (a ``sips:`` or
    ``;transport=tls`` trunk or contact) trusts instead of the system's."""
    probe_interval: int = DEFAULT_PROBE_INTERVAL
    session_expires: int = DEFAULT_SESSION_EXPIRES
    min_se: int = DEFAULT_MIN_SE
    max_connections: int = DEFAULT_SIP_MAX_CONNECTIONS
    max_connections_per_source: int = DEFAULT_SIP_MAX_CONNECTIONS_PER_SOURCE
    idle_timeout: int = DEFAULT_SIP_IDLE_TIMEOUT
    idle_timeout_without_dialog: int = DEFAULT_SIP_IDLE_TIMEOUT_WITHOUT_DIALOG
    request_rate: int = DEFAULT_SIP_REQUEST_RATE
    request_burst: int = DEFAULT_SIP_REQUEST_BURST
    udp_receive_buffer: int = DEFAULT_SIP_UDP_RECEIVE_BUFFER
    """Bytes asked for each UDP socket's receive buffer (0: the system's)."""
    edges: tuple[str, ...] = ()
    """Hosts of SIP proxies in front of the nodes (a Kamailio edge): exempt
    from the per-source SIP limits, and the registrar counts failed
    authentications per client behind them (the Via they received)."""

    @property
    def listeners(self) -> tuple[SipListen, ...]:
        return tuple(_parse_listen(item) for item in self.listen)


@dataclass(frozen=True)
class TrunkConfig:
    """``[trunk]``: where external numbers go, and its digest credentials."""

    uri: str = DEFAULT_TRUNK_URI
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class ExtensionsConfig:
    """``[extensions]``: whether agent extensions register with us or live on
    an upstream PBX."""

    mode: ExtensionsMode = "registrar"
    pbx_uri: str | None = None
    digest_algorithms: tuple[str, ...] = ("MD5",)
    """The registrar's 401 challenges, in this order (``MD5``, ``SHA-256``)."""
    nonce_secret: str | None = field(default=None, repr=False)
    """Signs the registrar's digest nonces; the same on every node, any node
    accepts the nonces of the others (else each node has a random one)."""


@dataclass(frozen=True)
class AgentConfig:
    """``[agents."<extension>"]``: per-extension settings."""

    extension: str
    password: str | None = field(default=None, repr=False)
    auto_answer: AutoAnswer = "none"
    contact: str | None = None
    nat: bool = True
    integrator: str | None = None
    """The integrator whose calls this agent places (SIP INVITEs from it);
    without it, the only integrator whose ``allowed_agents`` admit it."""


@dataclass(frozen=True)
class IntegratorConfig:
    """``[integrators.<name>]``: one integrator's credentials, listener,
    notification targets, caller IDs, permissions and limits.  What the
    permissions allow is decided by :mod:`click2dial.calls.policy`."""

    name: str
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    allow_keyless_loopback: bool = False
    http_port: int | None = None
    redis: str | None = field(default=None, repr=False)
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    clid_pool: tuple[str, ...] = ()
    default_outbound_id: str | None = None
    call_types: frozenset[CallType] = DEFAULT_CALL_TYPES
    allowed_agents: tuple[str, ...] | None = None
    allowed_outbound_ids: tuple[str, ...] | None = None
    max_cps: float = DEFAULT_MAX_CPS
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    agent_ring_timeout: int = DEFAULT_AGENT_RING_TIMEOUT
    callee_ring_timeout: int = DEFAULT_CALLEE_RING_TIMEOUT
    max_call_duration: int = DEFAULT_MAX_CALL_DURATION

    @property
    def has_targets(self) -> bool:
        """Whether this integrator is notified at all (Redis or a webhook)."""
        return bool(self.redis or self.webhook_url)

    @property
    def redis_db(self) -> int | None:
        """The Redis database number of :attr:`redis` (0 when the URL has none)."""
        if self.redis is None:
            return None
        path = urlsplit(self.redis).path.strip("/")
        return int(path) if path else 0


@dataclass(frozen=True)
class Config:
    """The whole configuration.  ``source`` is the file it came from (or
    ``<embedded defaults>``)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    extensions: ExtensionsConfig = field(default_factory=ExtensionsConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    agents: Mapping[str, AgentConfig] = field(default_factory=lambda: MappingProxyType({}))
    integrators: Mapping[str, IntegratorConfig] = field(
        default_factory=lambda: MappingProxyType({})
    )
    source: str = EMBEDDED_SOURCE

    def agent_integrator(self, extension: str) -> IntegratorConfig | None:
        """The integrator whose calls ``extension`` places (SPEC §4): the one
        its ``[agents]`` section names, or the only one that admits it."""
        agent = self.agents.get(extension)
        if agent is not None and agent.integrator is not None:
            return self.integrators.get(agent.integrator)
        admitting = [i for i in self.integrators.values() if may_use_agent(i, extension)]
        return admitting[0] if len(admitting) == 1 else None


# --- entry points ------------------------------------------------------------


def default_config() -> Config:
    """The embedded defaults of SPEC §7: loopback only, SQLite in the working
    folder, HTTP 8300, SIP UDP/TCP 5060 and WebSocket 8088, the simulated
    trunk of the demo, and one integrator ``default`` that needs no key from
    loopback (and cannot be reached any other way)."""
    default = IntegratorConfig(name="default", allow_keyless_loopback=True)
    workers = auto_workers(DEFAULT_DATABASE)
    return Config(
        server=ServerConfig(workers=workers),
        admission=AdmissionConfig(max_calls_per_second=default_calls_per_second(workers)),
        integrators=MappingProxyType({"default": default}),
    )


def resolve_config_path(
    cli_value: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The configuration file to use: ``--config`` if given, else
    ``$CLICK2DIAL_CONFIG`` if set and not empty, else ``None`` (the embedded
    defaults)."""
    if cli_value is not None:
        return cli_value
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return value or None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file; raises :class:`ConfigError` naming
    every problem."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror or exc}"]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{source}: not UTF-8 text (bad byte at offset {exc.start}); TOML must be UTF-8"]
        ) from exc
    return parse_config(text, source)


def load_effective_config(cli_value: str | None) -> Config:
    """The configuration the server runs with: the file named by ``--config``
    or ``$CLICK2DIAL_CONFIG``, else the embedded defaults."""
    path = resolve_config_path(cli_value)
    return default_config() if path is None else load_config(path)


def check_config(path: str | os.PathLike[str]) -> list[str]:
    """Every problem in the file, or an empty list when it is usable."""
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


def parse_config(text: str, source: str) -> Config:
    """Validate TOML ``text``; ``source`` names it in messages, and relative
    certificate paths are taken from the folder it names."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, text, source)]) from exc
    reader = _Reader(source)
    config = reader.read(document)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str, source: str) -> str:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is not None:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    else:
        # tomllib says "at end of document" without a position.
        message = message.replace(" (at end of document)", " at the end of the file")
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    return f"{source}: line {line}, column {column}: TOML syntax error: {message}"


# --- reading -----------------------------------------------------------------

_MISSING: Final = object()
#: A secret given as ``X_env``/``X_file`` that could not be read (already reported).
_UNREADABLE: Final = object()
T = TypeVar("T")
#: The keys that may also be spelled ``<key>_env`` and ``<key>_file``.
_SECRET_KEYS: Final = frozenset({"password", "api_keys", "webhook_secret", "nonce_secret"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _dotted(*parts: str) -> str:
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p) for p in parts)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time ({type(value).__name__})"


def _show(value: object) -> str:
    """A value as an operator wrote it, short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    return _kind(value)


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return _show(url)
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        return _show(parts._replace(netloc=f"{user}:***@{netloc[2]}").geturl())
    except ValueError:
        return "a malformed URL"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return True


def _split_host_port(text: str) -> tuple[str, int] | str:
    """``host:port`` (IPv6 in brackets) → (host, port), or a problem."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        return "must look like HOST:PORT"
    if host.startswith("["):
        if not host.endswith("]"):
            return "an IPv6 address must be in brackets, like [::1]:5060"
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
    elif ":" in host:
        return "an IPv6 address must be in brackets, like [::1]:5060"
    elif not _valid_host(host):
        return f"{host!r} is not a host name or IP address"
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"the port must be 1-65535, got {port!r}"
    return host, int(port)


def _parse_listen(text: str) -> SipListen:
    transport, _, rest = text.partition(":")
    parsed = _split_host_port(rest)
    if transport not in TRANSPORTS or isinstance(parsed, str):
        raise ValueError(f"bad listen entry {text!r}")
    return SipListen(transport, parsed[0], parsed[1])


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hosts_overlap(a: str, b: str) -> bool:
    return a in _WILDCARD_HOSTS or b in _WILDCARD_HOSTS or a.lower() == b.lower()


def _sip_uri_problem(text: str) -> str | None:
    try:
        uri = parse_uri(text)
    except SipParseError:
        return "is not a SIP URI"
    if not uri.is_sip:
        return "must be a sip: or sips: URI"
    if uri.port is not None and not 1 <= uri.port <= 65535:
        return "has a port outside 1-65535"
    return None


class _Table:
    """The keys of one TOML table as they are read; what is left at the end
    is unknown and reported."""

    def __init__(self, reader: _Reader, path: tuple[str, ...], data: Mapping[str, object]) -> None:
        self.reader = reader
        self.path = path
        self.data = data
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return _dotted(*self.path, name)

    def problem(self, name: str, problem: str) -> None:
        self.reader.problem(self.key(name), problem)

    def raw(self, name: str) -> object:
        self.read.add(name)
        return self.data.get(name, _MISSING)

    def has(self, name: str) -> bool:
        if name in _SECRET_KEYS:
            return any(spelling in self.data for spelling in _secret_spellings(name))
        return name in self.data

    def secret_raw(self, name: str, *, listed: bool = False) -> object:
        """The secret ``name`` as written, or read through ``name_env`` or
        ``name_file``: a string (for ``listed``, a list of strings),
        ``_MISSING``, or ``_UNREADABLE`` once the problem is reported."""
        given = [spelling for spelling in _secret_spellings(name) if spelling in self.data]
        self.read.update(_secret_spellings(name))
        if len(given) > 1:
            self.problem(given[0], f"give only one of {', '.join(given)}")
            return _UNREADABLE
        if not given or given[0] == name:
            return self.data.get(name, _MISSING)
        spelling = given[0]
        where = self.data[spelling]
        if spelling.endswith("_env"):
            if listed:
                if not isinstance(where, list) or not all(isinstance(v, str) for v in where):
                    self.problem(spelling, "must be an array of environment variable names")
                    return _UNREADABLE
                found = [self.reader.env_secret(f"{self.key(spelling)}[{i}]", v)
                         for i, v in enumerate(where)]  # fmt: skip
                return _UNREADABLE if None in found else found
            if not isinstance(where, str):
                self.problem(spelling, f"must be an environment variable name, got {_show(where)}")
                return _UNREADABLE
            value = self.reader.env_secret(self.key(spelling), where)
            return _UNREADABLE if value is None else value
        if not isinstance(where, str) or not where:
            self.problem(spelling, f"must be a file path, got {_show(where)}")
            return _UNREADABLE
        text = self.reader.file_secret(self.key(spelling), where)
        if text is None:
            return _UNREADABLE
        if not listed:
            return text
        keys = [line.strip() for line in text.splitlines()]
        keys = [key for key in keys if key and not key.startswith("#")]
        if not keys:
            self.problem(spelling, f"{self.reader.resolve(where)} holds no key")
            return _UNREADABLE
        return keys

    def finish(self, known: Iterable[str]) -> None:
        known = list(known)
        for name in self.data:
            if name in self.read:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; known keys: {', '.join(known)}"
            self.problem(name, f"unknown key{hint}")

    def string(
        self,
        name: str,
        default: T,
        *,
        check: Callable[[str], str | None] | None = None,
        secret: bool = False,
        empty_ok: bool = True,
    ) -> str | T:
        value = self.secret_raw(name) if secret else self.raw(name)
        if value is _MISSING or value is _UNREADABLE:
            return default
        if not isinstance(value, str):
            self.problem(name, f"must be a string, got {_shown(value, secret)}")
            return default
        if not value and not empty_ok:
            self.problem(name, "must not be empty (leave the key out instead)")
            return default
        if check is not None and value:
            problem = check(value)
            if problem is not None:
                self.problem(name, problem)
                return default
        return value

    def number_string(self, name: str, check: Callable[[str], str | None]) -> str | None:
        """A string, or a TOML integer standing for one (like ``clid_pool`` items)."""
        value = self.raw(name)
        if value is _MISSING:
            return None
        text = number_text(value)
        if text is None:
            self.problem(name, f"must be a string, got {_show(value)}")
            return None
        problem = check(text) if text else "must not be empty (leave the key out instead)"
        if problem is not None:
            self.problem(name, problem)
            return None
        return text

    def integer(self, name: str, default: T, low: int, high: int | None, what: str) -> int | T:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < low
            or (high is not None and value > high)
        ):
            self.problem(name, f"must be {what}, got {_show(value)}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"must be true or false, got {_show(value)}")
            return default
        return value

    def string_list(
        self, name: str, *, secret: bool = False, numbers: bool = False
    ) -> list[tuple[str, str]] | None:
        """The array ``name`` as (dotted key of the item, text) pairs; items of
        the wrong type are reported and dropped.  ``None`` when absent or not an
        array.  ``numbers`` lets TOML integers stand for digit strings."""
        value = self.secret_raw(name, listed=True) if secret else self.raw(name)
        if value is _MISSING or value is _UNREADABLE:
            return None
        if not isinstance(value, list):
            self.problem(name, f"must be an array of strings, got {_shown(value, secret)}")
            return None
        # Keys read through api_keys_env/api_keys_file are named by where they came from.
        spelling = next((s for s in _secret_spellings(name) if s in self.data), name)
        items: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            key = f"{self.key(spelling)}[{index}]"
            text = number_text(item) if numbers else item if isinstance(item, str) else None
            if text is None:
                self.reader.problem(key, f"must be a string, got {_shown(item, secret)}")
            else:
                items.append((key, text))
        return items

    def table(self, name: str) -> _Table | None:
        value = self.raw(name)
        if value is _MISSING:
            return _Table(self.reader, (*self.path, name), {})
        if not isinstance(value, dict):
            self.problem(name, f"must be a table, got {_show(value)}")
            return None
        return _Table(self.reader, (*self.path, name), value)


def _shown(value: object, secret: bool) -> str:
    return _kind(value) if secret else _show(value)


def _secret_spellings(name: str) -> tuple[str, str, str]:
    return (name, f"{name}_env", f"{name}_file")


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.base = Path(source).parent
        # Every API key read so far → where it was issued, across integrators.
        self.key_owner: dict[str, str] = {}
        # Whether [server] workers was given as a number (else "auto").
        self.workers_chosen = False

    def problem(self, key: str, problem: str) -> None:
        self.problems.append(f"{self.source}: {key}: {problem}")

    def read(self, document: Mapping[str, object]) -> Config:
        root = _Table(self, (), document)
        server_t, sip_t, trunk_t, ext_t, agents_t, integ_t, admission_t = (
            root.table(name)
            for name in (
                "server", "sip", "trunk", "extensions", "agents", "integrators", "admission"
            )
        )  # fmt: skip
        root.finish(["server", "sip", "trunk", "extensions", "agents", "integrators", "admission"])
        server = (
            self.server(server_t)
            if server_t
            else ServerConfig(workers=auto_workers(DEFAULT_DATABASE))
        )
        sip = self.sip(sip_t) if sip_t else SipConfig()
        trunk = self.trunk(trunk_t) if trunk_t else TrunkConfig()
        extensions = self.extensions(ext_t) if ext_t else ExtensionsConfig()
        agents = self.agents(agents_t) if agents_t else {}
        integrators = self.integrators(integ_t, server) if integ_t else {}
        clash = worker_port_clash(server, sip, integrators) if server.workers > 1 else None
        if clash is not None and not self.workers_chosen:
            server = replace(server, workers=1)  # "auto": as many as fit
        elif clash is not None:
            self.problem(
                "server.workers",
                f"{clash}: worker i binds each SIP and operator port plus i; "
                "choose ports with room after them, or fewer workers",
            )
        admission = (
            self.admission(admission_t, server.workers)
            if admission_t
            else AdmissionConfig(max_calls_per_second=default_calls_per_second(server.workers))
        )
        self.check_ports(server, sip, integrators)
        if integ_t:
            self.check_agent_integrators(extensions, agents, integrators)
        return Config(
            server=server,
            sip=sip,
            trunk=trunk,
            extensions=extensions,
            admission=admission,
            agents=MappingProxyType(agents),
            integrators=MappingProxyType(integrators),
            source=self.source,
        )

    # [server]

    def server(self, t: _Table) -> ServerConfig:
        http_host = t.string("http_host", DEFAULT_HTTP_HOST, check=_http_host_problem)
        http_port = t.integer("http_port", DEFAULT_HTTP_PORT, 1, 65535, "a port number 1-65535")
        database = t.raw("database")
        if database is _MISSING:
            database = DEFAULT_DATABASE
        elif not isinstance(database, str):
            t.problem("database", f"must be a string, got {_kind(database)}")
            database = DEFAULT_DATABASE
        else:
            problem = _database_problem(database)
            if problem is not None:
                t.problem("database", f"{problem}, got {_redacted(database)}")
                database = DEFAULT_DATABASE
        node_id = t.string(
            "node_id",
            None,
            check=lambda v: (
                None
                if _NODE_ID.fullmatch(v)
                else f"must be 1-64 letters, digits, '.', '_' or '-', got {_show(v)}"
            ),
            empty_ok=False,
        )
        spool = t.string(
            "spool",
            DEFAULT_SPOOL,
            check=lambda v: None if "\0" not in v else "must be a file path",
            empty_ok=False,
        )
        operator_listen = t.string(
            "operator_listen", DEFAULT_OPERATOR_LISTEN, check=_operator_listen_problem
        )
        trusted_proxies = self.trusted_proxies(t)
        allow_link_local = t.boolean("webhook_allow_link_local", False)
        limits = self.server_limits(t)
        heartbeat_interval, takeover_after = self.liveness(t)
        event_loop = t.string("event_loop", DEFAULT_EVENT_LOOP, check=_event_loop_problem)
        workers = auto_workers(database)
        self.workers_chosen = t.raw("workers") not in (_MISSING, "auto")
        if self.workers_chosen:
            workers = t.integer(
                "workers", workers, 1, MAX_WORKERS, f'"auto" or a whole number 1-{MAX_WORKERS}'
            )
        if workers > 1 and _in_memory(database):
            t.problem(
                "workers",
                "more than 1 needs a database file: the workers share calls, limits and "
                "registrations through it, and an in-memory database is one process's",
            )
            workers = 1
        t.finish(["http_host", "http_port", "database", "node_id", "spool", "operator_listen",
                  "trusted_proxies", "webhook_allow_link_local", *limits,
                  "heartbeat_interval", "takeover_after", "event_loop", "workers"])  # fmt: skip
        return ServerConfig(
            http_host=http_host,
            http_port=http_port,
            database=database,
            node_id=node_id if node_id is not None else socket.gethostname(),
            spool=spool,
            operator_listen=operator_listen,
            trusted_proxies=trusted_proxies,
            webhook_allow_link_local=allow_link_local,
            heartbeat_interval=heartbeat_interval,
            takeover_after=takeover_after,
            event_loop=event_loop,
            workers=workers,
            **limits,
        )

    def liveness(self, t: _Table) -> tuple[float, float]:
        """``[server]`` ``heartbeat_interval`` and ``takeover_after`` (issue 12)."""
        interval = self.positive_number(t, "heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL)
        after = self.positive_number(t, "takeover_after", DEFAULT_TAKEOVER_AFTER)
        # One late heartbeat must not get a live node taken over.
        given = [t.key(name) for name in ("heartbeat_interval", "takeover_after")]
        if after <= 2 * interval and not any(self.problems_for(key) for key in given):
            t.problem(
                "takeover_after",
                f"must be more than twice heartbeat_interval ({interval:g} s), got {after:g}",
            )
            interval, after = DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_TAKEOVER_AFTER
        return interval, after

    def trusted_proxies(self, t: _Table) -> tuple[str, ...]:
        found: list[str] = []
        for key, text in t.string_list("trusted_proxies") or []:
            try:
                found.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError:
                self.problem(key, f"must be an IP address or network, got {_show(text)}")
        return tuple(found)

    # [admission]

    def admission(self, t: _Table, workers: int) -> AdmissionConfig:
        config = AdmissionConfig(
            max_calls_per_second=t.integer(
                "max_calls_per_second", default_calls_per_second(workers), 0, 100000,
                "calls per second 0-100000 (0: no limit)",
            ),
            max_live_calls=t.integer(
                "max_live_calls", DEFAULT_MAX_LIVE_CALLS, 0, 10_000_000,
                "calls 0-10000000 (0: no limit)",
            ),
            max_loop_lag_ms=t.integer(
                "max_loop_lag_ms", DEFAULT_MAX_LOOP_LAG_MS, 0, 60000,
                "milliseconds 0-60000 (0: not watched)",
            ),
            max_sip_transactions=t.integer(
                "max_sip_transactions", DEFAULT_MAX_SIP_TRANSACTIONS, 0, 10_000_000,
                "transactions 0-10000000 (0: no limit)",
            ),
            retry_after=t.integer("retry_after", 1, 1, 3600, "seconds 1-3600"),
        )  # fmt: skip
        t.finish(
            ["max_calls_per_second", "max_live_calls", "max_loop_lag_ms",
             "max_sip_transactions", "retry_after"]
        )  # fmt: skip
        return config

    def server_limits(self, t: _Table) -> dict[str, int]:
        """``[server]`` keys of the HTTP limits (issue 11)."""
        seconds = "whole seconds 1-3600"
        limits: dict[str, int] = {
            "keep_alive_timeout": t.integer(
                "keep_alive_timeout", DEFAULT_HTTP_KEEP_ALIVE_TIMEOUT, 1, 3600, seconds
            ),
            "header_timeout": t.integer(
                "header_timeout", DEFAULT_HTTP_HEADER_TIMEOUT, 1, 3600, seconds
            ),
            "body_timeout": t.integer("body_timeout", DEFAULT_HTTP_BODY_TIMEOUT, 1, 3600, seconds),
            "max_connections": t.integer(
                "max_connections", DEFAULT_HTTP_MAX_CONNECTIONS, 1, 1_000_000, "1-1000000"
            ),
            "max_connections_per_source": t.integer(
                "max_connections_per_source",
                DEFAULT_HTTP_MAX_CONNECTIONS_PER_SOURCE,
                0,
                1_000_000,
                "0 (no cap) to 1000000",
            ),
        }
        if "max_requests_per_connection" in t.data:
            limits["max_requests_per_connection"] = t.integer(
                "max_requests_per_connection", 0, 0, 1_000_000, "0 (no limit) to 1000000"
            )
        return limits

    # [sip]

    def sip(self, t: _Table) -> SipConfig:
        listen: list[str] = []
        parsed: list[SipListen] = []
        items = t.string_list("listen")
        if items is None:
            if not t.has("listen"):
                listen = list(DEFAULT_SIP_LISTEN)
                parsed = [_parse_listen(item) for item in listen]
        elif not items and not self.problems_for(t.key("listen")):
            t.problem("listen", "must list at least one listener")
        seen: dict[tuple[str, str, int], str] = {}
        for key, text in items or []:
            problem = _listen_problem(text)
            if problem is not None:
                self.problem(key, f"{problem}, got {_show(text)}")
                continue
            entry = _parse_listen(text)
            ident = (entry.transport, entry.host.lower(), entry.port)
            if ident in seen:
                self.problem(key, f"{_show(text)} is listed twice (also at {seen[ident]})")
                continue
            seen[ident] = key
            listen.append(text)
            parsed.append(entry)

        has_public = t.has("public_host")
        public_host = t.string(
            "public_host", DEFAULT_PUBLIC_HOST, check=_public_host_problem, empty_ok=False
        )
        if not has_public and any(not _is_loopback(e.bind_host) for e in parsed):
            t.problem(
                "public_host",
                "required when a listener is not on loopback: the host or address "
                "phones and the trunk reach this server at",
            )
        rtpengine = t.string(
            "rtpengine",
            None,
            check=_host_port_problem,
            empty_ok=False,
        )
        cert = t.string("tls_certificate", None, check=self.file_problem, empty_ok=False)
        private_key = t.string("tls_private_key", None, check=self.file_problem, empty_ok=False)
        ca_file = t.string("tls_ca_file", None, check=self.file_problem, empty_ok=False)
        secure = [str(e) for e in parsed if e.transport in ("tls", "wss")]
        if secure:
            for name, value in (("tls_certificate", cert), ("tls_private_key", private_key)):
                if value is None and not self.problems_for(t.key(name)):
                    t.problem(name, f"required by the listener {secure[0]}")
        probe_interval = t.integer(
            "probe_interval", DEFAULT_PROBE_INTERVAL, 0, 3600, "seconds 0-3600 (0: no probes)"
        )
        if 0 < probe_interval < 5:
            t.problem(
                "probe_interval", f"must be 0 (off) or at least 5 seconds, got {probe_interval}"
            )
        min_se = t.integer("min_se", DEFAULT_MIN_SE, 90, 86400, "seconds 90-86400 (RFC 4028)")
        session_expires = t.integer(
            "session_expires", DEFAULT_SESSION_EXPIRES, 90, 86400, "seconds 90-86400 (RFC 4028)"
        )
        if session_expires < min_se:
            t.problem(
                "session_expires", f"must not be below min_se ({min_se}), got {session_expires}"
            )
        limits = self.sip_limits(t)
        edges: list[str] = []
        for key, text in t.string_list("edges") or []:
            host = text.strip()
            if _valid_host(host.strip("[]")):
                edges.append(host.strip("[]"))
            else:
                self.problem(key, f"must be a host name or an IP address, got {_show(text)}")
        t.finish(
            [
                "listen",
                "edges",
                "public_host",
                "rtpengine",
                "tls_certificate",
                "tls_private_key",
                "tls_ca_file",
                "probe_interval",
                "session_expires",
                "min_se",
                *limits,
            ]
        )
        return SipConfig(
            listen=tuple(listen),
            public_host=public_host,
            rtpengine=rtpengine,
            tls_certificate=self.resolve(cert),
            tls_private_key=self.resolve(private_key),
            tls_ca_file=self.resolve(ca_file),
            probe_interval=probe_interval,
            session_expires=session_expires,
            min_se=min_se,
            edges=tuple(edges),
            **limits,
        )

    def sip_limits(self, t: _Table) -> dict[str, int]:
        """``[sip]`` keys of the SIP limits (issue 11)."""
        seconds = "whole seconds 1-86400"
        limits = {
            "max_connections": t.integer(
                "max_connections", DEFAULT_SIP_MAX_CONNECTIONS, 1, 1_000_000, "1-1000000"
            ),
            "max_connections_per_source": t.integer(
                "max_connections_per_source",
                DEFAULT_SIP_MAX_CONNECTIONS_PER_SOURCE,
                0,
                1_000_000,
                "0 (no cap) to 1000000",
            ),
            "idle_timeout": t.integer("idle_timeout", DEFAULT_SIP_IDLE_TIMEOUT, 1, 86400, seconds),
            "idle_timeout_without_dialog": t.integer(
                "idle_timeout_without_dialog",
                DEFAULT_SIP_IDLE_TIMEOUT_WITHOUT_DIALOG,
                1,
                86400,
                seconds,
            ),
            "request_rate": t.integer(
                "request_rate", DEFAULT_SIP_REQUEST_RATE, 0, 1_000_000, "0 (no limit) to 1000000"
            ),
            "request_burst": t.integer(
                "request_burst", DEFAULT_SIP_REQUEST_BURST, 1, 1_000_000, "1-1000000"
            ),
            "udp_receive_buffer": t.integer(
                "udp_receive_buffer",
                DEFAULT_SIP_UDP_RECEIVE_BUFFER,
                0,
                1 << 30,
                "bytes: 0 (the system's default) or 65536-1073741824",
            ),
        }
        if 0 < limits["udp_receive_buffer"] < 65536:
            t.problem(
                "udp_receive_buffer",
                f"must be 0 (the system's default) or at least 65536 bytes, "
                f"got {limits['udp_receive_buffer']}",
            )
        if limits["idle_timeout_without_dialog"] > limits["idle_timeout"]:
            t.problem(
                "idle_timeout_without_dialog",
                f"must not be above idle_timeout ({limits['idle_timeout']}), "
                f"got {limits['idle_timeout_without_dialog']}",
            )
        if limits["request_rate"] and limits["request_burst"] < limits["request_rate"]:
            t.problem(
                "request_burst",
                f"must not be below request_rate ({limits['request_rate']}), "
                f"got {limits['request_burst']}",
            )
        return limits

    def problems_for(self, key: str) -> bool:
        prefixes = tuple(
            f"{self.source}: {spelling}{end}"
            for spelling in _secret_spellings(key)
            for end in (":", "[")
        )
        return any(p.startswith(prefixes) for p in self.problems)

    def env_secret(self, key: str, variable: str) -> str | None:
        """The secret in environment variable ``variable`` (``key`` names it)."""
        if not _ENV_NAME.fullmatch(variable):
            self.problem(key, f"{_show(variable)} is not an environment variable name")
            return None
        value = os.environ.get(variable)
        if value is None:
            self.problem(key, f"environment variable {variable} is not set")
        elif not value:
            self.problem(key, f"environment variable {variable} is empty")
        return value or None

    def file_secret(self, key: str, path: str) -> str | None:
        """The secret held in file ``path`` (relative to the configuration
        file's folder), without its trailing line break."""
        full = self.base / path
        try:
            text = full.read_bytes().decode("utf-8")
        except OSError as exc:
            self.problem(key, f"cannot read {full}: {exc.strerror or exc}")
            return None
        except UnicodeDecodeError:
            self.problem(key, f"{full} is not UTF-8 text")
            return None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text.strip():
            self.problem(key, f"{full} is empty")
            return None
        return text

    def resolve(self, path: str | None) -> str | None:
        return None if path is None else str(self.base / path)

    def file_problem(self, path: str) -> str | None:
        full = self.base / path
        if not full.is_file():
            return f"no such file: {full}"
        if not os.access(full, os.R_OK):
            return f"cannot read {full}"
        return None

    # [trunk]

    def trunk(self, t: _Table) -> TrunkConfig:
        uri = t.string(
            "uri",
            DEFAULT_TRUNK_URI,
            check=lambda v: _with_value(_sip_uri_problem(v), v),
            empty_ok=False,
        )
        username = t.string("username", "")
        password = t.string("password", "", secret=True)
        if password and not username:
            t.problem("password", "is set but trunk.username is empty: digest needs both")
        t.finish(["uri", "username", "password"])
        return TrunkConfig(uri=uri, username=username, password=password)

    # [extensions]

    def extensions(self, t: _Table) -> ExtensionsConfig:
        mode = t.string(
            "mode",
            "registrar",
            check=lambda v: (
                None
                if v in ("registrar", "pbx")
                else f'must be "registrar" or "pbx", got {_show(v)}'
            ),
            empty_ok=False,
        )
        pbx_uri = t.string(
            "pbx_uri", None, check=lambda v: _with_value(_sip_uri_problem(v), v), empty_ok=False
        )
        if mode == "pbx" and pbx_uri is None and not self.problems_for(t.key("pbx_uri")):
            t.problem("pbx_uri", 'required with mode = "pbx"')
        algorithms: list[str] = []
        items = t.string_list("digest_algorithms")
        for key, text in items or []:
            if text.upper() not in ("MD5", "SHA-256"):
                self.problem(key, f'must be "MD5" or "SHA-256", got {_show(text)}')
            elif text.upper() not in algorithms:
                algorithms.append(text.upper())
        if items is not None and not items:
            t.problem("digest_algorithms", "must list at least one algorithm")
        nonce_secret = t.string("nonce_secret", None, secret=True, empty_ok=False)
        if nonce_secret is not None and len(nonce_secret) < MIN_NONCE_SECRET:
            t.problem("nonce_secret", f"must be at least {MIN_NONCE_SECRET} characters long")
        t.finish(["mode", "pbx_uri", "digest_algorithms", "nonce_secret"])
        return ExtensionsConfig(
            mode=cast(ExtensionsMode, mode),
            pbx_uri=pbx_uri,
            digest_algorithms=tuple(algorithms) or ("MD5",),
            nonce_secret=nonce_secret,
        )

    # [agents."1001"]

    def agents(self, t: _Table) -> dict[str, AgentConfig]:
        agents: dict[str, AgentConfig] = {}
        for extension in t.data:
            if not is_extension(extension):
                t.raw(extension)
                t.problem(extension, "an agent section must be named by a 3-4 digit extension")
                continue
            sub = t.table(extension)
            if sub is None:
                continue
            password = sub.string("password", None, secret=True, empty_ok=False)
            auto_answer = sub.string(
                "auto_answer",
                "none",
                check=lambda v: (
                    None
                    if v in AUTO_ANSWER_MODES
                    else f"must be one of {', '.join(AUTO_ANSWER_MODES)}, got {_show(v)}"
                ),
                empty_ok=False,
            )
            contact = sub.string(
                "contact",
                None,
                check=lambda v: _with_value(_sip_uri_problem(v), v),
                empty_ok=False,
            )
            nat = sub.boolean("nat", True)
            integrator = sub.string("integrator", None, empty_ok=False)
            sub.finish(["password", "auto_answer", "contact", "nat", "integrator"])
            agents[extension] = AgentConfig(
                extension=extension,
                password=password,
                auto_answer=cast(AutoAnswer, auto_answer),
                contact=contact,
                nat=nat,
                integrator=integrator,
            )
        return agents

    # [integrators.<name>]

    def integrators(self, t: _Table, server: ServerConfig) -> dict[str, IntegratorConfig]:
        if not t.data:
            self.problem(
                "integrators",
                "no integrator is issued: add at least one [integrators.<name>] section",
            )
            return {}
        integrators: dict[str, IntegratorConfig] = {}
        port_owner: dict[int, str] = {}
        redis_owner: dict[tuple[str, int, int], str] = {}
        for name in t.data:
            if not _NAME.fullmatch(name):
                t.problem(name, "an integrator name must be 1-64 letters, digits, '_' or '-'")
                continue
            sub = t.table(name)
            if sub is None:
                continue
            integrator = self.integrator(sub, name)
            if integrator.http_port is not None:
                if integrator.http_port == server.http_port:
                    sub.problem(
                        "http_port",
                        f"{integrator.http_port} is the shared port (server.http_port): "
                        "leave http_port out to use the shared listener",
                    )
                elif integrator.http_port in port_owner:
                    sub.problem(
                        "http_port",
                        f"{integrator.http_port} is already the port of "
                        f"integrators.{port_owner[integrator.http_port]}",
                    )
                else:
                    port_owner[integrator.http_port] = name
            if integrator.redis is not None:
                parts = urlsplit(integrator.redis)
                ident = (
                    (parts.hostname or "").lower(),
                    parts.port or DEFAULT_REDIS_PORT,
                    integrator.redis_db or 0,
                )
                if ident in redis_owner:
                    sub.problem(
                        "redis",
                        f"the same Redis database as integrators.{redis_owner[ident]}: "
                        "each integrator needs its own database number, or they would "
                        "read each other's notifications",
                    )
                else:
                    redis_owner[ident] = name
            integrators[name] = integrator
            if integrator.webhook_url and not server.webhook_allow_link_local:
                self.check_webhook_address(sub, integrator.webhook_url)
        self.check_keyless(integrators)
        return integrators

    def check_webhook_address(self, t: _Table, url: str) -> None:
        parts = _url_parts(url)
        address = literal_address(parts.hostname or "") if parts is not None else None
        reason = refused_address(address) if address is not None else None
        if reason is not None:
            t.problem(
                "webhook_url",
                f"{reason}: refused as a webhook target "
                "(set [server] webhook_allow_link_local = true to allow it)",
            )

    def check_keyless(self, integrators: Mapping[str, IntegratorConfig]) -> None:
        # A request without a key must map to exactly one integrator on the
        # listener it arrived at.
        by_port: dict[int | None, list[str]] = {}
        for integrator in integrators.values():
            if integrator.allow_keyless_loopback:
                by_port.setdefault(integrator.http_port, []).append(integrator.name)
        for names in by_port.values():
            for extra in names[1:]:
                self.problem(
                    _dotted("integrators", extra, "allow_keyless_loopback"),
                    f"integrators.{names[0]} already takes keyless requests on the same "
                    "HTTP listener: at most one integrator per listener may",
                )

    def integrator(self, t: _Table, name: str) -> IntegratorConfig:
        api_keys: list[str] = []
        for key, value in t.string_list("api_keys", secret=True) or []:
            if len(value) < MIN_SECRET_LENGTH:
                self.problem(
                    key,
                    f"an API key must be at least {MIN_SECRET_LENGTH} characters, got {len(value)}",
                )
            elif not _BEARER_TOKEN.fullmatch(value):
                self.problem(
                    key,
                    "an API key may hold only letters, digits and - . _ ~ + / "
                    "(with = at the end): it is sent as 'Authorization: Bearer <key>'",
                )
            elif value in api_keys:
                self.problem(key, f"the same key is listed twice (also at {self.key_owner[value]})")
            elif value in self.key_owner:
                self.problem(
                    key,
                    f"the same key is already issued at {self.key_owner[value]}: "
                    "keys must be unique",
                )
            else:
                self.key_owner[value] = key
                api_keys.append(value)
        keyless = t.boolean("allow_keyless_loopback", False)
        if not t.has("api_keys") and not keyless:
            t.problem(
                "api_keys",
                "required: without API keys (or allow_keyless_loopback = true) "
                "nobody can use this integrator",
            )
        elif (
            t.has("api_keys")
            and not api_keys
            and not keyless
            and not self.problems_for(t.key("api_keys"))
        ):
            t.problem("api_keys", "is empty: nobody can use this integrator")

        http_port = t.integer("http_port", None, 1, 65535, "a port number 1-65535")
        redis = t.string("redis", None, check=_redis_problem, empty_ok=False)
        webhook_url = t.string("webhook_url", None, check=_webhook_problem, empty_ok=False)
        webhook_secret = t.string("webhook_secret", None, secret=True, empty_ok=False)
        if webhook_secret is not None and not _standard_secret_ok(webhook_secret):
            t.problem(
                "webhook_secret",
                "starts with whsec_, the Standard Webhooks form, but what follows is not "
                "base64 of at least 16 bytes",
            )
            webhook_secret = None
        if webhook_secret is not None and len(webhook_secret) < MIN_SECRET_LENGTH:
            t.problem(
                "webhook_secret",
                f"must be at least {MIN_SECRET_LENGTH} characters, got {len(webhook_secret)}",
            )
            webhook_secret = None
        elif (
            t.has("webhook_url")
            and webhook_secret is None
            and not self.problems_for(t.key("webhook_secret"))
        ):
            t.problem("webhook_secret", "required with webhook_url: webhooks are signed")

        clid_pool = self.numbers(t, "clid_pool", is_outbound_number, OUTBOUND_NUMBER_FORMS)
        default_outbound_id = t.number_string(
            "default_outbound_id",
            lambda v: (
                None
                if v == "random" or is_outbound_number(v)
                else f'must be "random" or {OUTBOUND_NUMBER_FORMS}, got {_show(v)}'
            ),
        )

        call_types = self.call_types(t)
        allowed_agents = self.patterns(t, "allowed_agents", is_agent, AGENT_FORMS, "agent")
        allowed_outbound_ids = self.patterns(
            t, "allowed_outbound_ids", is_outbound_number, OUTBOUND_NUMBER_FORMS, "outbound"
        )
        if t.data.get("allowed_agents") == []:
            t.problem("allowed_agents", "is empty: leave it out to allow any agent")
            allowed_agents = None

        max_cps = self.positive_number(t, "max_cps", DEFAULT_MAX_CPS)
        max_concurrent = t.integer(
            "max_concurrent", DEFAULT_MAX_CONCURRENT, 1, None, "a positive integer"
        )
        seconds = f"an integer number of seconds 1-{MAX_RING_TIMEOUT}"
        agent_ring = t.integer(
            "agent_ring_timeout", DEFAULT_AGENT_RING_TIMEOUT, 1, MAX_RING_TIMEOUT, seconds
        )
        callee_ring = t.integer(
            "callee_ring_timeout", DEFAULT_CALLEE_RING_TIMEOUT, 1, MAX_RING_TIMEOUT, seconds
        )
        max_duration = t.integer(
            "max_call_duration",
            DEFAULT_MAX_CALL_DURATION,
            1,
            MAX_CALL_DURATION,
            f"an integer number of seconds 1-{MAX_CALL_DURATION}",
        )
        t.finish(_INTEGRATOR_KEYS)

        integrator = IntegratorConfig(
            name=name,
            api_keys=tuple(api_keys),
            allow_keyless_loopback=keyless,
            http_port=http_port,
            redis=redis,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            clid_pool=clid_pool,
            default_outbound_id=default_outbound_id,
            call_types=call_types,
            allowed_agents=allowed_agents,
            allowed_outbound_ids=allowed_outbound_ids,
            max_cps=max_cps,
            max_concurrent=max_concurrent,
            agent_ring_timeout=agent_ring,
            callee_ring_timeout=callee_ring,
            max_call_duration=max_duration,
        )
        if default_outbound_id is not None and not may_use_outbound_id(
            integrator, default_outbound_id
        ):
            t.problem(
                "default_outbound_id",
                "is random but clid_pool is empty"
                if default_outbound_id == "random"
                else f"{default_outbound_id} is not in allowed_outbound_ids or clid_pool",
            )
        return integrator

    def numbers(
        self, t: _Table, name: str, accept: Callable[[str], bool], forms: str
    ) -> tuple[str, ...]:
        numbers: list[str] = []
        for key, text in t.string_list(name, numbers=True) or []:
            if not accept(text):
                self.problem(key, f"must be {forms}{_zero_hint(text, accept)}, got {_show(text)}")
            elif text in numbers:
                self.problem(key, f"{text} is listed twice")
            else:
                numbers.append(text)
        return tuple(numbers)

    def patterns(
        self, t: _Table, name: str, accept: Callable[[str], bool], forms: str, kind: NumberKind
    ) -> tuple[str, ...] | None:
        items = t.string_list(name, numbers=True)
        if items is None:
            return None
        patterns: list[str] = []
        for key, text in items:
            if text.endswith("*"):
                if not is_prefix_pattern(text):
                    self.problem(
                        key, f'a prefix pattern is digits then "*", like "2711*"; got {_show(text)}'
                    )
                    continue
                if not prefix_can_match(text[:-1], kind):
                    self.problem(key, f"no number of the accepted forms ({forms}) starts {text}")
                    continue
            elif not accept(text):
                self.problem(
                    key,
                    f'must be {forms}, or a prefix ending in "*"{_zero_hint(text, accept)}; '
                    f"got {_show(text)}",
                )
                continue
            if text in patterns:
                self.problem(key, f"{text} is listed twice")
                continue
            patterns.append(text)
        return tuple(patterns)

    def call_types(self, t: _Table) -> frozenset[CallType]:
        items = t.string_list("call_types")
        if items is None:
            return DEFAULT_CALL_TYPES
        found: list[CallType] = []
        for key, text in items:
            if text not in CALL_TYPES:
                self.problem(key, f"must be one of {', '.join(CALL_TYPES)}, got {_show(text)}")
            elif text in found:
                self.problem(key, f"{text} is listed twice")
            else:
                found.append(CallType(text))
        if not items:
            t.problem("call_types", "is empty: this integrator could place no call")
        return frozenset(found) if found else DEFAULT_CALL_TYPES

    def positive_number(self, t: _Table, name: str, default: float) -> float:
        value = t.raw(name)
        if value is _MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            t.problem(name, f"must be a positive number, got {_show(value)}")
            return default
        return float(value)

    # Across sections: no two listeners may want the same port.

    def check_agent_integrators(
        self,
        extensions: ExtensionsConfig,
        agents: Mapping[str, AgentConfig],
        integrators: Mapping[str, IntegratorConfig],
    ) -> None:
        """Every agent that can place calls (a registrar agent with a
        password) belongs to exactly one integrator."""
        for ext, agent in agents.items():
            key = _dotted("agents", ext, "integrator")
            if agent.integrator is not None:
                named = integrators.get(agent.integrator)
                if named is None:
                    self.problem(key, f"no integrator is named {_show(agent.integrator)}")
                elif not may_use_agent(named, ext):
                    self.problem(
                        key,
                        f"integrators.{agent.integrator}.allowed_agents does not admit {ext}",
                    )
                continue
            if extensions.mode != "registrar" or agent.password is None:
                continue
            admitting = [i.name for i in integrators.values() if may_use_agent(i, ext)]
            if len(admitting) > 1:
                self.problem(
                    key,
                    f"is missing: integrators {', '.join(admitting)} all admit {ext}; "
                    "name the one whose calls this agent places",
                )

    def check_ports(
        self, server: ServerConfig, sip: SipConfig, integrators: Mapping[str, IntegratorConfig]
    ) -> None:
        stream: list[tuple[str, int, str]] = [
            (server.http_host, server.http_port, "server.http_port")
        ]
        stream += [
            (server.http_host, i.http_port, _dotted("integrators", i.name, "http_port"))
            for i in integrators.values()
            if i.http_port is not None
        ]
        operator = server.operator_address
        if operator is not None:
            for host, port, where in stream:
                if port == operator[1] and _hosts_overlap(host, operator[0]):
                    self.problem("server.operator_listen", f"port {port} is also taken by {where}")
            stream.append((operator[0], operator[1], "server.operator_listen"))
        datagram: list[tuple[str, int, str]] = []
        for index, entry in enumerate(_safe_listeners(sip)):
            where = f"sip.listen[{index}] ({entry})"
            (stream if entry.is_stream else datagram).append((entry.bind_host, entry.port, where))
        for binds in (stream, datagram):
            for i, (host, port, where) in enumerate(binds):
                for other_host, other_port, other in binds[:i]:
                    if not where.startswith("sip."):
                        break  # HTTP against HTTP: checked with the integrators
                    if port == other_port and _hosts_overlap(host, other_host):
                        self.problem(
                            where.split(" ")[0],
                            f"port {port} is also taken by {other}",
                        )
                        break


_INTEGRATOR_KEYS: Final = (
    "api_keys",
    "allow_keyless_loopback",
    "http_port",
    "redis",
    "webhook_url",
    "webhook_secret",
    "clid_pool",
    "default_outbound_id",
    "call_types",
    "allowed_agents",
    "allowed_outbound_ids",
    "max_cps",
    "max_concurrent",
    "agent_ring_timeout",
    "callee_ring_timeout",
    "max_call_duration",
)


def _zero_hint(text: str, accept: Callable[[str], bool]) -> str:
    if text.isdigit() and (accept("0" + text) or accept("00" + text)):
        return " (is a leading 0 missing? a TOML integer cannot keep one: quote numbers)"
    return ""


def worker_port_clash(
    server: ServerConfig, sip: SipConfig, integrators: Mapping[str, IntegratorConfig]
) -> str | None:
    """What a worker of ``server.workers`` beyond the first would bind that
    another binding of the node takes (worker *i* binds every SIP listener
    and the operator listener at its port plus *i*; the HTTP ports are
    shared), or ``None``.  Worker 0's own bindings are ``check_ports``'s."""
    taken: dict[tuple[bool, int], list[tuple[str, str]]] = {}
    taken.setdefault((True, server.http_port), []).append((server.http_host, "server.http_port"))
    for integrator in integrators.values():
        if integrator.http_port is not None:
            where = _dotted("integrators", integrator.name, "http_port")
            taken.setdefault((True, integrator.http_port), []).append((server.http_host, where))
    binds = [
        (entry.is_stream, entry.bind_host, entry.port, f"sip.listen[{index}] ({entry})")
        for index, entry in enumerate(_safe_listeners(sip))
    ]
    operator = server.operator_address
    if operator is not None:
        binds.append((True, operator[0], operator[1], "server.operator_listen"))
    for stream, host, port, where in binds:
        taken.setdefault((stream, port), []).append((host, where))
    for worker in range(1, server.workers):
        for stream, host, port, where in binds:
            if not port:
                continue  # the system picks a free port for each worker
            mine = port + worker
            name = f"worker {worker}'s {where.split(' ')[0]} (port {mine})"
            for other_host, other in taken.get((stream, mine), []):
                if _hosts_overlap(host, other_host):
                    return f"{name} is also taken by {other}"
            taken.setdefault((stream, mine), []).append((host, name))
    return None


def _safe_listeners(sip: SipConfig) -> Iterator[SipListen]:
    for item in sip.listen:
        try:
            yield _parse_listen(item)
        except ValueError:
            continue


def _with_value(problem: str | None, value: str) -> str | None:
    return None if problem is None else f"{problem}, got {_show(value)}"


def _host_port_problem(text: str) -> str | None:
    parsed = _split_host_port(text)
    return f"{parsed}, got {_show(text)}" if isinstance(parsed, str) else None


def _event_loop_problem(text: str) -> str | None:
    if text not in EVENT_LOOPS:
        return f"must be one of {', '.join(EVENT_LOOPS)}, got {_show(text)}"
    if text == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return 'uvloop is not installed; install it or set event_loop = "asyncio"'
    return None


def _operator_listen_problem(text: str) -> str | None:
    if not text:
        return None  # no operator listener
    problem = _host_port_problem(text)
    return None if problem is None else f"must be HOST:PORT (IPv6 in brackets) or empty: {problem}"


def _http_host_problem(host: str) -> str | None:
    if _valid_host(host):
        return None
    return f"must be a host name or an IP address (IPv6 without brackets), got {_show(host)}"


def _public_host_problem(host: str) -> str | None:
    if _valid_host(host) or (
        host.startswith("[") and host.endswith("]") and _valid_host(host[1:-1])
    ):
        return None
    return f"must be a host name or an IP address, got {_show(host)}"


def _listen_problem(text: str) -> str | None:
    transport, sep, rest = text.partition(":")
    if not sep:
        return "must look like TRANSPORT:HOST:PORT, like udp:0.0.0.0:5060"
    if transport not in TRANSPORTS:
        return f"the transport must be one of {', '.join(TRANSPORTS)}"
    parsed = _split_host_port(rest)
    return parsed if isinstance(parsed, str) else None


def _database_problem(url: str) -> str | None:
    forms = "use sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://..."
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite://")
        if rest == ":memory:" or url == "sqlite:///:memory:":
            return None
        if not url.startswith("sqlite:///") or len(rest) < 2 or "?" in rest or "#" in rest:
            return f"not a SQLite URL this server reads: {forms}"
        return None
    if url.startswith(("postgresql://", "postgres://")):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return "the PostgreSQL URL has a bad host or port"
        if not parts.netloc and not parts.path.strip("/") and not parts.query:
            return "the PostgreSQL URL names no server or database"
        return None
    return f"unsupported database URL: {forms}"


def _url_parts(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts


def _redis_problem(url: str) -> str | None:
    shown = _redacted(url)
    if not url.startswith(("redis://", "rediss://")):
        return f"must be a redis:// (or rediss://) URL like redis://127.0.0.1:6379/3, got {shown}"
    parts = _url_parts(url)
    if parts is None:
        return f"has a bad host or port, got {shown}"
    if not parts.hostname:
        return f"names no host, got {shown}"
    if parts.port == 0:
        return f"the port must be 1-65535, got {shown}"
    db = parts.path.strip("/") if parts.path != "/" else "0"
    if parts.path and not (db.isascii() and db.isdigit()):
        return f"the database after the / must be a number, got {shown}"
    if parts.query or parts.fragment:
        return f"must not have ?query or #fragment, got {shown}"
    return None


def _standard_secret_ok(secret: str) -> bool:
    """A ``whsec_`` secret must be base64 (its bytes are the HMAC key)."""
    if not secret.startswith("whsec_"):
        return True
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except binascii.Error:
        return False
    return len(key) >= MIN_SECRET_LENGTH


def _webhook_problem(url: str) -> str | None:
    if not url.startswith(("http://", "https://")):
        return f"must be an http:// or https:// URL, got {_redacted(url)}"
    parts = _url_parts(url)
    if parts is None or not parts.hostname:
        return f"has a bad host or port, got {_redacted(url)}"
    if parts.port == 0:
        return f"the port must be 1-65535, got {_redacted(url)}"
    return None
