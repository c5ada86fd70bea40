"""Self-tests of the sipp harness (tests/sipp/harness.py) against real sipp.

sipp plays both sides here: sipp's built-in uac/uas, and scenarios of the
library against the companions in tests/sipp/scenarios/selftest/, over UDP
and TCP, with the exit codes as the verdict.  Our own UA is not involved.
Everything binds 127.0.0.1 only; every sipp started here is stopped, also
when a test fails (``with`` blocks).
"""

from __future__ import annotations

import hashlib
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.sipp.harness import (
    AUTH_NONCE,
    AUTH_PASSWORD,
    AUTH_REALM,
    AUTH_USERNAME,
    EXIT_OK,
    LOCALHOST,
    SCENARIO_DIR,
    DigestCredentials,
    Sipp,
    SippTimeoutError,
    Transport,
    digest_response,
    free_port,
    free_port_both,
    free_udp_port_pair,
    scenario_role,
    stop_all,
)

TRANSPORTS: list[Transport] = ["udp", "tcp"]
# The library this file vouches for (other scenarios may share the folder).
LIBRARY = [
    SCENARIO_DIR / f"{name}.xml"
    for name in (
        "uas_basic",
        "uas_late_offer",
        "uas_reinvite",
        "uas_cancel",
        "uas_auth_401",
        "uas_auth_407",
        "uas_drop_first",
        "uas_no_answer",
        "uas_retrans_200",
        "uas_peer_requests",
        "uas_busy",
        "uas_reject",
        "uac_call",
        "uac_cancel",
    )
]
TIMEOUT = 10.0  # sipp's own -timeout: a hung peer fails the test, never the run


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that swallows whatever a UAC sends it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        yield int(sock.getsockname()[1])


# --------------------------------------------------------------- ports


def test_free_ports_are_bindable_and_distinct() -> None:
    udp, tcp, both = free_port("udp"), free_port("tcp"), free_port_both()
    media = free_udp_port_pair()
    assert len({udp, tcp, both, media}) == 4
    assert _bindable(udp, socket.SOCK_DGRAM)
    assert _bindable(tcp, socket.SOCK_STREAM)
    assert _bindable(both, socket.SOCK_DGRAM) and _bindable(both, socket.SOCK_STREAM)
    assert _bindable(media, socket.SOCK_DGRAM) and _bindable(media + 2, socket.SOCK_DGRAM)
    sip_and_tls = free_port_both(also=(1,))
    assert all(
        _bindable(port, kind)
        for port in (sip_and_tls, sip_and_tls + 1)
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    )
    with pytest.raises(ValueError, match="udp"):
        free_port("sctp")  # type: ignore[arg-type]


# ----------------------------------------------------------- scenarios


def test_library_roles_and_directives() -> None:
    for path in LIBRARY:
        ET.parse(path)  # well-formed
        assert scenario_role(path) == path.stem[:3], path.name
    drop = Sipp("uas_drop_first", transport="udp")
    try:
        assert "-nr" in drop.build_command()
        with pytest.raises(ValueError, match="supports"):
            Sipp("uas_drop_first", transport="tcp")
        with pytest.raises(ValueError, match="remote_port"):
            Sipp("uac_call")
        with pytest.raises(ValueError, match="remote_port"):
            Sipp("uas_basic", remote_port=5060)
    finally:
        drop.cleanup()


def test_every_library_scenario_loads(blackhole: int) -> None:
    """sipp parses each scenario (variables, labels, keywords) and binds.

    A UAS is ready once bound; a UAC starts calling the black hole at once,
    so it must still be running (not dead of a scenario error) when polled.
    """
    with ExitStack() as stack:
        peers: list[Sipp] = []
        for path in LIBRARY:
            remote = blackhole if scenario_role(path) == "uac" else None
            peer = Sipp(path, transport="udp", remote_port=remote, timeout=TIMEOUT)
            stack.callback(peer.cleanup)
            peers.append(peer.start())
        for peer in peers:
            assert peer.running(), peer.report()
            assert peer.is_bound(), peer.report()
        stop_all(peers)
        for peer in peers:
            assert not peer.running()
            assert "rror" not in peer.console(), peer.report()


# ------------------------------------------------------ pairs of sipps


def test_builtin_uac_against_builtin_uas_over_udp_and_tcp() -> None:
    """sipp -sn uac vs -sn uas, both transports at once (the uas lingers 4 s)."""
    with ExitStack() as stack:
        pairs = []
        for transport in TRANSPORTS:
            uas = stack.enter_context(Sipp("builtin:uas", transport=transport, timeout=TIMEOUT))
            uac = stack.enter_context(
                Sipp("builtin:uac", transport=transport, remote_port=uas.port, timeout=TIMEOUT)
            )
            pairs.append((uas, uac))
        for uas, uac in pairs:
            uac.assert_success(TIMEOUT)
            uas.assert_success(TIMEOUT)
            assert "INVITE sip:service@127.0.0.1" in uas.messages_log()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_uas_basic_against_selftest_caller(transport: Transport) -> None:
    with Sipp("uas_basic", transport=transport, timeout=TIMEOUT) as uas:
        assert uas.is_bound()
        assert not _bindable(
            uas.port, socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        )
        with Sipp(
            "selftest/uac_basic_caller",
            transport=transport,
            remote_port=uas.port,
            timeout=TIMEOUT,
        ) as uac:
            uac.assert_success(TIMEOUT)
            uas.assert_success(TIMEOUT)
        trace = uas.messages_log()
        assert f"SIP/2.0/{transport.upper()}" in trace
        assert "SIP/2.0 180 Ringing" in trace
        assert f";transport={transport.upper()}>" in trace  # our Contact


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_uac_cancel_against_uas_cancel(transport: Transport) -> None:
    with Sipp("uas_cancel", transport=transport, timeout=TIMEOUT) as uas:
        with Sipp("uac_cancel", transport=transport, remote_port=uas.port, timeout=TIMEOUT) as uac:
            uac.assert_success(TIMEOUT)
            uas.assert_success(TIMEOUT)
        assert "SIP/2.0 487 Request Terminated" in uas.messages_log()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_failed_scenario_reports_error_log_and_trace(transport: Transport) -> None:
    """uas_late_offer detects an ACK without SDP; the report says why."""
    with (
        Sipp("uas_late_offer", transport=transport, timeout=TIMEOUT) as uas,
        Sipp(
            "selftest/uac_late_offer_caller",
            transport=transport,
            remote_port=uas.port,
            variables={"ack_sdp": "no"},
            timeout=TIMEOUT,
        ) as uac,
    ):
        uac.assert_success(TIMEOUT)
        with pytest.raises(AssertionError) as failure:
            uas.assert_success(TIMEOUT)
    report = str(failure.value)
    assert "exited with 1, expected 0" in report
    assert "error log (-trace_err)" in report
    assert "Failed regexp match" in report  # from the error log
    assert "ACK sip:sipp@127.0.0.1" in report  # from the message trace
    assert "-sf " in report and f"-t {'t1' if transport == 'tcp' else 'u1'}" in report


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_auth_407_logs_credentials_for_python_to_verify(transport: Transport) -> None:
    with Sipp("uas_auth_407", transport=transport, timeout=TIMEOUT) as uas:
        with Sipp(
            "selftest/uac_auth_caller",
            transport=transport,
            remote_port=uas.port,
            username=AUTH_USERNAME,
            password=AUTH_PASSWORD,
            timeout=TIMEOUT,
        ) as uac:
            uac.assert_success(TIMEOUT)
            uas.assert_success(TIMEOUT)
        assert uas.log_file().is_file()
        [auth] = uas.logged_auth()
    assert auth.method == "INVITE"
    assert auth.request_uri == f"sip:service@{uas.hostport}"
    params = auth.credentials.params
    assert auth.credentials.scheme == "Digest"
    assert (params["username"], params["realm"]) == (AUTH_USERNAME, AUTH_REALM)
    assert (params["nonce"], params["qop"]) == (AUTH_NONCE, "auth")
    assert auth.credentials.is_valid(AUTH_PASSWORD, auth.method)
    assert not auth.credentials.is_valid("wrong", auth.method)


def test_auth_401_refuses_a_wrong_password() -> None:
    with Sipp("uas_auth_401", transport="udp", timeout=TIMEOUT) as uas:
        with Sipp(
            "selftest/uac_auth_caller",
            transport="udp",
            remote_port=uas.port,
            username=AUTH_USERNAME,
            password="wrong",
            timeout=TIMEOUT,
        ) as uac:
            uac.assert_success(TIMEOUT)  # the caller takes the 403 and ACKs it
            assert uas.assert_failure(TIMEOUT) == 1
        assert "SIP/2.0 403 Forbidden" in uas.messages_log()
        assert "authvalid=false" in uas.logs()


# ------------------------------------------------------ process control


def test_wait_times_out_and_stop_ends_the_process() -> None:
    with Sipp("uas_basic", transport="tcp", timeout=TIMEOUT) as uas:
        assert uas.running() and uas.is_bound()
        with pytest.raises(SippTimeoutError, match="still running"):
            uas.wait(0.2)
        started = time.monotonic()
        code = uas.stop()
        assert time.monotonic() - started < 5.0
        assert code == EXIT_OK  # sipp reports "no call failed" on SIGTERM...
        assert not uas.running()
        with pytest.raises(AssertionError, match="stopped by the harness"):
            uas.assert_success(1)  # ...which the harness never counts as a pass
        assert uas.stop() == code  # idempotent
        assert _bindable(uas.port, socket.SOCK_STREAM)
        assert "stopped by the harness" in uas.report()


# --------------------------------------------------------------- digest


def test_digest_helpers_match_rfc_2617_example() -> None:
    header = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    credentials = DigestCredentials.parse(header)
    assert credentials.params["nc"] == "00000001"
    assert credentials.is_valid("Circle Of Life", "GET")
    assert not credentials.is_valid("Circle Of Life", "POST")
    assert DigestCredentials.parse("Proxy-Authorization: " + header).params == credentials.params
    assert digest_response(
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    ) == _md5(
        f"{_md5('Mufasa:testrealm@host.com:Circle Of Life')}:"
        f"dcd98b7102dd2f0e8b11d0f600bfb0c093:{_md5('GET:/dir/index.html')}"
    )
