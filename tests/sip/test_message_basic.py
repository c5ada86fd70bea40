"""Round-trip basics of the SIP message model."""

from click2dial.sip.message import Request, parse_message

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=UDP>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n\r\nv=0\r\n"
)


def test_invite_round_trip_keeps_every_field() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    again = parse_message(msg.to_bytes())
    assert isinstance(again, Request)
    assert again.method == "INVITE"
    assert str(again.uri) == "sip:bob@biloxi.example.com"
    assert again.via[0].branch == "z9hG4bK776asdhds"
    assert "rport" in again.via[0].params
    assert again.from_.tag == "1928301774"
    assert again.from_.display_name == "Alice"
    assert again.to.tag is None
    assert again.cseq.seq == 314159
    assert again.contact[0].uri.transport == "udp"
    assert again.sdp == b"v=0\r\n"
