"""Where legs go and who may talk on which port: PBX mode, own HTTP ports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.e2e.support import ACME_KEY, BETA_KEY, running
from tests.e2e.test_calls import one_invite, run, sipp_ok, wait_log
from tests.sipp.harness import Sipp, free_port


def test_pbx_mode_rings_the_extension_through_the_upstream_pbx(tmp_path: Path) -> None:
    async def main() -> None:
        with Sipp("agent_no_answer") as pbx:
            async with running(
                tmp_path,
                agent_port=None,
                trunk_port=None,
                extra=f'[extensions]\nmode = "pbx"\npbx_uri = "sip:127.0.0.1:{pbx.port}"',
            ) as env:
                response = await env.place(agent="1002")
                assert response.status_code == 201, response.text
                await wait_log(pbx, "INVITE ruri")
                at_pbx = one_invite(pbx)
                await env.acme.delete(f"/click2dial/calls/{response.json()['call_ref']}")
                await sipp_ok(pbx)
            assert at_pbx.ruri.startswith(f"sip:1002@127.0.0.1:{pbx.port}")
            assert at_pbx.answermode == "Auto"  # agent 1002: auto_answer = "answer-mode"

    run(main())


def test_an_integrator_with_its_own_port_is_served_only_there(tmp_path: Path) -> None:
    own = free_port("tcp")

    async def main() -> None:
        async with running(
            tmp_path, agent_port=None, trunk_port=None, extra=f"http_port = {own}"
        ) as env:  # beta gets its own listener
            shared = env.service.http_port("acme")
            assert env.service.http_port("beta") == own
            async with httpx.AsyncClient(timeout=5) as client:
                beta = {"Authorization": f"Bearer {BETA_KEY}"}
                acme = {"Authorization": f"Bearer {ACME_KEY}"}
                url = "http://127.0.0.1:{}/click2dial/calls"
                assert (await client.get(url.format(own), headers=beta)).status_code == 200
                assert (await client.get(url.format(own), headers=acme)).status_code == 401
                assert (await client.get(url.format(shared), headers=beta)).status_code == 401
                assert (await client.get(url.format(shared), headers=acme)).status_code == 200

    asyncio.run(main())
