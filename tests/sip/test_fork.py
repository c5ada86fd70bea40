"""Parallel forking (``UserAgent.invite_fork``) against real sipp peers: the
first contact to answer wins and the others get CANCEL; when every contact
fails, one Failed with the most relevant status (RFC 3261 §16.7)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from click2dial.sip.aio import Answered, CallEvent, Ended, Failed, Progress, UserAgent
from click2dial.sip.aio.fork import _rank
from click2dial.sip.endpoint import uri_target
from click2dial.sip.message import Response, parse_message
from click2dial.sip.uri import parse_uri
from tests.sip.test_sipp_ua import SDP, config, sipp_done
from tests.sipp.harness import Sipp


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def branch(peer: Sipp) -> tuple[Any, Any, bool]:
    uri = parse_uri(peer.uri())
    return uri, uri_target(uri), False


async def until(call: Any, kinds: tuple[type, ...], timeout: float = 15) -> list[CallEvent]:
    seen: list[CallEvent] = []
    while True:
        event = await call.next_event(timeout)
        seen.append(event)
        if isinstance(event, kinds):
            return seen


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_first_answer_wins_and_the_ringing_contact_gets_cancel(transport: str) -> None:
    async def main() -> None:
        with (
            Sipp("uas_cancel", transport=transport) as ringing,
            Sipp("uas_basic", transport=transport) as answering,
        ):
            async with UserAgent(config()) as ua:
                call = ua.invite_fork([branch(ringing), branch(answering)], sdp=SDP)
                seen = await until(call, (Answered, Failed, Ended))
                assert isinstance(seen[-1], Answered), seen
                assert all(isinstance(e, Progress) for e in seen[:-1])
                fork: Any = call
                assert fork.winner is fork.branches[1]
                assert call.dialog is fork.branches[1].dialog and call.established
                # The ringing one saw CANCEL / 487 / ACK: its scenario passes.
                await sipp_done(ringing)
                call.bye_now()
                ended = await until(call, (Ended,))
                assert isinstance(ended[-1], Ended) and ended[-1].by == "local"
                await sipp_done(answering)
                assert call.ended.done()

    run(main())


@pytest.mark.parametrize(
    ("first", "second", "best"),
    [("503", "486", 486), ("486", "603", 603), ("500", "503", 500), ("503", "500", 500)],
)
def test_all_contacts_fail_one_failed_with_the_best_status(
    first: str, second: str, best: int
) -> None:
    async def main() -> None:
        with (
            Sipp("uas_reject", variables={"status": first}) as one,
            Sipp("uas_reject", variables={"status": second}) as two,
        ):
            async with UserAgent(config()) as ua:
                call = ua.invite_fork([branch(one), branch(two)], sdp=SDP)
                seen = await until(call, (Ended,))
                failed = [e for e in seen if isinstance(e, Failed)]
                assert len(failed) == 1 and failed[0].status == best, seen
                assert isinstance(seen[-1], Ended) and seen[-1].reason == "failed"
                assert not [e for e in seen if isinstance(e, Answered)]
                await sipp_done(one)
                await sipp_done(two)

    run(main())


def test_cancel_before_any_answer_cancels_every_contact() -> None:
    async def main() -> None:
        with Sipp("uas_cancel") as one, Sipp("uas_cancel") as two:
            async with UserAgent(config()) as ua:
                call = ua.invite_fork([branch(one), branch(two)], sdp=SDP)
                # Both ring (180 from each) before the caller gives up.
                rang = 0
                while rang < 2:
                    event = await call.next_event(10)
                    rang += isinstance(event, Progress) and event.status == 180
                call.cancel()
                seen = await until(call, (Ended,))
                failed = [e for e in seen if isinstance(e, Failed)]
                assert len(failed) == 1 and failed[0].status == 487
                await sipp_done(one)
                await sipp_done(two)

    run(main())


def test_a_second_answer_after_the_winner_is_acked_and_hung_up() -> None:
    async def main() -> None:
        with Sipp("uas_basic") as one, Sipp("uas_late_200") as two:
            async with UserAgent(config()) as ua:
                call = ua.invite_fork([branch(one), branch(two)], sdp=SDP)
                seen = await until(call, (Answered, Failed, Ended))
                assert isinstance(seen[-1], Answered)
                fork: Any = call
                assert fork.winner is fork.branches[0]
                loser = fork.branches[1]
                # The late 200 (no provisional, so no CANCEL could be sent)
                # is ACKed and BYEd: uas_late_200's scenario passes.
                await asyncio.wait_for(loser.ended, 10)
                await sipp_done(two)
                assert not call.ended.done()  # the winner's call goes on
                call.bye_now()
                await sipp_done(one)

    run(main())


def test_the_best_status_does_not_depend_on_which_branch_answered_first() -> None:
    def failed(status: int) -> Failed:
        text = (
            f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
            "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        response = parse_message(text.encode())
        assert isinstance(response, Response)
        return Failed(status, "X", response)

    for statuses, best in (((503, 500), 500), ((500, 503), 500), ((503, 486), 486),
                           ((486, 603), 603), ((401, 404), 401)):  # fmt: skip
        failures = [failed(s) for s in statuses]
        assert min(failures, key=_rank).status == best
        assert min(reversed(failures), key=_rank).status == best
    timed_out = Failed(408, "Request Timeout", None)
    assert min([timed_out, failed(503)], key=_rank).status == 503
