"""Click2Dial as a complete B2BUA (SPEC §4 "A complete B2BUA", "Every call
ends"; issue 8), end to end between real sipp peers: one plays the agent's
phone, the other the trunk.

1. a trunk re-INVITE moving the media to a new port and codec reaches the
   agent with that SDP, and the trunk gets the agent's answer;
2. an UPDATE without SDP gets a 200 without a body, and the agent nothing;
3. the agent's hold and resume reach the trunk with their directions, and
   the trunk's answers come back;
4. a G.729-only answer to a G.711 offer ends the call at once (error, Q.850 88);
5. a phone killed mid-call, and a trunk that stops answering: OPTIONS probes
   end the call with the side and the SIP status;
6. DELETE of a call whose peer never answers the BYE returns at once;
7. hangups in every phase: exactly one CDR, no SIP leg left.

What each peer saw comes from its scenario's log lines (tests/sipp/scenarios,
one ``NAME key=value ...`` line per event); sipp's exit code says it saw
exactly its scenario.  CDRs are counted where the integrator receives them: a
webhook receiver of the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.support import Env, running
from tests.notify.support import HttpReceiver, wait_until
from tests.sipp.harness import Sipp, Transport
from tests.test_sipp_c2d_scenarios import logged_media

SECRET: Final = "whsec-e2e-b2bua-0123456789abcdef"
PROBES: Final = "probe_interval = 5"  # the smallest the configuration allows
_FIELD: Final = re.compile(r"(\w+)=(.*?)(?= \w+=|$)")


def run(coro: Coroutine[Any, Any, None], timeout: float = 120) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def log_records(log_text: str, name: str) -> list[dict[str, str]]:
    """The ``name key=value ...`` lines of a scenario log, as dicts (values
    may hold blanks: each runs up to the next `` key=``)."""
    found = []
    for line in log_text.splitlines():
        if line == name or line.startswith(name + " "):
            found.append(dict(_FIELD.findall(line[len(name) :].strip())))
    return found


def logged(peer: Sipp, name: str) -> list[dict[str, str]]:
    return log_records(peer.logs(), name)


def one(items: list[dict[str, str]], what: str = "") -> dict[str, str]:
    assert len(items) == 1, f"{what}: {items}"
    return items[0]


async def sipp_ok(*peers: Sipp, timeout: float = 30) -> None:
    for peer in peers:
        await asyncio.to_thread(peer.assert_success, timeout)


async def wait_log(peer: Sipp, text: str, timeout: float = 15) -> None:
    await wait_until(lambda: text in peer.logs(), timeout, f"{peer.name} to log {text!r}")


@dataclass
class Bed:
    env: Env
    hook: HttpReceiver

    async def place(self) -> str:
        response = await self.env.place()
        assert response.status_code == 201, response.text
        ref: str = response.json()["call_ref"]
        return ref

    def cdrs(self, ref: str) -> list[dict[str, Any]]:
        docs = [json.loads(r.body) for r in self.hook.requests]
        return [
            d["payload"] for d in docs if d["type"] == "cdr" and d["payload"]["call_ref"] == ref
        ]

    async def one_cdr(self, ref: str) -> dict[str, Any]:
        """The call's CDR as the integrator's webhook got it: exactly one,
        once the outbox has nothing left to send."""
        await wait_until(lambda: self.cdrs(ref), 20, f"the CDR of {ref}")
        store = self.env.service.store
        assert store is not None

        async def drained() -> bool:
            return await store.undelivered("acme") == []

        await wait_until(drained, 20, "the outbox to drain")
        cdrs = self.cdrs(ref)
        assert len(cdrs) == 1, cdrs
        record = await store.get_call("acme", ref)
        assert record is not None and not record.live
        return cdrs[0]


@asynccontextmanager
async def bed(
    tmp_path: Path, agent: Sipp | None, trunk: Sipp | None, **options: Any
) -> AsyncIterator[Bed]:
    """The service with ``agent`` as the phone of agent 1001 and ``trunk``
    as the trunk (each over its own transport), CDRs to a webhook."""
    contact = ""
    if agent is not None:
        contact = f'contact = "sip:1001@127.0.0.1:{agent.port};transport={agent.transport}"'
    async with (
        HttpReceiver() as hook,
        running(
            tmp_path,
            agent_port=None,
            agent=contact,
            trunk_port=trunk.port if trunk else None,
            trunk_transport=trunk.transport if trunk else "udp",
            acme=f'webhook_url = "{hook.url}"\nwebhook_secret = "{SECRET}"',
            **options,
        ) as env,
    ):
        yield Bed(env, hook)


# ------------------------------------------------- 1. trunk moves the media


def test_trunk_reinvite_with_new_media_reaches_the_agent_and_gets_its_answer(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with (
            Sipp("agent_relay") as agent,
            Sipp("trunk_reinvite", variables={"hold_ms": 300}) as trunk,
        ):
            async with bed(tmp_path, agent, trunk) as b:
                ref = await b.place()
                ended = await b.env.wait_ended(ref)
                await sipp_ok(agent, trunk)
                cdr = await b.one_cdr(ref)
            assert ended["end_reason"] == "callee_hungup" and ended["hangup_side"] == "callee"
            assert cdr["end_reason"] == "callee_hungup" and cdr["end_code"] == 16
            # The agent: the callee's answer (PCMU, 7078), then the trunk's new
            # offer as it was (PCMA only, 7090) in a newer version of our session.
            offers = logged(agent, "REINVITE-OFFER")
            assert len(offers) == 2, f"the agent saw these offers: {offers}"
            answered, moved = offers
            assert (answered["m"], answered["fmt"].split()[0]) == ("7078", "0")
            assert moved["ctype"] == "application/sdp"
            assert (moved["c"], moved["m"], moved["fmt"]) == ("127.0.0.1", "7090", "8 101")
            assert int(moved["o"]) > int(answered["o"])
            assert logged(agent, "REINVITE-ANSWERED")[-1]["fmt"] == "8"
            # The trunk: the agent's answer, i.e. the agent's address and port and
            # the one codec the agent accepted.
            answer = one(logged(trunk, "REINVITE-ANSWER"), "the trunk's re-INVITE answer")
            assert answer["ctype"] == "application/sdp"
            assert (answer["c"], answer["m"]) == ("127.0.0.1", str(agent.media_port))
            assert answer["fmt"] == "8" and answer["dir"] in ("sendrecv", "")

    run(main())


# ------------------------------------------------ 2. UPDATE without SDP


def test_update_without_sdp_gets_200_without_body_and_nothing_reaches_the_agent(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with Sipp("agent_relay") as agent, Sipp("trunk_update") as trunk:
            async with bed(tmp_path, agent, trunk) as b:
                ref = await b.place()
                ended = await b.env.wait_ended(ref)
                await sipp_ok(agent, trunk)  # the agent got no UPDATE: it fails on one
                await b.one_cdr(ref)
            assert ended["end_reason"] == "callee_hungup"
            update = one(logged(trunk, "UPDATE-ANSWER"), "the UPDATE's 200")
            assert update["clen"] == "0" and update["ctype"] == "" and update["m"] == ""
            # Only the callee's answer was ever offered to the agent.
            assert len(logged(agent, "REINVITE-OFFER")) == 1
            assert logged(agent, "OPTIONS") == []

    run(main())


# ------------------------------------------------------ 3. hold and resume


def test_agent_hold_and_resume_reach_the_trunk_with_their_directions(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_hold") as agent, Sipp("trunk_hold") as trunk:
            async with bed(tmp_path, agent, trunk) as b:
                ref = await b.place()
                ended = await b.env.wait_ended(ref)
                await sipp_ok(agent, trunk)
                await b.one_cdr(ref)
            assert ended["end_reason"] == "callee_hungup"
            hold = one(logged(trunk, "HOLD-OFFER"), "hold at the trunk")
            resume = one(logged(trunk, "RESUME-OFFER"), "resume at the trunk")
            for offer in (hold, resume):
                assert offer["ctype"] == "application/sdp"
                assert (offer["c"], offer["m"]) == ("127.0.0.1", str(agent.media_port))
                assert offer["fmt"] == "0 8 101"
            assert hold["dir"] == "sendonly" and resume["dir"] == "sendrecv"
            assert int(hold["o"]) < int(resume["o"])
            held = one(logged(agent, "HOLD-ANSWER"), "the hold's answer at the agent")
            resumed = one(logged(agent, "RESUME-ANSWER"), "the resume's answer at the agent")
            for answer in (held, resumed):
                assert answer["ctype"] == "application/sdp"
                assert (answer["c"], answer["m"], answer["fmt"]) == ("127.0.0.1", "7078", "0 101")
            assert held["dir"] == "recvonly" and resumed["dir"] == "sendrecv"
            assert int(held["o"]) < int(resumed["o"])

    run(main())


# -------------------------------------------------- 4. no codec in common


def test_g729_only_answer_ends_the_call_at_once_with_a_bye_to_both(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer_g729") as trunk:
            async with bed(tmp_path, agent, trunk) as b:
                ref = await b.place()
                ended = await b.env.wait_ended(ref)
                await sipp_ok(agent, trunk)  # both got a BYE
                cdr = await b.one_cdr(ref)
            assert ended["end_reason"] == "error" and ended["end_code"] == 88
            assert ended["ended_at"] - ended["created_at"] < 5
            assert cdr["end_reason"] == "error" and cdr["end_code"] == 88
            assert len(logged(trunk, "BYE")) == 1
            # The silent media never reached the agent.
            assert logged_media(agent.logs(), "REINVITE") == []

    run(main())


# ---------------------------------------------------- 5. peers that vanish


def test_agent_phone_killed_mid_call_is_noticed_by_probes(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_relay") as agent, Sipp("trunk_answer_probed") as trunk:
            async with bed(tmp_path, agent, trunk, sip=PROBES) as b:
                ref = await b.place()
                await b.env.wait_state(ref, {"talking"})
                await wait_log(agent, "REINVITE-ANSWERED")  # the media sync is done
                assert agent.process is not None
                agent.process.kill()  # SIGKILL: no BYE, nothing answers any more
                await asyncio.to_thread(agent.process.wait, 10)
                killed_at = time.time()
                ended = await b.env.wait_ended(ref, timeout=60, legs_timeout=20)
                await sipp_ok(trunk)  # the trunk got its BYE
                cdr = await b.one_cdr(ref)
            # probe_interval 5 s, then the OPTIONS times out after 64*T1 = 6.4 s.
            assert ended["ended_at"] - killed_at < 20
            assert ended["hangup_side"] == "agent" and ended["sip_status"] == 408
            assert ended["end_reason"] == "error"
            assert cdr["end_reason"] == "error"
            assert len(logged(trunk, "BYE")) == 1

    run(main())


def test_trunk_that_stops_answering_mid_call_is_noticed_by_probes(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_relay") as agent, Sipp("trunk_answer_silent") as trunk:
            async with bed(tmp_path, agent, trunk, sip=PROBES) as b:
                ref = await b.place()
                talking = await b.env.wait_state(ref, {"talking"})
                ended = await b.env.wait_ended(ref, timeout=60, legs_timeout=20)
                await sipp_ok(agent, trunk)  # the agent got its BYE
                cdr = await b.one_cdr(ref)
            answered = talking["legs"]["callee"]["answered_at"]
            assert ended["ended_at"] - answered < 20
            assert ended["hangup_side"] == "callee" and ended["sip_status"] == 408
            assert ended["end_reason"] == "error" and cdr["end_reason"] == "error"
            assert len(logged(trunk, "IGNORED OPTIONS")) >= 1
            assert len(logged(agent, "BYE")) == 1

    run(main())


# ------------------------------------------- 6. DELETE never waits for a BYE


def test_delete_returns_at_once_when_the_peer_never_answers_the_bye(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_relay") as agent, Sipp("trunk_answer_silent") as trunk:
            async with bed(tmp_path, agent, trunk) as b:
                ref = await b.place()
                await b.env.wait_state(ref, {"talking"})
                await wait_log(agent, "REINVITE-ANSWERED")
                loop = asyncio.get_running_loop()
                started = loop.time()
                deleted = await b.env.acme.delete(f"/click2dial/calls/{ref}")
                elapsed = loop.time() - started
                assert deleted.status_code == 200, deleted.text
                assert elapsed < 1, f"DELETE took {elapsed:.2f} s"
                assert deleted.json()["status"] in ("ending", "ended")
                ended = await b.env.wait_ended(ref, timeout=60, legs_timeout=20)
                await sipp_ok(agent, trunk)
                cdr = await b.one_cdr(ref)
            assert ended["hangup_side"] == "api" and ended["end_reason"] == "hungup"
            assert cdr["end_reason"] == "hungup"
            assert len(logged(trunk, "IGNORED BYE")) == 1
            assert len(logged(agent, "BYE")) == 1

    run(main())


# --------------------------------------------- 7. hangups in every phase


@dataclass(frozen=True)
class Phase:
    agent: str
    trunk: str | None
    reason: str | None  # expected end_reason (None: not asserted)
    side: str
    delete_when: str | None = None  # the API deletes the call in this state
    agent_vars: tuple[tuple[str, int], ...] = ()
    trunk_vars: tuple[tuple[str, int], ...] = ()


PHASES: Final = {
    "agent_ringing-agent_declines": Phase("agent_reject", None, "reject", "agent"),
    "agent_ringing-api": Phase("agent_no_answer", None, None, "api", "agent_ringing"),
    "callee_ringing-agent_hangs_up": Phase(
        "agent_answer_hangup", "trunk_ring_forever", None, "agent", agent_vars=(("talk_ms", 300),)
    ),
    "callee_ringing-callee_busy": Phase(
        "agent_answer", "trunk_reject", "busy", "callee", trunk_vars=(("status", 486),)
    ),
    "callee_ringing-api": Phase(
        "agent_answer", "trunk_ring_forever", None, "api", "callee_ringing"
    ),
    # The agent hangs up talk_ms after the re-INVITE of the callee's early
    # media, the callee answers ring_ms after its 183: talk_ms >> ring_ms.
    "talking-agent_hangs_up": Phase(
        "agent_answer_hangup",
        "trunk_answer",
        "agent_hungup",
        "agent",
        agent_vars=(("talk_ms", 1200),),
        trunk_vars=(("ring_ms", 100),),
    ),
    "talking-callee_hangs_up": Phase(
        "agent_answer",
        "trunk_answer_hangup",
        "callee_hungup",
        "callee",
        trunk_vars=(("talk_ms", 300),),
    ),
    "talking-api": Phase("agent_answer", "trunk_answer", "hungup", "api", "talking"),
}


@pytest.mark.parametrize("name", list(PHASES))
def test_a_hangup_in_any_phase_ends_the_call_with_one_cdr_and_no_leg(
    tmp_path: Path, name: str
) -> None:
    phase = PHASES[name]

    async def main() -> None:
        with contextlib.ExitStack() as stack:
            agent = stack.enter_context(Sipp(phase.agent, variables=dict(phase.agent_vars)))
            trunk = None
            if phase.trunk is not None:
                trunk = stack.enter_context(Sipp(phase.trunk, variables=dict(phase.trunk_vars)))
            async with bed(tmp_path, agent, trunk) as b:
                ref = await b.place()
                if phase.delete_when is not None:
                    await b.env.wait_state(ref, {phase.delete_when})
                    # The ringing leg has its INVITE: the DELETE cancels it.
                    await wait_log(trunk or agent, "INVITE ruri")
                    deleted = await b.env.acme.delete(f"/click2dial/calls/{ref}")
                    assert deleted.status_code == 200, deleted.text
                ended = await b.env.wait_ended(ref)  # and no SIP leg left
                await sipp_ok(agent, *([trunk] if trunk else []))
                cdr = await b.one_cdr(ref)
                assert b.env.controller_live() == set()
            assert ended["hangup_side"] == phase.side
            if phase.reason is not None:
                assert ended["end_reason"] == phase.reason == cdr["end_reason"]
            if name.startswith("talking"):
                assert ended["legs"]["callee"]["answered_at"] is not None
            else:
                assert ended["legs"]["callee"]["answered_at"] is None

    run(main())


# ------------------------------ 8. reliable provisionals and session timers


@pytest.mark.parametrize("scenario", ["trunk_100rel", "trunk_421", "trunk_422"])
def test_trunk_extensions_100rel_421_422_complete_the_call(tmp_path: Path, scenario: str) -> None:
    """trunk_100rel: a 183 with Require: 100rel gets its PRACK; trunk_421:
    421 is retried with Require: 100rel; trunk_422: 422 with Min-SE: 1800
    is retried with Session-Expires >= 1800.  Each call then completes and
    the callee hangs up."""

    async def main() -> None:
        with (
            Sipp("agent_answer") as agent,
            Sipp(scenario, variables={"ring_ms": 100, "talk_ms": 300}) as trunk,
        ):
            async with bed(tmp_path, agent, trunk) as b:
                ref = await b.place()
                ended = await b.env.wait_ended(ref)
                await sipp_ok(agent, trunk)  # each checks RAck, CSeq, Session-Expires
                cdr = await b.one_cdr(ref)
            assert ended["end_reason"] == "callee_hungup" and cdr["end_reason"] == "callee_hungup"
            assert ended["legs"]["callee"]["answered_at"] is not None
            if scenario == "trunk_422":
                (line,) = [
                    x for x in trunk.logs().splitlines() if x.startswith("INVITE session-expires=")
                ]
                expires = re.match(r"\d+", line.split("=", 1)[1].strip())
                assert expires is not None and int(expires.group()) >= 1800, line
            else:
                prack = one(logged(trunk, "PRACK"), "the PRACK")
                assert prack["rack"] == f"1 {prack['invite_cseq']} INVITE"
            # The trunk's early media reached the agent.
            assert logged_media(agent.logs(), "REINVITE")[0].port == 7078

    run(main())


# ------------------------------------------------------- 9. agent behind NAT


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_agent_behind_nat_gets_ack_and_reinvite_where_its_messages_came_from(
    tmp_path: Path, transport: Transport
) -> None:
    """The agent's Contact names a port nothing serves (the test holds it);
    its messages come from its own port.  With the default configuration
    (no ``nat`` line: on for agents) the call completes normally."""

    async def main() -> None:
        with held_port(transport) as contact:
            # The agent hangs up talk_ms after the re-INVITE of the callee's
            # early media; the callee answers ring_ms after it (the same SDP:
            # no second re-INVITE), well before.
            variables = {"contact_port": contact.getsockname()[1], "talk_ms": 1500}
            with (
                Sipp("agent_nat", transport=transport, variables=variables) as agent,
                Sipp("trunk_answer", variables={"ring_ms": 100}) as trunk,
            ):
                async with bed(tmp_path, agent, trunk) as b:
                    ref = await b.place()
                    ended = await b.env.wait_ended(ref)
                    await sipp_ok(agent, trunk)  # the ACK and re-INVITE reached the agent
                    cdr = await b.one_cdr(ref)
                assert ended["end_reason"] == "agent_hungup" and cdr["end_reason"] == "agent_hungup"
                assert ended["legs"]["callee"]["answered_at"] is not None
                assert logged(agent, "ACK") == [{"sdp": "yes"}]
                assert len(logged_media(agent.logs(), "REINVITE")) == 1
                assert len(logged(trunk, "BYE")) == 1
            assert nothing_arrived(contact)

    run(main())


@contextlib.contextmanager
def held_port(transport: str) -> Iterator[socket.socket]:
    """A port bound and never served (what a NAT does with a packet to a
    port it never mapped).  Over TCP, bound without listen(): refused."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def nothing_arrived(sock: socket.socket) -> bool:
    if sock.type != socket.SOCK_DGRAM:
        return True  # never listened: nothing can have been accepted
    try:
        sock.recv(65535)
    except BlockingIOError:
        return True
    return False
