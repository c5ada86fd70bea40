"""A store outage is a 503 with Retry-After, and /readyz says so (issue 11,
build item 3).

A PostgreSQL of the test's own (``private_pg``, never the machine's) is
restarted while clients keep placing calls: every POST gets 201 or 503 with
``Retry-After`` (never a 500), listing and reading a call get 503 with
``Retry-After`` while it is down, ``/readyz`` is 503 naming the store while
it is down and ready again once it is back, and a call can be placed again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.private_pg import PrivatePostgres
from tests.e2e.support import running
from tests.e2e.test_api import PATH, assert_error

LIMITS = "max_cps = 10000\nmax_concurrent = 10000"
WORKERS = 4


NO_NODE_RATE = "[admission]\nmax_calls_per_second = 0"


async def wait_readyz(client: httpx.AsyncClient, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, f"/readyz: {response.status_code} {response.text}"
        await asyncio.sleep(0.05)


def test_postgres_restart_during_load_posts_get_201_or_503_and_readyz_is_not_ready(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    numbers = itertools.count(820000000)  # distinct external agents: never a 409

    def body() -> dict[str, str]:
        return {"agent": f"0{next(numbers)}", "callee": "0831234567",
                "outbound_id": "27110000001"}  # fmt: skip

    async def main() -> None:
        async with running(
            tmp_path,
            database=private_pg.url,
            agent_port=None,
            trunk_port=None,
            acme=LIMITS,
            # The load loops as fast as the node answers: the node-wide calls
            # per second limit would refuse with 503 too, and blur what this
            # test is about (the store's outage).
            extra=NO_NODE_RATE,
        ) as env:
            anonymous = httpx.AsyncClient(base_url=env.acme.base_url, timeout=10)
            assert (await wait_readyz(anonymous, 200, 5))["not_ready"] == []
            first = await env.acme.post(PATH, json=body())
            assert first.status_code == 201, first.text
            ref = first.json()["call_ref"]
            statuses: list[tuple[int, str | None, str]] = []
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    response = await env.acme.post(PATH, json=body())
                    statuses.append(
                        (response.status_code, response.headers.get("retry-after"), response.text)
                    )

            workers = [asyncio.create_task(load()) for _ in range(WORKERS)]
            try:
                await asyncio.sleep(0.3)
                await asyncio.to_thread(private_pg.stop, "fast")
                down = await wait_readyz(anonymous, 503, 5)
                assert down["status"] == "not ready" and down["not_ready"] == ["store"], down
                assert down["checks"]["store"] == "unreachable", down
                for method, url in (("GET", PATH), ("GET", f"{PATH}/{ref}"),
                                    ("DELETE", f"{PATH}/{ref}"), ("POST", PATH)):  # fmt: skip
                    response = await env.acme.request(
                        method, url, json=body() if method == "POST" else None
                    )
                    assert_error(response, 503)
                    assert int(response.headers["retry-after"]) >= 1, response.headers
                await asyncio.sleep(1.0)  # the load goes on during the outage
                # Still down after several probe intervals: not ready throughout.
                assert (await anonymous.get("/readyz")).status_code == 503
                await asyncio.to_thread(private_pg.start)
                up = await wait_readyz(anonymous, 200, 10)
                assert up["checks"] == {"service": "ok", "store": "ok", "sip": "ok"}, up
                await asyncio.sleep(0.3)  # and load after it is back
            finally:
                stop.set()
                await asyncio.gather(*workers)
                await anonymous.aclose()
            again = await env.acme.post(PATH, json=body())
            assert again.status_code == 201, again.text
        seen = {status for status, _, _ in statuses}
        assert seen <= {201, 503}, [s for s in statuses if s[0] not in (201, 503)][:5]
        assert 503 in seen and 201 in seen, seen
        assert all(int(after or 0) >= 1 for status, after, _ in statuses if status == 503)
        # Before the outage and after it, calls were taken.
        assert statuses[0][0] == 201 and statuses[-1][0] == 201, (statuses[0], statuses[-1])

    asyncio.run(asyncio.wait_for(main(), 90))
