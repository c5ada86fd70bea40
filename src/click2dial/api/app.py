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
from ..health import Readiness
from ..notify import Notifier, notification_json
from ..store import CallRecord, InvalidCursorError, StoreUnavailableError
from .auth import Authenticator
from .openapi import openapi_document
from .phone import PhoneSite

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


#: Deepest nesting of arrays and objects a JSON body may have.  A call
#: request is flat; the limit keeps the parser and the error body (which
#: echoes the value received) far from the interpreter's recursion limit.
MAX_JSON_DEPTH = 32


class MalformedBodyError(ValueError):
    """A body that parses but cannot be taken as it is (400)."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedBodyError(f"duplicate key {_printable(key)!r}")
            seen.add(key)
    return data


def _printable(text: str) -> str:
    # A lone surrogate cannot be encoded into the error body: show its escape.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_json_value(data: object) -> None:
    """Raise :class:`MalformedBodyError` for a value nested deeper than
    :data:`MAX_JSON_DEPTH` or holding a lone surrogate (``"\\ud800"`` is valid
    JSON syntax, but no Unicode text: it cannot be stored, sent or echoed)."""
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                raise MalformedBodyError(f"lone surrogate in a string: {_printable(value)[:40]}")
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise MalformedBodyError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    if _has_surrogate(key):
                        raise MalformedBodyError(f"lone surrogate in a key: {_printable(key)[:40]}")
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def parse_json_body(raw: bytes) -> object:
    """The JSON value of a body, or :class:`ValueError` with a message fit for
    the client: broken syntax, NaN/Infinity, a number out of range, duplicate
    keys, nesting too deep, a lone surrogate, bytes that are not UTF-8."""
    # JSON exchanged between systems is UTF-8 (RFC 8259 section 8.1): no
    # UTF-16 or UTF-32 guessing, and a byte-order mark is a syntax error.
    text = raw.decode("utf-8")
    try:
        data = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_object,
        )
    except RecursionError:
        raise MalformedBodyError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            # Python's own guard against quadratic int parsing (4300 digits).
            raise MalformedBodyError("an integer with too many digits") from None
        raise
    check_json_value(data)
    return data


def parse_form(raw: bytes | str) -> list[tuple[str, str]]:
    """The fields of a form body or query string; ``ValueError`` for a field
    without ``=`` or bytes (raw or %-escaped) that are not UTF-8 (a lone
    surrogate among them)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")


def _unique_fields(pairs: list[tuple[str, str]]) -> dict[str, object]:
    data: dict[str, object] = dict(pairs)
    if len(data) != len(pairs):
        names = [name for name, _ in pairs]
        name = next(n for n in names if names.count(n) > 1)
        raise MalformedBodyError(f"field {name!r} given more than once")
    return data


def _request_problem(request: Request) -> Response | None:
    """400 for a query string that is not UTF-8 once unescaped (a lone
    surrogate is) or holds a NUL, which no stored field can hold; 404 for a
    path parameter with a NUL (no call or notification has one)."""
    query = request.scope.get("query_string", b"")
    if query:
        try:
            pairs = parse_form(query)
        except ValueError:
            return error_response(400, "malformed query string: %-escapes must be UTF-8")
        if any("\x00" in name or "\x00" in value for name, value in pairs):
            return error_response(400, "malformed query string: NUL character")
    if any("\x00" in str(value) for value in request.path_params.values()):
        return error_response(404, "no such resource")
    return None


#: Seconds a client is asked to wait when the store cannot be reached: the
#: health probe runs every second, so the answer has changed by then.
STORE_RETRY_AFTER = 2


def store_unavailable_response() -> JSONResponse:
    return error_response(
        503,
        "the call store cannot be reached now; try again",
        headers={"Retry-After": str(STORE_RETRY_AFTER)},
    )


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
    readiness: Callable[[], Readiness] | None = None,
    notifier: Notifier | None = None,
    phone: PhoneSite | None = None,
) -> Starlette:
    """The ASGI app.  ``authenticator`` decides which integrators this
    listener serves (all of them on the shared port, one on its own port);
    ``phone`` serves the softphone page (without it, one that knows no SIP
    WebSocket listener)."""
    site = phone if phone is not None else PhoneSite()

    def authed(
        handler: Handler, *, deprecated: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            integrator = authenticator.authenticate(request)
            response: Response
            problem = _request_problem(request) if integrator is not None else None
            if problem is not None:
                response = problem
            elif integrator is None:
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
                except MalformedBodyError as exc:
                    response = error_response(400, str(exc))
                except StoreUnavailableError:
                    response = store_unavailable_response()
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
                return _unique_fields(parse_form(raw))
            except MalformedBodyError as exc:
                return error_response(400, f"malformed form body: {exc}")
            except UnicodeDecodeError:
                return error_response(400, "malformed form body: %-escapes must be UTF-8")
            except ValueError:
                return error_response(400, "malformed form body")
        if ctype not in ("application/json", ""):
            return error_response(415, "send application/json or application/x-www-form-urlencoded")
        try:
            data = parse_json_body(raw)
        except ValueError as exc:  # UnicodeDecodeError and MalformedBodyError too
            return error_response(400, f"malformed JSON body: {_printable(str(exc))}")
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
        # Parsed again, strictly: a field given twice is refused, not guessed at.
        query = request.scope.get("query_string", b"")
        return await _place(request, integrator, _unique_fields(parse_form(query)))

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
        if readiness is not None:
            state = readiness()
            return JSONResponse(state.body(), status_code=200 if state.ready else 503)
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def phone_page(request: Request) -> Response:
        page = await site.page(request)
        if page is None:
            return error_response(503, "the softphone page is not built: run `make phone`")
        return page

    async def phone_asset(request: Request) -> Response:
        asset = await site.asset(request)
        return asset if asset is not None else error_response(404, "no such resource")

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
        Route("/phone", phone_page, methods=["GET"]),
        Route("/phone/config.json", site.config, methods=["GET"]),
        Route("/phone/{file}", phone_asset, methods=["GET"]),
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

    async def store_down(request: Request, exc: Exception) -> Response:
        return store_unavailable_response()  # the endpoints outside authed()

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")

    return Starlette(
        routes=routes,
        exception_handlers={
            404: not_found,
            405: not_allowed,
            500: crashed,
            StoreUnavailableError: store_down,
        },
    )
