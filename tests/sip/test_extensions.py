"""Reliable provisionals (RFC 3262) and session timers (RFC 4028) between
two real endpoints on the in-memory wire, with the manual clock.

Endpoint ``a`` places the call (as Click2Dial does on both legs); ``b`` is the
called peer, answered by the test.  Session intervals are minutes long, so
these behaviours can only be timed with the manual clock; the same flows run
against sipp in test_sipp_ua.py.
"""

from __future__ import annotations

from click2dial.sip import events as ev
from click2dial.sip.dialog import Dialog
from click2dial.sip.endpoint import OutgoingInvite
from click2dial.sip.headers import Address
from click2dial.sip.message import Request, Response
from click2dial.sip.transaction import Target
from click2dial.sip.uri import parse_uri

from .memnet import MemNet, Node, Sent

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)
SDP_B = SDP.replace(b"4000", b"5000").replace(b"o=- 1 1", b"o=- 7 7")
RELIABLE = [("Require", "100rel"), ("RSeq", "1")]


def call(a: Node, b: Node, body: bytes = SDP) -> OutgoingInvite:
    uri = parse_uri(f"sip:bob@{b.address[0]}:{b.address[1]}")
    return a.endpoint.invite(
        uri,
        from_=Address(parse_uri("sip:alice@127.0.0.1")),
        to=Address(uri),
        body=body,
        target=Target("udp", *b.address),
    )


def incoming(node: Node, method: str | None = None) -> list[ev.IncomingRequest]:
    found = [e for e in node.take(ev.IncomingRequest) if isinstance(e, ev.IncomingRequest)]
    if method is not None:
        assert [e.request.method for e in found] == [method] * len(found), found
    return found


def one(node: Node, kind: type) -> object:
    found = node.take(kind)
    assert len(found) == 1, (kind, found)
    return found[0]


def message(sent: Sent) -> Request | Response:
    return sent.message


def requests(net: MemNet, method: str, source: Node) -> list[Request]:
    out = []
    for sent in net.sent(method + " ", source.address):
        msg = sent.message
        assert isinstance(msg, Request)
        out.append(msg)
    return out


def b_dialog(b: Node, inv: ev.IncomingRequest) -> Dialog:
    request = inv.request
    key = (request.call_id, inv.transaction.to_tag or "", request.from_.tag or "")
    return b.endpoint.dialogs[key]


def setup(net: MemNet, b_headers: list[tuple[str, str]] | None = None) -> tuple[
    Node, Node, Dialog, Dialog
]:  # fmt: skip
    """An established call a -> b; b answers 200 with ``b_headers``."""
    a, b = net.node(5001), net.node(5002)
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    b.endpoint.respond(inv.transaction, 200, body=SDP_B, headers=b_headers)
    net.settle()
    answered = one(a, ev.InviteAnswered)
    assert isinstance(answered, ev.InviteAnswered)
    assert len(b.take(ev.AckReceived)) == 1
    return a, b, answered.dialog, b_dialog(b, inv)


def run_until(net: MemNet, end: float, answer: list[Node], body: bytes = SDP_B) -> None:
    """Move the clock to ``end``, answering every request ``answer`` nodes
    get with 200 at the moment it arrives (SDP for an INVITE)."""
    while True:
        net.settle()
        for node in answer:
            for event in incoming(node):
                sdp = body if event.request.method == "INVITE" else b""
                node.endpoint.respond(event.transaction, 200, body=sdp)
        net.settle()
        deadlines = [d for n in net.nodes.values() if (d := n.endpoint.next_timer()) is not None]
        upcoming = min(deadlines, default=None)
        if upcoming is None or upcoming > end:
            net.clock.now = end
            net.settle()
            return
        net.clock.now = max(net.clock.now, upcoming)
        for node in net.nodes.values():
            node.endpoint.handle_timer(net.clock.now)


# --------------------------------------------------------------- RFC 3262


def test_invite_advertises_100rel_and_timer_with_session_expires() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    headers = inv.request.headers
    assert headers.get_all("Supported") == ["100rel", "timer"]
    # No refresher parameter: RFC 4028 §7.1 leaves the choice to the UAS.
    assert headers.get("Session-Expires") == "1800"
    assert headers.get("Min-SE") == "90"


def test_session_timers_off_leaves_only_100rel() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    a.endpoint.config.session_expires = 0
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    assert inv.request.headers.get_all("Supported") == ["100rel"]
    assert "Session-Expires" not in inv.request.headers
    assert "Min-SE" not in inv.request.headers


def test_reliable_183_is_pracked_in_the_early_dialog_with_the_right_rack() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    b.endpoint.respond(inv.transaction, 183, body=SDP_B, headers=RELIABLE)
    net.settle()
    pracks = requests(net, "PRACK", a)
    assert len(pracks) == 1
    prack = pracks[0]
    assert prack.headers.get("RAck") == f"1 {inv.request.cseq.seq} INVITE"
    assert prack.cseq.seq == inv.request.cseq.seq + 1
    assert prack.to.tag == inv.transaction.to_tag  # the early dialog
    assert prack.call_id == inv.request.call_id
    # b's endpoint answered the PRACK itself; its application saw nothing.
    oks = [s for s in net.sent("SIP/2.0 200", b.address) if b"PRACK" in s.data]
    assert len(oks) == 1
    assert incoming(b) == []
    progress = one(a, ev.InviteProgress)
    assert isinstance(progress, ev.InviteProgress)
    assert progress.response.status == 183 and progress.response.sdp == SDP_B
    assert a.take(ev.RequestCompleted) == []  # the PRACK's 200 is not reported
    b.endpoint.respond(inv.transaction, 200, body=SDP_B)
    net.settle()
    assert isinstance(one(a, ev.InviteAnswered), ev.InviteAnswered)


def test_retransmitted_or_out_of_order_reliable_provisionals_are_dropped() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    for rseq in ("1", "1", "3", "2"):
        headers = [("Require", "100rel"), ("RSeq", rseq)]
        b.endpoint.respond(inv.transaction, 183, body=SDP_B, headers=headers)
        net.settle()
    rack = [p.headers.get("RAck") for p in requests(net, "PRACK", a)]
    cseq = inv.request.cseq.seq
    # RSeq 1 again: a retransmission; 3 is out of order (§4): neither is
    # PRACKed nor reported; 2 is next in sequence.
    assert rack == [f"1 {cseq} INVITE", f"2 {cseq} INVITE"]
    progress = [e for e in a.take(ev.InviteProgress) if isinstance(e, ev.InviteProgress)]
    assert [e.response.headers.get("RSeq") for e in progress] == ["1", "2"]


def test_a_failing_prack_does_not_end_the_call() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    net.drop = lambda sent: sent.first_line.startswith("PRACK")
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    b.endpoint.respond(inv.transaction, 183, body=SDP_B, headers=RELIABLE)
    net.advance(1)
    b.endpoint.respond(inv.transaction, 200, body=SDP_B)
    net.advance(64 * 0.5 + 1)  # the PRACK times out (timer F)
    assert len(requests(net, "PRACK", a)) > 1  # retransmitted, all lost
    assert isinstance(one(a, ev.InviteAnswered), ev.InviteAnswered)
    assert a.take(ev.DialogEnded) == [] and a.take(ev.RequestCompleted) == []
    assert net.sent("BYE") == []


def test_421_is_retried_once_with_require_100rel() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    invite = call(a, b)
    net.settle()
    (first,) = incoming(b, "INVITE")
    assert "Require" not in first.request.headers
    b.endpoint.respond(first.transaction, 421, headers=[("Require", "100rel")])
    net.settle()
    (second,) = incoming(b, "INVITE")
    req = second.request
    assert req.headers.get_all("Require") == ["100rel"]
    assert req.cseq.seq == first.request.cseq.seq + 1
    assert req.call_id == first.request.call_id
    assert req.from_.tag == first.request.from_.tag
    assert req.via[0].branch != first.request.via[0].branch
    assert req.body == SDP
    assert a.take(ev.InviteFailed) == []
    # A second 421 is not retried again.
    b.endpoint.respond(second.transaction, 421, headers=[("Require", "100rel")])
    net.settle()
    failed = one(a, ev.InviteFailed)
    assert isinstance(failed, ev.InviteFailed) and failed.status == 421
    assert failed.invite is invite
    assert incoming(b) == []


def test_421_retry_then_reliable_provisional_and_answer() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(a, b)
    net.settle()
    (first,) = incoming(b, "INVITE")
    b.endpoint.respond(first.transaction, 421, headers=[("Require", "100rel")])
    net.settle()
    (second,) = incoming(b, "INVITE")
    b.endpoint.respond(second.transaction, 183, body=SDP_B, headers=RELIABLE)
    net.settle()
    (prack,) = requests(net, "PRACK", a)
    assert prack.headers.get("RAck") == "1 2 INVITE"
    b.endpoint.respond(second.transaction, 200, body=SDP_B)
    net.settle()
    answered = one(a, ev.InviteAnswered)
    assert isinstance(answered, ev.InviteAnswered) and answered.response.cseq.seq == 2
    assert [type(e) for e in a.events] == [ev.InviteProgress]  # the 421 never showed


def test_422_is_retried_with_the_peers_min_se() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    a.endpoint.config.session_expires = 600
    call(a, b)
    net.settle()
    (first,) = incoming(b, "INVITE")
    assert first.request.headers.get("Session-Expires") == "600"
    b.endpoint.respond(first.transaction, 422, headers=[("Min-SE", "1800")])
    net.settle()
    (second,) = incoming(b, "INVITE")
    assert second.request.headers.get("Session-Expires") == "1800"
    assert second.request.headers.get("Min-SE") == "1800"
    assert second.request.cseq.seq == first.request.cseq.seq + 1
    assert a.take(ev.InviteFailed) == []
    b.endpoint.respond(second.transaction, 200, body=SDP_B)
    net.settle()
    answered = one(a, ev.InviteAnswered)
    assert isinstance(answered, ev.InviteAnswered)
    assert answered.dialog.session_interval == 1800
    assert answered.dialog.session_refresher == "local"


def test_interval_below_our_min_se_gets_422_from_the_endpoint() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    a.endpoint.config.session_expires = 60
    a.endpoint.config.min_se = 30
    call(a, b)
    net.settle()
    # b refused Session-Expires 60 by itself; a retried with b's Min-SE.
    rejections = net.sent("SIP/2.0 422", b.address)
    assert len(rejections) == 1
    refusal = rejections[0].message
    assert refusal.headers.get("Min-SE") == "90"
    invites = requests(net, "INVITE", a)
    assert [r.headers.get("Session-Expires") for r in invites] == ["60", "90"]
    (inv,) = incoming(b, "INVITE")  # b's application saw only the second
    assert inv.request.headers.get("Session-Expires") == "90"


def test_in_dialog_update_with_a_too_small_interval_gets_422() -> None:
    net = MemNet()
    a, b, dialog_a, _ = setup(net)
    handle = a.endpoint.request_in_dialog(
        dialog_a, "UPDATE", headers=[("Session-Expires", "30;refresher=uac")]
    )
    net.settle()
    assert incoming(b) == []
    done = one(a, ev.RequestCompleted)
    assert isinstance(done, ev.RequestCompleted) and done.request is handle
    assert done.status == 422
    assert done.response is not None and done.response.headers.get("Min-SE") == "90"


def test_prack_for_no_dialog_gets_481() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    uri = parse_uri(f"sip:bob@{b.address[0]}:{b.address[1]}")
    handle = a.endpoint.request(
        "PRACK",
        uri,
        from_=Address(uri),
        to=Address(uri),
        headers=[("RAck", "1 1 INVITE")],
        target=Target("udp", *b.address),
    )
    net.settle()
    assert incoming(b) == []
    done = one(a, ev.RequestCompleted)
    assert isinstance(done, ev.RequestCompleted) and done.request is handle
    assert done.status == 481


# --------------------------------------------------------------- RFC 4028


def test_uas_2xx_echoes_session_expires_and_requires_timer() -> None:
    net = MemNet()
    _a, b, dialog_a, dialog_b = setup(net)
    ok = next(s for s in net.sent("SIP/2.0 200", b.address) if b"INVITE" in s.data).message
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert ok.headers.get_all("Require") == ["timer"]
    assert (dialog_a.session_interval, dialog_a.session_refresher) == (1800, "local")
    assert (dialog_b.session_interval, dialog_b.session_refresher) == (1800, "remote")


def test_refresher_local_sends_update_at_half_the_interval_unreported() -> None:
    net = MemNet()
    a, b, dialog_a, dialog_b = setup(net)
    run_until(net, 899.9, [b])
    assert requests(net, "UPDATE", a) == []
    run_until(net, 900.1, [b])
    updates = net.sent("UPDATE ", a.address)
    assert [round(u.at, 3) for u in updates] == [900.0]
    update = updates[0].message
    assert update.body == b""
    assert update.headers.get("Session-Expires") == "1800;refresher=uac"
    assert a.take(ev.RequestCompleted) == []  # invisible to the application
    # b's 200 restated the interval; both sides re-armed from t=900.
    ok = next(s for s in net.sent("SIP/2.0 200", b.address) if b"UPDATE" in s.data).message
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    run_until(net, 3000, [b])
    assert [round(u.at, 3) for u in net.sent("UPDATE ", a.address)] == [900.0, 1800.0, 2700.0]
    assert net.sent("BYE") == []
    assert a.take(ev.DialogEnded) == [] and b.take(ev.DialogEnded) == []
    assert dialog_a.established and dialog_b.established


def without_update(sent: Sent) -> bytes:
    return sent.data.replace(b", UPDATE", b"")


def test_peer_without_update_gets_a_reinvite_with_the_last_sdp() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    # A peer whose Allow lacks UPDATE: b's 200 is rewritten on the wire (the
    # only fake here; sipp peers with such an Allow are in test_sipp_ua.py).
    held: list[Sent] = []
    net.drop = lambda s: s.first_line.startswith("SIP/2.0 200") and not held.append(s)
    b.endpoint.respond(inv.transaction, 200, body=SDP_B)
    net.settle()
    net.drop = lambda s: False
    assert b"UPDATE" not in without_update(held[0])
    a.endpoint.receive(without_update(held[0]), "udp", b.address)
    net.settle()
    assert isinstance(one(a, ev.InviteAnswered), ev.InviteAnswered)
    run_until(net, 901, [b])
    assert requests(net, "UPDATE", a) == []
    reinvites = [r for r in requests(net, "INVITE", a) if r.cseq.seq > 1]
    assert len(reinvites) == 1
    refresh = reinvites[0]
    assert refresh.body == SDP  # the same bytes: same o= version
    assert refresh.headers.get("Session-Expires") == "1800;refresher=uac"
    acks = [r for r in requests(net, "ACK", a) if r.cseq.seq == refresh.cseq.seq]
    assert len(acks) == 1
    assert a.take(ev.RequestCompleted) == []


def test_app_reinvite_during_a_refresh_reinvite_is_queued_not_refused() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    held: list[Sent] = []
    net.drop = lambda s: s.first_line.startswith("SIP/2.0 200") and not held.append(s)
    b.endpoint.respond(inv.transaction, 200, body=SDP_B)
    net.settle()
    net.drop = lambda s: False
    a.endpoint.receive(without_update(held[0]), "udp", b.address)
    net.settle()
    answered = one(a, ev.InviteAnswered)
    assert isinstance(answered, ev.InviteAnswered)
    net.advance(900.5)
    (refresh,) = incoming(b, "INVITE")  # held by b, unanswered for now
    new_sdp = SDP.replace(b"o=- 1 1", b"o=- 1 2")
    handle = a.endpoint.request_in_dialog(answered.dialog, "INVITE", body=new_sdp)
    net.settle()
    assert len([r for r in requests(net, "INVITE", a) if r.cseq.seq > 1]) == 1
    b.endpoint.respond(refresh.transaction, 200, body=SDP_B)
    net.settle()
    (app_reinvite,) = incoming(b, "INVITE")
    assert app_reinvite.request.body == new_sdp
    assert app_reinvite.request.cseq.seq == refresh.request.cseq.seq + 1
    b.endpoint.respond(app_reinvite.transaction, 200, body=SDP_B)
    net.settle()
    done = [e for e in a.take(ev.RequestCompleted) if isinstance(e, ev.RequestCompleted)]
    assert [(e.request, e.status) for e in done] == [(handle, 200)]
    # The application's offer is what a later refresh re-sends.
    assert answered.dialog.last_sdp == new_sdp


def test_refresher_remote_missing_refresh_ends_with_bye_at_expiry() -> None:
    net = MemNet()
    a, b, dialog_a, dialog_b = setup(net, [("Session-Expires", "1800;refresher=uas")])
    assert (dialog_a.session_interval, dialog_a.session_refresher) == (1800, "remote")
    assert dialog_b.session_refresher == "local"
    # b goes silent: nothing it sends reaches a any more.
    net.drop = lambda s: s.source == b.address
    run_until(net, 1767.9, [a])
    assert net.sent("BYE", a.address) == []
    assert a.take(ev.DialogEnded) == []
    run_until(net, 1768.1, [a])
    byes = net.sent("BYE", a.address)
    # §10: BYE at expiry minus min(32, interval/3) = 1800 - 32.
    assert [round(s.at, 3) for s in byes] == [1768.0]
    ended = one(a, ev.DialogEnded)
    assert isinstance(ended, ev.DialogEnded)
    assert (ended.dialog, ended.reason) == (dialog_a, "session-expired")


def test_refresh_from_the_peer_rearms_the_timer_and_is_echoed() -> None:
    net = MemNet()
    a, b, dialog_a, _ = setup(net, [("Session-Expires", "1800;refresher=uas")])
    run_until(net, 3000, [a])
    updates = net.sent("UPDATE ", b.address)
    assert [round(u.at, 3) for u in updates] == [900.0, 1800.0, 2700.0]
    assert net.sent("BYE") == []
    assert a.take(ev.DialogEnded) == []
    oks = [s.message for s in net.sent("SIP/2.0 200", a.address) if b"UPDATE" in s.data]
    assert [m.headers.get("Session-Expires") for m in oks] == ["1800;refresher=uac"] * 3
    assert [m.headers.get_all("Require") for m in oks] == [["timer"]] * 3
    assert dialog_a.session_refresher == "remote"


def test_peer_reinvite_with_session_expires_is_echoed_and_takes_over_refreshing() -> None:
    net = MemNet()
    a, b, dialog_a, dialog_b = setup(net)
    assert dialog_b.session_refresher == "remote"
    b.endpoint.request_in_dialog(
        dialog_b, "INVITE", body=SDP_B, headers=[("Session-Expires", "1200;refresher=uac")]
    )
    net.settle()
    (reinvite,) = incoming(a, "INVITE")
    a.endpoint.respond(reinvite.transaction, 200, body=SDP)
    net.settle()
    ok = [s.message for s in net.sent("SIP/2.0 200", a.address) if b"INVITE" in s.data][-1]
    assert ok.headers.get("Session-Expires") == "1200;refresher=uac"
    assert ok.headers.get_all("Require") == ["timer"]
    assert (dialog_a.session_interval, dialog_a.session_refresher) == (1200, "remote")
    assert (dialog_b.session_interval, dialog_b.session_refresher) == (1200, "local")


def test_no_session_expires_in_the_2xx_means_no_session_timer() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    b.endpoint.config.session_expires = 0  # b does not do session timers
    call(a, b)
    net.settle()
    (inv,) = incoming(b, "INVITE")
    b.endpoint.respond(inv.transaction, 200, body=SDP_B)
    net.settle()
    answered = one(a, ev.InviteAnswered)
    assert isinstance(answered, ev.InviteAnswered)
    assert "Session-Expires" not in answered.response.headers
    assert answered.dialog.session_interval is None
    run_until(net, 4000, [b])
    assert net.sent("UPDATE") == [] and net.sent("BYE") == []


def test_offer_in_a_reliable_provisional_is_answered_in_the_prack() -> None:
    net = MemNet()
    a, b = net.node(5001), net.node(5002)
    invite = call(a, b, body=b"")  # a late offer, as to an agent's phone
    net.settle()
    (inv,) = incoming(b, "INVITE")
    b.endpoint.respond(inv.transaction, 183, body=SDP_B, headers=RELIABLE)
    net.settle()
    # The 183 carries the offer: the PRACK must carry the application's answer.
    assert requests(net, "PRACK", a) == []
    progress = one(a, ev.InviteProgress)
    assert isinstance(progress, ev.InviteProgress) and progress.response.sdp == SDP_B
    assert invite.offer_prack is not None
    a.endpoint.prack(invite, SDP)
    net.settle()
    (prack,) = requests(net, "PRACK", a)
    assert prack.headers.get("RAck") == "1 1 INVITE"
    assert prack.sdp == SDP
    assert invite.offer_prack is None


def test_422_to_a_refresh_is_retried_with_the_bigger_interval() -> None:
    net = MemNet()
    a, b, dialog_a, _ = setup(net)
    net.advance(900.5)
    (update,) = incoming(b, "UPDATE")
    b.endpoint.respond(update.transaction, 422, headers=[("Min-SE", "3600")])
    net.settle()
    (retry,) = incoming(b, "UPDATE")
    assert retry.request.headers.get("Session-Expires") == "3600;refresher=uac"
    assert retry.request.headers.get("Min-SE") == "3600"
    b.endpoint.respond(retry.transaction, 200)
    net.settle()
    assert a.take(ev.RequestCompleted) == []
    assert (dialog_a.session_interval, dialog_a.session_refresher) == (3600, "local")
    run_until(net, 900.5 + 1799, [b])
    assert len({r.cseq.seq for r in requests(net, "UPDATE", a)}) == 2
    run_until(net, 900.5 + 1801, [b])
    assert len({r.cseq.seq for r in requests(net, "UPDATE", a)}) == 3  # at half of 3600
