"""Running Click2Dial in-process between real sipp peers for end-to-end tests.

``running(...)`` starts the whole service (store, SIP user agent, call
control, HTTP listeners) on free loopback ports from a configuration text,
with the agent's phone and the trunk pointing at sipp instances the test
started; it yields an :class:`Env` with an HTTP client per integrator.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from click2dial.app import Click2Dial
from click2dial.config import parse_config
from click2dial.sip.transaction import TimerConfig
from tests.sipp.harness import free_port, free_port_both

ACME_KEY = "acme-key-0123456789abcdef"
BETA_KEY = "beta-key-0123456789abcdef"
PG_URL = os.environ.get("CLICK2DIAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CONTACT_REF = "ticket-4711"


@dataclass
class Env:
    service: Click2Dial
    acme: httpx.AsyncClient
    beta: httpx.AsyncClient

    async def place(self, **fields: Any) -> httpx.Response:
        body = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
                "contact_ref": CONTACT_REF} | fields  # fmt: skip
        return await self.acme.post("/click2dial/calls", json=body)

    async def state(self, call_ref: str) -> dict[str, Any]:
        response = await self.acme.get(f"/click2dial/calls/{call_ref}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def wait_state(
        self, call_ref: str, states: set[str], timeout: float = 20
    ) -> dict[str, Any]:
        """Poll the API (the integrator's own view) until the call is in one of
        ``states``; fails after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            call = await self.state(call_ref)
            if call["status"] in states:
                return call
            if loop.time() > deadline:
                raise AssertionError(f"call stuck in {call['status']}: {call}")
            await asyncio.sleep(0.05)

    async def wait_ended(
        self, call_ref: str, timeout: float = 20, legs_timeout: float = 5
    ) -> dict[str, Any]:
        """Wait for the call's end, then (up to ``legs_timeout`` seconds) for
        its SIP legs to be gone from the user agent too: no leg is left alive
        after a call ends.  A BYE nobody answers keeps its leg until the BYE
        times out (64*T1): such tests give a longer ``legs_timeout``."""
        call = await self.wait_state(call_ref, {"ended"}, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + legs_timeout
        while self.legs_of(call_ref) or call_ref in self.controller_live():
            if loop.time() > deadline:
                raise AssertionError(f"legs of {call_ref} still alive: {self.legs_of(call_ref)}")
            await asyncio.sleep(0.02)
        return call

    def controller_live(self) -> set[str]:
        controller = self.service.controller
        return set(controller.live) if controller is not None else set()

    def legs_of(self, call_ref: str) -> list[Any]:
        ua = self.service.ua
        if ua is None:
            return []
        return [
            call
            for call in ua.calls
            if call.request is not None
            and call.request.headers.get("X-Teleforge-Call-Ref") == call_ref
        ]


async def pg_schema_url() -> str:
    import asyncpg  # type: ignore[import-untyped]

    schema = f"c2d_e2e_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return f"{PG_URL}?search_path={schema}"


async def drop_pg_schema(url: str) -> None:
    import asyncpg

    schema = url.rsplit("search_path=", 1)[1]
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


def config_text(
    *,
    database: str,
    agent_port: int | None,
    trunk_port: int | None,
    extension_1002_port: int | None = None,
    extension_1002: str = "",
    extra: str = "",
    trunk_transport: str = "udp",
    trunk_auth: tuple[str, str] | None = None,
    acme: str = "",
    agent_ring_timeout: int = 10,
    callee_ring_timeout: int = 10,
    http_port: int | None = None,
    sip_port: int | None = None,
    sip: str = "",
    agent: str = "",
    spool: str | None = None,
    operator_port: int | None = None,
    listen: tuple[str, ...] = (),
    node_id: str = "e2e-node",
    workers: int = 1,
) -> str:
    """The configuration text.  ``sip`` adds lines to ``[sip]`` (e.g.
    ``probe_interval = 5``), ``listen`` SIP listeners to the UDP and TCP
    ones (e.g. ``tls:127.0.0.1:PORT``, with the ``tls_*`` keys in ``sip``),
    ``agent`` lines to ``[agents."1001"]``, ``extension_1002`` to
    ``[agents."1002"]``, ``acme`` and ``extra`` to the integrators ``acme``
    and ``beta``.  ``workers``: 1 unless given (a test of one process must
    not depend on the machine's cores, the default's ``"auto"``)."""
    http_port = http_port or free_port("tcp")
    operator_port = operator_port or free_port("tcp")
    sip_port = sip_port or free_port_both()
    sip_listen = (f"udp:127.0.0.1:{sip_port}", f"tcp:127.0.0.1:{sip_port}", *listen)
    trunk = f'uri = "sip:127.0.0.1:{trunk_port or 9};transport={trunk_transport}"'
    if trunk_auth:
        trunk += f'\nusername = "{trunk_auth[0]}"\npassword = "{trunk_auth[1]}"'
    agent_lines = agent
    if "password" in agent and "integrator" not in agent:
        # Both integrators admit 1001: a registrar agent must name its own.
        agent_lines += '\nintegrator = "acme"'
    if agent_port:
        agent_lines = f'contact = "sip:1001@127.0.0.1:{agent_port}"\n' + agent_lines
    return f"""
[server]
http_host = "127.0.0.1"
http_port = {http_port}
database = "{database}"
node_id = "{node_id}"
workers = {workers}
operator_listen = "127.0.0.1:{operator_port}"
{f'spool = "{spool}"' if spool else ""}

[sip]
listen = [{", ".join(f'"{item}"' for item in sip_listen)}]
public_host = "127.0.0.1"
{sip}

[trunk]
{trunk}

[agents."1001"]
auto_answer = "call-info"
{agent_lines}

[agents."1002"]
auto_answer = "answer-mode"
{f'contact = "sip:1002@127.0.0.1:{extension_1002_port}"' if extension_1002_port else ""}
{extension_1002}

[integrators.acme]
api_keys = ["{ACME_KEY}"]
clid_pool = ["27110000001", "27110000002", "27110000003"]
agent_ring_timeout = {agent_ring_timeout}
callee_ring_timeout = {callee_ring_timeout}
{acme}

[integrators.beta]
api_keys = ["{BETA_KEY}"]
{extra}
"""


@asynccontextmanager
async def running(
    tmp_path: Any,
    *,
    backend: str = "sqlite",
    database: str | None = None,
    timers: TimerConfig | None = None,
    **options: Any,
) -> AsyncIterator[Env]:
    """``database`` is a store URL the test owns; without it, ``backend``
    picks a new SQLite file or a new schema of the test PostgreSQL."""
    pg_url = await pg_schema_url() if backend == "postgres" and database is None else None
    database = database or pg_url or f"sqlite:///{tmp_path}/click2dial.db"
    # The spool of unwritten call ends is the test's own, not the working folder's.
    options.setdefault("spool", f"{tmp_path}/click2dial-ends.jsonl")
    config = parse_config(config_text(database=database, **options), "e2e.toml")
    service = Click2Dial(config, timers=timers or TimerConfig(t1=0.1))
    await service.start()
    base = f"http://127.0.0.1:{service.http_port()}"
    try:
        async with (
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ACME_KEY}"},
                              timeout=10) as acme,
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {BETA_KEY}"},
                              timeout=10) as beta,
        ):  # fmt: skip
            yield Env(service, acme, beta)
    finally:
        await service.stop()
        if pg_url is not None:
            await drop_pg_schema(pg_url)
