"""HTTP connections are TCP_NODELAY: a response written in two parts (head,
then body) on a kept-alive connection must not wait for the client's
delayed ACK (40 ms on Linux), which made every POST after a connection's
first one take 44 ms."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.e2e.support import running


def test_accepted_http_connections_have_nodelay(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, agent_port=None, trunk_port=None) as env:
            for _ in range(3):  # the same kept-alive connection
                assert (await env.acme.get("/healthz")).status_code == 200
            listener = env.service.listeners[0]
            assert listener.server is not None
            connections = list(listener.server.server_state.connections)
            assert connections, "no open connection seen by the server"
            for protocol in connections:
                sock = protocol.transport.get_extra_info("socket")  # type: ignore[attr-defined]
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    asyncio.run(asyncio.wait_for(main(), 60))
