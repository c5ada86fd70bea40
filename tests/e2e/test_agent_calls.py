"""Calls placed by an agent (SPEC §4), end to end: a sipp phone sends the
INVITE itself (407 challenge, digest with the agent's password, the
X-Teleforge headers), a sipp trunk is the callee.  The call is the REST
call's twin: the trunk sees the caller ID and the contact ref, the CDR lands
on the integrator's Redis list, GET and list show it with source webrtc.  A
refusal is a SIP final response naming the field and the rule, and nothing
of a refused or unauthenticated INVITE reaches the trunk."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from click2dial.notify import CDR_LIST
from tests.e2e.support import running
from tests.notify.support import RedisServer, brpop_all
from tests.sipp.harness import Sipp, free_port_both
from tests.test_sipp_c2d_scenarios import LoggedInvite

PASSWORD = "s3cret-1001"
AGENT = f'password = "{PASSWORD}"'
CALLEE = "0821234567"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


def phone(
    sip_port: int,
    transport: str = "udp",
    password: str = PASSWORD,
    calls: int = 1,
    **variables: Any,
) -> Sipp:
    values = {"agent": "1001", "outbound_id": "27110000002", "contact_ref": "crm-42"} | variables
    return Sipp(
        "agent_places_call",
        transport=transport,  # type: ignore[arg-type]
        remote_port=sip_port,
        service=CALLEE,
        username="1001",
        password=password,
        variables=values,
        calls=calls,
    )


def results(peer: Sipp) -> list[str]:
    return [line.split("RESULT ", 1)[1].strip() for line in peer.logs().splitlines()
            if "RESULT " in line]  # fmt: skip


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_an_agent_places_a_call_like_a_rest_call(tmp_path: Path, transport: str) -> None:
    async def main() -> None:
        sip_port = free_port_both()
        with (
            RedisServer() as redis_server,
            Sipp("trunk_answer", variables={"ring_ms": 300}) as trunk,
        ):
            async with running(
                tmp_path, agent_port=None, trunk_port=trunk.port, sip_port=sip_port, agent=AGENT,
                acme=f'redis = "{redis_server.url(3)}"',
            ) as env:  # fmt: skip
                with phone(sip_port, transport, talk_ms=800) as agent:
                    await asyncio.to_thread(agent.assert_success, 20)
                    logs = agent.logs()
                    assert "CHALLENGE 407" in logs, agent.report()
                    # The callee's early media and answer reach the phone.
                    assert "EARLY m=7078" in logs and "ANSWER m=7078 c=127.0.0.1" in logs, logs
                await asyncio.to_thread(trunk.assert_success, 20)
                (invite,) = LoggedInvite.parse_all(trunk.logs())
                assert "<sip:27110000002@" in invite.from_, invite
                assert invite.pai.startswith("<sip:27110000002@"), invite
                assert invite.contactref == "crm-42" and invite.callee == CALLEE, invite
                assert invite.ruri.startswith(f"sip:{CALLEE}@") and invite.sdp
                listed = await env.acme.get("/click2dial/calls", params={"contact_ref": "crm-42"})
                assert listed.status_code == 200, listed.text
                (item,) = listed.json()["calls"]
                ended = await env.wait_ended(item["call_ref"])
                assert ended["source"] == "webrtc", ended
                assert ended["agent"] == "1001" and ended["callee"] == CALLEE, ended
                assert ended["end_reason"] == "agent_hungup", ended
                assert invite.callref == item["call_ref"]
                (doc,) = await brpop_all(redis_server.client(3), 1, CDR_LIST)
                cdr = doc["payload"]
                assert cdr["contact_ref"] == "crm-42" and cdr["clid"] == "27110000002", cdr

    run(main())


def test_a_bad_outbound_id_is_refused_with_a_warning_and_never_dialled(tmp_path: Path) -> None:
    async def main() -> None:
        sip_port = free_port_both()
        with Sipp("trunk_answer") as trunk:
            async with running(
                tmp_path, agent_port=None, trunk_port=trunk.port, sip_port=sip_port, agent=AGENT,
                acme='allowed_outbound_ids = ["2711000000*"]',
            ) as env:  # fmt: skip
                for bad, status, rule in (("12ab", "400", "pattern"),
                                          ("27119999999", "403", "not_allowed")):  # fmt: skip
                    with phone(sip_port, outbound_id=bad) as agent:
                        await asyncio.to_thread(agent.assert_success, 20)
                        (result,) = results(agent) or [agent.report()]
                        assert result.startswith(f"{status} "), agent.report()
                        warning = re.search(r'warning=399 127\.0\.0\.1 "([^"]*)"', result)
                        assert warning is not None, result
                        assert warning[1] == f"outbound_id: {rule}", result
                listed = await env.acme.get("/click2dial/calls")
                assert listed.json()["calls"] == []
            assert "INVITE" not in trunk.messages_log(), trunk.messages_log()

    run(main())


def test_unauthenticated_invites_never_reach_the_trunk_and_guessers_are_blocked(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        sip_port = free_port_both()
        with Sipp("trunk_answer") as trunk:
            async with running(
                tmp_path, agent_port=None, trunk_port=trunk.port, sip_port=sip_port, agent=AGENT
            ) as env:
                registrar = env.service.registrar
                assert registrar is not None
                # Each call: an INVITE without credentials (407), then one
                # with a wrong password (403).
                with phone(sip_port, password="wrong", calls=5) as guesser:
                    await asyncio.to_thread(guesser.assert_success, 20)
                    assert guesser.logs().count("CHALLENGE 407") == 5, guesser.report()
                    assert [r.split()[0] for r in results(guesser)] == ["403"] * 5
                # Five failures: even the right password is refused now, at once.
                with phone(sip_port) as late:
                    await asyncio.to_thread(late.assert_success, 20)
                    assert "CHALLENGE 407" not in late.logs()
                    assert [r.split()[0] for r in results(late)] == ["403"], late.report()
                assert registrar.blocked_count == 1 and registrar.failed_count == 5
                listed = await env.acme.get("/click2dial/calls")
                assert listed.json()["calls"] == []
            assert "INVITE" not in trunk.messages_log(), trunk.messages_log()

    run(main())
