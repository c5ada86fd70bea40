"""Registered agents end to end: a real phone (baresip) registers with digest
over UDP or TCP, a REST call rings it over the flow it registered from, it
answers by itself and talks with a sipp trunk that echoes RTP; wrong
passwords are refused and then blocked; an agent with no binding ends the
call at once.  The callee of an internal call is rung the same way: every
binding at once (sipp phones that registered), or, with none, an end at
once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.baresip import Baresip
from tests.e2e.support import Env, running
from tests.notify.support import HttpReceiver, wait_until
from tests.sipp.harness import Sipp, free_port, free_port_both, free_udp_port_pair

PASSWORD = "s3cret-1001"
AGENT = f'password = "{PASSWORD}"'


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


async def wait_bound(env: Env, agent: str, count: int = 1, timeout: float = 10) -> None:
    registrar = env.service.registrar
    assert registrar is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(registrar.contacts(agent)) < count:
        if loop.time() > deadline:
            raise AssertionError(f"{agent} not registered: {registrar.contacts(agent)}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registers_and_answers_a_rest_call(tmp_path: Path, transport: str) -> None:
    async def main() -> None:
        sip_port = free_port_both()
        # The trunk answers with its own media port, where -rtp_echo sends
        # every packet back to where it came from.
        echo_port = free_udp_port_pair()
        with Sipp(
            "trunk_answer_hangup",
            variables={"ring_ms": 200, "talk_ms": 2000, "early_port": echo_port},
            media_port=echo_port,
            extra_args=["-rtp_echo"],
        ) as trunk:
            async with running(
                tmp_path, agent_port=None, trunk_port=trunk.port, sip_port=sip_port, agent=AGENT
            ) as env:
                with Baresip("1001", PASSWORD, sip_port, transport=transport) as phone:
                    await phone.wait_for(r"1001@127\.0\.0\.1.*200 OK")
                    await wait_bound(env, "1001")
                    (binding,) = env.service.registrar.contacts("1001")  # type: ignore[union-attr]
                    assert binding.transport == transport
                    assert f":{phone.port}" in binding.contact
                    # Over UDP the flow is the phone's socket; over TCP the
                    # connection it opened (an ephemeral port), which the
                    # INVITE must reuse: nothing listens there but baresip's
                    # end of that connection.
                    assert (binding.port == phone.port) == (transport == "udp")
                    response = await env.place()
                    assert response.status_code == 201, response.text
                    ref = response.json()["call_ref"]
                    try:
                        ended = await env.wait_ended(ref, timeout=30)
                    except AssertionError:
                        print(phone.output())
                        raise
                    assert ended["end_reason"] == "callee_hungup", ended
                    assert ended["legs"]["agent"]["answered_at"] is not None
                    await asyncio.to_thread(trunk.assert_success, 20)
                    await phone.wait_for(r"Call established")
                    # baresip's own statistics at the end of the call, for
                    # the 2 s the trunk talked (50 packets a second): its
                    # RTP went out, and came back from the echo into its
                    # jitter buffer (received minus the ones it dropped).
                    packets = await phone.wait_for(r"^packets:\s+(\d+)\s+(\d+)")
                    errors = await phone.wait_for(r"^errors:\s+(\d+)\s+(\d+)")
                    assert int(packets[1]) >= 50, phone.output()
                    assert int(packets[2]) - int(errors[2]) >= 50, phone.output()
                    # And what came back was the phone's own stream (its
                    # SSRC) from the trunk's echo port, after the ringback.
                    own = int((await phone.wait_for(r"^a=ssrc:(\d+) "))[1])
                    await phone.wait_for(
                        rf"SSRC changed 0x[0-9a-f]+ -> {own:#x} .* from 127\.0\.0\.1:{echo_port}\)"
                    )

    run(main())


def results(peer: Sipp) -> list[str]:
    return [line.split("RESULT ", 1)[1].strip() for line in peer.logs().splitlines()
            if "RESULT " in line]  # fmt: skip


def test_wrong_passwords_are_refused_then_blocked(tmp_path: Path) -> None:
    async def main() -> None:
        sip_port = free_port_both()
        async with running(
            tmp_path, agent_port=None, trunk_port=None, sip_port=sip_port, agent=AGENT
        ) as env:
            registrar = env.service.registrar
            assert registrar is not None
            with Sipp("uac_register", remote_port=sip_port, service="1001", username="1001",
                      password=PASSWORD) as good:  # fmt: skip
                await asyncio.to_thread(good.assert_success, 20)
                assert results(good) == ["registered"], good.report()
            (binding,) = registrar.contacts("1001")
            assert binding.port == good.port
            with Sipp("uac_register", remote_port=sip_port, service="1001", username="1001",
                      password="wrong", calls=5) as guesser:  # fmt: skip
                await asyncio.to_thread(guesser.assert_success, 20)
                assert results(guesser) == ["refused"] * 5, guesser.report()
            # Five failures in a minute: now even the right password is refused,
            # without a challenge (no more guesses to make).
            with Sipp("uac_register", remote_port=sip_port, service="1001", username="1001",
                      password=PASSWORD) as late:  # fmt: skip
                await asyncio.to_thread(late.assert_success, 20)
                assert results(late) == ["blocked"], late.report()
            assert registrar.blocked_count == 1 and registrar.failed_count == 5

    run(main())


def test_a_call_to_an_unregistered_agent_ends_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, agent_port=None, trunk_port=None, agent=AGENT) as env:
            registrar = env.service.registrar
            assert registrar is not None and registrar.contacts("1001") == []
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await env.place()
            assert response.status_code == 201, response.text
            ended = await env.wait_ended(response.json()["call_ref"], timeout=5)
            assert loop.time() - started < 2  # at once, not after the 10 s ring timeout
            assert (ended["end_reason"], ended["end_code"]) == ("error", 20), ended

    run(main())


def test_a_rest_call_rings_every_registered_phone_and_one_gets_it(tmp_path: Path) -> None:
    async def main() -> None:
        sip_port = free_port_both()
        with Sipp("trunk_answer_hangup", variables={"ring_ms": 200, "talk_ms": 1500}) as trunk:
            async with running(
                tmp_path, agent_port=None, trunk_port=trunk.port, sip_port=sip_port, agent=AGENT
            ) as env:
                with (
                    Baresip("1001", PASSWORD, sip_port) as one,
                    Baresip("1001", PASSWORD, sip_port, transport="tcp") as two,
                ):
                    await wait_bound(env, "1001", count=2)
                    response = await env.place()
                    assert response.status_code == 201, response.text
                    ref = response.json()["call_ref"]
                    ended = await env.wait_ended(ref, timeout=30)
                    assert ended["end_reason"] == "callee_hungup", ended
                    await asyncio.to_thread(trunk.assert_success, 20)
                    # Both phones were rung (each over its own flow); only
                    # the winner was connected to the callee (re-INVITEd
                    # with its media); the other got CANCEL, or BYE when
                    # its 200 crossed the winner's.
                    for phone in (one, two):
                        await phone.wait_for(r"^INVITE sip:1001")
                    connected = [p for p in (one, two) if "got re-INVITE" in p.output()]
                    assert len(connected) == 1, (one.output(), two.output())
                    (loser,) = [p for p in (one, two) if p not in connected]
                    await loser.wait_for(r"^(CANCEL|BYE) sip:1001")

    run(main())


# ------------------------------------------ internal calls to registered phones

CALLEE_PASSWORD = "s3cret-1002"
CALLEE = f'password = "{CALLEE_PASSWORD}"\nintegrator = "acme"'
INTERNAL = 'call_types = ["outbound", "internal"]'
SECRET = "whsec-internal-fork-0123456789"


def register(sip_port: int, port: int) -> None:
    """Bind extension 1002 to ``127.0.0.1:port`` over UDP (a sipp REGISTER
    from that port; the phone that answers there afterwards is another sipp)."""
    with Sipp("uac_register", remote_port=sip_port, port=port, service="1002",
              username="1002", password=CALLEE_PASSWORD) as phone:  # fmt: skip
        phone.assert_success(20)
        assert results(phone) == ["registered"], phone.report()


def test_an_internal_call_rings_every_phone_of_the_callee_and_one_gets_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        sip_port = free_port_both()
        answering, ringing = free_port("udp"), free_port("udp")
        async with HttpReceiver() as hook:
            with Sipp("agent_answer") as agent:
                async with running(
                    tmp_path,
                    agent_port=agent.port,
                    trunk_port=None,
                    sip_port=sip_port,
                    extension_1002=CALLEE,
                    acme=f'{INTERNAL}\nwebhook_url = "{hook.url}"\nwebhook_secret = "{SECRET}"',
                ) as env:
                    for port in (answering, ringing):
                        await asyncio.to_thread(register, sip_port, port)
                    await wait_bound(env, "1002", count=2)
                    with (
                        # One phone answers (after 300 ms) and later hangs
                        # up; the other rings until it gets CANCEL.
                        Sipp("trunk_answer_hangup", port=answering) as winner,
                        Sipp("uas_cancel", port=ringing) as loser,
                    ):
                        response = await env.place(callee="1002")
                        assert response.status_code == 201, response.text
                        assert response.json()["call_type"] == "internal"
                        ref = response.json()["call_ref"]
                        ended = await env.wait_ended(ref)
                        for peer in (winner, loser, agent):
                            await asyncio.to_thread(peer.assert_success, 20)
                        # Each phone got the INVITE at its own binding.
                        assert f"ruri=sip:1002@127.0.0.1:{answering}" in winner.logs()
                        assert f"INVITE sip:1002@127.0.0.1:{ringing}" in loser.messages_log()
                    assert ended["end_reason"] == "callee_hungup", ended
                    assert ended["legs"]["callee"]["answered_at"] is not None
                    cdr = await wait_until(lambda: cdrs(hook, ref), 20, f"the CDR of {ref}")
                    assert len(cdr) == 1 and cdr[0]["end_reason"] == "callee_hungup", cdr

    run(main())


def test_an_internal_call_to_an_unregistered_extension_ends_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        # The agent's phone: a socket that notes anything sent to it.
        heard: list[bytes] = []
        phone, _ = await loop.create_datagram_endpoint(
            lambda: Recorder(heard), local_addr=("127.0.0.1", 0)
        )
        try:
            async with running(
                tmp_path,
                agent_port=phone.get_extra_info("sockname")[1],
                trunk_port=None,
                extension_1002=CALLEE,
                acme=INTERNAL,
            ) as env:
                registrar = env.service.registrar
                assert registrar is not None and registrar.contacts("1002") == []
                started = loop.time()
                response = await env.place(callee="1002")
                assert response.status_code == 201, response.text
                ended = await env.wait_ended(response.json()["call_ref"], timeout=5)
                assert loop.time() - started < 2  # at once, not after a ring timeout
                assert (ended["end_reason"], ended["end_code"]) == ("error", 20), ended
                assert ended["hangup_side"] == "callee", ended
                # The agent was never rung: nobody to connect it to.
                assert heard == [] and ended["legs"]["agent"]["answered_at"] is None
        finally:
            phone.close()

    run(main())


class Recorder(asyncio.DatagramProtocol):
    def __init__(self, into: list[bytes]) -> None:
        self.into = into

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.into.append(data)


def cdrs(hook: HttpReceiver, ref: str) -> list[dict[str, Any]]:
    docs = [json.loads(r.body) for r in hook.requests]
    return [d["payload"] for d in docs if d["type"] == "cdr" and d["payload"]["call_ref"] == ref]
