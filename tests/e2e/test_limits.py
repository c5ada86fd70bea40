"""Limits that keep the server reachable (issue 11), against the real
``click2dial serve`` process: slow-header floods under ``ulimit -n 1024``,
SIP TCP connection floods, huge bodies, SIP request floods.

Flood connections come from other loopback addresses (the whole 127.0.0.0/8
is loopback on Linux) so that per-source caps and the total cap can both be
shown; 127.0.0.1 is the trunk's address in these configurations.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

import click2dial
from tests.e2e.support import ACME_KEY, CONTACT_REF, config_text
from tests.processes import stop
from tests.sipp.harness import Sipp, free_port, free_port_both

PYTHON = sys.executable
#: The server runs the code under test, whatever the working folder is.
SOURCE = str(Path(click2dial.__file__).resolve().parents[1])
AUTH = {"Authorization": f"Bearer {ACME_KEY}"}
CALL = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001",
        "contact_ref": CONTACT_REF}  # fmt: skip


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    http_port: int
    sip_port: int
    log: Path

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM of the server process, in kB."""
        figures = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                figures[name] = int(value.split()[0])
        return figures


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.05)


@contextmanager
def serve(
    tmp_path: Path,
    *,
    server: str = "",
    sip: str = "",
    agent_port: int | None = None,
    trunk_port: int | None = None,
    nofile: int | None = None,
) -> Iterator[Server]:
    http_port, sip_port = free_port("tcp"), free_port_both()
    text = config_text(
        database=f"sqlite:///{tmp_path}/c2d.db",
        agent_port=agent_port,
        trunk_port=trunk_port,
        http_port=http_port,
        sip_port=sip_port,
        sip=sip,
    )
    text = text.replace('node_id = "e2e-node"', f'node_id = "e2e-node"\n{server}', 1)
    config = tmp_path / "c2d.toml"
    config.write_text(text)
    log = tmp_path / "server.log"
    command = [PYTHON, "-m", "click2dial.cli", "serve", "--config", str(config)]
    if nofile is not None:
        command = ["prlimit", f"--nofile={nofile}:{nofile}", *command]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": SOURCE},
            stdout=sink,
            stderr=sink,
        )
    try:
        base = f"http://127.0.0.1:{http_port}"
        _wait_http(f"{base}/healthz", process)
        yield Server(process, base, http_port, sip_port, log)
    finally:
        stop(process, 15)


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def sip_options(port: int, source: str, transport: str = "tcp") -> bytes:
    branch = "z9hG4bK" + uuid.uuid4().hex
    call_id = uuid.uuid4().hex
    return (
        f"OPTIONS sip:click2dial@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {source}:5999;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{source}>;tag={call_id[:8]}\r\n"
        f"To: <sip:click2dial@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def tcp_options_answer(port: int, source: str, timeout: float = 1.0) -> bytes:
    """Send OPTIONS over a new TCP connection from ``source``; the status line."""
    with connect_from(source, port, timeout) as sock:
        sock.sendall(sip_options(port, source))
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0]


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from ``sock``."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(body) >= length:
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


# --- HTTP --------------------------------------------------------------------


def test_slow_headers_from_1100_connections_under_1024_fds_leave_http_and_sip_answering(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, nofile=1024) as srv:
        # 1,100 connections, 100 from each of 11 addresses (under the
        # per-source cap, well over the total cap), each sending its head slowly.
        flood: list[socket.socket] = []
        for i in range(1100):
            with suppress(OSError):
                sock = connect_from(f"127.0.0.{2 + i % 11}", srv.http_port)
                with suppress(OSError):
                    sock.sendall(b"POST /click2dial/calls HTTP/1.1\r\nHost: x\r\n")
                flood.append(sock)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.3):
                for sock in flood:
                    with suppress(OSError):
                        sock.send(b"X-Slow: 1\r\n", socket.MSG_DONTWAIT)

        trickler = threading.Thread(target=trickle)
        trickler.start()
        try:
            for _ in range(3):
                with httpx.Client(timeout=1.0) as client:
                    start = time.monotonic()
                    assert client.get(f"{srv.base}/healthz").status_code == 200
                    assert time.monotonic() - start < 1
                    start = time.monotonic()
                    posted = client.post(f"{srv.base}/click2dial/calls", json=CALL, headers=AUTH)
                    assert posted.status_code == 201, posted.text
                    assert time.monotonic() - start < 1
                start = time.monotonic()
                answer = tcp_options_answer(srv.sip_port, "127.0.0.1")
                assert answer.startswith(b"SIP/2.0 "), answer
                assert time.monotonic() - start < 1
            # The flood really filled the table: the server turned part of it away.
            assert sum(closed_by_peer(sock) for sock in flood) > 100
        finally:
            stop.set()
            trickler.join()
            for sock in flood:
                sock.close()
        assert srv.process.poll() is None
    assert srv.log.stat().st_size < 100_000, srv.log.read_text()[-2000:]


def test_a_connection_that_does_not_finish_its_head_in_time_is_closed(tmp_path: Path) -> None:
    with (
        serve(tmp_path, server="header_timeout = 1\nkeep_alive_timeout = 30") as srv,
        connect_from("127.0.0.2", srv.http_port) as slow,
        connect_from("127.0.0.2", srv.http_port) as silent,
        connect_from("127.0.0.2", srv.http_port) as kept,
    ):
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(kept).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        for sock in (slow, silent):
            sock.settimeout(5)
            assert sock.recv(4096) == b""  # closed, no response
        assert time.monotonic() - start < 3
        # A kept-alive connection waits for its next request (the
        # keep-alive timeout, not the header timeout, applies there).
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(kept).startswith(b"HTTP/1.1 200")


def test_the_third_response_on_a_connection_says_close_and_closes_it(tmp_path: Path) -> None:
    """``max_requests_per_connection``: a client pool that keeps its
    connections is moved to new ones now and then (the workers of a node
    share its port, and the kernel places connections, not requests)."""
    with (
        serve(tmp_path, server="max_requests_per_connection = 3") as srv,
        connect_from("127.0.0.2", srv.http_port) as conn,
    ):
        heads = []
        for _ in range(3):
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            response = read_response(conn)
            assert response.startswith(b"HTTP/1.1 200")
            heads.append(response.split(b"\r\n\r\n")[0].lower())
        assert [b"connection: close" in head for head in heads] == [False, False, True]
        conn.settimeout(5)
        assert conn.recv(4096) == b""  # the server closed it after the third
    with (
        serve(tmp_path, server="max_requests_per_connection = 0") as srv,
        connect_from("127.0.0.2", srv.http_port) as conn,  # 0: never closed
    ):
        for _ in range(120):
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            response = read_response(conn)
            assert b"connection: close" not in response.lower()


def test_connections_over_the_per_source_cap_are_refused_while_other_sources_get_in(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, server="max_connections_per_source = 5") as srv:
        held = [connect_from("127.0.0.2", srv.http_port) for _ in range(5)]
        extra = connect_from("127.0.0.2", srv.http_port)
        try:
            extra.settimeout(3)
            with suppress(OSError):
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                refused = extra.recv(4096) == b""
            except ConnectionResetError:
                refused = True
            assert refused
            with connect_from("127.0.0.3", srv.http_port) as other:
                other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(other).startswith(b"HTTP/1.1 200")
        finally:
            extra.close()
            for sock in held:
                sock.close()


def _complete(response: bytes) -> bool:
    """Whether ``response`` holds a whole response: its head and as many body
    bytes as its Content-Length says (the head and body may arrive apart)."""
    head, found, body = response.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


def _send_body(port: int, head: bytes, chunk: bytes, total: int) -> tuple[bytes, int]:
    """Send ``head`` then ``chunk`` repeatedly up to ``total`` bytes, until the
    server answers or closes; (the response, bytes of body sent)."""
    sent = 0
    response = b""
    with connect_from("127.0.0.1", port, timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 1)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                response += data
                if _complete(response):
                    break
            elif writable:
                try:
                    sent += sock.send(chunk)
                except OSError:
                    break
    return response, sent


def test_a_300_mib_body_is_refused_with_413_without_the_server_growing(tmp_path: Path) -> None:
    total = 300 * 1024 * 1024
    with serve(tmp_path) as srv:
        for _ in range(5):  # warm the request path, then take the baseline
            httpx.post(f"{srv.base}/click2dial/calls", json=CALL, headers=AUTH)
        before = srv.status()
        mib = b"x" * (1024 * 1024)
        head = (
            f"POST /click2dial/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
        ).encode()
        response, sent = _send_body(srv.http_port, head, mib, total)
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert b'"status":413' in response or b"body larger than" in response
        assert sent < 64 * 1024 * 1024  # refused long before the end
        head = (
            f"POST /click2dial/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_KEY}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        chunk = b"%x\r\n" % len(mib) + mib + b"\r\n"
        response, sent = _send_body(srv.http_port, head, chunk, total)
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert sent < 64 * 1024 * 1024
        after = srv.status()
        # kB: a few MB over the baseline at most, the peak included.
        assert after["VmRSS"] < before["VmRSS"] + 8 * 1024, (before, after)
        assert after["VmHWM"] < max(before["VmHWM"], before["VmRSS"]) + 8 * 1024, (before, after)
        # The server still serves a normal body.
        normal = httpx.post(f"{srv.base}/click2dial/calls", json=CALL, headers=AUTH)
        assert normal.status_code == 201


def test_a_body_that_does_not_arrive_in_time_gets_408(tmp_path: Path) -> None:
    with (
        serve(tmp_path, server="body_timeout = 1") as srv,
        connect_from("127.0.0.1", srv.http_port) as sock,
    ):
        sock.sendall(
            b"POST /click2dial/calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nAuthorization: Bearer " + ACME_KEY.encode() + b"\r\nContent-Length: 100"
            b"\r\n\r\n{"
        )
        start = time.monotonic()
        assert sock.recv(4096).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 3


# --- SIP ---------------------------------------------------------------------


def test_4200_idle_sip_tcp_connections_from_one_source_lock_nobody_out(tmp_path: Path) -> None:
    with Sipp("agent_answer") as agent, Sipp("trunk_answer") as trunk:
        with serve(
            tmp_path,
            agent_port=agent.port,
            trunk_port=trunk.port,
            sip="idle_timeout_without_dialog = 3",
        ) as srv:
            ref = httpx.post(f"{srv.base}/click2dial/calls", json=CALL, headers=AUTH).json()[
                "call_ref"
            ]
            url = f"{srv.base}/click2dial/calls/{ref}"
            deadline = time.monotonic() + 20
            while httpx.get(url, headers=AUTH).json()["status"] != "talking":
                assert time.monotonic() < deadline, "the call never got to talking"
                time.sleep(0.05)
            flood: list[socket.socket] = []
            try:
                for _ in range(4200):
                    with suppress(OSError):
                        flood.append(connect_from("127.0.0.2", srv.sip_port))
                start = time.monotonic()
                answer = tcp_options_answer(srv.sip_port, "127.0.0.3")
                assert answer.startswith(b"SIP/2.0 200"), answer
                assert time.monotonic() - start < 1
                # All but the per-source cap (64) were turned away at once...
                deadline = time.monotonic() + 10
                while sum(not closed_by_peer(s) for s in flood) > 64:
                    assert time.monotonic() < deadline, "the per-source cap did not hold"
                    time.sleep(0.1)
                # ... and the rest go after the short idle timeout: they carry no dialog.
                deadline = time.monotonic() + 10
                while not all(closed_by_peer(s) for s in flood):
                    assert time.monotonic() < deadline, "idle connections were kept"
                    time.sleep(0.2)
            finally:
                for sock in flood:
                    sock.close()
            assert httpx.get(url, headers=AUTH).json()["status"] == "talking"
            assert httpx.delete(url, headers=AUTH).status_code in (200, 202, 204)
            deadline = time.monotonic() + 10
            while (call := httpx.get(url, headers=AUTH).json())["status"] != "ended":
                assert time.monotonic() < deadline, "the call did not end"
                time.sleep(0.05)
            assert call["end_reason"] != "failed", call
        assert srv.log.stat().st_size < 100_000, srv.log.read_text()[-2000:]


def test_a_sip_request_flood_from_one_source_is_rate_limited_but_not_the_trunk(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, sip="request_rate = 5\nrequest_burst = 10") as srv:

        def answered(source: str, count: int) -> int:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source, 0))
                for _ in range(count):
                    message = sip_options(srv.sip_port, source, "udp")
                    sock.sendto(message, ("127.0.0.1", srv.sip_port))
                got = 0
                sock.settimeout(1.0)
                with suppress(TimeoutError):
                    while True:
                        if sock.recv(65536).startswith(b"SIP/2.0 200"):
                            got += 1
                return got

        scanner = answered("127.0.0.5", 100)
        assert 10 <= scanner <= 25, scanner  # the burst, plus 5/s while it lasted
        assert answered("127.0.0.1", 100) == 100  # the trunk's address is exempt
