"""What an ended call leaves behind.  The SIP endpoint keeps a call's INVITE
transactions and the peer's BYE for up to 64*T1 after the end (RFC 6026
timers M and J absorb retransmissions); they must not keep the call itself
alive, and they keep what they sent and answered as bytes, not as parsed
messages: neither the user agent's calls (the legs) nor the controller's call,
flow and record.  Kept, every call's objects lived 32 s past its end and the
garbage collector walked them again and again (half a million objects at
150 calls/s, pauses of the event loop up to 0.7 s; docs/benchmarks.md)."""

from __future__ import annotations

import functools
import gc
import weakref
from pathlib import Path

from click2dial.sip.message import Response
from click2dial.sip.transaction import (
    ClientTransaction,
    NonInviteServerTransaction,
    State,
    TimerConfig,
)
from tests.e2e.support import running
from tests.e2e.test_calls import run, sipp_ok
from tests.sipp.harness import Sipp


def test_an_ended_call_is_not_kept_alive_by_the_transactions_that_outlive_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with (
            Sipp("agent_answer_hangup", variables={"talk_ms": 300}) as agent,
            Sipp("trunk_answer", variables={"ring_ms": 100}) as trunk,
        ):
            # RFC timers (T1 0.5 s): timer M holds the INVITEs for 32 s, far
            # longer than the checks below take, however slow the machine.
            async with running(
                tmp_path, agent_port=agent.port, trunk_port=trunk.port, timers=TimerConfig()
            ) as env:
                assert env.service.controller is not None and env.service.ua is not None
                response = await env.place()
                assert response.status_code == 201, response.text
                ref = response.json()["call_ref"]
                live = env.service.controller.live[ref]
                kept = [weakref.ref(live), weakref.ref(live.flow), weakref.ref(live.record)]
                await env.wait_state(ref, {"talking"})
                kept += [weakref.ref(leg) for leg in live.legs.values()]
                del live
                await env.wait_ended(ref)
                await sipp_ok(agent, trunk)
                # The endpoint still waits on the call's INVITEs (timer M).
                waiting = [
                    tx
                    for tx in env.service.ua.endpoint._client_tx.values()
                    if isinstance(tx, ClientTransaction)
                    and tx.state is State.ACCEPTED
                    and ref.encode() in tx._data  # reading tx.request would parse it again
                ]
                assert len(waiting) == 2, "the agent's and the callee's INVITE"
                # ... keeping each INVITE as the bytes sent, not parsed.
                assert all(tx._request is None for tx in waiting)
                # ... and timer M calls the transaction by name: no callback object.
                timers = [tx._timers["M"] for tx in waiting]
                assert all(t.owner is tx for t, tx in zip(timers, waiting, strict=True))
                assert not any(isinstance(t.callback, functools.partial) for t in timers)
                del timers
                # And on the agent's BYE (timer J), keeping its answer as bytes.
                byes = [
                    tx
                    for tx in env.service.ua.endpoint._server_tx.values()
                    if isinstance(tx, NonInviteServerTransaction)
                    and tx.request.method == "BYE"
                    and tx.state is State.COMPLETED
                ]
                assert byes and all(tx.last_status == 200 for tx in byes)
                held = [o for tx in byes for o in gc.get_referents(tx)]
                assert not any(isinstance(o, Response) for o in held)
                del byes, held
                gc.collect()
                alive = [type(r()).__name__ for r in kept if r() is not None]
                assert alive == [], f"kept alive after the end: {alive}"

    run(main())
