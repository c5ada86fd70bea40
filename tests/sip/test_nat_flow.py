"""Where in-dialog requests go when a peer's Contact is not where its
packets come from (a phone behind NAT), on the in-memory wire.

A node whose advertised address (Via, Contact) differs from the address it
sends from is exactly what a NATed phone looks like; the in-memory wire
delivers to the sending address only, so a request sent to the Contact is
lost.  The same behaviours run against sipp in test_sipp_nat.py.
"""

from __future__ import annotations

from click2dial.sip import events as ev
from click2dial.sip.endpoint import OutgoingInvite
from click2dial.sip.headers import Address
from click2dial.sip.transaction import Target
from click2dial.sip.uri import parse_uri

from .memnet import MemNet, Node

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)
NATED = ("127.0.0.1", 6002)  # what the phone advertises; nothing there


def natted_phone(net: MemNet, port: int = 5002) -> Node:
    phone = net.node(port)
    phone.endpoint.config.addresses["udp"] = NATED
    return phone


def invite(a: Node, b: Node, *, nat: bool, transport: str = "udp") -> OutgoingInvite:
    uri = parse_uri(f"sip:agent@{b.address[0]}:{b.address[1]}")
    return a.endpoint.invite(
        uri,
        from_=Address(parse_uri("sip:c2d@127.0.0.1")),
        to=Address(uri),
        body=SDP,
        target=Target(transport, *b.address),
        nat=nat,
    )


def answer(net: MemNet, phone: Node, headers: list[tuple[str, str]] | None = None) -> None:
    found = phone.take(ev.IncomingRequest)
    assert len(found) == 1 and isinstance(found[0], ev.IncomingRequest)
    phone.endpoint.respond(found[0].transaction, 180)
    net.settle()
    phone.endpoint.respond(found[0].transaction, 200, body=SDP, headers=headers)
    net.settle()


def answered(node: Node) -> ev.InviteAnswered:
    found = node.take(ev.InviteAnswered)
    assert len(found) == 1 and isinstance(found[0], ev.InviteAnswered)
    return found[0]


def test_nat_invite_sends_ack_and_in_dialog_requests_to_the_source() -> None:
    net = MemNet()
    c2d, phone = net.node(5001), natted_phone(net)
    invite(c2d, phone, nat=True)
    net.settle()
    answer(net, phone)
    dialog = answered(c2d).dialog
    assert dialog.remote_target.port == NATED[1]  # the Contact, kept as R-URI
    assert dialog.flow == Target("udp", *phone.address)
    assert len(phone.take(ev.AckReceived)) == 1  # no 2xx retransmission storm
    for method in ("INVITE", "OPTIONS", "UPDATE"):
        c2d.endpoint.request_in_dialog(dialog, method, body=SDP if method != "OPTIONS" else b"")
        net.settle()
        for request in phone.take(ev.IncomingRequest):
            assert isinstance(request, ev.IncomingRequest) and request.dialog is not None
            body = SDP if request.request.method != "OPTIONS" else b""
            phone.endpoint.respond(request.transaction, 200, body=body)
        net.settle()
    c2d.endpoint.bye(dialog)
    net.settle()
    requests = [s for s in net.wire if s.source == c2d.address]
    assert [s.first_line.split()[0] for s in requests] == [
        "INVITE", "ACK", "INVITE", "ACK", "OPTIONS", "UPDATE", "BYE"
    ]  # fmt: skip
    assert all(s.target == Target("udp", *phone.address) for s in requests)
    assert all(f":{NATED[1]}" in s.first_line for s in requests[1:])
    done = c2d.take(ev.RequestCompleted)
    assert [e.status for e in done if isinstance(e, ev.RequestCompleted)] == [200] * 4
    ended = phone.take(ev.DialogEnded)
    assert [e.reason for e in ended if isinstance(e, ev.DialogEnded)] == ["bye"]


def test_without_nat_the_ack_goes_to_the_contact() -> None:
    net = MemNet()
    c2d, phone = net.node(5001), natted_phone(net)
    invite(c2d, phone, nat=False)
    net.settle()
    answer(net, phone)
    dialog = answered(c2d).dialog
    assert dialog.flow is None
    acks = net.sent("ACK", c2d.address)
    assert acks and acks[0].target == Target("udp", *NATED)
    assert phone.take(ev.AckReceived) == []


def test_early_dialog_of_a_nat_invite_has_the_flow_of_its_provisional() -> None:
    net = MemNet()
    c2d, phone = net.node(5001), natted_phone(net)
    invite(c2d, phone, nat=True)
    net.settle()
    found = phone.take(ev.IncomingRequest)
    assert isinstance(found[0], ev.IncomingRequest)
    phone.endpoint.respond(found[0].transaction, 183, body=SDP)
    net.settle()
    progress = c2d.take(ev.InviteProgress)
    assert isinstance(progress[0], ev.InviteProgress) and progress[0].dialog is not None
    assert progress[0].dialog.flow == Target("udp", *phone.address)


def test_a_route_set_wins_over_the_flow() -> None:
    net = MemNet()
    c2d, phone = net.node(5001), natted_phone(net)
    proxy = net.node(5003)  # only receives: a Record-Routing proxy handles NAT
    invite(c2d, phone, nat=True)
    net.settle()
    answer(net, phone, headers=[("Record-Route", "<sip:127.0.0.1:5003;lr>")])
    dialog = answered(c2d).dialog
    assert dialog.flow is not None and dialog.route_set
    acks = net.sent("ACK", c2d.address)
    assert acks and acks[0].target == Target("udp", *proxy.address)


def test_uas_dialog_sends_to_the_source_of_an_rport_invite() -> None:
    net = MemNet()
    phone, c2d = natted_phone(net, 5001), net.node(5002)
    phone.endpoint.config.addresses["udp"] = ("127.0.0.1", 6001)
    invite(phone, c2d, nat=False)  # the phone's Via has rport, Contact 6001
    net.settle()
    found = c2d.take(ev.IncomingRequest)
    assert isinstance(found[0], ev.IncomingRequest)
    c2d.endpoint.respond(found[0].transaction, 200, body=SDP)
    net.settle()
    dialogs = list(c2d.endpoint.dialogs.values())
    assert len(dialogs) == 1 and dialogs[0].remote_target.port == 6001
    assert dialogs[0].flow == Target("udp", *phone.address)
    c2d.endpoint.bye(dialogs[0])
    net.settle()
    byes = net.sent("BYE", c2d.address)
    assert byes and byes[0].target == Target("udp", *phone.address)
    assert "6001" in byes[0].first_line
    assert len(phone.take(ev.DialogEnded)) == 1
