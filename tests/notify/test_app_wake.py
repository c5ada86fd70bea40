"""The CDR rows of an ended call, and the notifier's wake-up, as app.py wires
them: an integrator with no Redis and no webhook gets no rows, and its
ended calls do not send the notifier to the store for nothing (a claim of
due rows is one store job per call otherwise)."""

from __future__ import annotations

import asyncio

from click2dial.app import Click2Dial
from click2dial.calls.outcome import Outcome
from click2dial.config import parse_config
from click2dial.notify import Notifier
from click2dial.store import open_store
from tests.e2e.support import config_text
from tests.store.support import T0, make_call


class CountingNotifier(Notifier):
    """A real notifier that counts its wake-ups (never started: nothing is
    delivered)."""

    wakes = 0

    def wake(self) -> None:
        self.wakes += 1
        super().wake()


def test_only_an_integrator_with_a_target_gets_cdr_rows_and_a_wake_up() -> None:
    async def main() -> None:
        text = config_text(
            database="sqlite:///:memory:",
            agent_port=None,
            trunk_port=None,
            acme='redis = "redis://127.0.0.1:6379/3"',
        )
        app = Click2Dial(parse_config(text, "t.toml"))
        store = open_store("sqlite:///:memory:")
        await store.open()
        try:
            notifier = app.notifier = CountingNotifier(store, app.config.integrators)
            outcome = Outcome.failure("test")
            quiet = make_call(integrator="beta", ended_at=T0 + 5, end_reason="failed")
            assert app.notifications_for(quiet, outcome, T0 + 5) == []
            await app._call_ended(quiet)
            assert notifier.wakes == 0
            notified = make_call(integrator="acme", ended_at=T0 + 5, end_reason="failed")
            rows = app.notifications_for(notified, outcome, T0 + 5)
            assert [(row.kind, row.target) for row in rows] == [("cdr", "redis")]
            await app._call_ended(notified)
            assert notifier.wakes == 1
        finally:
            await store.close()

    asyncio.run(main())
