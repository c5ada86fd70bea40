"""Wiring: configuration → store, SIP user agent, call control, HTTP
listeners.  :class:`Click2Dial` is the running service; ``cli.py`` and the
tests start it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn

from . import __version__
from .api.app import MAX_BODY, build_app, error_response
from .api.auth import Authenticator
from .api.phone import PhoneSite, WebSocketListener
from .backlog import ACCEPT_BATCH, widen_backlog
from .calls.admission import Admission, inherited_bucket
from .calls.agent_calls import AgentCalls
from .calls.cdr import cdr_payload
from .calls.control import CallController, Destination, TelephonySettings
from .calls.ending import replay_spool
from .calls.flow import Leg
from .calls.outcome import Outcome
from .calls.service import HANGUP_STORE_WAIT, CallService
from .cluster import Cluster
from .cluster_bus import ClusterBus, HangupReply
from .config import Config, IntegratorConfig
from .health import Readiness, RtpEngineHealth, StoreHealth
from .limits import (
    AcceptErrorLog,
    BodyLimit,
    FdBudget,
    HttpLimits,
    fd_budget,
    http_protocol,
    log_budget,
)
from .media.rtpengine import RtpEngine
from .metrics import MetricFamily, Metrics
from .notify import Notifier
from .operator import build_operator_app
from .registrar import Registrar, RegistrarConfig, binding_target
from .sip.aio import Listen, UserAgent, UserAgentConfig
from .sip.message import Request
from .sip.transaction import ServerTransaction, TimerConfig
from .sip.uri import parse_uri
from .store import CallRecord, Notification, Store, open_store

log = logging.getLogger(__name__)
#: One line per call placed, answered and ended, with structured fields.
call_log = logging.getLogger("click2dial.calls")

#: Seconds the start waits for the answers to the BYEs of crash recovery.
RECOVERY_BYE_WAIT = 2.0
#: Spare CSeq numbers for the BYE of a recovered dialog, on top of one per
#: second of the call's age.  The dialog was saved when it was established;
#: in-dialog requests sent after that (media re-INVITEs, relayed re-INVITEs
#: and UPDATEs, session refreshes, OPTIONS probes) took the numbers above the
#: saved one, and a peer refuses a BYE whose CSeq is not above the last it
#: saw.  Periodic requests come at most every 5 s per leg (the shortest
#: probe interval), so one number per second of age covers them many times
#: over, and the constant covers bursts of relayed offers.
RECOVERY_CSEQ_SPARE = 1000


def _cseq_skip(record: CallRecord, now: float) -> int:
    return RECOVERY_CSEQ_SPARE + max(0, int(now - record.created_at))


def _bye_result(task: asyncio.Task[int]) -> str:
    if not task.done():
        task.add_done_callback(_log_late_bye)  # its outcome is logged when it comes
        return "sent, no answer yet"
    if task.cancelled() or task.exception() is not None:
        return f"not sent ({task.exception() if not task.cancelled() else 'cancelled'})"
    return str(task.result())


def _log_late_bye(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("recovery BYE failed: %s", task.exception())


def _tcp_socket(host: str) -> socket.socket:
    """A listening socket for uvicorn.  IPPROTO_TCP must be named: asyncio
    sets TCP_NODELAY only on sockets that say they are TCP, and without it a
    response written in two parts on a kept-alive connection waits for the
    client's delayed ACK (40 ms on Linux)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)


async def _addresses(hosts: Iterable[str]) -> frozenset[str]:
    """The hosts as written and every address they resolve to."""
    found: set[str] = set()
    for written in hosts:
        host = written.strip("[]")
        found.add(host)
        with contextlib.suppress(OSError):
            for info in await asyncio.get_running_loop().getaddrinfo(host, None):
                found.add(str(info[4][0]))
    return frozenset(found)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us: several of them
    run in one process, one per HTTP port."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class Listener:
    host: str
    port: int
    integrators: list[IntegratorConfig]
    server: _Server | None = None
    task: asyncio.Task[None] | None = None
    bound_port: int = 0
    socket: socket.socket | None = None


@dataclass
class Click2Dial:
    config: Config
    timers: TimerConfig = field(default_factory=TimerConfig)
    store: Store | None = None
    ua: UserAgent | None = None
    controller: CallController | None = None
    service: CallService | None = None
    admission: Admission | None = None
    listeners: list[Listener] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    notifier: Notifier | None = None
    operator: Listener | None = None
    store_health: StoreHealth | None = None
    rtpengine: RtpEngine | None = None
    """The media relay's client, when ``[sip] rtpengine`` is set."""
    rtpengine_health: RtpEngineHealth | None = None
    fd: FdBudget | None = None
    http_limits: HttpLimits | None = None
    registrar: Registrar | None = None
    cluster: Cluster | None = None
    """This node's heartbeat and the takeover of dead nodes' calls."""
    bus: ClusterBus | None = None
    """Requests from and to the other nodes (a shared store only)."""
    edge_hosts: frozenset[str] = frozenset()
    """The addresses of ``[sip] edges`` (resolved at start)."""
    _stopping: bool = False

    @property
    def integrators(self) -> dict[str, IntegratorConfig]:
        return dict(self.config.integrators)

    def notifications_for(
        self, record: CallRecord, outcome: Outcome, ended_at: float
    ) -> list[Notification]:
        """The CDR outbox rows of an ended call, one per integrator target."""
        integrator = self.config.integrators.get(record.integrator)
        if integrator is None or not integrator.has_targets:
            return []
        document = {"type": "cdr", "payload": cdr_payload(record, outcome, ended_at)}
        targets = []
        if integrator.redis:
            targets.append("redis")
        if integrator.webhook_url:
            targets.append("webhook")
        return [
            Notification(
                integrator=record.integrator,
                kind="cdr",
                call_ref=record.call_ref,
                payload=document,
                target=target,
                created_at=ended_at,
            )
            for target in targets
        ]

    async def start(self) -> None:
        cfg = self.config
        self._apply_fd_budget()
        # The workers of a node share its SQLite file (click2dial.workers).
        self.store = open_store(cfg.server.database, shared=cfg.server.worker is not None)
        await self.store.open()
        self.cluster = Cluster(
            self.store,
            cfg.server.node_id,
            heartbeat_interval=cfg.server.heartbeat_interval,
            takeover_after=cfg.server.takeover_after,
            takeover=self.store.shared,
            recover=self._recover_taken_over,
        )
        await self.cluster.start()
        self.store_health = StoreHealth(self.store)
        self.store_health.start()
        if cfg.sip.rtpengine is not None:
            self.rtpengine = RtpEngine(cfg.sip.rtpengine)
            self.rtpengine_health = RtpEngineHealth(self.rtpengine)
            self.rtpengine_health.start()
        self.notifier = self.make_notifier()
        listen = [Listen.parse(item) for item in cfg.sip.listen]
        self.ua = UserAgent(
            UserAgentConfig(
                listen,
                public_host=cfg.sip.public_host,
                user_agent=f"Click2Dial/{__version__}",
                timers=self.timers,
                session_expires=cfg.sip.session_expires,
                min_se=cfg.sip.min_se,
                tls_certificate=cfg.sip.tls_certificate,
                tls_private_key=cfg.sip.tls_private_key,
                tls_ca_file=cfg.sip.tls_ca_file,
                **await self._sip_limits(),
            )
        )
        await self.ua.start()
        self.ua.on_request = self._sip_request
        if cfg.extensions.mode == "registrar":
            self.registrar = Registrar(
                self.store,
                {ext: agent.password for ext, agent in cfg.agents.items() if agent.password},
                RegistrarConfig(
                    realm=cfg.sip.public_host,
                    node_id=cfg.server.node_id,
                    edges=self.edge_hosts,
                    # The same on every node: any node accepts the others' nonces.
                    nonce_secret=(
                        cfg.extensions.nonce_secret.encode()
                        if cfg.extensions.nonce_secret
                        else secrets.token_bytes(32)
                    ),
                    algorithms=cfg.extensions.digest_algorithms,
                ),
            )
            await self.registrar.start()
        settings = TelephonySettings(
            public_host=cfg.sip.public_host,
            trunk_uri=parse_uri(cfg.trunk.uri),
            trunk_username=cfg.trunk.username,
            trunk_password=cfg.trunk.password,
            extensions_mode=cfg.extensions.mode,
            pbx_uri=parse_uri(cfg.extensions.pbx_uri) if cfg.extensions.pbx_uri else None,
            agent_contacts={
                ext: parse_uri(agent.contact) for ext, agent in cfg.agents.items() if agent.contact
            },
            agent_auto_answer={ext: agent.auto_answer for ext, agent in cfg.agents.items()},
            agent_nat={ext: agent.nat for ext, agent in cfg.agents.items()},
            node_id=cfg.server.node_id,
            probe_interval=float(cfg.sip.probe_interval),
            registered=self._registered if self.registrar is not None else None,
        )
        self.controller = CallController(
            settings=settings,
            store=self.store,
            ua=self.ua,
            rtpengine=self.rtpengine,
            notifications_for=self.notifications_for,
            on_call_ended=self._call_ended,
            on_answered=self._call_answered,
            on_agent_connected=self.notifier.agent_connected,
            media_host=self.ua.address("udp")[0],
            spool=Path(cfg.server.spool),
        )
        controller, ua = self.controller, self.ua
        self.admission = Admission(
            cfg.admission,
            live_calls=lambda: len(controller.live),
            transactions=lambda: ua.endpoint.transaction_count,
            # The node's rate is one bucket for all its workers.
            bucket=inherited_bucket() if cfg.server.worker is not None else None,
        )
        self.admission.start()
        self.service = CallService(
            store=self.store,
            controller=self.controller,
            node_id=cfg.server.node_id,
            ready=self.ready,
            on_placed=self._call_placed,
            admission=self.admission,
            lookup=self._lookup if self.registrar is not None else None,
        )
        if self.store.shared:
            # Several nodes may share the store: a DELETE of this node's
            # call may come through another node (and the reverse).
            self.bus = ClusterBus(self.store, cfg.server.node_id, self._bus_hangup)
            await self.bus.start()
            self.service.bus = self.bus
        if self.registrar is not None:
            # Agents' phones and softphones place calls by INVITE (SPEC §4).
            self.ua.on_invite = AgentCalls(
                registrar=self.registrar,
                service=lambda: self.service,
                integrator_of=cfg.agent_integrator,
                host=cfg.sip.public_host,
            ).on_invite
        self.metrics.add_families(self._scrape_families)
        self.notifier.on_webhook_attempt = self._webhook_attempt
        await self.replay_spool()
        await self.recover()
        await self.notifier.start()
        self.notifier.wake()  # deliver what recover() and earlier runs left
        self.cluster.start_takeovers()
        await self._start_http()
        await self._start_operator()

    async def _bus_hangup(self, call_ref: str, side: str) -> HangupReply:
        """Another node's DELETE of a call of this node: as our own DELETE
        does, decide the end and wait briefly for it to be stored."""
        assert self.controller is not None
        side = side if side in ("api", "system") else "api"
        running = await self.controller.hangup(call_ref, HANGUP_STORE_WAIT, side=side)
        return HangupReply(running, self.controller.ending(call_ref))

    async def _lookup(self, extension: str) -> None:
        """Refresh a registering extension's bindings before it is rung."""
        agent = self.config.agents.get(extension)
        if self.registrar is not None and (agent is None or agent.contact is None):
            await self.registrar.lookup(extension)

    def _registered(self, agent: str) -> list[Destination]:
        """The agent's registered contacts, each reached over its flow."""
        assert self.registrar is not None
        return [
            Destination(parse_uri(b.contact), None, True, binding_target(b))
            for b in self.registrar.contacts(agent)
        ]

    async def _sip_request(self, request: Request, tx: ServerTransaction) -> None:
        """Requests outside any dialog other than INVITE."""
        ua = self.ua
        assert ua is not None
        method = request.method
        if method == "REGISTER" and self.registrar is not None:
            await self.registrar.on_register(
                request, tx, lambda t, status, headers: ua.respond(t, status, headers=headers)
            )
        elif method == "OPTIONS":
            ua.respond(tx, 200, headers=[("Accept", "application/sdp")])
        else:
            ua.respond(tx, 405 if method in ("MESSAGE", "SUBSCRIBE") else 501)

    def _apply_fd_budget(self) -> None:
        """Raise the open-file limit, fit the connection caps below it, log
        the figures once, and log accept() failures once per interval."""
        cfg = self.config
        listeners = 1 + sum(i.http_port is not None for i in cfg.integrators.values())
        listeners += sum(not item.startswith("udp:") for item in cfg.sip.listen)
        self.fd = fd_budget(cfg.server.max_connections, cfg.sip.max_connections, listeners)
        log_budget(self.fd, cfg.server.max_connections, cfg.sip.max_connections)
        AcceptErrorLog().install(asyncio.get_running_loop())
        self.http_limits = HttpLimits(
            max_connections=self.fd.http_connections,
            max_per_source=cfg.server.max_connections_per_source,
            header_timeout=float(cfg.server.header_timeout),
            max_requests=cfg.server.requests_per_connection,
        )

    async def _sip_limits(self) -> dict[str, Any]:
        """The SIP limits of :class:`UserAgentConfig`; the trunk's (and the
        PBX's) addresses, and the SIP edges' (``[sip] edges``: everything
        behind them shares their address), are exempt from them."""
        cfg = self.config
        assert self.fd is not None
        hosts = [parse_uri(uri).host for uri in (cfg.trunk.uri, cfg.extensions.pbx_uri) if uri]
        self.edge_hosts = await _addresses(cfg.sip.edges)
        exempt = await _addresses(hosts) | self.edge_hosts
        return {
            "max_connections": self.fd.sip_connections,
            "idle_timeout": float(cfg.sip.idle_timeout),
            "max_connections_per_source": cfg.sip.max_connections_per_source,
            "idle_timeout_without_dialog": float(cfg.sip.idle_timeout_without_dialog),
            "request_rate": float(cfg.sip.request_rate),
            "request_burst": cfg.sip.request_burst,
            "udp_receive_buffer": cfg.sip.udp_receive_buffer,
            "exempt_hosts": frozenset(exempt),
        }

    async def replay_spool(self) -> int:
        """Write the call ends an earlier shutdown could not store (a store
        outage), with their recorded times, before anything else."""
        assert self.store is not None
        spool = Path(self.config.server.spool)
        written = await replay_spool(self.store, spool)
        for record in written:
            log.warning("call %s: end kept through the restart is now stored", record.call_ref)
        return len(written)

    async def recover(self) -> int:
        """Close the calls a crash left live on this node: BYE to each leg
        whose dialog was saved, and a ``failed`` CDR."""
        assert self.store is not None
        records = await self.store.live_calls(self.config.server.node_id)
        return await self.recover_calls(records, "Click2Dial restarted during the call")

    async def _recover_taken_over(self, records: list[CallRecord], reason: str) -> int:
        ended = await self.recover_calls(records, reason)
        if self.notifier is not None:
            self.notifier.wake()  # their CDRs were committed with their ends
        return ended

    async def recover_calls(self, records: list[CallRecord], reason: str) -> int:
        """Close calls whose node is gone (this node before a crash, or a
        dead node taken over): BYE to each leg whose dialog was saved, then
        a ``failed`` CDR saying ``reason``, ended now: the parties' dialogs
        stayed up until these BYEs, so that is when the call ended.  A
        call already ended is left alone; how many this ended."""
        assert self.store is not None and self.ua is not None
        if not records:
            return 0
        now = time.time()
        byes: dict[str, dict[str, asyncio.Task[int]]] = {}
        for record in records:
            saved = await self.store.dialogs_of(record.call_ref)
            byes[record.call_ref] = {
                leg: asyncio.create_task(
                    self.ua.bye_restored(state, cseq_skip=_cseq_skip(record, now))
                )
                for leg, state in saved.items()
            }
        tasks = [task for legs in byes.values() for task in legs.values()]
        if tasks:
            # The BYEs go out at once, in parallel; their answers are waited
            # for briefly (the endpoint keeps retransmitting after that), so a
            # dead peer cannot hold up the start.
            await asyncio.wait(tasks, timeout=RECOVERY_BYE_WAIT)
        count = 0
        for record in records:
            outcome = Outcome.failure(reason)
            ended_at = max(record.created_at, time.time())
            done = await self.store.finish_call(
                record.call_ref,
                ended_at=ended_at,
                end_reason=outcome.end_reason,
                end_code=outcome.end_code,
                sip_status=None,
                sip_reason=outcome.sip_reason,
                hangup_side=outcome.hangup_side,
                notifications=self.notifications_for(record, outcome, ended_at),
            )
            if done is not None:
                count += 1
                sent = ", ".join(
                    f"{leg} {_bye_result(task)}" for leg, task in byes[record.call_ref].items()
                )
                log.warning("call %s closed as failed (%s); BYE: %s", record.call_ref, reason,
                            sent or "none (no leg was established)")  # fmt: skip
        return count

    async def _start_http(self) -> None:
        cfg = self.config
        shared = [i for i in cfg.integrators.values() if i.http_port is None]
        groups = [Listener(cfg.server.http_host, cfg.server.http_port, shared)]
        for integrator in cfg.integrators.values():
            if integrator.http_port is not None:
                groups.append(Listener(cfg.server.http_host, integrator.http_port, [integrator]))
        assert self.service is not None
        phone = PhoneSite(self.websocket_listeners, sip_domain=cfg.sip.public_host)
        for listener in groups:
            app = build_app(
                self.service,
                Authenticator(listener.integrators, trusted_proxies=cfg.server.trusted_proxies),
                ready=self.ready,
                readiness=self.readiness,
                notifier=self.notifier,
                phone=phone,
            )
            sock = _tcp_socket(listener.host)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if cfg.server.worker is not None:
                # The workers of one node share its HTTP ports (click2dial.workers).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((listener.host, listener.port))
            listener.bound_port = sock.getsockname()[1]
            assert self.http_limits is not None
            limited = BodyLimit(
                app,
                max_body=MAX_BODY,
                body_timeout=float(cfg.server.body_timeout),
                reject=error_response,
            )
            server = _Server(
                uvicorn.Config(
                    limited,
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    log_config=None,  # uvicorn's lines go through our handler and format
                    http=http_protocol(self.http_limits),
                    timeout_keep_alive=cfg.server.keep_alive_timeout,
                    backlog=ACCEPT_BATCH,
                )
            )
            listener.socket = sock
            listener.server = server
            listener.task = asyncio.get_running_loop().create_task(server.serve([sock]))
            self.listeners.append(listener)
        for listener in self.listeners:
            assert listener.server is not None
            while not listener.server.started:
                if listener.task is not None and listener.task.done():
                    listener.task.result()
                await asyncio.sleep(0.01)
            if listener.socket is not None:
                widen_backlog(listener.socket)
            log.info("HTTP listening on %s:%d for %s", listener.host, listener.bound_port,
                     ", ".join(i.name for i in listener.integrators) or "nobody")  # fmt: skip

    def websocket_listeners(self) -> list[WebSocketListener]:
        """The ``ws:``/``wss:`` SIP listeners, with their bound ports: where
        the softphone page registers."""
        found: list[WebSocketListener] = []
        for item in self.config.sip.listeners:
            if item.transport not in ("ws", "wss"):
                continue
            port = item.port
            if self.ua is not None and not port:
                port = self.ua.address(item.transport)[1]
            kind: Literal["ws", "wss"] = "wss" if item.transport == "wss" else "ws"
            found.append(WebSocketListener(kind, item.host, port))
        return found

    def ready(self) -> bool:
        return self.ua is not None and self.store is not None and not self._stopping

    def readiness(self) -> Readiness:
        """Each part ``/readyz`` reports; cheap (no I/O: the store's state is
        the background probe's)."""
        checks: dict[str, str] = {"service": "stopping" if self._stopping else "ok"}
        health = self.store_health
        if health is None or self.store is None:
            checks["store"] = "not open"
        else:
            checks["store"] = "ok" if health.reachable else "unreachable"
        if self.ua is None:
            checks["sip"] = "not started"
        else:
            closed = sorted(name for name, up in self.ua.listening().items() if not up)
            checks["sip"] = f"not listening on {', '.join(closed)}" if closed else "ok"
        if self.config.sip.rtpengine is not None:
            rtpengine = self.rtpengine_health
            checks["rtpengine"] = "not started" if rtpengine is None else rtpengine.state
        return Readiness(checks)

    def make_notifier(self) -> Notifier:
        """The outbox worker (a hook: tests shorten its back-off)."""
        assert self.store is not None
        return Notifier(
            self.store,
            self.config.integrators,
            webhook_allow_link_local=self.config.server.webhook_allow_link_local,
        )

    async def _call_ended(self, record: CallRecord) -> None:
        self.metrics.call_ended(record.integrator, record.end_reason or "failed")
        ended = record.ended_at or time.time()
        answered = record.callee_answered_at
        call_log.info("call ended", extra={"fields": {
            "call_ref": record.call_ref, "integrator": record.integrator, "agent": record.agent,
            "end_reason": record.end_reason, "end_code": record.end_code,
            "hangup_side": record.hangup_side, "sip_status": record.sip_status,
            "duration_s": round(ended - record.created_at, 3),
            "talk_s": round(ended - answered, 3) if answered is not None else 0.0,
        }})  # fmt: skip
        integrator = self.config.integrators.get(record.integrator)
        if self.notifier is not None and integrator is not None and integrator.has_targets:
            self.notifier.wake()  # its CDR was committed with the end: send it now

    def _call_placed(self, record: CallRecord) -> None:
        self.metrics.call_placed(record.integrator)
        call_log.info("call placed", extra={"fields": {
            "call_ref": record.call_ref, "integrator": record.integrator, "agent": record.agent,
            "call_type": record.call_type, "source": record.source,
        }})  # fmt: skip

    def _call_answered(self, record: CallRecord, leg: Leg) -> None:
        fields = {"call_ref": record.call_ref, "integrator": record.integrator,
                  "agent": record.agent}  # fmt: skip
        agent_at = record.agent_answered_at
        if agent_at is None:
            return
        if leg is Leg.AGENT:
            setup = max(0.0, agent_at - record.created_at)
            self.metrics.agent_setup.labels(record.integrator).observe(setup)
            call_log.debug("agent answered", extra={"fields": {**fields, "agent_setup_s":
                           round(setup, 3)}})  # fmt: skip
        elif record.callee_answered_at is not None:
            setup = max(0.0, record.callee_answered_at - agent_at)
            self.metrics.callee_setup.labels(record.integrator).observe(setup)
            call_log.info("call answered", extra={"fields": {
                **fields, "agent_setup_s": round(agent_at - record.created_at, 3),
                "callee_setup_s": round(setup, 3),
            }})  # fmt: skip

    def _webhook_attempt(self, integrator: str, seconds: float, delivered: bool) -> None:
        outcome = "delivered" if delivered else "failed"
        self.metrics.webhook_latency.labels(integrator, outcome).observe(seconds)

    def _scrape_families(self) -> list[MetricFamily]:
        """The gauges of the SIP endpoint and the notifier's counters."""
        endpoint = self.ua.endpoint if self.ua is not None else None
        return [
            ("click2dial_sip_parse_errors_total", "counter", "Malformed SIP messages dropped.",
             [({}, float(endpoint.parse_errors if endpoint else 0))]),
            ("click2dial_sip_transactions", "gauge", "Open SIP transactions.",
             [({}, float(endpoint.transaction_count if endpoint else 0))]),
            ("click2dial_sip_dialogs", "gauge", "Known SIP dialogs.",
             [({}, float(len(endpoint.dialogs) if endpoint else 0))]),
            ("click2dial_admission_refused_total", "counter",
             "New calls refused with 503 because the node was at capacity, by reason.",
             [({"reason": reason}, float(count))
              for reason, count in (self.admission.refused if self.admission else {}).items()]),
            ("click2dial_event_loop_lag_seconds", "gauge",
             "Recent lateness of the event loop (what admission control watches).",
             [({}, self.admission.lag if self.admission else 0.0)]),
            *(self.notifier.metric_families() if self.notifier else []),
        ]  # fmt: skip

    async def scrape(self) -> bytes:
        """The Prometheus exposition, the store's gauges read now."""
        assert self.store is not None
        try:
            live = {name: await self.store.count_live(name) for name in self.config.integrators}
            stats = await self.store.outbox_stats()
        except Exception as exc:
            # The rest is still worth serving; the store's gauges keep their last value.
            log.warning("metrics: the store's gauges could not be read: %s", exc)
        else:
            self.metrics.refresh(live, dict(stats))
        return self.metrics.exposition()

    def operator_calls(self) -> list[dict[str, Any]]:
        """The calls live on this node, oldest first (``click2dial calls``)."""
        assert self.controller is not None
        now = time.time()
        calls = []
        for live in sorted(self.controller.live.values(), key=lambda c: c.record.created_at):
            record = live.record
            calls.append({
                "call_ref": record.call_ref, "integrator": record.integrator,
                "agent": record.agent, "callee": record.callee,
                "state": "ending" if live.end is not None else record.state,
                "created_at": record.created_at, "age": round(now - record.created_at, 1),
            })  # fmt: skip
        return calls

    async def operator_hangup(self, call_ref: str) -> dict[str, Any] | None:
        """Hang up a call live on this node (``click2dial hangup``)."""
        assert self.controller is not None
        if not await self.controller.hangup(call_ref, HANGUP_STORE_WAIT, side="system"):
            return None
        state = "ending" if self.controller.ending(call_ref) else "ended"
        return {"call_ref": call_ref, "status": state}

    async def _start_operator(self) -> None:
        address = self.config.server.operator_address
        if address is None:
            return
        host, port = address
        app = build_operator_app(
            metrics=self.scrape, live_calls=self.operator_calls, hangup=self.operator_hangup
        )
        sock = _tcp_socket(host)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        listener = Listener(host, port, [], bound_port=sock.getsockname()[1])
        server = _Server(
            uvicorn.Config(
                app, log_level="warning", access_log=False, lifespan="off", log_config=None
            )
        )
        listener.server = server
        listener.task = asyncio.get_running_loop().create_task(server.serve([sock]))
        self.operator = listener
        while not server.started:
            if listener.task.done():
                listener.task.result()
            await asyncio.sleep(0.01)
        log.info("operator listener (metrics, live calls) on %s:%d", host, listener.bound_port)

    def http_port(self, integrator: str | None = None) -> int:
        for listener in self.listeners:
            if integrator is None or any(i.name == integrator for i in listener.integrators):
                return listener.bound_port
        raise KeyError(integrator)

    async def stop(self) -> None:
        self._stopping = True
        if self.cluster is not None:
            await self.cluster.close()
        for listener in [*self.listeners, *([self.operator] if self.operator else [])]:
            if listener.server is not None:
                listener.server.should_exit = True
        for listener in [*self.listeners, *([self.operator] if self.operator else [])]:
            if listener.task is not None:
                with contextlib.suppress(Exception):
                    await listener.task
        if self.admission is not None:
            await self.admission.close()
        if self.bus is not None:
            await self.bus.close()
        if self.controller is not None:
            await self.controller.close()
        if self.notifier is not None:
            await self.notifier.close()
        if self.registrar is not None:
            await self.registrar.close()
        if self.ua is not None:
            await self.ua.close()
        if self.store_health is not None:
            await self.store_health.close()
        if self.rtpengine_health is not None:
            await self.rtpengine_health.close()
        if self.rtpengine is not None:
            await self.rtpengine.close()
        if self.store is not None:
            await self.store.close()
