"""A dialog kept across a crash: :meth:`Dialog.snapshot` survives JSON, and a
restarted endpoint that adopts the restored dialog can hang it up (two real
endpoints on the in-memory wire; the "restart" is a new Endpoint on the same
address)."""

from __future__ import annotations

import json

from click2dial.sip import events as ev
from click2dial.sip.dialog import Dialog, DialogState
from click2dial.sip.headers import parse_address
from click2dial.sip.transaction import Target
from click2dial.sip.uri import parse_uri

from .memnet import MemNet, Node
from .test_endpoint import established


def through_json(dialog: Dialog) -> Dialog:
    return Dialog.restore(json.loads(json.dumps(dialog.snapshot())))


def test_snapshot_round_trips_every_field_through_json() -> None:
    dialog = Dialog(
        role="uac",
        call_id="a84b4c76e66710@pc33.example.com",
        local=parse_address('"Agent 1001" <sip:1001@10.0.0.1:5070>;tag=1928301774'),
        remote=parse_address("<sip:+27821234567@trunk.example.com;user=phone>;tag=a6c85cf"),
        remote_target=parse_uri("sip:trunk@192.0.2.4:5080;transport=tcp;ob"),
        route_set=[
            parse_address("<sip:p1.example.com;lr>"),
            parse_address("<sip:[2001:db8::1]:5061;transport=tls;lr>"),
        ],
        local_cseq=314159,
        remote_cseq=7,
        transport="tcp",
    )
    dialog.state = DialogState.CONFIRMED
    back = through_json(dialog)
    assert back.snapshot() == dialog.snapshot()
    assert back.id == dialog.id == ("a84b4c76e66710@pc33.example.com", "1928301774", "a6c85cf")
    assert back.local == dialog.local and back.remote == dialog.remote
    assert back.local.display_name == "Agent 1001"
    assert back.remote_target == dialog.remote_target
    assert back.route_set == dialog.route_set
    assert (back.role, back.local_cseq, back.remote_cseq, back.transport) == (
        "uac", 314159, 7, "tcp"
    )  # fmt: skip
    assert back.state is DialogState.CONFIRMED
    assert back.next_hop() == parse_uri("sip:p1.example.com;lr")


def test_a_uas_dialog_without_remote_requests_keeps_its_empty_cseq() -> None:
    dialog = Dialog(
        role="uas",
        call_id="x@y",
        local=parse_address("<sip:agent@127.0.0.1>;tag=ours"),
        remote=parse_address("<sip:c2d@127.0.0.1>;tag=theirs"),
        remote_target=parse_uri("sip:c2d@127.0.0.1:5060"),
        route_set=[],
        local_cseq=0,
        remote_cseq=None,
        transport="udp",
    )
    back = through_json(dialog)
    assert back.remote_cseq is None and back.local_cseq == 0 and back.role == "uas"
    assert "flow" not in dialog.snapshot()


def test_a_flow_is_kept_when_the_dialog_has_one() -> None:
    dialog = Dialog(
        role="uac",
        call_id="x@y",
        local=parse_address("<sip:c2d@127.0.0.1>;tag=a"),
        remote=parse_address("<sip:1001@127.0.0.1>;tag=b"),
        remote_target=parse_uri("sip:1001@10.1.1.1:5060"),
        route_set=[],
        local_cseq=2,
        remote_cseq=None,
        transport="udp",
    )
    if "flow" not in Dialog.__slots__:
        # Without NAT support a Dialog has no flow, and a snapshot that names
        # one restores without it (the request goes to the remote target).
        data = json.loads(json.dumps(dialog.snapshot() | {"flow": ["udp", "203.0.113.9", 40000]}))
        assert Dialog.restore(data).snapshot() == dialog.snapshot()
        return
    dialog.flow = Target("udp", "203.0.113.9", 40000)  # type: ignore[attr-defined]
    back = through_json(dialog)
    assert back.flow == Target("udp", "203.0.113.9", 40000)  # type: ignore[attr-defined]


def restart(net: MemNet, node: Node) -> Node:
    """A new endpoint on the same address: what a restarted process is."""
    return net.node(node.address[1])


def test_a_restarted_endpoint_hangs_up_a_restored_uac_dialog() -> None:
    net = MemNet()
    a, b, answered, _ = established(net)
    saved = json.dumps(answered.dialog.snapshot())
    # Requests sent after the snapshot move the CSeq on: the margin covers them.
    for _ in range(3):
        a.endpoint.request_in_dialog(answered.dialog, "OPTIONS")
        net.settle()
    a2 = restart(net, a)
    dialog = a2.endpoint.adopt(Dialog.restore(json.loads(saved)))
    dialog.local_cseq += 1000
    handle = a2.endpoint.bye(dialog)
    assert handle is not None
    net.settle()
    ended = b.take(ev.DialogEnded)
    assert len(ended) == 1 and isinstance(ended[0], ev.DialogEnded)
    assert ended[0].dialog.id == (dialog.id[0], dialog.id[2], dialog.id[1])
    done = [e for e in a2.take(ev.RequestCompleted) if isinstance(e, ev.RequestCompleted)]
    assert [(e.request.method, e.status) for e in done] == [("BYE", 200)]
    assert done[0].request.request.cseq.seq == answered.dialog.local_cseq - 3 + 1000 + 1


def test_without_the_margin_the_peer_refuses_the_bye_as_out_of_order() -> None:
    net = MemNet()
    a, b, answered, _ = established(net)
    saved = json.dumps(answered.dialog.snapshot())
    a.endpoint.request_in_dialog(answered.dialog, "OPTIONS")
    net.settle()
    a2 = restart(net, a)
    dialog = a2.endpoint.adopt(Dialog.restore(json.loads(saved)))
    a2.endpoint.bye(dialog)  # saved CSeq + 1: the OPTIONS' own number
    net.settle()
    done = [e for e in a2.take(ev.RequestCompleted) if isinstance(e, ev.RequestCompleted)]
    assert [e.status for e in done] == [500]
    assert b.take(ev.DialogEnded) == []


def test_a_restarted_endpoint_hangs_up_a_restored_uas_dialog() -> None:
    net = MemNet()
    a, b, answered, incoming = established(net)
    uas = next(iter(b.endpoint.dialogs.values()))
    assert uas.role == "uas"
    b2 = restart(net, b)
    dialog = b2.endpoint.adopt(through_json(uas))
    dialog.local_cseq += 1000
    b2.endpoint.bye(dialog)
    net.settle()
    ended = a.take(ev.DialogEnded)
    assert len(ended) == 1 and isinstance(ended[0], ev.DialogEnded)
    assert ended[0].dialog is answered.dialog
    done = [e for e in b2.take(ev.RequestCompleted) if isinstance(e, ev.RequestCompleted)]
    assert [e.status for e in done] == [200]
    assert incoming.request.method == "INVITE"


def test_adopting_a_dialog_twice_returns_the_one_already_known() -> None:
    net = MemNet()
    a, _, answered, _ = established(net)
    again = a.endpoint.adopt(through_json(answered.dialog))
    assert again is answered.dialog
