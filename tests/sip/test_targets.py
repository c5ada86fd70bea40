"""Targets are values: the endpoint hands out one object per address, so a
call's transactions, dialogs and responses share it (fewer objects for the
garbage collector to walk while finished transactions wait out their
timers)."""

from __future__ import annotations

from click2dial.sip.endpoint import uri_target
from click2dial.sip.transaction import Target, shared_target
from click2dial.sip.uri import parse_uri


def test_one_target_object_per_address_equal_to_a_built_one() -> None:
    first = shared_target("udp", "192.0.2.7", 5060)
    assert first is shared_target("udp", "192.0.2.7", 5060)
    assert first == Target("udp", "192.0.2.7", 5060)
    assert shared_target("tcp", "192.0.2.7", 5060) != first
    a = uri_target(parse_uri("sip:1001@192.0.2.7"))
    b = uri_target(parse_uri("sip:1002@192.0.2.7:5060;transport=udp"))
    assert a is b is first
    assert uri_target(parse_uri("sips:1001@[2001:db8::1]")) is shared_target(
        "tls", "2001:db8::1", 5061
    )
