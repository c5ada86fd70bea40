"""``click2dial demo``: one whole click-to-dial call on a bare machine.

It starts Click2Dial on free loopback ports with a throw-away SQLite
database, plus two simulated SIP peers built on Click2Dial's own user agent:
an agent phone (extension 1001) that answers by itself, and a trunk that
rings with early media, answers, and hangs up after a short talk.  Then it
places one call through the REST API, prints each state the API reports
with its time, the agent pop-up document (what the CRM gets when the agent
answers) and the CDR, and removes its temporary files.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .calls.cdr import agent_payload, cdr_from_record
from .config import parse_config
from .sip.aio import Call, Listen, UserAgent, UserAgentConfig
from .sip.sdp import build_offer
from .vocabulary import CallState

TALK_SECONDS = 2.0


def _free_port() -> int:
    # Both transports must be free on the same number: SIP uses UDP and TCP.
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise OSError("no free port")


async def _phone(call: Call) -> None:
    """The agent's phone: rings, then answers with its media offer."""
    call.ring()
    await asyncio.sleep(0.5)
    call.answer(build_offer("127.0.0.1", 40000).to_bytes())


async def _trunk(call: Call) -> None:
    """The far end: early media, answer, talk, hang up."""
    answer = build_offer("127.0.0.1", 41000).to_bytes()
    call.ring(183, answer)
    await asyncio.sleep(1.0)
    call.answer(answer)
    await asyncio.sleep(TALK_SECONDS)
    await call.bye()


def _http(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, payload, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


async def run_demo() -> int:
    folder = Path(tempfile.mkdtemp(prefix="click2dial-demo-"))
    http_port, sip_port, phone_port, trunk_port, operator_port = (_free_port() for _ in range(5))
    config = parse_config(
        f"""
[server]
http_host = "127.0.0.1"
http_port = {http_port}
database = "sqlite:///{folder}/demo.db"
spool = "{folder}/ends.jsonl"
operator_listen = "127.0.0.1:{operator_port}"

[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]
public_host = "127.0.0.1"

[trunk]
uri = "sip:127.0.0.1:{trunk_port}"

[agents."1001"]
contact = "sip:1001@127.0.0.1:{phone_port}"
auto_answer = "call-info"

[integrators.demo]
allow_keyless_loopback = true
clid_pool = ["27110000001"]
""",
        "demo",
    )

    try:
        return await _run(config, http_port, sip_port, phone_port, trunk_port)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _run(config: Any, http_port: int, sip_port: int, phone_port: int, trunk_port: int) -> int:
    from .app import Click2Dial

    def peer(port: int) -> UserAgentConfig:
        return UserAgentConfig([Listen("udp", "127.0.0.1", port)])

    service = Click2Dial(config)
    async with (
        UserAgent(peer(phone_port), on_invite=_phone),
        UserAgent(peer(trunk_port), on_invite=_trunk),
    ):
        await service.start()
        try:
            print(f"Click2Dial demo: server on http://127.0.0.1:{http_port}, SIP {sip_port}")
            if service.operator is not None:
                operator = f"http://127.0.0.1:{service.operator.bound_port}"
                print(f"  operator listener: {operator}/metrics, {operator}/operator/calls")
            request = {
                "agent": "1001",
                "callee": "0821234567",
                "outbound_id": "random",
                "contact_ref": "demo-ticket-42",
            }
            print(f"POST /click2dial/calls {json.dumps(request)}")
            status, body = await asyncio.to_thread(
                _http, http_port, "POST", "/click2dial/calls", request
            )
            print(f"  -> {status} call_ref={body.get('call_ref')} status={body.get('status')}")
            if status != 201:
                print(json.dumps(body, indent=2))
                return 1
            call_ref = body["call_ref"]
            last = None
            popup_shown = False
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while loop.time() < deadline:
                _, call = await asyncio.to_thread(
                    _http, http_port, "GET", f"/click2dial/calls/{call_ref}"
                )
                if call["status"] != last:
                    last = call["status"]
                    now = datetime.now().strftime("%H:%M:%S.%f")[:-3]
                    print(f"  {now} (+{time.monotonic() - started:5.2f} s) call is {last}")
                live = service.controller.live_record(call_ref) if service.controller else None
                if not popup_shown and live is not None and live.agent_answered_at is not None:
                    popup_shown = True
                    popup = {"type": "call", "payload": agent_payload(live)}
                    print("  Agent pop-up document (sent to the CRM as the agent answers):")
                    print(_indented(json.dumps(popup, indent=2)))
                if last == CallState.ENDED:
                    break
                await asyncio.sleep(0.1)
            assert service.store is not None
            record = await service.store.get_call("demo", call_ref)
            if record is None or record.live:
                print("the call did not end in time")
                return 1
            print("CDR (sent to the CRM as the call ends):")
            print(json.dumps({"type": "cdr", "payload": cdr_from_record(record)}, indent=2))
            return 0
        finally:
            await service.stop()


def _indented(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
