"""Real parts for the notification tests: redis-server processes the tests
own (so they can stop and restart them), an HTTP receiver that answers what a
test scripts (or never answers), a TCP black hole, and polling with deadlines.

Never the machine's own Redis on 6379: every :class:`RedisServer` runs on a
free port with persistence off (``--save "" --appendonly no``), so a restart
starts empty, like a Redis that lost its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from click2dial.store import Notification
from tests.processes import stop
from tests.sipp.harness import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One redis-server process on 127.0.0.1, on the same port across restarts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port("tcp")
        self.workdir = Path(tempfile.mkdtemp(prefix="c2d-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=10)

    def start(self, timeout: float = 10) -> Self:
        if self.running():
            return self
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log()[-2000:]}")
                with contextlib.suppress(redis.ConnectionError):
                    if probe.ping():
                        return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} never answered")
                time.sleep(0.01)
        finally:
            probe.close()

    def stop(self) -> None:
        stop(self.process)
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes
    at: float


class HttpReceiver:
    """A webhook receiver on a free loopback port, in the test's event loop.

    It answers the ``statuses`` in turn, then ``default``; with ``hang`` it
    reads each request and never answers.  ``requests`` is every request
    read, answered or not.
    """

    def __init__(
        self, statuses: list[int] | None = None, *, default: int = 200, hang: bool = False
    ) -> None:
        self.statuses = list(statuses or [])
        self.default = default
        self.hang = hang
        self.requests: list[Received] = []
        self.answered: list[int] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._arrived = asyncio.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/click2dial"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """The first ``count`` requests, once that many have arrived."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.requests) >= count), timeout
            )
        return self.requests[:count]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await self._read(reader)
                if request is None:
                    return
                async with self._arrived:
                    self.requests.append(request)
                    self._arrived.notify_all()
                if self.hang:
                    await asyncio.Event().wait()  # ended by the connection closing
                status = self.statuses.pop(0) if self.statuses else self.default
                self.answered.append(status)
                writer.write(f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Received | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not raw:
                break
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Received(method, path, headers, body, time.time())


class BlackHole:
    """A TCP server that accepts and reads but never answers (a hung Redis)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._swallow, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        self._writers.discard(writer)
        writer.close()


async def wait_until(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 10,
    what: str = "the condition",
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy;
    returns that value, or fails after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def brpop_all(
    client: redis.Redis, count: int, key: str, timeout: float = 10
) -> list[dict[str, Any]]:
    """``count`` documents popped the way an integrator consumes them."""
    found = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(found) < count:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"only {len(found)} of {count} documents arrived: {found}")
        item = await asyncio.to_thread(client.brpop, [key], max(0.1, min(left, 1.0)))
        if item is not None:
            found.append(json.loads(item[1]))
    return found


def cdr_row(integrator: str, n: int, target: str = "redis", **fields: Any) -> Notification:
    payload = {"type": "cdr", "payload": {"call_ref": f"call-{n}", "n": n}}
    return Notification(
        integrator=integrator,
        kind="cdr",
        call_ref=f"call-{n}",
        payload=payload,
        target=target,
        **fields,
    )


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedRandom(random.Random):
    """``uniform`` returns ``factor`` and records the bounds it was asked for."""

    def __init__(self, factor: float = 0.75) -> None:
        super().__init__(0)
        self.factor = factor
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.bounds.append((low, high))
        return self.factor
