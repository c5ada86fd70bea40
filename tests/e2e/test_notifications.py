"""Notifications end to end (SPEC §5): calls placed through the REST API
between real sipp peers, with a redis-server and webhook receivers of the
tests' own, as an integrator consumes them.

1. each call gives exactly one CDR on the integrator's ``BRPOP`` list, every
   field right, in its own Redis database and nobody else's;
2. the agent-connection document reaches a subscriber before the trunk
   receives the callee's INVITE;
3. Redis down while 50 calls complete, then back: 50 CDRs, each once, in
   call order;
4. the server SIGKILLed with CDRs waiting (Redis down), Redis and the
   server started again: each delivered once;
5. a webhook answering 500, 500, 200 gets the signed CDR once; a webhook that
   never answers slows no call down.

In-process tests wire the notifier through :class:`NotifyingClick2Dial`, the
way ``Click2Dial.start()`` is to wire it (it steps aside once app.py does).
Test 4 runs ``click2dial serve``, so it needs the notifier wired in app.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import httpx

from click2dial.app import Click2Dial
from click2dial.config import parse_config
from click2dial.notify import CDR_LIST, Notifier, verify_signature
from click2dial.sip.transaction import TimerConfig
from click2dial.store import CallRecord, open_store
from tests.e2e.support import ACME_KEY, BETA_KEY, CONTACT_REF, Env, config_text
from tests.e2e.test_process import server, wait_http
from tests.notify.support import HttpReceiver, RedisServer, brpop_all, wait_until
from tests.sipp.harness import Sipp, free_port, free_port_both

SECRET: Final = "whsec-e2e-0123456789abcdef"
# Short back-off so that an outage the test ends is noticed at once.
FAST: Final[dict[str, Any]] = {"backoff_base": 0.1, "backoff_max": 0.5, "poll_interval": 0.2}
SPEC_FIELDS: Final = (
    "extension", "number", "dial_number", "call_ref", "contact_ref", "dialed_at",
    "end_reason", "end_code", "call_time", "hold_time", "call_dir", "recording_url",
    "ref", "clid", "call_type", "ring_time_extension", "ring_time_number",
)  # fmt: skip


def run(coro: Coroutine[Any, Any, None], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


class NotifyingClick2Dial(Click2Dial):
    """Click2Dial with its notifier, built by ``make_notifier`` (the hook
    app.py's ``start()`` calls) and wired here too while app.py does not."""

    def make_notifier(self) -> Notifier:
        assert self.store is not None
        return Notifier(self.store, self.config.integrators, **FAST)

    async def start(self) -> None:
        await super().start()
        self.own_notifier: Notifier | None = None
        if getattr(self, "notifier", None) is not None:
            return  # app.py wires it
        assert self.controller is not None
        notifier = self.own_notifier = self.make_notifier()
        await notifier.start()
        controller = self.controller
        controller.on_agent_connected = notifier.agent_connected
        ended = controller.on_call_ended

        async def call_ended(record: CallRecord) -> None:
            if ended is not None:
                await ended(record)
            notifier.wake()

        controller.on_call_ended = call_ended
        notifier.wake()  # the CDRs recover() wrote at start

    async def stop(self) -> None:
        own = getattr(self, "own_notifier", None)
        if own is not None:
            await own.close()
        await super().stop()


@asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[Env]:
    text = config_text(database=f"sqlite:///{tmp_path}/click2dial.db", **options)
    service = NotifyingClick2Dial(parse_config(text, "e2e.toml"), timers=TimerConfig(t1=0.1))
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


async def place_and_end(env: Env, **fields: Any) -> str:
    response = await env.place(**fields)
    assert response.status_code == 201, response.text
    ref: str = response.json()["call_ref"]
    await env.wait_ended(ref)
    return ref


async def drained(env: Env, integrator: str = "acme") -> None:
    assert env.service.store is not None
    store = env.service.store

    async def empty() -> bool:
        return await store.undelivered(integrator) == []

    await wait_until(empty, what=f"{integrator}'s outbox to drain")


async def sipp_ok(*peers: Sipp, timeout: float = 20) -> None:
    for peer in peers:
        await asyncio.to_thread(peer.assert_success, timeout)


def seconds(start: float | None, end: float | None) -> int:
    return 0 if start is None or end is None else round(end - start)


# ------------------------------------------------------------------- 1. CDR


def test_each_call_gives_exactly_one_complete_cdr_in_the_integrators_own_database(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with (
            RedisServer() as redis_server,
            Sipp("agent_answer") as agent,
            Sipp("trunk_answer_hangup", variables={"talk_ms": 1200}) as trunk,
            Sipp("agent_busy") as busy,
        ):
            async with running(
                tmp_path,
                agent_port=agent.port,
                trunk_port=trunk.port,
                extension_1002_port=busy.port,
                acme=f'redis = "{redis_server.url(3)}"',
                extra=f'redis = "{redis_server.url(4)}"',  # beta's
            ) as env:
                answered = await place_and_end(env)
                refused = await place_and_end(env, agent="1002")
                docs = await brpop_all(redis_server.client(3), 2, CDR_LIST)
                await drained(env)
                assert env.service.store is not None
                records = {
                    ref: await env.service.store.get_call("acme", ref)
                    for ref in (answered, refused)
                }
                await sipp_ok(agent, trunk, busy)
            assert redis_server.client(3).llen(CDR_LIST) == 0  # exactly one each
            assert redis_server.client(4).dbsize() == 0  # not in beta's database
            assert redis_server.client(0).dbsize() == 0
        assert [doc["payload"]["call_ref"] for doc in docs] == [answered, refused]
        assert len({doc["id"] for doc in docs}) == 2
        for doc in docs:
            assert set(doc) == {"id", "type", "payload"} and doc["type"] == "cdr"
            assert set(SPEC_FIELDS) <= set(doc["payload"])
            record = records[doc["payload"]["call_ref"]]
            assert record is not None and record.ended_at is not None
            cdr = doc["payload"]
            assert cdr["number"] == cdr["dial_number"] == "0821234567"
            assert cdr["contact_ref"] == CONTACT_REF
            assert cdr["dialed_at"] == int(record.created_at)
            assert cdr["call_dir"] == "outbound" and cdr["call_type"] == "outbound"
            assert cdr["recording_url"] is None and cdr["ref"] == "click-dial"
            assert cdr["clid"] == "27110000001"
        talk, busy_cdr = docs[0]["payload"], docs[1]["payload"]
        call = records[answered]
        assert call is not None and call.ended_at is not None
        assert call.callee_answered_at is not None and call.agent_answered_at is not None
        assert talk["extension"] == "1001"
        assert (talk["end_reason"], talk["end_code"]) == ("callee_hungup", 16)
        assert talk["call_time"] == seconds(call.callee_answered_at, call.ended_at)
        assert 1 <= talk["call_time"] <= 3  # the trunk talks 1.2 s
        assert talk["hold_time"] == seconds(call.created_at, call.callee_answered_at)
        assert talk["ring_time_extension"] == seconds(call.created_at, call.agent_answered_at)
        assert talk["ring_time_number"] == seconds(call.callee_dialed_at, call.callee_answered_at)
        rang = records[refused]
        assert rang is not None and rang.ended_at is not None
        assert busy_cdr["extension"] == "1002"
        assert (busy_cdr["end_reason"], busy_cdr["end_code"]) == ("busy", 17)
        assert busy_cdr["call_time"] == 0 and busy_cdr["ring_time_number"] == 0
        assert busy_cdr["hold_time"] == seconds(rang.created_at, rang.ended_at)
        assert busy_cdr["ring_time_extension"] == seconds(rang.created_at, rang.ended_at)

    run(main())


# ------------------------------------------------- 2. agent before callee

# A subscriber in a process of its own that reports when the message reached
# its socket: the kernel's arrival stamp (SO_TIMESTAMP), not the time the
# process got to run, which a busy machine can delay by milliseconds.
SUBSCRIBER: Final = r"""
import socket, struct, sys

SO_TIMESTAMP = 29  # Linux


def command(*parts):
    encoded = [part.encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def parse(buffer):
    # One RESP array of bulk strings and integers, or None while incomplete.
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count, position, items = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        if buffer[position:position + 1] == b":":
            items.append(buffer[position + 1:end])
            position = end + 2
            continue
        size, start = int(buffer[position + 1:end]), end + 2
        if len(buffer) < start + size + 2:
            return None
        items.append(buffer[start:start + size])
        position = start + size + 2
    return items, position


sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
sock.sendall(command("SUBSCRIBE", sys.argv[2]))
buffer, stamp = b"", None
while True:
    data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16))
    if not data:
        sys.exit("redis closed the connection")
    if not buffer:
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                seconds, micros = struct.unpack("qq", payload[:16])
                stamp = seconds + micros / 1e6
    buffer += data
    while (parsed := parse(buffer)) is not None:
        items, used = parsed
        buffer = buffer[used:]
        if items[0] == b"subscribe":
            print("subscribed", flush=True)
        elif items[0] == b"message":
            print(repr(stamp), items[2].decode(), flush=True)
            sys.exit(0)
"""
# sipp's -trace_msg: a dashed line with the local time, then the message.
_TRACE_ENTRY: Final = re.compile(
    r"^-+ (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)\s*\n\S+ message received \[\d+\] bytes :\n\n"
    r"INVITE ",
    re.MULTILINE,
)


def invite_received_at(trace: str) -> float:
    found = _TRACE_ENTRY.findall(trace)
    assert len(found) == 1, trace[:3000]
    stamp = " ".join(found[0].split())
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()  # local, like sipp


def test_the_agent_document_reaches_a_subscriber_before_the_callee_is_dialled(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with (
            RedisServer() as redis_server,
            Sipp("agent_answer") as agent,
            Sipp("trunk_answer_hangup") as trunk,
        ):
            subscriber = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SUBSCRIBER, str(redis_server.port),
                "enigma:notifications:agents:1001",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert subscriber.stdout is not None
                ready = await asyncio.wait_for(subscriber.stdout.readline(), 10)
                assert ready.strip() == b"subscribed"
                async with running(
                    tmp_path,
                    agent_port=agent.port,
                    trunk_port=trunk.port,
                    acme=f'redis = "{redis_server.url(3)}"',
                ) as env:
                    ref = await place_and_end(env)
                    line = await asyncio.wait_for(subscriber.stdout.readline(), 10)
                    await drained(env)
                    await sipp_ok(agent, trunk)
            finally:
                if subscriber.returncode is None:
                    subscriber.kill()
                await subscriber.wait()
            invited_at = invite_received_at(trunk.messages_log())
        received_text, document = line.decode().split(" ", 1)
        received_at = float(received_text)
        doc = json.loads(document)
        assert doc["type"] == "call" and isinstance(doc["id"], str)
        assert doc["payload"] == {"call_ref": ref, "agent": "1001", "contact_ref": CONTACT_REF,
                                  "number": "0821234567", "ref": "click-dial"}  # fmt: skip
        # Same machine, same wall clock: the subscriber had it first.
        assert received_at < invited_at, (received_at, invited_at)
        assert invited_at - received_at < 5

    run(main())


# -------------------------------------------------- 3. Redis outage, 50 calls


def test_fifty_cdrs_written_while_redis_is_down_arrive_once_each_when_it_is_back(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with RedisServer() as redis_server, Sipp("agent_busy", calls=50, timeout=60) as busy:
            redis_server.stop()
            async with running(
                tmp_path,
                agent_port=busy.port,
                trunk_port=None,
                acme=f'redis = "{redis_server.url(5)}"\nmax_cps = 1000',
            ) as env:
                # The agent can have one live call: one after another.
                refs = [await place_and_end(env) for _ in range(50)]
                assert env.service.store is not None
                waiting = await env.service.store.undelivered("acme")
                assert sorted(row.call_ref for row in waiting) == sorted(refs)
                redis_server.start()
                docs = await brpop_all(redis_server.client(5), 50, CDR_LIST, timeout=30)
                await drained(env)
                await sipp_ok(busy)
            assert redis_server.client(5).llen(CDR_LIST) == 0
        assert len({doc["id"] for doc in docs}) == 50
        assert [doc["payload"]["call_ref"] for doc in docs] == refs  # each once, in order
        assert {doc["payload"]["end_reason"] for doc in docs} == {"busy"}

    run(main(), timeout=80)


# ----------------------------------------------- 4. SIGKILL with a backlog


def test_cdrs_waiting_when_the_server_is_killed_are_delivered_once_after_restart(
    tmp_path: Path,
) -> None:
    http_port, sip_port = free_port("tcp"), free_port_both()
    database = f"sqlite:///{tmp_path}/c2d.db"
    base = f"http://127.0.0.1:{http_port}"
    auth = {"Authorization": f"Bearer {ACME_KEY}"}
    config = tmp_path / "c2d.toml"
    with RedisServer() as redis_server:
        redis_server.stop()  # down from the start
        with Sipp("agent_busy", calls=5) as busy:
            config.write_text(
                config_text(
                    database=database, agent_port=busy.port, trunk_port=None,
                    http_port=http_port, sip_port=sip_port,
                    acme=f'redis = "{redis_server.url(5)}"\nmax_cps = 1000',
                )
            )  # fmt: skip
            with server(["serve", "--config", str(config)], tmp_path) as first:
                wait_http(f"{base}/healthz", first)
                refs = []
                for _ in range(5):
                    body = {"agent": "1001", "callee": "0821234567",
                            "outbound_id": "27110000001", "contact_ref": CONTACT_REF}  # fmt: skip
                    response = httpx.post(f"{base}/click2dial/calls", json=body, headers=auth)
                    assert response.status_code == 201, response.text
                    ref = response.json()["call_ref"]
                    deadline = time.monotonic() + 10
                    while (
                        httpx.get(f"{base}/click2dial/calls/{ref}", headers=auth).json()["status"]
                        != "ended"
                    ):
                        assert time.monotonic() < deadline, "the call never ended"
                        time.sleep(0.05)
                    refs.append(ref)
                # Killed once every CDR has been tried (and failed) at least
                # once: the served process does run the notifier.
                asyncio.run(tried_at_least_once(database, refs))
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            busy.assert_success(10)
        redis_server.start()
        with server(["serve", "--config", str(config)], tmp_path) as second:
            wait_http(f"{base}/healthz", second)
            docs = asyncio.run(brpop_all(redis_server.client(5), 5, CDR_LIST, timeout=45))
            asyncio.run(outbox_drained(database))
        assert redis_server.client(5).llen(CDR_LIST) == 0
    assert [doc["payload"]["call_ref"] for doc in docs] == refs
    assert len({doc["id"] for doc in docs}) == 5


async def tried_at_least_once(database: str, refs: list[str]) -> None:
    async with open_store(database) as store:

        async def tried() -> bool:
            rows = await store.undelivered("acme")
            return sorted(r.call_ref for r in rows) == sorted(refs) and all(
                r.attempts >= 1 for r in rows
            )

        await wait_until(tried, what="the served notifier to try every CDR (is it wired?)")


async def outbox_drained(database: str) -> None:
    async with open_store(database) as store:

        async def empty() -> bool:
            return await store.undelivered("acme") == []

        await wait_until(empty, timeout=15, what="the outbox to drain")


# -------------------------------------------------------------- 5. webhooks


def test_a_webhook_failing_twice_gets_the_signed_cdr_once_it_answers_200(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with HttpReceiver([500, 500]) as hook:
            with Sipp("agent_busy") as busy:
                async with running(
                    tmp_path,
                    agent_port=busy.port,
                    trunk_port=None,
                    acme=f'webhook_url = "{hook.url}"\nwebhook_secret = "{SECRET}"',
                ) as env:
                    started = time.time()
                    ref = await place_and_end(env)
                    requests = await hook.wait_for(3, timeout=15)
                    await drained(env)
                    await sipp_ok(busy)
            assert hook.answered == [500, 500, 200]
            assert len(hook.requests) == 3  # nothing after the 200
        assert len({r.body for r in requests}) == 1  # the same document each time
        ids = {r.headers["x-click2dial-notification-id"] for r in requests}
        for request in requests:
            assert verify_signature(SECRET, request.body, request.headers["x-click2dial-signature"])
            assert request.headers["x-click2dial-event"] == "cdr"
            assert int(started) <= int(request.headers["x-click2dial-timestamp"]) <= time.time()
        doc = json.loads(requests[0].body)
        assert ids == {doc["id"]}
        assert doc["type"] == "cdr" and doc["payload"]["call_ref"] == ref
        assert doc["payload"]["end_reason"] == "busy"

    run(main())


def test_a_webhook_that_never_answers_does_not_slow_calls_or_redis_down(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with HttpReceiver(hang=True) as hook:
            with RedisServer() as redis_server, Sipp("agent_busy", calls=3) as busy:
                async with running(
                    tmp_path,
                    agent_port=busy.port,
                    trunk_port=None,
                    acme=f'redis = "{redis_server.url(6)}"\nwebhook_url = "{hook.url}"\n'
                    f'webhook_secret = "{SECRET}"',
                ) as env:
                    refs, durations = [], []
                    for _ in range(3):
                        started = time.monotonic()
                        refs.append(await place_and_end(env))
                        durations.append(time.monotonic() - started)
                        await hook.wait_for(1)  # the webhook is hanging from here on
                    docs = await brpop_all(redis_server.client(6), 3, CDR_LIST, timeout=5)
                    store = env.service.store
                    assert store is not None

                    async def only_webhooks_left() -> list[Any] | None:
                        # The LPUSH lands before its row is marked delivered.
                        rows = await store.undelivered("acme")
                        return rows if all(r.target == "webhook" for r in rows) else None

                    waiting = await wait_until(only_webhooks_left, 5, "the Redis rows marked")
                    await sipp_ok(busy)
        assert max(durations) < 2.0, durations
        assert [doc["payload"]["call_ref"] for doc in docs] == refs
        # Still waiting for the receiver's first answer when Redis had them all.
        assert [(row.target, row.attempts) for row in waiting] == [("webhook", 0)] * 3
        assert hook.answered == []

    run(main())
