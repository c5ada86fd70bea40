"""Several nodes behind the Kamailio edge, as real processes: three
``click2dial serve`` nodes on one PostgreSQL schema and one Redis, the shipped
Kamailio configuration dispatching to them, sipp agents and a sipp trunk.

Calls are placed through the nodes' HTTP ports in turn; agents' REGISTERs go
to Kamailio's port (it dispatches them to a node, and every node reaches the
registered phone back through it: a sipp phone over UDP, baresip over TCP);
a SIGKILLed node is taken out of the dispatcher's rotation by its OPTIONS
probes, and a survivor ends its live calls.  The nodes' own INVITEs to the
trunk and to agents with a static contact go directly.

Issue 12's acceptance, one test each: calls in turn with one CDR each; a
DELETE through a node that does not own the call and the same GET through
every node; ``max_concurrent`` and a busy agent across the nodes; the
SIGKILL of a node with live calls; a registered agent reached from every
node.  The trunk hangs up after ``talk_ms`` except on calls to
``STAY_CALLEE``, which it leaves to the test to end (``HELD_AGENTS`` ring a
sipp phone that each test starts on ``Cluster.held_port``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest

from click2dial.notify import CDR_LIST
from click2dial.store import open_store
from tests.e2e.baresip import Baresip
from tests.e2e.kamailio import Kamailio
from tests.e2e.support import ACME_KEY, BETA_KEY, config_text, drop_pg_schema, pg_schema_url
from tests.e2e.test_durability import wait_dialogs_saved
from tests.e2e.test_process import PYTHON, wait_http
from tests.notify.support import RedisServer, brpop_all
from tests.processes import stop
from tests.sipp.harness import Sipp, free_port, free_port_both

PASSWORD = "s3cret-1001"
#: Extensions with a static contact (the sipp agent): enough that no agent is
#: still on its previous call when its turn comes again.
STATIC_AGENTS = [str(2000 + n) for n in range(150)]
#: Extensions whose static contact is ``Cluster.held_port``, where a test
#: runs a sipp phone of its own, so that it can count that phone's calls.
HELD_AGENTS = [str(3000 + n) for n in range(10)]
#: Calls to this number stay up until Click2Dial's BYE (the trunk's
#: ``stay_callee``); the trunk logs ``STAY-BYE callref=...`` for each.
STAY_CALLEE = "0829999999"
#: Quick liveness, so that a dead node's calls end within seconds.
HEARTBEAT = 0.5
TAKEOVER_AFTER = 2.0
#: The concurrency limit of the integrator ``beta`` (acme's is out of reach).
BETA_MAX_CONCURRENT = 3
AUTH = {"Authorization": f"Bearer {ACME_KEY}"}
BETA = {"Authorization": f"Bearer {BETA_KEY}"}


@dataclass
class Node:
    node_id: str
    base: str
    sip_port: int
    process: Popen[bytes]
    log: Path


@dataclass
class Cluster:
    nodes: list[Node]
    kamailio: Kamailio
    redis: RedisServer
    database: str
    trunk: Sipp
    held_port: int


def node_config(
    tmp: Path, node_id: str, database: str, sip_port: int, http_port: int, **peers: Any
) -> Path:
    agents = "".join(
        f'\n[agents."{ext}"]\ncontact = "sip:{ext}@127.0.0.1:{peers["agent_port"]}"\n'
        for ext in STATIC_AGENTS
    ) + "".join(
        f'\n[agents."{ext}"]\ncontact = "sip:{ext}@127.0.0.1:{peers["held_port"]}"\n'
        for ext in HELD_AGENTS
    )
    text = config_text(
        database=database,
        agent_port=None,
        trunk_port=peers["trunk_port"],
        http_port=http_port,
        sip_port=sip_port,
        spool=str(tmp / f"{node_id}-ends.jsonl"),
        agent=f'password = "{PASSWORD}"',
        extension_1002=f'password = "{PASSWORD}"\nintegrator = "acme"',
        # Kamailio relays every phone's requests from its one address.
        sip='edges = ["127.0.0.1"]',
        acme=f'redis = "{peers["redis"]}"\nmax_cps = 500\nmax_concurrent = 1000',
        extra=f"max_cps = 100\nmax_concurrent = {BETA_MAX_CONCURRENT}",
    ).replace(
        'node_id = "e2e-node"',
        f'node_id = "{node_id}"\n'
        f"heartbeat_interval = {HEARTBEAT}\ntakeover_after = {TAKEOVER_AFTER}",
    )
    # The nodes share two cores with everything else: the event-loop lag
    # guard would turn a scheduling hiccup into a 503.
    admission = "[admission]\nmax_loop_lag_ms = 0\n"
    # One nonce secret for all: any node accepts a challenge another issued.
    shared = '[extensions]\nnonce_secret = "scaling-test-nonce-secret"\n'
    path = tmp / f"{node_id}.toml"
    path.write_text(f"{text}{agents}\n{admission}{shared}")
    return path


@contextmanager
def serve(config: Path) -> Iterator[Popen[bytes]]:
    """``click2dial serve`` as a process, its log in a file next to its
    configuration (a pipe nobody reads would stall a busy node)."""
    with open(config.with_suffix(".log"), "wb") as log:
        process = subprocess.Popen(
            [PYTHON, "-m", "click2dial.cli", "serve", "--config", str(config)],
            cwd=config.parent, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop(process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scaling")
    database = asyncio.run(pg_schema_url())
    try:
        with (
            RedisServer() as redis,
            Sipp("agent_answer", calls=100_000, timeout=600, variables={"ring_ms": 0}) as agent,
            Sipp(
                "trunk_answer_hangup",
                calls=100_000,
                timeout=600,
                variables={"ring_ms": 20, "talk_ms": 200, "stay_callee": STAY_CALLEE},
            ) as trunk,
            ExitStack() as stack,
        ):
            nodes, held_port = [], free_port("udp")
            for n in range(1, 4):
                node_id, sip_port, http_port = f"node-{n}", free_port_both(), free_port("tcp")
                config = node_config(tmp, node_id, database, sip_port, http_port,
                                     agent_port=agent.port, trunk_port=trunk.port,
                                     held_port=held_port, redis=redis.url())  # fmt: skip
                process = stack.enter_context(serve(config))
                base = f"http://127.0.0.1:{http_port}"
                # One at a time: the first one migrates the empty schema.
                wait_http(f"{base}/readyz", process, timeout=30)
                nodes.append(Node(node_id, base, sip_port, process, config.with_suffix(".log")))
            kamailio = stack.enter_context(Kamailio([node.sip_port for node in nodes]))
            yield Cluster(nodes, kamailio, redis, database, trunk, held_port)
    finally:
        asyncio.run(drop_pg_schema(database))


async def place_in_turn(
    nodes: list[Node], count: int, rate: float, agents: list[str] = STATIC_AGENTS
) -> list[str]:
    """``count`` calls at ``rate`` per second, on each node in turn; their refs."""
    clients = [httpx.AsyncClient(base_url=n.base, headers=AUTH, timeout=20) for n in nodes]
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int) -> str:
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        body = {"agent": agents[i % len(agents)], "callee": "0821234567",
                "outbound_id": "27110000001"}  # fmt: skip
        response = await clients[i % len(clients)].post("/click2dial/calls", json=body)
        assert response.status_code == 201, (i, response.text)
        ref: str = response.json()["call_ref"]
        return ref

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        for client in clients:
            await client.aclose()


def assert_one_cdr_each(
    cluster: Cluster, refs: list[str], timeout: float, reason: str = "callee_hungup"
) -> None:
    client = cluster.redis.client()
    docs = asyncio.run(brpop_all(client, len(refs), CDR_LIST, timeout=timeout))
    per_call = Counter(doc["payload"]["call_ref"] for doc in docs)
    assert set(per_call) == set(refs) and set(per_call.values()) == {1}, per_call
    reasons = Counter(doc["payload"]["end_reason"] for doc in docs)
    assert reasons == {reason: len(refs)}, reasons
    assert client.llen(CDR_LIST) == 0  # no second CDR of any call


def test_300_calls_placed_on_three_nodes_in_turn_complete_with_one_cdr_each(
    cluster: Cluster,
) -> None:
    started = time.monotonic()
    refs = asyncio.run(place_in_turn(cluster.nodes, 300, rate=40))
    assert len(set(refs)) == 300
    assert_one_cdr_each(cluster, refs, timeout=60)
    assert time.monotonic() - started < 60


def register(kamailio_port: int, phone_port: int, calls: int = 1) -> list[str]:
    """Register extension 1001 at ``127.0.0.1:phone_port`` through Kamailio
    (sipp, ``calls`` times); how each REGISTER was taken."""
    with Sipp("uac_register", remote_port=kamailio_port, port=phone_port, service="1001",
              username="1001", password=PASSWORD, calls=calls) as phone:  # fmt: skip
        phone.assert_success(30)
        return results(phone)


def results(peer: Sipp) -> list[str]:
    return [line.split("RESULT ", 1)[1].strip() for line in peer.logs().splitlines()
            if "RESULT " in line]  # fmt: skip


async def bindings(database: str, agent: str = "1001") -> list[Any]:
    async with open_store(database) as store:
        return list(await store.bindings(agent, now=time.time()))


def wait_ended(base: str, ref: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        call: dict[str, Any] = httpx.get(f"{base}/click2dial/calls/{ref}", headers=AUTH).json()
        if call["status"] == "ended":
            return call
        assert time.monotonic() < deadline, call
        time.sleep(0.05)


def test_a_udp_agent_registered_through_kamailio_is_reachable_from_every_node(
    cluster: Cluster,
) -> None:
    kamailio, phone_port = cluster.kamailio, free_port("udp")
    assert register(kamailio.port, phone_port) == ["registered"]
    # The node that took the REGISTER stored the flow it came over: the edge.
    (binding,) = asyncio.run(bindings(cluster.database))
    assert binding.contact.lower() == f"sip:1001@127.0.0.1:{phone_port};transport=udp"
    assert (binding.transport, binding.host, binding.port) == ("udp", "127.0.0.1", kamailio.port)
    assert binding.node_id in {node.node_id for node in cluster.nodes}
    with Sipp("agent_answer", port=phone_port, calls=len(cluster.nodes),
              variables={"ring_ms": 0}) as answering:  # fmt: skip
        refs = []
        for node in cluster.nodes:
            body = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001"}
            response = httpx.post(f"{node.base}/click2dial/calls", json=body, headers=AUTH)
            assert response.status_code == 201, (node.node_id, response.text)
            refs.append(response.json()["call_ref"])
            ended = wait_ended(node.base, refs[-1])
            assert ended["end_reason"] == "callee_hungup", (node.node_id, ended)
            assert ended["legs"]["agent"]["answered_at"] is not None
        answering.assert_success(20)
        # Each node's INVITE reached the phone through Kamailio (its Via on
        # top, its Record-Route), at the Contact the phone registered.
        invites = [line for line in answering.logs().splitlines() if "INVITE ruri=" in line]
        assert len(invites) == len(cluster.nodes), invites
        assert all(f"ruri=sip:1001@127.0.0.1:{phone_port};" in line for line in invites), invites
        log = answering.messages_log()
        kamailio_via = f"Via: SIP/2.0/UDP 127.0.0.1:{kamailio.port};branch"
        assert log.count(kamailio_via) >= len(cluster.nodes), log[-3000:]
        assert f"Record-Route: <sip:127.0.0.1:{kamailio.port};lr" in log, log[-3000:]
    assert_one_cdr_each(cluster, refs, timeout=20)


def test_a_tcp_phone_registered_through_kamailio_is_rung_over_its_connection_from_every_node(
    cluster: Cluster,
) -> None:
    async def main() -> list[str]:
        with Baresip("1002", PASSWORD, cluster.kamailio.port, transport="tcp") as phone:
            await phone.wait_for(r"1002@127\.0\.0\.1.*200 OK")
            # The edge named the phone's connection in the Contact (an alias
            # with protocol 2, TCP); the node stored it with the edge's flow.
            (binding,) = await bindings(cluster.database, "1002")
            assert f"@127.0.0.1:{phone.port};alias=127.0.0.1~" in binding.contact
            assert "~2;" in binding.contact, binding.contact
            flow = (binding.transport, binding.host, binding.port)
            assert flow == ("udp", "127.0.0.1", cluster.kamailio.port), binding
            refs = []
            async with httpx.AsyncClient(headers=AUTH, timeout=10) as client:
                for node in cluster.nodes:
                    body = {"agent": "1002", "callee": "0821234567", "outbound_id": "27110000001"}
                    response = await client.post(f"{node.base}/click2dial/calls", json=body)
                    assert response.status_code == 201, (node.node_id, response.text)
                    refs.append(response.json()["call_ref"])
                    ended = await asyncio.to_thread(wait_ended, node.base, refs[-1])
                    assert ended["end_reason"] == "callee_hungup", (node.node_id, ended)
                    assert ended["legs"]["agent"]["answered_at"] is not None, phone.output()
            # Every INVITE came over the connection the phone opened to the
            # edge (baresip listens on TCP too, but was never dialled there).
            assert phone.output().count("Call established") >= len(cluster.nodes), phone.output()
            return refs

    refs = asyncio.run(asyncio.wait_for(main(), 90))
    assert_one_cdr_each(cluster, refs, timeout=20)


def place(node: Node, agent: str, auth: dict[str, str] = AUTH) -> httpx.Response:
    """POST a call from ``agent`` to ``STAY_CALLEE`` through ``node``."""
    body = {"agent": agent, "callee": STAY_CALLEE, "outbound_id": "27110000001"}
    return httpx.post(f"{node.base}/click2dial/calls", json=body, headers=auth, timeout=10)


def wait_status(
    node: Node, ref: str, status: str, timeout: float = 20, auth: dict[str, str] = AUTH
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{node.base}/click2dial/calls/{ref}", headers=auth)
        call: dict[str, Any] = response.json()
        if call.get("status") == status:
            return call
        assert time.monotonic() < deadline, (node.node_id, f"never {status}", call)
        time.sleep(0.05)


def same_view(nodes: list[Node], ref: str, status: str) -> dict[str, Any]:
    """Once every node shows ``status``, the body each gives: all the same."""
    for node in nodes:
        wait_status(node, ref, status)
    views = {node.node_id: wait_status(node, ref, status) for node in nodes}
    first, *others = views.values()
    assert all(view == first for view in others), views
    return first


def wait_logged(peer: Sipp, lines: list[str], timeout: float) -> None:
    """Poll the peer's log until it has each of ``lines``."""
    deadline = time.monotonic() + timeout
    while True:
        logs = peer.logs()
        missing = [line for line in lines if line not in logs]
        if not missing:
            return
        assert time.monotonic() < deadline, (missing, logs[-3000:])
        time.sleep(0.05)


def test_delete_through_a_node_that_does_not_own_the_call_ends_it_and_every_node_agrees(
    cluster: Cluster,
) -> None:
    owner, other, _ = cluster.nodes
    with Sipp("agent_answer", port=cluster.held_port, calls=1, timeout=60,
              variables={"ring_ms": 0}) as agent:  # fmt: skip
        placed = place(owner, HELD_AGENTS[0])
        assert placed.status_code == 201, placed.text
        ref = placed.json()["call_ref"]
        talking = same_view(cluster.nodes, ref, "talking")
        assert talking["legs"]["callee"]["state"] == "answered"
        assert talking["legs"]["agent"]["answered_at"] is not None
        deleted = httpx.delete(f"{other.base}/click2dial/calls/{ref}", headers=AUTH, timeout=10)
        assert deleted.status_code == 200, deleted.text
        body = deleted.json()
        assert body["status"] == "ended" and body["end_reason"] == "hungup", body
        assert body["hangup_side"] == "api" and body["end_code"] == 16, body
        # Each sipp peer got its BYE from the owner (the agent answered it).
        agent.assert_success(20)
        wait_logged(cluster.trunk, [f"STAY-BYE callref={ref}"], timeout=10)
    # The answer is the owner's: what every node, the owner too, shows now.
    assert same_view(cluster.nodes, ref, "ended") == body
    assert_one_cdr_each(cluster, [ref], timeout=20, reason="hungup")


def test_max_concurrent_and_a_busy_agent_hold_across_the_three_nodes(cluster: Cluster) -> None:
    nodes, path = cluster.nodes, "/click2dial/calls"
    agents = HELD_AGENTS[1 : 1 + BETA_MAX_CONCURRENT]
    spare = HELD_AGENTS[1 + BETA_MAX_CONCURRENT]
    with Sipp("agent_no_answer", port=cluster.held_port, calls=len(agents),
              timeout=60) as ringing:  # fmt: skip
        refs: list[str] = []
        for i, agent in enumerate(agents):
            placed = place(nodes[i % len(nodes)], agent, auth=BETA)
            assert placed.status_code == 201, (i, placed.text)
            refs.append(placed.json()["call_ref"])
            if i == 0:
                # The agent of node 1's live call is busy on node 2.
                busy = place(nodes[1], agent, auth=BETA)
                assert busy.status_code == 409, busy.text
                error = busy.json()["error"]
                assert error["call_ref"] == refs[0], error
                assert [(e["field"], e["rule"]) for e in error["errors"]] == [("agent", "busy")]
        # All of them ring (live) on the three nodes: the next call is one
        # too many whichever node it reaches.
        wait_logged(ringing, [f"callref={ref}" for ref in refs], timeout=10)
        for node in nodes:
            over = place(node, spare, auth=BETA)
            assert over.status_code == 429, (node.node_id, over.text)
            assert int(over.headers["retry-after"]) >= 1
            assert "concurrent" in over.json()["error"]["title"], over.text
        for i, ref in enumerate(refs):
            # Each through a node that does not own it.
            node = nodes[(i + 1) % len(nodes)]
            ended = httpx.delete(f"{node.base}{path}/{ref}", headers=BETA, timeout=10)
            assert ended.status_code == 200 and ended.json()["status"] == "ended", ended.text
        ringing.assert_success(20)  # each INVITE was CANCELled


def test_a_killed_nodes_calls_end_kamailio_stops_dispatching_to_it_survivors_keep_working(
    cluster: Cluster,
) -> None:
    # Last in this module: it leaves the module's cluster one node short.
    kamailio = cluster.kamailio
    *survivors, dead = cluster.nodes
    agents = HELD_AGENTS[5:8]
    with Sipp("agent_answer", port=cluster.held_port, calls=len(agents), timeout=60,
              variables={"ring_ms": 0}) as agent:  # fmt: skip
        refs = []
        for ext in agents:
            placed = place(dead, ext)
            assert placed.status_code == 201, placed.text
            refs.append(placed.json()["call_ref"])
        for ref in refs:
            wait_status(dead, ref, "talking")
        asyncio.run(wait_dialogs_saved(cluster.database, refs))
        dead.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        dead.process.wait(10)
        assert agent.running()  # nobody has hung up yet
        # A survivor BYEs both peers of each call.  They answer to the dead
        # node's Via, so the proof is the BYE each got: sipp's agent exits 0
        # once every call got one, the trunk logs each.
        agent.assert_success(timeout=TAKEOVER_AFTER + 10)
        wait_logged(cluster.trunk, [f"STAY-BYE callref={ref}" for ref in refs], timeout=5)
        took = time.monotonic() - killed_at
    # Silence is noticed after TAKEOVER_AFTER, at the next sweep.
    assert took < TAKEOVER_AFTER + 4, f"BYEs {took:.1f} s after the SIGKILL"
    for node in survivors:
        ended = [wait_status(node, ref, "ended", timeout=5) for ref in refs]
        assert [call["end_reason"] for call in ended] == ["failed"] * len(refs), ended
    assert_one_cdr_each(cluster, refs, timeout=10, reason="failed")
    kamailio.wait_flags(
        {kamailio.node_uri(dead.sip_port): "IP"}
        | {kamailio.node_uri(node.sip_port): "AP" for node in survivors},
        timeout=10,
    )
    # Whatever still reaches the dead node's address is heard (and never
    # answered, so its probes keep failing): no REGISTER may be among it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as heard:
        heard.bind(("127.0.0.1", dead.sip_port))
        heard.setblocking(False)
        # Twelve REGISTERs on twelve Call-IDs (the dispatcher hashes them):
        # all answered by the survivors, none sent to the dead node.
        assert register(kamailio.port, free_port("udp"), calls=12) == ["registered"] * 12
        datagrams = []
        while True:
            try:
                datagrams.append(heard.recv(65535))
            except BlockingIOError:
                break
    assert not [d for d in datagrams if d.startswith(b"REGISTER")], datagrams
    assert kamailio.destinations()[kamailio.node_uri(dead.sip_port)] == "IP"
    refs = asyncio.run(place_in_turn(survivors, 40, rate=30))
    assert_one_cdr_each(cluster, refs, timeout=30)
    # No survivor was ever silent long enough to be taken over itself.
    for node in survivors:
        assert "was taken over by" not in node.log.read_text(errors="replace"), node.node_id
