"""The HTTP surface (SPEC §2): parse, authenticate, call the call service,
render.  No business rule lives here.

Every error body has one shape::

    {"error": {"status": 422, "title": "...",
               "errors": [{"field": "callee", "rule": "pattern",
                           "value": "123", "message": "..."}]}}
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..calls.rules import FieldError
from ..calls.service import CallError, CallService
from ..config import IntegratorConfig
from ..notify import Notifier, notification_json
from ..store import CallRecord, InvalidCursorError
from .auth import Authenticator
from .openapi import openapi_document

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


def error_response(
    status: int,
    title: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "title": title}
    body["errors"] = [
        {"field": e.field, "rule": e.rule, "value": e.value, "message": e.message}
        for e in errors or []
    ]
    if extra:
        body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


_UNIX_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_LIMIT = re.compile(r"[0-9]{1,3}")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def call_error_response(exc: CallError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    extra = {"call_ref": exc.call_ref} if exc.call_ref else None
    return error_response(exc.status, exc.title, exc.errors, headers, extra)


def _leg(state: str | None, answered_at: float | None) -> dict[str, Any]:
    return {"state": state, "answered_at": answered_at}


def render_call(call: CallRecord, warnings: list[str] | None = None) -> dict[str, Any]:
    return {
        "call_ref": call.call_ref,
        "contact_ref": call.contact_ref,
        "status": call.state,
        "agent": call.agent,
        "callee": call.callee,
        "outbound_id": call.outbound_id,
        "outbound_id_requested": call.outbound_id_requested,
        "call_type": call.call_type,
        "source": call.source,
        "warnings": warnings if warnings is not None else list(call.warnings),
        "created_at": call.created_at,
        "legs": {
            "agent": _leg(call.agent_leg, call.agent_answered_at),
            "callee": {
                **_leg(call.callee_leg, call.callee_answered_at),
                "dialed_at": call.callee_dialed_at,
            },
        },
        "ended_at": call.ended_at,
        "end_reason": call.end_reason,
        "end_code": call.end_code,
        "sip_status": call.sip_status,
        "sip_reason": call.sip_reason,
        "hangup_side": call.hangup_side,
    }


Handler = Callable[[Request, IntegratorConfig], Awaitable[Response]]


def build_app(
    service: CallService,
    authenticator: Authenticator,
    *,
    ready: Callable[[], bool] = lambda: True,
    notifier: Notifier | None = None,
) -> Starlette:
    """The ASGI app.  ``authenticator`` decides which integrators this
    listener serves (all of them on the shared port, one on its own port)."""

    def authed(
        handler: Handler, *, deprecated: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            integrator = authenticator.authenticate(request)
            response: Response
            if integrator is None:
                response = error_response(
                    401,
                    "missing or wrong credentials: send Authorization: Bearer <api key>",
                    headers={"WWW-Authenticate": 'Bearer realm="click2dial"'},
                )
            else:
                try:
                    response = await handler(request, integrator)
                except CallError as exc:
                    response = call_error_response(exc)
            if deprecated:
                response.headers["Deprecation"] = "true"
                response.headers["Link"] = '</click2dial/calls>; rel="successor-version"'
            return response

        return endpoint

    async def read_payload(request: Request) -> dict[str, object] | JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return error_response(413, f"body larger than {MAX_BODY} bytes")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            try:
                pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
            except (UnicodeDecodeError, ValueError):
                return error_response(400, "malformed form body")
            return dict(pairs)
        if ctype not in ("application/json", ""):
            return error_response(415, "send application/json or application/x-www-form-urlencoded")
        try:
            data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError) as exc:
            return error_response(400, f"malformed JSON body: {exc}")
        if not isinstance(data, dict):
            return error_response(400, "the JSON body must be an object")
        return data

    async def create_call(request: Request, integrator: IntegratorConfig) -> Response:
        payload = await read_payload(request)
        if isinstance(payload, JSONResponse):
            return payload
        return await _place(request, integrator, payload)

    async def _place(
        request: Request, integrator: IntegratorConfig, payload: dict[str, object]
    ) -> Response:
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            return error_response(
                400,
                "Idempotency-Key must be 1-255 characters",
                [FieldError("Idempotency-Key", "length", key, "1-255 characters")],
            )
        result = await service.place(integrator, payload, idempotency_key=key)
        body = render_call(result.call, result.warnings)
        status = 201 if result.created else 200
        headers = {"Location": f"/click2dial/calls/{result.call.call_ref}"}
        if not result.created:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(body, status_code=status, headers=headers)

    async def legacy_call(request: Request, integrator: IntegratorConfig) -> Response:
        return await _place(request, integrator, dict(request.query_params))

    async def get_call(request: Request, integrator: IntegratorConfig) -> Response:
        call = await service.get(integrator, request.path_params["call_ref"])
        if call is None:
            return error_response(404, "no such call")
        return JSONResponse(render_call(call))

    async def delete_call(request: Request, integrator: IntegratorConfig) -> Response:
        call = await service.hangup(integrator, request.path_params["call_ref"])
        if call is None:
            return error_response(404, "no such call")
        return JSONResponse(render_call(call))

    async def list_calls(request: Request, integrator: IntegratorConfig) -> Response:
        q = request.query_params
        errors: list[FieldError] = []
        since: float | None = None
        limit = 50
        if "since" in q:
            if _UNIX_SECONDS.fullmatch(q["since"]):
                since = float(q["since"])
            else:
                errors.append(FieldError("since", "type", q["since"], "Unix seconds"))
        if "limit" in q:
            if _LIMIT.fullmatch(q["limit"]) and 1 <= int(q["limit"]) <= 500:
                limit = int(q["limit"])
            else:
                errors.append(FieldError("limit", "range", q["limit"], "an integer 1-500"))
        if errors:
            return error_response(422, "bad query parameters", errors)
        try:
            calls, cursor = await service.list(
                integrator,
                contact_ref=q.get("contact_ref"),
                agent=q.get("agent"),
                since=since,
                limit=limit,
                cursor=q.get("cursor"),
            )
        except InvalidCursorError:
            return error_response(
                422,
                "bad query parameters",
                [FieldError("cursor", "invalid", q.get("cursor"), "a next_cursor we returned")],
            )
        return JSONResponse({"calls": [render_call(c) for c in calls], "next_cursor": cursor})

    async def list_notifications(request: Request, integrator: IntegratorConfig) -> Response:
        state = request.query_params.get("state", "undelivered")
        if state != "undelivered":
            return error_response(
                422,
                "bad query parameters",
                [FieldError("state", "enum", state, "only 'undelivered' is supported")],
            )
        rows = await notifier.undelivered(integrator.name) if notifier else []
        return JSONResponse({"notifications": [notification_json(r) for r in rows]})

    async def redeliver(request: Request, integrator: IntegratorConfig) -> Response:
        ident = request.path_params["id"]
        if notifier is None or not await notifier.redeliver(integrator.name, ident):
            return error_response(404, "no such notification")
        return JSONResponse({"id": ident, "status": "queued"}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    routes = [
        Route("/click2dial/calls", authed(create_call), methods=["POST"]),
        Route("/click2dial/calls", authed(list_calls), methods=["GET"]),
        Route("/click2dial/calls/{call_ref}", authed(get_call), methods=["GET"]),
        Route("/click2dial/calls/{call_ref}", authed(delete_call), methods=["DELETE"]),
        Route("/call.php", authed(legacy_call, deprecated=True), methods=["GET"]),
        Route("/click2dial/notifications", authed(list_notifications), methods=["GET"]),
        Route("/click2dial/notifications/{id}/redeliver", authed(redeliver), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "no such resource")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        # Starlette names only the first matching route's methods; a path
        # served by several routes (GET and POST /click2dial/calls) needs all.
        path = request.url.path
        allowed = sorted(
            {m for r in routes if r.path_regex.fullmatch(path) for m in (r.methods or ())}
        )
        return error_response(
            405,
            f"method not allowed; use {', '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")

    return Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_allowed, 500: crashed},
    )
