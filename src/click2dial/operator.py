"""The operator listener (``[server] operator_listen``): Prometheus metrics
and the live calls of this node, for the people who run Click2Dial.

It is a listener of its own, never an integrator's port: what it shows names
every integrator.  It takes no API key (no integrator's key means anything
here); it is protected by where it listens, loopback by default.

* ``GET /metrics``: the Prometheus exposition of :mod:`click2dial.metrics`.
* ``GET /operator/calls``: the calls live on this node (``click2dial calls``).
* ``DELETE /operator/calls/{call_ref}``: hang one up (``click2dial hangup``).
"""

from __future__ import annotations

import http.client
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import ConfigError, load_effective_config

log = logging.getLogger(__name__)

OPERATOR_CALLS_PATH = "/operator/calls"


def build_operator_app(
    *,
    metrics: Callable[[], Awaitable[bytes]],
    live_calls: Callable[[], list[dict[str, Any]]],
    hangup: Callable[[str], Awaitable[dict[str, Any] | None]],
) -> Starlette:
    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics(), media_type=CONTENT_TYPE_LATEST)

    async def calls(request: Request) -> Response:
        return JSONResponse({"calls": live_calls()})

    async def hangup_call(request: Request) -> Response:
        ref = request.path_params["call_ref"]
        result = await hangup(ref)
        if result is None:
            return JSONResponse({"error": f"no live call {ref} on this node"}, status_code=404)
        log.info("operator hung up call %s", ref, extra={"fields": {"call_ref": ref}})
        return JSONResponse(result)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "no such resource"}, status_code=404)

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(OPERATOR_CALLS_PATH, calls, methods=["GET"]),
            Route(OPERATOR_CALLS_PATH + "/{call_ref}", hangup_call, methods=["DELETE"]),
        ],
        exception_handlers={404: not_found},
    )


# --- the operator's commands: ``click2dial calls`` and ``click2dial hangup`` ---

_LOCAL_FOR_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
COLUMNS = ("call_ref", "integrator", "agent", "callee", "state", "age")


def _operator_request(config_path: str | None, method: str, path: str) -> tuple[int, Any]:
    """One request to the operator listener the configuration names."""
    try:
        config = load_effective_config(config_path)
    except ConfigError as exc:
        raise ValueError("; ".join(exc.problems)) from exc
    address = config.server.operator_address
    if address is None:
        raise OSError("the configuration has no operator listener ([server] operator_listen)")
    host, port = address
    host = _LOCAL_FOR_WILDCARD.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def format_calls(calls: list[dict[str, Any]]) -> str:
    """The live calls as a table, like Asterisk's ``core show channels``."""
    rows = [[c.upper() for c in COLUMNS]]
    for call in calls:
        row = [str(call.get(c, "")) for c in COLUMNS]
        row[-1] = f"{float(call.get('age', 0)):.0f}s"
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    count = len(calls)
    lines.append(f"{count} live call{'' if count == 1 else 's'}")
    return "\n".join(lines)


def calls_command(config_path: str | None) -> int:
    try:
        status, body = _operator_request(config_path, "GET", OPERATOR_CALLS_PATH)
    except (OSError, ValueError) as exc:
        print(f"click2dial calls: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"click2dial calls: the operator listener answered {status}", file=sys.stderr)
        return 1
    print(format_calls(body["calls"]))
    return 0


def hangup_command(config_path: str | None, call_ref: str) -> int:
    try:
        status, body = _operator_request(
            config_path, "DELETE", f"{OPERATOR_CALLS_PATH}/{quote(call_ref, safe='')}"
        )
    except (OSError, ValueError) as exc:
        print(f"click2dial hangup: {exc}", file=sys.stderr)
        return 1
    if status == 404:
        print(f"click2dial hangup: no live call {call_ref} on this node", file=sys.stderr)
        return 1
    if status != 200:
        print(f"click2dial hangup: the operator listener answered {status}", file=sys.stderr)
        return 1
    print(f"{call_ref}: {body['status']}")
    return 0
