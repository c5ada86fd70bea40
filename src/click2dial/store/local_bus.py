"""Node-to-node messages between the processes that share one SQLite file:
the workers of one node (``[server] workers``) on one machine.

PostgreSQL carries the cluster bus with ``NOTIFY``/``LISTEN``; SQLite has
nothing alike, and the processes that can open one SQLite file are on one
machine.  So each subscription is a Unix datagram socket in Linux's
abstract namespace (no file to leave behind when a worker is SIGKILLed, no
path length to run out of), named ``click2dial-bus:<file>:<random>``
where ``<file>`` is a hash of the database's real path: only processes of
the same database hear each other.  :func:`notify` sends one datagram to
every socket of that name that is bound right now, found in
``/proc/net/unix``.  Like ``NOTIFY`` it is fire-and-forget: a socket that
is gone or full is skipped, and the asking node's timeout says so
(:mod:`click2dial.cluster_bus`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
from collections.abc import Callable
from typing import Final

from .base import StoreError

#: A bus message is one datagram; the cluster bus's are about 200 bytes.
MAX_PAYLOAD: Final = 60_000

_PROC_UNIX: Final = "/proc/net/unix"


def bus_prefix(path: str) -> str:
    """The socket name prefix of the database at ``path``."""
    digest = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:24]
    return f"click2dial-bus:{digest}:"


def bound_names(prefix: str, table: str = _PROC_UNIX) -> list[str]:
    """The abstract socket names starting with ``prefix`` bound now."""
    try:
        with open(table, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError as exc:
        raise StoreError(f"cannot list the bus's sockets ({table}): {exc}") from exc
    wanted = "@" + prefix
    names = []
    for line in lines:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode [Path]
        if len(fields) >= 8 and fields[7].startswith(wanted):
            names.append(fields[7][1:])
    return names


class Subscription:
    """One listening socket; what :meth:`Store.listen` returns."""

    def __init__(self, sock: socket.socket, callback: Callable[[str], None]) -> None:
        self._sock = sock
        self._callback = callback
        self._closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(MAX_PAYLOAD + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._shut()
                return
            try:
                text = data.decode()
            except UnicodeDecodeError:
                continue  # not one of ours
            self._callback(text)

    def _shut(self) -> None:
        if not self._closed.is_set():
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._shut()


def listen(path: str, callback: Callable[[str], None]) -> Subscription:
    """Hear every :func:`notify` of the database at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind("\0" + bus_prefix(path) + secrets.token_hex(8))
        return Subscription(sock, callback)
    except OSError as exc:
        sock.close()
        raise StoreError(f"cannot open the bus socket: {exc}") from exc
    except BaseException:
        sock.close()
        raise


def notify(path: str, payload: str) -> None:
    """Send ``payload`` to every subscription of the database at ``path``
    (this process's own too, as ``NOTIFY`` does)."""
    data = payload.encode()
    if len(data) > MAX_PAYLOAD:
        raise StoreError(f"bus message of {len(data)} bytes; at most {MAX_PAYLOAD}")
    names = bound_names(bus_prefix(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            # Gone since the listing, or its queue is full: like a NOTIFY
            # nobody hears, the asker's timeout answers for it.
            with contextlib.suppress(ConnectionRefusedError, FileNotFoundError, BlockingIOError):
                sock.sendto(data, "\0" + name)
