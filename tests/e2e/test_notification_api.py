"""The integrator's view of its notifications over HTTP: the undelivered list
and redelivery on request (docs/notifications.md)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_notifications import place_and_end, run, running, sipp_ok
from tests.notify.support import HttpReceiver, RedisServer, brpop_all
from tests.sipp.harness import Sipp

SECRET = "webhook-secret-0123456789"
CDR_LIST = "enigma:notifications:cdr"


def test_a_failing_webhook_shows_in_the_undelivered_list_of_its_integrator_only(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with HttpReceiver([500] * 100) as hook:
            with Sipp("agent_busy") as busy:
                async with running(
                    tmp_path,
                    agent_port=busy.port,
                    trunk_port=None,
                    acme=f'webhook_url = "{hook.url}"\nwebhook_secret = "{SECRET}"',
                ) as env:
                    ref = await place_and_end(env)
                    await hook.wait_for(1, timeout=15)  # one failed attempt at least
                    listed = await env.acme.get("/click2dial/notifications")
                    assert listed.status_code == 200
                    rows = listed.json()["notifications"]
                    cdrs = [r for r in rows if r["kind"] == "cdr"]
                    assert [(r["call_ref"], r["target"]) for r in cdrs] == [(ref, "webhook")]
                    assert cdrs[0]["type"] == "cdr"
                    ident = cdrs[0]["id"]
                    # Another integrator neither sees nor touches it.
                    other = await env.beta.get("/click2dial/notifications")
                    assert other.json()["notifications"] == []
                    stolen = await env.beta.post(f"/click2dial/notifications/{ident}/redeliver")
                    assert stolen.status_code == 404
                    unknown = await env.acme.post("/click2dial/notifications/nope/redeliver")
                    assert unknown.status_code == 404
                    bad = await env.acme.get("/click2dial/notifications?state=delivered")
                    assert bad.status_code == 422
                    assert bad.json()["error"]["errors"][0]["field"] == "state"
                    queued = await env.acme.post(f"/click2dial/notifications/{ident}/redeliver")
                    assert queued.status_code == 202
                    assert queued.json() == {"id": ident, "status": "queued"}
                await sipp_ok(busy)

    run(main())


def test_redelivery_on_request_pushes_a_delivered_cdr_again_with_the_same_id(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with RedisServer() as redis_server, Sipp("agent_busy") as busy:
            async with running(
                tmp_path,
                agent_port=busy.port,
                trunk_port=None,
                acme=f'redis = "{redis_server.url(4)}"',
            ) as env:
                client = redis_server.client(4)
                ref = await place_and_end(env)
                first = await brpop_all(client, 1, CDR_LIST, timeout=10)
                assert first[0]["payload"]["call_ref"] == ref
                undelivered = (await env.acme.get("/click2dial/notifications")).json()
                assert [r for r in undelivered["notifications"] if r["kind"] == "cdr"] == []
                response = await env.acme.post(
                    f"/click2dial/notifications/{first[0]['id']}/redeliver"
                )
                assert response.status_code == 202
                again = await brpop_all(client, 1, CDR_LIST, timeout=10)
                assert json.dumps(again[0], sort_keys=True) == json.dumps(first[0], sort_keys=True)
                await sipp_ok(busy)

    run(main())
