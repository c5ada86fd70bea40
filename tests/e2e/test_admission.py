"""Beyond capacity the node says so (SPEC §4, issue 10): with a node limit
of one live call, the call beyond it gets 503 with ``Retry-After`` at once,
is not stored and starts no SIP leg; once the first call ends, calls are
taken again.  A replay of a request already taken gets its call, not 503."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.support import running
from tests.e2e.test_calls import run, sipp_ok, wait_log
from tests.sipp.harness import Sipp

NODE_LIMIT = "\n[admission]\nmax_live_calls = 1\nretry_after = 2\n"


def test_the_call_beyond_the_node_limit_gets_503_and_dials_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as agent:
            async with running(
                tmp_path, agent_port=agent.port, trunk_port=None, extra=NODE_LIMIT
            ) as env:
                key = {"Idempotency-Key": "first"}
                body = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
                        "contact_ref": "first"}  # fmt: skip
                first = await env.acme.post("/click2dial/calls", json=body, headers=key)
                assert first.status_code == 201, first.text
                ref = first.json()["call_ref"]
                await wait_log(agent, "INVITE ruri")
                ua = env.service.ua
                assert ua is not None
                legs_before = len(ua.calls)

                refused = await env.place(agent="1002", contact_ref="beyond")
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"] == "2"
                error = refused.json()["error"]
                assert error["status"] == 503 and "live calls" in error["title"]
                assert len(ua.calls) == legs_before  # no SIP leg for it
                # A replay of the first request is never refused: the node is
                # full, and the answer is still the first call.
                replay = await env.acme.post("/click2dial/calls", json=body, headers=key)
                assert replay.status_code == 200, replay.text
                assert replay.json()["call_ref"] == ref
                assert len(ua.calls) == legs_before
                exposition = (await env.service.scrape()).decode()
                refusals = [
                    line
                    for line in exposition.splitlines()
                    if line.startswith("click2dial_admission_refused")
                    and 'reason="live calls at the node limit"' in line
                ]
                assert refusals and refusals[0].endswith(" 1.0"), exposition
                listed = await env.acme.get("/click2dial/calls", params={"contact_ref": "beyond"})
                assert listed.status_code == 200 and listed.json()["calls"] == []

                deleted = await env.acme.delete(f"/click2dial/calls/{ref}")
                assert deleted.status_code == 200
                await env.wait_ended(ref)
                await sipp_ok(agent)
                again = await env.place(agent="1002", contact_ref="after")
                assert again.status_code == 201, again.text  # capacity is back

    run(main())
