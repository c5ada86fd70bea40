"""Two delivery workers (two nodes) draining one PostgreSQL outbox: every
row reaches its webhook exactly once, in outbox order per integrator, also
across a failed attempt and its retry.  Webhooks, unlike Redis (whose
marker would hide a second push), show every delivery made."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

from click2dial.config import IntegratorConfig
from click2dial.notify import Notifier
from click2dial.store import Notification, open_store
from tests.e2e.support import drop_pg_schema, pg_schema_url
from tests.notify.support import HttpReceiver, cdr_row, wait_until

ROWS = 40  # per integrator
SECRET = "whsec-0123456789abcdef0123456789"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def sent_ids(hook: HttpReceiver) -> list[str]:
    return [r.headers["x-click2dial-notification-id"] for r in hook.requests]


def test_two_workers_deliver_each_row_once_in_order_per_target() -> None:
    async def main() -> None:
        url = await pg_schema_url()
        # acme's webhook fails its 7th request once: the retry must still
        # come before every younger acme row, whichever worker sends it.
        statuses = [200] * 6 + [503]
        try:
            async with (
                HttpReceiver(statuses) as acme_hook,
                HttpReceiver() as beta_hook,
                open_store(url) as first,
                open_store(url) as second,
            ):
                integrators = {
                    "acme": IntegratorConfig(
                        name="acme", webhook_url=acme_hook.url, webhook_secret=SECRET
                    ),
                    "beta": IntegratorConfig(
                        name="beta", webhook_url=beta_hook.url, webhook_secret=SECRET
                    ),
                }
                options: dict[str, Any] = {"poll_interval": 0.02, "batch": 3,
                                           "backoff_base": 0.05}  # fmt: skip
                workers = [Notifier(store, integrators, **options) for store in (first, second)]
                for worker in workers:
                    await worker.start()
                queued: dict[str, list[Notification]] = {"acme": [], "beta": []}
                try:
                    # Committed one by one through both nodes while both
                    # workers run, as calls ending on two nodes would.
                    for n in range(ROWS):
                        for i, name in enumerate(("acme", "beta")):
                            row = cdr_row(name, n, target="webhook")
                            await (first, second)[(n + i) % 2].enqueue([row])
                            queued[name].append(row)
                        workers[n % 2].wake()
                    await wait_until(
                        lambda: (
                            len(acme_hook.answered) >= ROWS + 1 and len(beta_hook.answered) >= ROWS
                        ),
                        timeout=30,
                        what="every row delivered",
                    )
                    await wait_until(lambda: _pending(first), timeout=10, what="an empty outbox")
                finally:
                    for worker in workers:
                        await worker.close()
                delivered = [sum(w.counters.delivered.values()) for w in workers]
                # One failed attempt, then each row exactly once, in order.
                expected = [row.id for row in queued["acme"]]
                assert sent_ids(acme_hook) == expected[:7] + expected[6:]
                assert sent_ids(beta_hook) == [row.id for row in queued["beta"]]
                assert sum(delivered) == 2 * ROWS, delivered
                bodies = [json.loads(r.body) for r in beta_hook.requests]
                assert [b["payload"]["n"] for b in bodies] == list(range(ROWS))
        finally:
            await drop_pg_schema(url)

    run(main())


async def _pending(store: Any) -> bool:
    stats = await store.outbox_stats()
    return bool(stats["pending"] == 0 and stats["delivered"] == 2 * ROWS)
