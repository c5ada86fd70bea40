"""Any node answers for any call: two in-process nodes on one PostgreSQL
schema (distinct ``node_id``, HTTP and SIP ports), real sipp peers.

A call placed on node 1 is read and hung up through node 2 (the DELETE
reaches node 1 over PostgreSQL ``LISTEN``/``NOTIFY``); the integrator's
``max_concurrent`` and "agent already on a live call" hold across the two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.e2e.support import Env, drop_pg_schema, pg_schema_url, running
from tests.e2e.test_calls import run, sipp_ok, wait_log
from tests.sipp.harness import Sipp

PATH = "/click2dial/calls"


@asynccontextmanager
async def two_nodes(
    tmp_path: Path, agent: Sipp | None, trunk: Sipp | None, **options: Any
) -> AsyncIterator[tuple[Env, Env]]:
    """Nodes ``node-1`` and ``node-2`` sharing one new schema, both with
    ``agent`` as the phone of 1001 and ``trunk`` as the trunk."""
    url = await pg_schema_url()
    common: dict[str, Any] = {
        "database": url,
        "agent_port": agent.port if agent else None,
        "trunk_port": trunk.port if trunk else None,
        **options,
    }
    try:
        (tmp_path / "n1").mkdir()
        (tmp_path / "n2").mkdir()
        async with (
            running(tmp_path / "n1", node_id="node-1", **common) as one,
            running(tmp_path / "n2", node_id="node-2", **common) as two,
        ):
            yield one, two
    finally:
        await drop_pg_schema(url)


async def same_view(one: Env, two: Env, ref: str, status: str) -> dict[str, Any]:
    """Poll both nodes until each shows ``status``; the two bodies must then
    be the same call (node 2 reads what node 1 stored)."""
    await one.wait_state(ref, {status})
    await two.wait_state(ref, {status})
    first, second = await one.state(ref), await two.state(ref)
    assert first == second, (first, second)
    return first


def test_delete_through_the_other_node_ends_a_talking_call(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_answer") as trunk:
            async with two_nodes(tmp_path, agent, trunk) as (one, two):
                placed = await one.place()
                assert placed.status_code == 201, placed.text
                ref = placed.json()["call_ref"]
                talking = await same_view(one, two, ref, "talking")
                assert talking["legs"]["callee"]["state"] == "answered"
                assert talking["legs"]["agent"]["answered_at"] is not None
                deleted = await two.acme.delete(f"{PATH}/{ref}")
                assert deleted.status_code == 200, deleted.text
                body = deleted.json()
                assert body["status"] == "ended" and body["end_reason"] == "hungup"
                assert body["hangup_side"] == "api" and body["end_code"] == 16
                await one.wait_ended(ref)  # node 1 let go of both legs
                await sipp_ok(agent, trunk)  # each got its BYE
                ended = await same_view(one, two, ref, "ended")
                assert ended == body
                # A second DELETE, through either node, answers the ended call.
                again = await two.acme.delete(f"{PATH}/{ref}")
                assert again.status_code == 200 and again.json() == body

    run(main())


def test_delete_through_the_other_node_cancels_a_ringing_callee(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_answer") as agent, Sipp("trunk_ring_forever") as trunk:
            async with two_nodes(tmp_path, agent, trunk) as (one, two):
                ref = (await one.place()).json()["call_ref"]
                await wait_log(trunk, "INVITE ruri")
                # The owner shows the callee ringing; the store (what node 2
                # shows) has the agent's answer, written with its dialog, and
                # gets the callee's progress with the next write (its answer
                # or the end): docs/scaling.md "Any node answers".
                owner = await one.wait_state(ref, {"callee_ringing"})
                seen = await two.wait_state(ref, {"agent_answered"})
                assert owner["legs"]["agent"] == seen["legs"]["agent"]
                assert seen["legs"]["agent"]["state"] == "answered"
                deleted = await two.acme.delete(f"{PATH}/{ref}")
                assert deleted.status_code == 200, deleted.text
                assert deleted.json()["status"] == "ended"
                assert deleted.json()["hangup_side"] == "api"
                await sipp_ok(agent, trunk)  # BYE to the agent, CANCEL to the trunk
                listed = (await two.acme.get(PATH)).json()["calls"]
                assert [c["call_ref"] for c in listed] == [ref]
                assert listed[0] == (await one.state(ref))

    run(main())


def test_delete_whose_owner_does_not_answer_is_503_with_retry_after(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent:
            async with two_nodes(tmp_path, agent, None) as (one, two):
                ref = (await one.place()).json()["call_ref"]
                await wait_log(agent, "INVITE ruri")
                # Node 1 stops hearing the bus, as a dead node would.
                assert one.service.bus is not None
                await one.service.bus.close()
                refused = await two.acme.delete(f"{PATH}/{ref}")
                assert refused.status_code == 503, refused.text
                assert int(refused.headers["retry-after"]) >= 1
                assert "node-1" in refused.json()["error"]["title"]
                assert (await two.state(ref))["status"] == "agent_ringing"
                # The owner itself still hangs it up.
                deleted = await one.acme.delete(f"{PATH}/{ref}")
                assert deleted.json()["status"] == "ended"
                await sipp_ok(agent)

    run(main())


def test_max_concurrent_holds_across_the_nodes(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer", calls=2) as agent:
            async with two_nodes(tmp_path, agent, None, acme="max_concurrent = 1") as (one, two):
                first = (await one.place()).json()["call_ref"]
                await wait_log(agent, "INVITE ruri")
                for node in (two, one):
                    over = await node.place(agent="1002")
                    assert over.status_code == 429, over.text
                    assert int(over.headers["retry-after"]) >= 1
                    assert "concurrent" in over.json()["error"]["title"]
                ended = await two.acme.delete(f"{PATH}/{first}")
                assert ended.json()["status"] == "ended"
                # The end is stored: the next call fits, on either node.
                second = await two.place()
                assert second.status_code == 201, second.text
                assert (await one.state(second.json()["call_ref"]))["status"] != "ended"
                await one.acme.delete(f"{PATH}/{second.json()['call_ref']}")
                await sipp_ok(agent)

    run(main())


def test_agent_live_on_node_1_is_busy_on_node_2(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent:
            async with two_nodes(tmp_path, agent, None) as (one, two):
                first = (await one.place()).json()["call_ref"]
                await wait_log(agent, "INVITE ruri")
                busy = await two.place()
                assert busy.status_code == 409, busy.text
                error = busy.json()["error"]
                assert error["call_ref"] == first
                assert [(e["field"], e["rule"]) for e in error["errors"]] == [("agent", "busy")]
                await two.acme.delete(f"{PATH}/{first}")
                await sipp_ok(agent)

    run(main())
