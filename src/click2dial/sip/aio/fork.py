"""Parallel forking below the call driver: one :class:`ForkedCall` rings
several contacts (an agent's registered phones) at once and looks like one
outgoing :class:`~.ua.Call` to whoever drives it.

Each branch is an ordinary outgoing call of the user agent.  The driver gets
:class:`~.ua.Progress` from any branch, :class:`~.ua.Answered` from the first
branch to answer (the winner, whose dialog becomes the call's), and
:class:`~.ua.Failed` only once every branch has failed, with the most
relevant final status (RFC 3261 §16.7 step 6).  The other branches get
CANCEL once one answered; a 2xx from one of them after that is ACKed and
BYEd (§13.2.2.4: a UAC keeps only one of the dialogs a forked INVITE makes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ..auth import DigestClient
from ..headers import Address
from ..message import Request
from ..transaction import ServerTransaction, Target
from ..uri import Uri
from .ua import Acked, Answered, Call, CallEvent, Ended, Failed, Progress, UserAgent


def _rank(failure: Failed) -> tuple[int, int]:
    """Lower is more relevant: 6xx (a global refusal), then the lowest class
    among 3xx-5xx; among 4xx the ones the caller can act on
    (401/407/415/420/484, §16.7), then the others; among 5xx a 503 after
    the others (it says that one server is overloaded, not that the request
    failed: §16.7 step 6 would not even forward it); a time-out without any
    response comes last.  Equal ranks go to the first to arrive."""
    status = failure.status
    if failure.response is None:
        return (9, status)
    if status >= 600:
        return (0, status)
    if status in (401, 407, 415, 420, 484):
        return (status // 100, 0)
    if status == 503:
        return (5, 2)
    return (status // 100, 1)


class ForkedCall(Call):
    """Several outgoing branches driven as one call."""

    def __init__(self, ua: UserAgent, branches: list[Call]) -> None:
        super().__init__(ua, "out")
        self.branches = branches
        self.winner: Call | None = None
        self._failures: list[Failed] = []
        # The first branch's INVITE stands for the call (its headers are what
        # every branch carries).
        self.request = branches[0].request
        self.invite = branches[0].invite
        for branch in branches:
            branch.on_event = functools.partial(self._branch_event, branch)
            branch.on_peer_request = functools.partial(self._branch_request, branch)

    # ----------------------------------------------------------- branches
    def _branch_event(self, branch: Call, event: CallEvent) -> None:
        if self.winner is not None and branch is not self.winner:
            if isinstance(event, Answered):
                # A second 2xx after the first won: accept and end it at once.
                branch.ack()
                branch.bye_now()
            return
        if isinstance(event, Progress):
            self.remote_sdp = branch.remote_sdp
            self._push(event)
        elif isinstance(event, Answered):
            self.winner = branch
            self.dialog = branch.dialog
            self.invite = branch.invite
            self.request = branch.request
            self.remote_sdp = branch.remote_sdp
            for other in self.branches:
                if other is not branch:
                    other.cancel()
            self._push(event)
        elif isinstance(event, Failed):
            if self.winner is None:
                self._failures.append(event)
                if len(self._failures) == len(self.branches):
                    self._push(min(self._failures, key=_rank))
                    self._push(Ended("remote", "failed"))
        elif isinstance(event, Ended | Acked) and branch is self.winner:
            self._push(event)

    def _branch_request(self, branch: Call, request: Request, tx: ServerTransaction) -> None:
        if branch is self.winner and self.on_peer_request is not None:
            self.on_peer_request(request, tx)
        else:
            self.ua.respond(tx, 481)

    # -------------------------------------------------------- Call's API
    def cancel(self) -> None:
        for branch in self.branches:
            if branch is not self.winner:
                branch.cancel()

    def ack(self, sdp: bytes | None = None, cseq: int | None = None) -> None:
        if self.winner is None:
            super().ack(sdp, cseq)  # raises: nothing answered
            return
        self.winner.ack(sdp, cseq)
        self.local_sdp = self.winner.local_sdp

    def bye_now(self) -> None:
        if self.ended.done():
            return
        if self.winner is None:
            self.cancel()
            return
        self.winner.bye_now()


def invite_fork(
    ua: UserAgent,
    branches: Sequence[tuple[Uri, Target | None, bool]],
    *,
    sdp: bytes | None = None,
    from_: Address | str | None = None,
    to: Address | None = None,
    headers: list[tuple[str, str]] | None = None,
    credentials: DigestClient | None = None,
) -> Call:
    """Ring every ``(uri, target, nat)`` branch at once; see the module doc.
    ``to`` (default: each branch's URI) is the To of every branch."""
    if not branches:
        raise ValueError("no branch to ring")
    calls = [
        ua.invite(
            uri,
            sdp=sdp,
            from_=from_,
            to=to.copy() if to is not None else None,
            headers=list(headers) if headers else None,
            target=target,
            credentials=credentials,
            nat=nat,
        )
        for uri, target, nat in branches
    ]
    fork = ForkedCall(ua, calls)
    ua.calls.add(fork)
    fork.ended.add_done_callback(lambda _: ua.calls.discard(fork))
    return fork
