"""The OpenAPI 3.1 description of the integrators' HTTP API (SPEC §2) and of
the notification documents they receive (SPEC §5), served at
``GET /openapi.json``.

This module owns the description only: the routes, their handlers and the
rules themselves live in :mod:`click2dial.api.app` and
:mod:`click2dial.calls.rules`.  The request patterns are built from the rules
module's regular expressions, and ``tests/api/test_openapi.py`` checks the
paths and the call representation against the app itself, so the document
cannot quietly drift from the code.  Every ``enum`` (status, leg state,
end_reason, hangup_side, call_type, source) is generated from the enums of
:mod:`click2dial.vocabulary`, in their order; this module only adds what each
word means, and refuses at import to describe a word the vocabulary lacks
or to leave one of its words undescribed.

JSON Schema's ``pattern`` matches anywhere in a string, while the rules use
``re.fullmatch``: every pattern here is the rules' expression anchored as
``^(?:...)$``, which accepts exactly what ``fullmatch`` accepts.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Any, Final, TypeVar

from .. import __version__
from ..calls.cdr import CALL_DIR, REF
from ..calls.rules import (
    AGENT_FORMS,
    AGENT_PATTERN,
    CALLEE_FORMS,
    CALLEE_PATTERN,
    CONTACT_REF_FORMS,
    CONTACT_REF_MAX_LENGTH,
    CONTACT_REF_PATTERN,
    OUTBOUND_ID_FORMS,
    OUTBOUND_ID_PATTERN,
    validate_call_request,
)
from ..vocabulary import CallSource, CallState, CallType, EndReason, HangupSide, LegState

__all__ = [
    "CALL_STATUSES",
    "END_REASONS",
    "FIELD_ERROR_RULES",
    "anchored",
    "openapi_document",
]

E = TypeVar("E", bound=StrEnum)

# What GET /click2dial/calls accepts (api/app.py): since as Unix seconds, and a
# cursor as encoded by the store (unpadded URL-safe base64).
_UNIX_SECONDS: Final = r"[0-9]{1,12}(?:\.[0-9]{1,9})?"
_CURSOR: Final = r"[A-Za-z0-9_-]+"


def _described(vocabulary: type[E], meanings: dict[E, str]) -> dict[str, str]:
    """``meanings`` keyed and ordered by ``vocabulary``; exactly one meaning
    per word, so that a word added to the vocabulary cannot go undocumented."""
    missing = [word.value for word in vocabulary if word not in meanings]
    if missing:
        raise RuntimeError(f"{vocabulary.__name__}: no meaning for {missing}")
    return {word.value: meanings[word] for word in vocabulary}


#: ``status`` of a call, in the order a call goes through them.
CALL_STATUSES: Final[dict[str, str]] = _described(
    CallState,
    {
        CallState.AGENT_RINGING: "Click2Dial is ringing the agent's phone.",
        CallState.AGENT_ANSWERED: "The agent answered; the callee is about to be dialled.",
        CallState.CALLEE_RINGING: "The callee is being dialled; the agent hears ringing.",
        CallState.TALKING: "The callee answered: agent and callee are connected.",
        CallState.ENDING: "The call's end is decided (by a hangup or a DELETE); its legs are "
        "being released and its end and CDR written. Seen briefly, or for as long as the "
        "store is unreachable.",
        CallState.ENDED: "The call is over: end_reason and end_code say how, "
        "and the CDR is issued.",
    },
)

#: ``end_reason`` values (SPEC §5) with when they happen and their usual Q.850 cause.
END_REASONS: Final[dict[str, str]] = _described(
    EndReason,
    {
        EndReason.HUNGUP: "Answered, normal clearing, side unknown (end_code 16).",
        EndReason.AGENT_HUNGUP: "Answered, the agent hung up (end_code 16).",
        EndReason.CALLEE_HUNGUP: "Answered, the callee hung up (end_code 16).",
        EndReason.BUSY: "The callee (or the agent) was busy (end_code 17).",
        EndReason.REJECT: "Declined before answering (end_code 21, or 19, 22).",
        EndReason.TIMEOUT: "Rang out without an answer (end_code 19, or 18, 102).",
        EndReason.ERROR: "The number or the route failed (end_code 1, 28, 34, 38, 41, 42, ...).",
        EndReason.FAILED: "An internal error in Click2Dial (end_code 0 or 41).",
    },
)

#: Every ``rule`` an error object can name, with its meaning.  A client should
#: still accept a name it does not know: new checks may add new names.
FIELD_ERROR_RULES: Final[dict[str, str]] = {
    "required": "The field is missing (or an empty string).",
    "type": "Not a string or integer (for since: not a number of Unix seconds).",
    "pattern": "A string that is none of the accepted forms.",
    "same_as_agent": "The callee is the agent itself.",
    "call_type": "No call type this integrator may use joins this agent to this callee.",
    "not_allowed": "Well-formed, but this integrator's configuration forbids it "
    "(an agent, a caller ID, or an extension callee without internal calls).",
    "no_pool": 'outbound_id is "random" but the integrator has no caller-ID pool.',
    "busy": "The agent already has a live Click2Dial call (409).",
    "length": "The Idempotency-Key header is not 1-255 characters long.",
    "range": "limit is not an integer 1-500.",
    "invalid": "cursor is not a next_cursor Click2Dial returned.",
    "enum": "state is not one of the accepted values (only undelivered).",
}

_NUMBER_INTEGER_NOTE = (
    "A JSON integer is read as its decimal string; it cannot carry a leading 0, "
    "so send numbers starting 0 or 00 as strings."
)


def anchored(regex: str) -> str:
    """``regex`` as a JSON Schema pattern that accepts what ``re.fullmatch`` does."""
    return f"^(?:{regex})$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _words(vocabulary: type[StrEnum]) -> list[str]:
    """The ``enum`` of a schema: the vocabulary's words, in its order."""
    return [word.value for word in vocabulary]


def _nullable_words(vocabulary: type[StrEnum]) -> list[str | None]:
    return [*_words(vocabulary), None]


def _bullets(values: dict[str, str]) -> str:
    return "\n".join(f"- `{name}`: {meaning}" for name, meaning in values.items())


#: The JSON integers whose decimal string matches each number rule (an integer
#: has no leading 0, so only the extension and 27... forms have any).
_EXTENSION_INTEGERS: Final = {"minimum": 100, "maximum": 9999}
_27_INTEGERS: Final = {"minimum": 27_000_000_000, "maximum": 27_999_999_999}
#: An empty string: in a form or a query string, a field left blank (not given).
_BLANK: Final = {"const": "", "description": "Not given (the integrator's default applies)."}


def _number_field(
    description: str, regex: str, integers: list[dict[str, int]], *, blank: bool = False
) -> dict[str, Any]:
    branches: list[dict[str, Any]] = [{"type": "string", "pattern": anchored(regex)}]
    if blank:
        branches.append(_BLANK)
    branches += [
        {"type": "integer", **bounds, "description": _NUMBER_INTEGER_NOTE} for bounds in integers
    ]
    return {"description": description, "anyOf": branches}


def _contact_ref_field(description: str, example: str) -> dict[str, Any]:
    return {
        "description": description,
        "anyOf": [
            {"type": "string", "pattern": anchored(CONTACT_REF_PATTERN)},
            # A CRM's numeric record id is a fine reference; its decimal
            # string (a minus sign included) meets the rule.
            {"type": "integer"},
            {"type": "null"},
        ],
        "examples": [example],
    }


_CONTACT_REF_RULE = (
    f"{CONTACT_REF_FORMS}. Checked on the whole value; a value longer than "
    f"{CONTACT_REF_MAX_LENGTH} characters is truncated to {CONTACT_REF_MAX_LENGTH} "
    "(and the response's warnings say so). Absent, empty or null: one is generated."
)


def _call_request_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A click-to-dial request. Unknown keys are ignored. "
        "Validation is exact: nothing is stripped or rewritten.",
        "required": ["agent", "callee"],
        "properties": {
            "agent": _number_field(
                f"The agent's extension, or the first number connected: {AGENT_FORMS}.",
                AGENT_PATTERN,
                [_EXTENSION_INTEGERS, _27_INTEGERS],
            ),
            "callee": _number_field(
                f"The number to dial: {CALLEE_FORMS}. A 3-4 digit extension is accepted "
                "only for an extension agent when the integrator may place internal calls.",
                # The extension form is a configuration-dependent exception, not
                # part of the callee rule (see calls/rules.py).
                CALLEE_PATTERN,
                [_27_INTEGERS],
            ),
            "outbound_id": _number_field(
                f"The caller ID presented to the callee: {OUTBOUND_ID_FORMS}. "
                '"random" picks one from the integrator\'s caller-ID pool; a national '
                "number (10 digits starting 0) is accepted with a warning. Required "
                "unless the integrator has a default_outbound_id; empty means not given.",
                OUTBOUND_ID_PATTERN,
                [_27_INTEGERS],
                blank=True,
            ),
            "contact_ref": _contact_ref_field(
                "The integrator's own reference (account, matter, ticket): " + _CONTACT_REF_RULE,
                "ticket-4711",
            ),
            "call_ref": {
                **_contact_ref_field(
                    "Deprecated: the pre-3.0 name of contact_ref, with the same rule. "
                    "contact_ref wins if both are sent. In responses call_ref is "
                    "Click2Dial's own id for the call.",
                    "acct:1029",
                ),
                "deprecated": True,
            },
        },
        "examples": [
            {
                "agent": "1001",
                "callee": "27821234567",
                "outbound_id": "27110000001",
                "contact_ref": "ticket-4711",
            }
        ],
    }


def _call_request_form_schema() -> dict[str, Any]:
    def field(regex: str, description: str) -> dict[str, Any]:
        return {"type": "string", "pattern": anchored(regex), "description": description}

    outbound_id = {
        "anyOf": [{"type": "string", "pattern": anchored(OUTBOUND_ID_PATTERN)}, _BLANK],
        "description": OUTBOUND_ID_FORMS,
    }

    return {
        "type": "object",
        "description": "The same request as a form: every value is a string, and an "
        "empty value counts as not given.",
        "required": ["agent", "callee"],
        "properties": {
            "agent": field(AGENT_PATTERN, AGENT_FORMS),
            "callee": field(CALLEE_PATTERN, CALLEE_FORMS),
            "outbound_id": outbound_id,
            "contact_ref": field(CONTACT_REF_PATTERN, _CONTACT_REF_RULE),
            "call_ref": {
                **field(
                    CONTACT_REF_PATTERN,
                    "Deprecated pre-3.0 name of contact_ref; contact_ref wins.",
                ),
                "deprecated": True,
            },
        },
    }


def _nullable(type_: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": [type_, "null"], "description": description, **extra}


def _leg_schema(who: str, states: str, dialed: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "state": _nullable(
            "string", f"The {who} leg's SIP progress: {states}.", enum=_nullable_words(LegState)
        ),
        "answered_at": _nullable("number", f"When the {who} answered (Unix seconds)."),
    }
    if dialed:
        properties["dialed_at"] = _nullable(
            "number", "When Click2Dial started dialling the callee (Unix seconds)."
        )
    return {"type": "object", "required": list(properties), "properties": properties}


def _call_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "call_ref": {
            "type": "string",
            "description": "Click2Dial's own unique id for the call (opaque), also the "
            "call_ref of every notification about it.",
            "examples": ["9b2f0c8e-4d7a-4a57-9a43-0f6f1c2d7e11"],
        },
        "contact_ref": {
            "type": "string",
            "description": "The integrator's reference as stored: as sent, truncated to "
            f"{CONTACT_REF_MAX_LENGTH} characters, or generated when none was sent.",
        },
        "status": {
            "type": "string",
            "enum": _words(CallState),
            "description": "Where the call is:\n" + _bullets(CALL_STATUSES),
        },
        "agent": {"type": "string", "description": "The agent, as a string of digits."},
        "callee": {"type": "string", "description": "The number dialled."},
        "outbound_id": {
            "type": "string",
            "description": 'The caller ID presented to the callee (a number, never "random").',
        },
        "outbound_id_requested": {
            "type": "string",
            "description": 'What the request asked for: "random" or a number (the '
            "integrator's default when the request had none).",
        },
        "call_type": {
            "type": "string",
            "enum": _words(CallType),
            "description": "outbound: extension to external number; external: external "
            "number to external number; internal: extension to extension.",
        },
        "source": {
            "type": "string",
            "enum": _words(CallSource),
            "description": "api: placed through this API; webrtc: placed by a browser softphone.",
        },
        "warnings": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Human-readable notes on the request: a national caller ID, "
            "a truncated contact_ref, a deprecated call_ref. Empty when there are none.",
        },
        "created_at": {
            "type": "number",
            "description": "When the call was accepted (Unix seconds).",
        },
        "legs": {
            "type": "object",
            "description": "The two SIP legs.",
            "required": ["agent", "callee"],
            "properties": {
                "agent": _leg_schema("agent", "null, ringing or answered", dialed=False),
                "callee": _leg_schema(
                    "callee", "null (not dialled yet), dialing, ringing or answered", dialed=True
                ),
            },
        },
        "ended_at": _nullable("number", "When the call ended (Unix seconds); null while live."),
        "end_reason": {
            "type": ["string", "null"],
            "enum": _nullable_words(EndReason),
            "description": "How the call ended (null while live):\n" + _bullets(END_REASONS),
        },
        "end_code": _nullable(
            "integer", "The Q.850 (ISDN) cause of the end, null while live.", minimum=0
        ),
        "sip_status": _nullable(
            "integer", "The SIP final response that ended the call, when one did."
        ),
        "sip_reason": _nullable(
            "string", "The reason phrase of that response, or a note on an internal failure."
        ),
        "hangup_side": _nullable(
            "string",
            "Who ended the call: agent, callee, api (DELETE) or system.",
            enum=_nullable_words(HangupSide),
        ),
    }
    return {
        "type": "object",
        "description": "A click-to-dial call, live or ended.",
        "required": list(properties),
        "properties": properties,
    }


def _example_field_errors() -> list[dict[str, object]]:
    # Produced by the rules themselves so that the example's messages are the
    # ones an integrator will really see.
    result = validate_call_request(
        {"agent": "1001", "callee": "+27 82 123 4567", "outbound_id": "27110000001"}
    )
    assert isinstance(result, list), "the example request must break a rule"
    return [
        {"field": e.field, "rule": e.rule, "value": e.value, "message": e.message} for e in result
    ]


def _error_schemas() -> dict[str, Any]:
    return {
        "FieldError": {
            "type": "object",
            "description": "One bad field.",
            "required": ["field", "rule", "value", "message"],
            "properties": {
                "field": {
                    "type": "string",
                    "description": "The field (or header, or query parameter) at fault.",
                    "examples": ["callee"],
                },
                "rule": {
                    "type": "string",
                    "description": "A stable machine name for the rule broken:\n"
                    + _bullets(FIELD_ERROR_RULES),
                    "examples": ["pattern"],
                },
                "value": {"description": "The value received, as received (any JSON value)."},
                "message": {
                    "type": "string",
                    "description": "A sentence for a human naming the accepted forms.",
                },
            },
        },
        "Error": {
            "type": "object",
            "description": "Every error response has this shape.",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "title", "errors"],
                    "properties": {
                        "status": {"type": "integer", "description": "The HTTP status."},
                        "title": {"type": "string", "description": "What went wrong."},
                        "errors": {
                            "type": "array",
                            "items": _ref("FieldError"),
                            "description": "One object per bad field; empty when the error "
                            "is not about a field.",
                        },
                        "call_ref": {
                            "type": "string",
                            "description": "On 409: the agent's live call.",
                        },
                    },
                }
            },
            "examples": [
                {
                    "error": {
                        "status": 422,
                        "title": "the call request breaks the validation rules",
                        "errors": _example_field_errors(),
                    }
                }
            ],
        },
    }


def _cdr_schema() -> dict[str, Any]:
    seconds = {"type": "integer", "minimum": 0}
    payload: dict[str, Any] = {
        "extension": {"type": "string", "description": "The agent."},
        "number": {"type": "string", "description": "The callee."},
        "dial_number": {"type": "string", "description": "The number dialled (the callee)."},
        "call_ref": {"type": "string", "description": "Click2Dial's id for the call."},
        "contact_ref": {"type": "string", "description": "The integrator's reference."},
        "dialed_at": {**seconds, "description": "When the call was placed (Unix seconds)."},
        "end_reason": {
            "type": "string",
            "enum": _words(EndReason),
            "description": "How the call ended:\n" + _bullets(END_REASONS),
        },
        "end_code": {"type": ["integer", "null"], "description": "The Q.850 cause."},
        "call_time": {
            **seconds,
            "description": "Seconds talking (0 if the callee never answered).",
        },
        "hold_time": {
            **seconds,
            "description": "Seconds from placing the call until the callee answered or the "
            "call ended.",
        },
        "call_dir": {"type": "string", "const": CALL_DIR, "description": "Always outbound."},
        "recording_url": _nullable("string", "A recording of the call, when there is one."),
        "ref": {"type": "string", "const": REF},
        "clid": {"type": "string", "description": "The caller ID presented to the callee."},
        "call_type": {"type": "string", "enum": _words(CallType)},
        "ring_time_extension": {**seconds, "description": "Seconds the agent's phone rang."},
        "ring_time_number": {**seconds, "description": "Seconds the callee's phone rang."},
    }
    required = list(payload)
    # Beyond SPEC §5, so not required: a consumer must not depend on them.
    payload["sip_status"] = _nullable("integer", "The SIP final response that ended the call.")
    payload["hangup_side"] = _nullable(
        "string", "agent, callee, api or system.", enum=_nullable_words(HangupSide)
    )
    return {
        "type": "object",
        "description": "The Call Data Record issued once at the end of every call, "
        "answered or not (SPEC §5). In Redis it is LPUSHed onto the list "
        "enigma:notifications:cdr of the integrator's database (consume with BRPOP, "
        "oldest first); by webhook it is the signed POST body (HMAC-SHA256 of the body "
        "with the integrator's secret). Delivery is durable: the CDR is stored before it is "
        "sent, so an outage of the target loses nothing.",
        "required": ["id", "type", "payload"],
        "properties": {
            "id": {"type": "string", "description": "Unique per notification: deduplicate on it."},
            "type": {"type": "string", "const": "cdr"},
            "payload": {"type": "object", "required": required, "properties": payload},
        },
    }


def _agent_notification_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Published when the agent answers, before the callee is connected: "
        "PUBLISH on enigma:notifications:agents:<agent> (SPEC §5).",
        "required": ["id", "type", "payload"],
        "properties": {
            "id": {"type": "string", "description": "Unique per notification: deduplicate on it."},
            "type": {"type": "string", "const": "call"},
            "payload": {
                "type": "object",
                "required": ["call_ref", "agent", "contact_ref", "number", "ref"],
                "properties": {
                    "call_ref": {"type": "string"},
                    "agent": {"type": "string"},
                    "contact_ref": {"type": "string"},
                    "number": {"type": "string", "description": "The callee."},
                    "ref": {"type": "string", "const": REF},
                },
            },
        },
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _call_response(description: str, headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": _ref("Call")}},
    }


_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_LOCATION: Final = {
    "Location": {
        "description": "The call's URL: /click2dial/calls/{call_ref}.",
        "schema": {"type": "string"},
    }
}
_REPLAYED: Final = {
    "Idempotent-Replayed": {
        "description": "Present on a replay: this is the call the first request created.",
        "schema": {"type": "string", "const": "true"},
    }
}


def _place_responses(*, with_body: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "201": _call_response("The call was accepted and the agent is being rung.", _LOCATION),
        "200": _call_response(
            "A replay: the Idempotency-Key was seen before, and this is the first call "
            "(nothing was dialled again).",
            {**_LOCATION, **_REPLAYED},
        ),
        "400": _error(
            "Malformed body, or an Idempotency-Key that is not 1-255 characters."
            if with_body
            else "An Idempotency-Key that is not 1-255 characters."
        ),
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "403": _error(
            "The integrator may not place this call: the call type is not enabled, or "
            "the agent or caller ID is not allowed, or there is no caller-ID pool."
        ),
        "409": _error("The agent already has a live Click2Dial call; error.call_ref names it."),
    }
    if with_body:
        responses["413"] = _error("The body is larger than 64 KiB.")
        responses["415"] = _error(
            "The body is neither application/json nor application/x-www-form-urlencoded."
        )
    responses["422"] = _error("One or more fields break their rules: one error per field.")
    responses["429"] = _error(
        "Over the integrator's calls-per-second or concurrent-calls limit.", _RETRY_AFTER
    )
    responses["503"] = _error(
        "The telephony side cannot take calls now, or the call store cannot be reached.",
        _RETRY_AFTER,
    )
    return responses


_IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any 1-255 characters unique to this call attempt. A retried request "
    "with the same key returns the first call (200, Idempotent-Replayed: true) instead "
    "of dialling again.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

_CALL_REF_PARAM: Final = {
    "name": "call_ref",
    "in": "path",
    "required": True,
    "description": "Click2Dial's id for the call, from the 201 response.",
    "schema": {"type": "string"},
}


def _query(
    name: str, description: str, schema: dict[str, Any], *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _paths() -> dict[str, Any]:
    unauthenticated: list[dict[str, list[str]]] = []
    not_found = _error("No such call for this integrator.")
    return {
        "/click2dial/calls": {
            "post": {
                "operationId": "createCall",
                "summary": "Place a click-to-dial call",
                "description": "Rings the agent, then dials the callee when the agent "
                "answers. The result of the call arrives later as a CDR.",
                "tags": ["calls"],
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("CallRequest")},
                        "application/x-www-form-urlencoded": {"schema": _ref("CallRequestForm")},
                    },
                },
                "responses": _place_responses(with_body=True),
            },
            "get": {
                "operationId": "listCalls",
                "summary": "List the integrator's calls, newest first",
                "tags": ["calls"],
                "parameters": [
                    _query("contact_ref", "Only calls with this contact_ref.", {"type": "string"}),
                    _query("agent", "Only this agent's calls.", {"type": "string"}),
                    _query(
                        "since",
                        "Only calls created at or after this time: Unix seconds, digits "
                        "with an optional fraction (1733486400 or 1733486400.25).",
                        {"type": "string", "pattern": anchored(_UNIX_SECONDS)},
                    ),
                    _query(
                        "limit",
                        "Calls per page.",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    ),
                    _query(
                        "cursor",
                        "The next_cursor of the previous page (opaque: pass it back as is).",
                        {"type": "string", "pattern": anchored(_CURSOR)},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "One page of calls.",
                        "content": {"application/json": {"schema": _ref("CallList")}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "422": _error(
                        "since is not Unix seconds, limit is not an integer 1-500, or cursor "
                        "is not a next_cursor Click2Dial returned."
                    ),
                },
            },
        },
        "/click2dial/calls/{call_ref}": {
            "parameters": [_CALL_REF_PARAM],
            "get": {
                "operationId": "getCall",
                "summary": "A call's state, both legs, timestamps and end reason",
                "tags": ["calls"],
                "responses": {
                    "200": {
                        "description": "The call.",
                        "content": {"application/json": {"schema": _ref("Call")}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": not_found,
                },
            },
            "delete": {
                "operationId": "hangupCall",
                "summary": "Hang up a call (or cancel it while ringing)",
                "description": "Ending an ended call is not an error: it returns the call "
                "as it is.",
                "tags": ["calls"],
                "responses": {
                    "200": {
                        "description": "The call after the hang-up.",
                        "content": {"application/json": {"schema": _ref("Call")}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": not_found,
                },
            },
        },
        "/call.php": {
            "get": {
                "operationId": "legacyCreateCall",
                "summary": "Place a call, pre-3.0 style (deprecated)",
                "description": "Served for old integrations; use POST /click2dial/calls. "
                "Same rules and responses; a call placed or replayed here comes with "
                "Deprecation: true and a Link to the successor.",
                "deprecated": True,
                "tags": ["legacy"],
                "parameters": [
                    _IDEMPOTENCY_KEY,
                    _query(
                        "agent",
                        AGENT_FORMS,
                        {"type": "string", "pattern": anchored(AGENT_PATTERN)},
                        required=True,
                    ),
                    _query(
                        "callee",
                        CALLEE_FORMS,
                        {"type": "string", "pattern": anchored(CALLEE_PATTERN)},
                        required=True,
                    ),
                    _query(
                        "outbound_id",
                        OUTBOUND_ID_FORMS + "; empty means not given.",
                        {
                            "anyOf": [
                                {"type": "string", "pattern": anchored(OUTBOUND_ID_PATTERN)},
                                _BLANK,
                            ]
                        },
                    ),
                    _query(
                        "call_ref",
                        "The integrator's reference (the pre-3.0 name of contact_ref).",
                        {"type": "string", "pattern": anchored(CONTACT_REF_PATTERN)},
                    ),
                    _query(
                        "contact_ref",
                        "Also accepted; wins over call_ref.",
                        {"type": "string", "pattern": anchored(CONTACT_REF_PATTERN)},
                    ),
                ],
                "responses": _legacy_responses(),
            }
        },
        "/click2dial/notifications": {
            "get": {
                "operationId": "listUndeliveredNotifications",
                "summary": "The integrator's notifications not delivered yet",
                "description": "Oldest first. Each entry names its target (redis or "
                "webhook), the attempts so far, the last error and when the next attempt is "
                "due. Delivery is retried with back-off and never given up.",
                "tags": ["notifications"],
                "parameters": [
                    _query(
                        "state",
                        "Only 'undelivered' (the default).",
                        {"type": "string", "enum": ["undelivered"]},
                    )
                ],
                "responses": {
                    "200": {
                        "description": "The undelivered notifications.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["notifications"],
                                    "properties": {
                                        "notifications": {
                                            "type": "array",
                                            "items": {"type": "object"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "422": _error("state is not 'undelivered'."),
                },
            }
        },
        "/click2dial/notifications/{id}/redeliver": {
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "description": "The notification's id (the id in the document).",
                    "schema": {"type": "string"},
                }
            ],
            "post": {
                "operationId": "redeliverNotification",
                "summary": "Send a notification again (delivered or not)",
                "description": "The document keeps its id, so a consumer that deduplicates "
                "on it sees the copy as a repeat.",
                "tags": ["notifications"],
                "responses": {
                    "202": {
                        "description": "Queued for delivery.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["id", "status"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "status": {"type": "string", "const": "queued"},
                                    },
                                }
                            }
                        },
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": not_found,
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers",
                "tags": ["operations"],
                "security": unauthenticated,
                "responses": {"200": _status_response("Alive.", "ok")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the service can take calls",
                "tags": ["operations"],
                "security": unauthenticated,
                "responses": {
                    "200": _readiness_response("Ready.", "ready"),
                    "503": _readiness_response("Not ready: send no traffic here.", "not ready"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "security": unauthenticated,
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        **_phone_paths(),
    }


_NOT_MODIFIED: Final = {
    "description": "Not modified: the If-None-Match ETag is the file's.",
    "headers": {"ETag": {"description": "The file's tag.", "schema": {"type": "string"}}},
}


def _phone_paths() -> dict[str, Any]:
    """The softphone page (README "The softphone page"): no key needed."""
    text = {"type": "string"}
    return {
        "/phone": {
            "get": {
                "operationId": "phonePage",
                "summary": "The softphone page",
                "description": "A browser softphone for agents (SIP.js): log in with "
                "extension and SIP password, register over this server's WebSocket SIP "
                "listener, answer click-to-dial calls, place calls. Built by `make phone`.",
                "tags": ["softphone"],
                "security": [],
                "responses": {
                    "200": {"description": "The page.", "content": {"text/html": {"schema": text}}},
                    "304": _NOT_MODIFIED,
                    "503": _error("The page was not built (`make phone` needs npm)."),
                },
            }
        },
        "/phone/config.json": {
            "get": {
                "operationId": "phoneConfig",
                "summary": "Where the softphone page registers",
                "tags": ["softphone"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page's defaults, from [sip] listen and public_host.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["websocket_url", "websocket_urls", "sip_domain"],
                                    "properties": {
                                        "websocket_url": {
                                            "type": ["string", "null"],
                                            "description": "The wss: listener's URL, else the "
                                            "ws: one's (path /ws); null without either. A "
                                            "listener on a wildcard or loopback address is "
                                            "named by the host the browser used.",
                                            "examples": ["ws://127.0.0.1:8088/ws"],
                                        },
                                        "websocket_urls": {
                                            "type": "array",
                                            "description": "Every ws: and wss: listener's URL.",
                                            "items": text,
                                        },
                                        "sip_domain": {
                                            "type": "string",
                                            "description": "The host of the agents' SIP "
                                            "addresses (sip:<extension>@<sip_domain>).",
                                            "examples": ["127.0.0.1"],
                                        },
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/phone/{file}": {
            "get": {
                "operationId": "phoneAsset",
                "summary": "A file of the softphone page (its script and style)",
                "tags": ["softphone"],
                "security": [],
                "parameters": [
                    {
                        "name": "file",
                        "in": "path",
                        "required": True,
                        "description": "A file name of the built page, e.g. phone.js.",
                        "schema": text,
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            kind: {"schema": text}
                            for kind in (
                                "text/javascript",
                                "text/css",
                                "image/png",
                                "image/svg+xml",
                                "image/x-icon",
                            )
                        },
                    },
                    "304": _NOT_MODIFIED,
                    "404": _error("No such file."),
                },
            }
        },
    }


def _legacy_responses() -> dict[str, Any]:
    deprecation = {
        "Deprecation": {
            "description": "Always true: this endpoint is deprecated.",
            "schema": {"type": "string", "const": "true"},
        },
        "Link": {
            "description": 'The successor: </click2dial/calls>; rel="successor-version".',
            "schema": {"type": "string"},
        },
    }
    responses = _place_responses(with_body=False)
    # app.py adds the headers to the responses the legacy handler returns
    # itself; refusals raised by the call service are answered without them.
    for status in ("200", "201", "400"):
        response = responses[status]
        response["headers"] = {**response.get("headers", {}), **deprecation}
    return responses


def _status_response(description: str, status: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "const": status}},
                }
            }
        },
    }


def _readiness_response(description: str, status: str) -> dict[str, Any]:
    response = _status_response(description, status)
    schema = response["content"]["application/json"]["schema"]
    schema["required"] = ["status", "checks", "not_ready"]
    schema["properties"] |= {
        "checks": {
            "type": "object",
            "description": "Each part: ok, or what is wrong with it.",
            "required": ["service", "store", "sip"],
            "properties": {
                part: {"type": "string", "description": what}
                for part, what in (
                    ("service", "ok, or stopping."),
                    ("store", "ok, or unreachable (the last probe, every second)."),
                    ("sip", "ok while every configured SIP listener is bound and open."),
                    (
                        "rtpengine",
                        "Only when [sip] rtpengine is set: ok, unreachable (the last "
                        "ping, every second, or a call's request, got no reply), or "
                        "not probed yet.",
                    ),
                )
            },
        },
        "not_ready": {
            "type": "array",
            "description": "The parts that are not ok.",
            "items": {"type": "string"},
        },
    }
    return response


_DESCRIPTION: Final = """\
Click2Dial connects a CRM user (the agent) to the number they clicked (the
callee): it rings the agent, dials the callee through the SIP trunk when the
agent answers, bridges the two, and delivers one Call Data Record (CDR) per
call. Integrator guide: docs/api.md.

Authenticate with `Authorization: Bearer <api key>`. Errors all have the
shape of the Error schema. Times are Unix seconds.
"""


def _with_common_refusals(paths: dict[str, Any]) -> dict[str, Any]:
    """Every authenticated operation may also answer 400 for a malformed
    query string and 503 when the call store cannot be reached."""
    malformed = _error("A malformed body or query string (%-escapes that are not UTF-8, a NUL).")
    unreachable = _error(
        "The telephony side cannot take calls now, or the call store cannot be reached.",
        _RETRY_AFTER,
    )
    for item in paths.values():
        for operation in item.values():
            if not isinstance(operation, dict) or operation.get("security") == []:
                continue  # path-level parameters, or no key needed
            responses = operation["responses"]
            responses.setdefault("400", malformed)
            responses.setdefault("503", unreachable)
    return paths


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, built once; callers must not mutate it."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Click2Dial",
            "version": __version__,
            "summary": "Click-to-dial for CRMs: REST API and CDR notifications.",
            "description": _DESCRIPTION,
        },
        "servers": [
            {
                "url": "http://{host}:{port}",
                "description": "The shared integrator port is 8300; an integrator may "
                "be issued a port of its own.",
                "variables": {
                    "host": {"default": "localhost"},
                    "port": {"default": "8300"},
                },
            }
        ],
        "tags": [
            {"name": "calls", "description": "Placing, following and ending calls."},
            {"name": "legacy", "description": "Pre-3.0 endpoints kept for old integrations."},
            {"name": "operations", "description": "Health, readiness, this document."},
            {"name": "softphone", "description": "The agents' browser softphone page."},
        ],
        "security": [{"bearerAuth": []}],
        "paths": _with_common_refusals(_paths()),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key issued in the integrator's configuration "
                    "(api_keys). On the embedded defaults the single integrator may call "
                    "from loopback without a key.",
                }
            },
            "responses": {
                "Unauthorized": _error(
                    "Missing or wrong credentials.",
                    {
                        "WWW-Authenticate": {
                            "description": 'Bearer realm="click2dial"',
                            "schema": {"type": "string"},
                        }
                    },
                )
            },
            "schemas": {
                "CallRequest": _call_request_schema(),
                "CallRequestForm": _call_request_form_schema(),
                "Call": _call_schema(),
                "CallList": {
                    "type": "object",
                    "required": ["calls", "next_cursor"],
                    "properties": {
                        "calls": {"type": "array", "items": _ref("Call")},
                        "next_cursor": {
                            "type": ["string", "null"],
                            "description": "Pass as cursor for the next page; null on "
                            "the last page.",
                        },
                    },
                },
                **_error_schemas(),
                "CdrNotification": _cdr_schema(),
                "AgentNotification": _agent_notification_schema(),
            },
        },
    }
