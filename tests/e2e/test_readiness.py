"""/readyz reports the SIP listeners honestly, and a Redis or webhook outage
does not make the node unready (issue 11, build item 3).

Closing a SIP listener under the running service is a fault no peer can
cause, so the test closes the transport's TCP server itself (named as such);
/readyz must then name ``sip`` as not ready, while the store stays ``ok``.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.test_api import bare, run
from tests.sipp.harness import free_port


def test_readyz_names_a_closed_sip_listener_and_ignores_a_dead_redis_and_webhook(
    tmp_path: Path,
) -> None:
    dead = free_port("tcp")
    targets = (
        f'redis = "redis://127.0.0.1:{dead}/9"\n'
        f'webhook_url = "http://127.0.0.1:{dead}/hook"\n'
        'webhook_secret = "whsec-0123456789abcdef"'
    )

    async def main() -> None:
        async with (
            bare(tmp_path, acme=targets) as env,
            httpx.AsyncClient(base_url=env.acme.base_url, timeout=10) as anonymous,
        ):
            ready = await anonymous.get("/readyz")
            # Redis and the webhook are down from the start: still ready.
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"service": "ok", "store": "ok", "sip": "ok"}
            ua = env.service.ua
            assert ua is not None and ua.listening() == {"udp": True, "tcp": True}
            transport = ua._transport
            assert transport is not None
            for server in transport._servers:  # the fault: the TCP listener closes
                server.close()
            down = await anonymous.get("/readyz")
            assert down.status_code == 503, down.text
            body = down.json()
            assert body["status"] == "not ready" and body["not_ready"] == ["sip"], body
            assert body["checks"]["sip"] == "not listening on tcp", body
            assert body["checks"]["store"] == "ok", body

    run(main())
