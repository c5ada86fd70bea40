"""Transaction and dialog behaviour of two real endpoints on an in-memory wire.

These tests pin down timer values, retransmission schedules and races
(CANCEL vs 200, glare, lost ACKs) that a live peer cannot be made to produce
at will; the same behaviours are exercised against sipp in test_sipp_ua.py.
"""

from __future__ import annotations

import itertools

import pytest

from click2dial.sip import events as ev
from click2dial.sip.auth import DigestClient, DigestServer
from click2dial.sip.dialog import DialogState
from click2dial.sip.headers import Address
from click2dial.sip.message import Request
from click2dial.sip.transaction import Target
from click2dial.sip.uri import parse_uri

from .memnet import T1, MemNet, Node, Sent

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


def call(net: MemNet, a: Node, b: Node, body: bytes = SDP, transport: str = "udp") -> object:
    uri = parse_uri(f"sip:bob@{b.address[0]}:{b.address[1]}")
    return a.endpoint.invite(
        uri,
        from_=Address(parse_uri("sip:alice@127.0.0.1")),
        to=Address(uri),
        body=body,
        target=Target(transport, *b.address),
    )


def incoming(node: Node) -> ev.IncomingRequest:
    found = node.take(ev.IncomingRequest)
    assert len(found) == 1, found
    event = found[0]
    assert isinstance(event, ev.IncomingRequest)
    return event


def answered_through(
    net: MemNet, a: Node, b: Node, proxy: str
) -> tuple[ev.InviteAnswered, ev.IncomingRequest]:
    """``a`` calls ``b`` with ``proxy`` in a Record-Route, as if that proxy
    had record-routed the INVITE; ``b`` answers.  a's answer, b's request."""
    uri = parse_uri(f"sip:bob@{b.address[0]}:{b.address[1]}")
    a.endpoint.invite(
        uri,
        from_=Address(parse_uri("sip:alice@127.0.0.1")),
        to=Address(uri),
        body=SDP,
        headers=[("Record-Route", proxy)],
        target=Target("udp", *b.address),
    )
    net.settle()
    inv = incoming(b)
    b.endpoint.respond(inv.transaction, 200, body=SDP)
    net.settle()
    answered = a.take(ev.InviteAnswered)[0]
    assert isinstance(answered, ev.InviteAnswered)
    return answered, inv


def established(net: MemNet) -> tuple[Node, Node, ev.InviteAnswered, ev.IncomingRequest]:
    a, b = net.node(5001), net.node(5002)
    call(net, a, b)
    net.settle()
    inv = incoming(b)
    b.endpoint.respond(inv.transaction, 200, body=SDP)
    net.settle()
    answered = a.take(ev.InviteAnswered)
    assert len(answered) == 1
    assert isinstance(answered[0], ev.InviteAnswered)
    assert len(b.take(ev.AckReceived)) == 1
    return a, b, answered[0], inv


def test_invite_is_retransmitted_with_doubling_intervals_then_times_out() -> None:
    net = MemNet()
    a = net.node(5001)
    net.node(5002)
    net.drop = lambda sent: sent.first_line.startswith("INVITE")
    call(net, a, net.nodes[("127.0.0.1", 5002)])
    net.advance(64 * T1 + 1)
    times = [s.at for s in net.sent("INVITE")]
    # Timer A: T1, 2T1, 4T1... until timer B (64*T1) ends the transaction.
    assert times == [0.0, T1, 3 * T1, 7 * T1, 15 * T1, 31 * T1, 63 * T1]
    failed = a.take(ev.InviteFailed)
    assert len(failed) == 1
    assert isinstance(failed[0], ev.InviteFailed)
    assert failed[0].status == 408 and failed[0].response is None
    assert a.endpoint.transaction_count == 0


def test_no_retransmission_over_tcp_but_timer_b_still_fires() -> None:
    net = MemNet()
    a = net.node(5001, "tcp")
    b = net.node(5002, "tcp")
    net.drop = lambda sent: True
    call(net, a, b, transport="tcp")
    net.advance(64 * T1 - 0.01)
    assert len(net.sent("INVITE")) == 1
    assert a.take(ev.InviteFailed) == []
    net.advance(0.02)
    failed = a.take(ev.InviteFailed)
    assert len(failed) == 1


def test_non_invite_retransmissions_cap_at_t2_and_timer_f_times_out() -> None:
    net = MemNet()
    a = net.node(5001)
    net.drop = lambda sent: True
    uri = parse_uri("sip:nobody@127.0.0.1:5009")
    a.endpoint.request("OPTIONS", uri, from_=Address(uri), to=Address(uri))
    net.advance(64 * T1 + 1)
    times = [s.at for s in net.sent("OPTIONS")]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [T1, 2 * T1, 4 * T1, 4.0]
    assert all(g == 4.0 for g in gaps[3:])
    done = a.take(ev.RequestCompleted)
    assert len(done) == 1
    assert isinstance(done[0], ev.RequestCompleted)
    assert done[0].status == 408


def test_lost_ack_makes_the_uas_retransmit_its_2xx_then_hang_up() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    net.drop = lambda sent: sent.first_line.startswith("ACK")
    call(net, a, b)
    net.settle()
    inv = incoming(b)
    b.endpoint.respond(inv.transaction, 200, body=SDP)
    net.advance(64 * T1 + 1)
    oks = [s for s in net.sent("SIP/2.0 200", b.address) if b"CSeq: 1 INVITE" in s.data]
    gaps = [round(y.at - x.at, 3) for x, y in itertools.pairwise(oks)]
    assert gaps[:4] == [T1, 2 * T1, 4 * T1, 4.0]
    ended = b.take(ev.DialogEnded)
    assert [e.reason for e in ended if isinstance(e, ev.DialogEnded)] == ["no-ack"]
    assert len(net.sent("BYE", b.address)) >= 1
    # The caller re-ACKed every retransmitted 200 (all lost on the wire).
    assert len(net.sent("ACK", a.address)) == len(oks)


def test_cancel_waits_for_a_provisional_response_then_ends_with_487() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    net.drop = lambda sent: sent.first_line.startswith("SIP/2.0 100")
    invite = call(net, a, b)
    net.settle()
    inv = incoming(b)
    a.endpoint.cancel(invite)  # type: ignore[arg-type]
    net.settle()
    assert net.sent("CANCEL") == []  # §9.1: not before a provisional response
    b.endpoint.respond(inv.transaction, 180)
    net.settle()
    assert len(net.sent("CANCEL")) == 1
    assert len(b.take(ev.IncomingCancelled)) == 1
    failed = a.take(ev.InviteFailed)
    assert len(failed) == 1 and isinstance(failed[0], ev.InviteFailed)
    assert failed[0].status == 487
    acks = net.sent("ACK", a.address)
    assert len(acks) == 1
    ack = acks[0].message
    assert isinstance(ack, Request)
    assert ack.via[0].branch == invite.request.via[0].branch  # type: ignore[attr-defined]


def test_200_crossing_a_cancel_is_acked_and_hung_up() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    invite = call(net, a, b)
    net.settle()
    inv = incoming(b)
    b.endpoint.respond(inv.transaction, 180)
    net.settle()
    # The callee answers while the caller's CANCEL is still on the wire.
    held: list[Sent] = []
    net.drop = lambda sent: sent.first_line.startswith("CANCEL") and not held.append(sent)
    a.endpoint.cancel(invite)  # type: ignore[arg-type]
    net.settle()
    b.endpoint.respond(inv.transaction, 200, body=SDP)
    net.settle()
    b.endpoint.receive(held[0].data, "udp", a.address)
    net.drop = lambda sent: False
    net.settle()
    failed = a.take(ev.InviteFailed)
    assert len(failed) == 1 and isinstance(failed[0], ev.InviteFailed)
    assert failed[0].status == 487
    assert len(net.sent("ACK", a.address)) == 1
    assert len(net.sent("BYE", a.address)) == 1
    assert [e.reason for e in b.take(ev.DialogEnded) if isinstance(e, ev.DialogEnded)] == ["bye"]
    assert a.take(ev.InviteAnswered) == []


def test_reinvite_glare_gets_491_and_both_retry_until_one_wins() -> None:
    net = MemNet()
    a, b, answered, inv = established(net)
    dialog_a = answered.dialog
    dialog_b = b.endpoint.dialogs[(inv.request.call_id, inv.transaction.to_tag or "",
                                   inv.request.from_.tag or "")]  # fmt: skip
    ra = a.endpoint.request_in_dialog(dialog_a, "INVITE", body=SDP)
    rb = b.endpoint.request_in_dialog(dialog_b, "INVITE", body=SDP)
    net.settle()
    assert len(net.sent("SIP/2.0 491")) == 2
    assert not ra.done and not rb.done
    # Each side's re-INVITE reaches the other as a new request: answer them.
    for _ in range(10):
        net.advance(0.5)
        for node in (a, b):
            for event in node.take(ev.IncomingRequest):
                assert isinstance(event, ev.IncomingRequest)
                node.endpoint.respond(event.transaction, 200, body=SDP)
        net.settle()
        if ra.done and rb.done:
            break
    results = {h.request.method: h for h in (ra, rb)}
    assert ra.done and rb.done, results
    statuses = sorted(
        e.status for n in (a, b) for e in n.take(ev.RequestCompleted)
        if isinstance(e, ev.RequestCompleted)
    )  # fmt: skip
    assert statuses == [200, 200]
    assert dialog_a.state is DialogState.CONFIRMED and dialog_b.state is DialogState.CONFIRMED


def test_digest_challenge_is_answered_and_verified() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    server = DigestServer("click2dial.test", b"a-secret-of-32-bytes-for-nonces!")
    uri = parse_uri(f"sip:bob@{b.address[0]}:{b.address[1]}")
    a.endpoint.invite(
        uri,
        from_=Address(parse_uri("sip:alice@127.0.0.1")),
        to=Address(uri),
        body=SDP,
        target=Target("udp", *b.address),
        credentials=DigestClient("alice", "wonderland"),
    )
    net.settle()
    first = incoming(b)
    b.endpoint.respond(first.transaction, 407, headers=[("Proxy-Authenticate", server.challenge())])
    net.settle()
    second = incoming(b)
    header = second.request.headers.get("Proxy-Authorization")
    assert header is not None
    assert second.request.cseq.seq == first.request.cseq.seq + 1
    wrong = server.verify("INVITE", header, {"alice": "other"}.get)
    assert not wrong.ok and wrong.reason == "bad response"
    result = server.verify("INVITE", header, {"alice": "wonderland"}.get)
    assert result.ok and result.username == "alice"


def test_request_for_an_unknown_dialog_gets_481_and_garbage_is_dropped() -> None:
    net = MemNet()
    a, b, answered, _ = established(net)
    # A BYE whose To tag names no dialog.
    bye = answered.dialog.build_request("BYE", a.endpoint._via("udp"))
    bye.to = bye.to.copy()
    bye.to.params["tag"] = "nosuchtag"
    b.endpoint.receive(bye.to_bytes(), "udp", a.address)
    replies = b.endpoint.pop_outgoing()
    assert len(replies) == 1 and replies[0][0].startswith(b"SIP/2.0 481")
    b.endpoint.receive(b"\x00garbage\r\n\r\n", "udp", a.address)
    b.endpoint.receive(b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n", "udp", a.address)
    assert b.endpoint.parse_errors == 2
    assert b.endpoint.pop_outgoing() == []


def test_out_of_order_cseq_is_refused_with_500() -> None:
    net = MemNet()
    a, b, answered, _ = established(net)
    dialog = answered.dialog
    info = dialog.build_request("INFO", a.endpoint._via("udp"))
    b.endpoint.receive(info.to_bytes(), "udp", a.address)
    b.endpoint.pop_events()
    b.endpoint.pop_outgoing()
    dialog.local_cseq -= 2
    stale = dialog.build_request("INFO", a.endpoint._via("udp"))
    b.endpoint.receive(stale.to_bytes(), "udp", a.address)
    replies = b.endpoint.pop_outgoing()
    assert [r[0].split(b"\r\n", 1)[0] for r in replies] == [b"SIP/2.0 500 Out of order CSeq"]


@pytest.mark.parametrize("status", [486, 603])
def test_final_error_is_acked_by_the_transaction_and_reported(status: int) -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(net, a, b)
    net.settle()
    b.endpoint.respond(incoming(b).transaction, status)
    net.settle()
    failed = a.take(ev.InviteFailed)
    assert len(failed) == 1 and isinstance(failed[0], ev.InviteFailed)
    assert failed[0].status == status
    assert len(net.sent("ACK", a.address)) == 1
    net.advance(64 * T1)
    assert a.endpoint.transaction_count == 0
    assert b.endpoint.transaction_count == 0
    assert a.endpoint.dialogs == {} and b.endpoint.dialogs == {}


def test_record_route_builds_the_route_set_on_both_sides() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    proxy = "<sip:127.0.0.1:5099;lr>"
    # As if a proxy at :5099 had inserted itself on the way to b.
    answered, inv = answered_through(net, a, b, proxy)
    ok = answered.response
    assert ok.headers.get_all("Record-Route") == [proxy]  # the UAS copied it (§12.1.1)
    dialog_b = b.endpoint.dialogs[
        (inv.request.call_id, inv.transaction.to_tag or "", inv.request.from_.tag or "")
    ]
    for node, dialog in ((a, answered.dialog), (b, dialog_b)):
        assert [str(r.uri) for r in dialog.route_set] == ["sip:127.0.0.1:5099;lr"]
        node.endpoint.request_in_dialog(dialog, "INFO", body=b"x", content_type="text/plain")
        net.settle()
        info = net.sent("INFO", node.address)[-1]
        # Loose routing: sent to the proxy, Request-URI is the remote target.
        assert (info.target.host, info.target.port) == ("127.0.0.1", 5099)
        message = info.message
        assert isinstance(message, Request)
        assert message.headers.get_all("Route") == [proxy]
        peer = b if node is a else a
        assert (message.uri.host, message.uri.port) == peer.address  # the peer's Contact


def test_lost_ack_of_a_reinvite_2xx_is_sent_again_when_the_2xx_is_retransmitted() -> None:
    net = MemNet()
    a, b, answered, _ = established(net)
    dialog_a = answered.dialog
    handle = a.endpoint.request_in_dialog(dialog_a, "INVITE", body=SDP)
    net.settle()
    reinvite = incoming(b)
    seq = handle.request.cseq.seq
    lost: list[Sent] = []

    def lose_first_ack(sent: Sent) -> bool:
        if sent.first_line.startswith("ACK") and not lost:
            lost.append(sent)
            return True
        return False

    net.drop = lose_first_ack
    b.endpoint.respond(reinvite.transaction, 200, body=SDP)
    net.settle()
    assert lost and handle.done
    net.advance(T1 * 1.5)  # b retransmits its 2xx once
    acks = [s for s in net.sent("ACK", a.address) if s.message.cseq.seq == seq]
    assert len(acks) == 2, "the retransmitted 2xx was not re-ACKed"
    assert len(b.take(ev.AckReceived)) == 1
    net.advance(64 * T1)
    assert dialog_a.state is DialogState.CONFIRMED  # b did not give up and hang up
    assert not net.sent("BYE")


def test_a_reinvite_retried_after_glare_keeps_one_route_header() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    # b itself stands where a Record-Routing proxy would: requests in the
    # dialog reach it with a Route header.
    proxy = f"<sip:{b.address[0]}:{b.address[1]};lr>"
    answered, _ = answered_through(net, a, b, proxy)
    a.endpoint.request_in_dialog(answered.dialog, "INVITE", body=SDP)
    net.settle()
    b.endpoint.respond(incoming(b).transaction, 491)  # as in a glare
    net.settle()
    net.advance(5)  # a retries within 2.1-4 s (it owns the Call-ID)
    invites = net.sent("INVITE", a.address)
    assert len(invites) == 3, "a never retried its re-INVITE"
    for sent in invites[1:]:
        message = sent.message
        assert isinstance(message, Request)
        assert message.headers.get_all("Route") == [proxy]


def test_a_late_offer_2xx_retransmitted_before_our_ack_is_not_taken_for_a_second_fork() -> None:
    """Under load the answer of a late-offer INVITE is ACKed late (the ACK
    carries the answer, so the TU sends it): the UAS retransmits its 2xx
    meanwhile.  That retransmission belongs to the dialog already answered;
    it must not be ACKed and BYE'd as a stray fork's 2xx."""
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(net, a, b, body=b"")  # a late offer
    net.settle()
    inv = incoming(b)
    b.endpoint.respond(inv.transaction, 180)  # an early dialog first, as phones do
    net.settle()
    b.endpoint.respond(inv.transaction, 200, body=SDP)
    net.settle()
    (answered,) = a.take(ev.InviteAnswered)
    assert isinstance(answered, ev.InviteAnswered)
    # No ACK yet (the TU is busy): the UAS's 2xx comes again after T1.
    net.advance(T1 + 0.01)
    assert len(net.sent("SIP/2.0 200", b.address)) == 2
    assert net.sent("BYE", a.address) == []
    assert net.sent("ACK", a.address) == []  # only the TU's ACK carries the answer
    a.endpoint.ack(answered.dialog, SDP)
    net.settle()
    assert len(net.sent("ACK", a.address)) == 1
    assert b.take(ev.DialogEnded) == []


def test_a_2xx_without_a_to_tag_after_the_answer_is_re_acked_not_hung_up() -> None:
    """A UAS that answers our retransmitted INVITE once more with a 2xx that
    lacks the To tag (a phone taking it for a re-INVITE, as sipp scenarios
    do): that 2xx starts no dialog.  It is ACKed again, never ACKed and BYE'd
    as a second fork's, which would end the answered call at such a peer."""
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(net, a, b, body=b"")
    net.settle()
    inv = incoming(b)
    b.endpoint.respond(inv.transaction, 200, body=SDP)
    net.settle()
    (answered,) = a.take(ev.InviteAnswered)
    assert isinstance(answered, ev.InviteAnswered)
    a.endpoint.ack(answered.dialog, SDP)
    net.settle()
    (ok,) = net.sent("SIP/2.0 200", b.address)
    untagged = ok.data.replace(b";tag=" + (ok.message.to.tag or "").encode(), b"", 1)
    assert untagged != ok.data
    a.endpoint.receive(untagged, "udp", b.address)
    net.settle()
    assert net.sent("BYE", a.address) == []
    assert len(net.sent("ACK", a.address)) == 2  # the dialog's ACK, once more
    assert answered.dialog.state is DialogState.CONFIRMED


def test_an_ended_invite_kept_as_bytes_still_handles_late_2xx() -> None:
    """When the call is over the user agent lets the INVITE go
    (``OutgoingInvite.let_go``): while timer M runs the endpoint keeps only
    the bytes it sent.  A 2xx that comes after that is still handled as
    before, from the request parsed again: the answered dialog's copy is
    re-ACKed, a second fork's is ACKed and BYE'd with the INVITE's Call-ID,
    From tag and CSeq."""
    net = MemNet()
    a, b, answered, _ = established(net)  # an offer in the INVITE: ACKed at once
    invite = answered.invite
    sent_invite = invite.request
    assert len(net.sent("ACK", a.address)) == 1
    invite.let_go()
    assert invite._request is None and invite.tx is not None and invite.tx._request is None

    (ok,) = net.sent("SIP/2.0 200", b.address)
    a.endpoint.receive(ok.data, "udp", b.address)  # the answer again: its ACK was lost
    net.settle()
    assert len(net.sent("ACK", a.address)) == 2
    assert net.sent("BYE", a.address) == []

    tag = (ok.message.to.tag or "").encode()
    forked = ok.data.replace(b";tag=" + tag, b";tag=second-fork", 1)
    a.endpoint.receive(forked, "udp", b.address)
    net.settle()
    acks = net.sent("ACK", a.address)
    (bye,) = net.sent("BYE", a.address)
    assert len(acks) == 3
    for message in (acks[-1].message, bye.message):
        assert isinstance(message, Request)
        assert message.call_id == sent_invite.call_id
        assert message.from_.tag == sent_invite.from_.tag
        assert message.to.tag == "second-fork"
    assert acks[-1].message.cseq.seq == sent_invite.cseq.seq
    assert invite.request.to_bytes() == sent_invite.to_bytes()  # parsed again, the same
    assert answered.dialog.state is DialogState.CONFIRMED
