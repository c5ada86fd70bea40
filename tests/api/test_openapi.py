"""The OpenAPI document against OpenAPI 3.1's structure and against the code
it describes: the app's routes, the rules' regular expressions, the call
representation, the CDR builder and the stored vocabularies.

openapi-spec-validator would check the structure fully, but it brings ~19
packages (four of them compiled) into the dev environment; the structural
checks here cover what this document uses: operation shape, status keys,
path parameters, ``$ref`` targets, security scheme names, schema keywords.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from click2dial.api.openapi import (
    CALL_STATUSES,
    END_REASONS,
    FIELD_ERROR_RULES,
    anchored,
    openapi_document,
)
from click2dial.calls import rules
from click2dial.calls.cdr import cdr_payload
from click2dial.calls.outcome import Outcome
from click2dial.notify.documents import document as notify_document
from click2dial.store.model import Notification

APP_PY = Path(__file__).resolve().parents[2] / "src" / "click2dial" / "api" / "app.py"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
OPERATION_KEYS = {
    "tags",
    "summary",
    "description",
    "externalDocs",
    "operationId",
    "parameters",
    "requestBody",
    "responses",
    "callbacks",
    "deprecated",
    "security",
    "servers",
}
SCHEMA_TYPES = {"null", "boolean", "object", "array", "number", "string", "integer"}
# The JSON Schema keywords this document may use; a typo (``requierd``) would
# otherwise be silently ignored by every tool.
SCHEMA_KEYWORDS = {
    "$ref",
    "type",
    "description",
    "enum",
    "const",
    "required",
    "properties",
    "items",
    "anyOf",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "default",
    "examples",
    "deprecated",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document()


def _app_module() -> ModuleType | None:
    # app.py imports the configuration and the store, which may not be
    # importable while they are being written; the tests then read app.py's
    # source instead of skipping.
    try:
        return importlib.import_module("click2dial.api.app")
    except ImportError:
        return None


def _routes_from_app(app_module: ModuleType) -> set[tuple[str, str]]:
    # Routes are built without calling the service or the authenticator.
    app = app_module.build_app(service=object(), authenticator=object())
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        for method in route.methods or ():
            # Starlette adds HEAD to every GET route by itself.
            if method != "HEAD":
                found.add((route.path, method.lower()))
    return found


def _routes_from_source() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(APP_PY.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Route"
        ):
            continue
        path = ast.literal_eval(node.args[0])
        methods = next(ast.literal_eval(k.value) for k in node.keywords if k.arg == "methods")
        found.update((path, m.lower()) for m in methods)
    return found


def _render_call() -> Callable[..., dict[str, Any]]:
    app_module = _app_module()
    if app_module is not None:
        render: Callable[..., dict[str, Any]] = app_module.render_call
        return render
    # Without an importable app, run render_call's own source: it and _leg
    # need nothing but their argument (annotations stay unevaluated).
    tree = ast.parse(APP_PY.read_text())
    wanted = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in {"_leg", "render_call"}
    ]
    assert len(wanted) == 2, "app.py no longer defines _leg and render_call"
    module = ast.fix_missing_locations(
        ast.Module(
            body=[ast.ImportFrom("__future__", [ast.alias("annotations")], 0), *wanted],
            type_ignores=[],
        )
    )
    namespace: dict[str, Any] = {"Any": Any}
    exec(compile(module, str(APP_PY), "exec"), namespace)
    fallback: Callable[..., dict[str, Any]] = namespace["render_call"]
    return fallback


def _call_record(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "call_ref": "9b2f0c8e-4d7a-4a57-9a43-0f6f1c2d7e11",
        "integrator": "acme",
        "agent": "1001",
        "callee": "27821234567",
        "outbound_id": "27110000001",
        "outbound_id_requested": "random",
        "contact_ref": "ticket-4711",
        "call_type": "outbound",
        "created_at": 1_700_000_000.25,
        "node_id": "node-a",
    }
    values.update(overrides)
    try:
        from click2dial.store.model import CallRecord
    except ImportError:
        defaults: dict[str, Any] = {
            "source": "api",
            "state": "agent_ringing",
            "warnings": [],
            **dict.fromkeys(
                [
                    "agent_answered_at",
                    "callee_dialed_at",
                    "callee_answered_at",
                    "ended_at",
                    "end_reason",
                    "end_code",
                    "sip_status",
                    "sip_reason",
                    "hangup_side",
                    "agent_leg",
                    "callee_leg",
                ]
            ),
        }
        return SimpleNamespace(**{**defaults, **values})
    return CallRecord(**values)


LIVE_CALL = {"state": "agent_ringing", "agent_leg": "ringing"}
ENDED_CALL = {
    "state": "ended",
    "agent_leg": "answered",
    "callee_leg": "answered",
    "agent_answered_at": 1_700_000_004.0,
    "callee_dialed_at": 1_700_000_004.1,
    "callee_answered_at": 1_700_000_009.5,
    "ended_at": 1_700_000_070.0,
    "end_reason": "callee_hungup",
    "end_code": 16,
    "sip_status": None,
    "sip_reason": None,
    "hangup_side": "callee",
    "warnings": ["outbound_id 0110000001 is a national number"],
}


# --- a validator for the JSON Schema subset the document uses ---------------


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def _type_matches(value: object, type_: str) -> bool:
    checks: dict[str, Callable[[object], bool]] = {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    return checks[type_](value)


def _errors(doc: dict[str, Any], schema: dict[str, Any], value: object, at: str) -> list[str]:
    if "$ref" in schema:
        return _errors(doc, _resolve(doc, schema["$ref"]), value, at)
    if "anyOf" in schema:
        if all(_errors(doc, s, value, at) for s in schema["anyOf"]):
            return [f"{at}: {value!r} matches no anyOf branch"]
        return []
    problems: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_matches(value, t) for t in types):
            return [f"{at}: {value!r} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{at}: {value!r} != {schema['const']!r}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{at}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{at}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        problems += [f"{at}: {k} missing" for k in schema.get("required", []) if k not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problems += _errors(doc, sub, value[key], f"{at}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += _errors(doc, schema["items"], item, f"{at}[{i}]")
    return problems


def _schemas(node: Any, at: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in the document, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{at}/{key}"
            if key == "schema" or (at == "#/components" and key == "schemas"):
                schemas = value.items() if key == "schemas" else [("", value)]
                for name, schema in schemas:
                    yield from _schema_tree(schema, f"{here}/{name}" if name else here)
            else:
                yield from _schemas(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schemas(value, f"{at}/{i}")


def _schema_tree(schema: dict[str, Any], at: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield at, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _schema_tree(sub, f"{at}/properties/{key}")
    for i, sub in enumerate(schema.get("anyOf", [])):
        yield from _schema_tree(sub, f"{at}/anyOf/{i}")
    if "items" in schema:
        yield from _schema_tree(schema["items"], f"{at}/items")


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


# --- structure ---------------------------------------------------------------


def test_is_an_openapi_3_1_document(doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert set(doc) <= {
        "openapi",
        "info",
        "jsonSchemaDialect",
        "servers",
        "paths",
        "webhooks",
        "components",
        "security",
        "tags",
        "externalDocs",
    }
    json.dumps(doc)  # served as JSON: nothing but JSON types inside


def test_document_is_built_once(doc: dict[str, Any]) -> None:
    assert openapi_document() is doc


def test_operations_are_well_formed(doc: dict[str, Any]) -> None:
    operation_ids = []
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        assert set(item) <= HTTP_METHODS | {"parameters", "summary", "description"}
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            assert set(operation) <= OPERATION_KEYS, (path, method)
            operation_ids.append(operation["operationId"])
            assert operation["responses"], (path, method)
            for status, given in operation["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]", status), (path, method, status)
                response = _resolve(doc, given["$ref"]) if "$ref" in given else given
                assert response["description"], (path, method, status)
                for header in response.get("headers", {}).values():
                    assert "schema" in header
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


def test_parameters_are_well_formed(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in _operations_of(item):
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            for parameter in parameters:
                assert parameter["in"] in {"query", "header", "path", "cookie"}
                assert parameter["name"] and "schema" in parameter, parameter
                if parameter["in"] == "path":
                    assert parameter["required"] is True
            in_path = {p["name"] for p in parameters if p["in"] == "path"}
            assert in_path == templated, (path, method)
            keys = [(p["name"], p["in"]) for p in parameters]
            assert len(keys) == len(set(keys)), (path, method)


def _operations_of(item: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    return ((m, op) for m, op in item.items() if m in HTTP_METHODS)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    refs = list(walk(doc))
    assert refs
    for ref in refs:
        _resolve(doc, ref)


def test_security_names_a_declared_scheme(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    requirements = list(doc["security"])
    for _, _, operation in _operations(doc):
        requirements += operation.get("security", [])
    for requirement in requirements:
        assert set(requirement) <= set(schemes)


def test_schemas_use_known_keywords_and_valid_patterns(doc: dict[str, Any]) -> None:
    schemas = list(_schemas(doc))
    assert len(schemas) > 50
    for at, schema in schemas:
        assert set(schema) <= SCHEMA_KEYWORDS, (at, set(schema) - SCHEMA_KEYWORDS)
        types = schema.get("type", [])
        assert set(types if isinstance(types, list) else [types]) <= SCHEMA_TYPES, at
        if "pattern" in schema:
            re.compile(schema["pattern"])
        for key in schema.get("required", []):
            assert key in schema["properties"], (at, key)


# --- against the code ----------------------------------------------------------


def test_every_route_of_the_app_is_documented(doc: dict[str, Any]) -> None:
    app_module = _app_module()
    routed = _routes_from_app(app_module) if app_module else _routes_from_source()
    documented = {(path, method) for path, method, _ in _operations(doc)}
    assert routed == documented
    assert len(routed) == 13  # /metrics is on the operator listener only


def test_route_source_parser_agrees_with_the_app() -> None:
    app_module = _app_module()
    assert app_module is not None, "click2dial.api.app must import"
    assert _routes_from_source() == _routes_from_app(app_module)


def _request_schemas(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    body = doc["paths"]["/click2dial/calls"]["post"]["requestBody"]["content"]
    json_schema = _resolve(doc, body["application/json"]["schema"]["$ref"])
    form = _resolve(doc, body["application/x-www-form-urlencoded"]["schema"]["$ref"])
    return json_schema, form


RULE_PATTERNS = {
    "agent": rules.AGENT_PATTERN,
    "callee": rules.CALLEE_PATTERN,
    "outbound_id": rules.OUTBOUND_ID_PATTERN,
    "contact_ref": rules.CONTACT_REF_PATTERN,
    "call_ref": rules.CONTACT_REF_PATTERN,
}


def _string_pattern(schema: dict[str, Any]) -> str:
    branches = schema.get("anyOf", [schema])
    (pattern,) = [b["pattern"] for b in branches if b.get("type") == "string"]
    return str(pattern)


def test_request_patterns_are_the_rules_patterns(doc: dict[str, Any]) -> None:
    json_schema, form = _request_schemas(doc)
    legacy = {
        p["name"]: p["schema"]
        for p in doc["paths"]["/call.php"]["get"]["parameters"]
        if p["in"] == "query"
    }
    for field, regex in RULE_PATTERNS.items():
        for schema in (json_schema["properties"][field], form["properties"][field], legacy[field]):
            pattern = _string_pattern(schema)
            assert pattern == anchored(regex)
            assert pattern.removeprefix("^(?:").removesuffix(")$") == regex


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agent", "1001"),
        ("agent", "10"),
        ("agent", "0821234567"),
        ("agent", "x0821234567"),
        ("agent", "08212345678"),
        ("callee", "27821234567"),
        ("callee", "1001"),
        ("callee", "0027821234567"),
        ("callee", "+27821234567"),
        ("callee", "00278212345678901"),
        ("callee", "٠٨٢١٢٣٤٥٦٧"),
        ("outbound_id", "random"),
        ("outbound_id", "randomly"),
        ("outbound_id", "xrandom"),
        ("outbound_id", "0110000001"),
        ("contact_ref", ""),
        ("contact_ref", "acct:1029.a~b_c-d"),
        ("contact_ref", "acct 1029"),
        ("contact_ref", "ticket/1"),
    ],
)
def test_anchored_patterns_accept_what_fullmatch_accepts(
    doc: dict[str, Any], field: str, value: str
) -> None:
    # JSON Schema patterns are searched, not full-matched.
    pattern = _string_pattern(_request_schemas(doc)[0]["properties"][field])
    assert (re.search(pattern, value) is not None) == (
        re.fullmatch(RULE_PATTERNS[field], value) is not None
    )


def test_call_schema_is_exactly_what_render_call_produces(doc: dict[str, Any]) -> None:
    call = doc["components"]["schemas"]["Call"]
    render = _render_call()
    for overrides in (LIVE_CALL, ENDED_CALL):
        rendered = render(_call_record(**overrides))
        assert set(call["properties"]) == set(rendered)
        assert set(call["required"]) == set(rendered)
        legs = call["properties"]["legs"]["properties"]
        for leg in ("agent", "callee"):
            assert set(legs[leg]["properties"]) == set(rendered["legs"][leg])
            assert set(legs[leg]["required"]) == set(rendered["legs"][leg])
        assert _errors(doc, call, rendered, "Call") == []


def test_call_list_and_errors_validate(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    rendered = _render_call()(_call_record(**ENDED_CALL))
    page = {"calls": [rendered], "next_cursor": None}
    assert _errors(doc, schemas["CallList"], page, "CallList") == []
    assert _errors(doc, schemas["CallList"], {"calls": [{}]}, "CallList")
    for example in schemas["Error"]["examples"]:
        assert _errors(doc, schemas["Error"], example, "Error") == []
        assert example["error"]["errors"], "the example shows a field error"


def test_vocabularies_match_the_store(doc: dict[str, Any]) -> None:
    model = pytest.importorskip("click2dial.store.model")
    assert set(CALL_STATUSES) == set(model.STATES)
    assert set(END_REASONS) == set(model.END_REASONS)
    schemas = doc["components"]["schemas"]
    call = schemas["Call"]["properties"]
    assert set(call["call_type"]["enum"]) == set(model.CALL_TYPES)
    assert set(call["source"]["enum"]) == set(model.SOURCES)
    cdr = schemas["CdrNotification"]["properties"]["payload"]["properties"]
    assert set(cdr["call_type"]["enum"]) == set(model.CALL_TYPES)
    assert cdr["end_reason"]["enum"] == list(END_REASONS)


def test_status_and_end_reason_enums(doc: dict[str, Any]) -> None:
    properties = doc["components"]["schemas"]["Call"]["properties"]
    assert properties["status"]["enum"] == list(CALL_STATUSES)
    assert properties["end_reason"]["enum"] == [*END_REASONS, None]
    for name in (*CALL_STATUSES, *END_REASONS):
        assert (
            f"`{name}`"
            in properties["status"]["description"] + properties["end_reason"]["description"]
        )


SPEC_CDR_FIELDS = [
    "extension",
    "number",
    "dial_number",
    "call_ref",
    "contact_ref",
    "dialed_at",
    "end_reason",
    "end_code",
    "call_time",
    "hold_time",
    "call_dir",
    "recording_url",
    "ref",
    "clid",
    "call_type",
    "ring_time_extension",
    "ring_time_number",
]


def test_cdr_notification_documents_spec_and_builder(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["CdrNotification"]
    payload_schema = schema["properties"]["payload"]
    assert schema["properties"]["type"]["const"] == "cdr"
    assert set(payload_schema["required"]) == set(SPEC_CDR_FIELDS)
    call = _call_record(**ENDED_CALL)
    for outcome in (
        Outcome.hangup("callee"),
        Outcome.from_sip(486, "Busy Here", "callee"),
        Outcome.failure("node restarted"),
    ):
        # Built the way it goes out: the outbox row, then the delivered document.
        row = Notification(
            integrator="acme",
            kind="cdr",
            call_ref=call.call_ref,
            target="redis",
            payload={"type": "cdr", "payload": cdr_payload(call, outcome, 1_700_000_070.0)},
        )
        document = notify_document(row)
        assert set(document["payload"]) <= set(payload_schema["properties"])
        assert _errors(doc, schema, document, "CDR") == []


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"agent": True, "callee": 1.5, "outbound_id": None, "contact_ref": {}},
        {"agent": "12", "callee": "+27 82", "outbound_id": "x", "contact_ref": "a b"},
        {"agent": "1001", "callee": "1001", "outbound_id": "random"},
        {"agent": "0821234567", "callee": "1002", "outbound_id": "random"},
        {"agent": "1001", "callee": "1002", "outbound_id": "random"},
        {"agent": "1001", "callee": "27821234567", "outbound_id": ""},
    ],
)
def test_every_rule_the_validator_reports_is_documented(payload: dict[str, object]) -> None:
    result = rules.validate_call_request(payload)
    assert isinstance(result, list) and result
    assert {e.rule for e in result} <= set(FIELD_ERROR_RULES)


def test_deprecated_legacy_endpoint(doc: dict[str, Any]) -> None:
    legacy = doc["paths"]["/call.php"]["get"]
    assert legacy["deprecated"] is True
    names = {p["name"] for p in legacy["parameters"] if p["in"] == "query"}
    assert {"agent", "callee", "outbound_id", "call_ref"} <= names
    assert "Deprecation" in legacy["responses"]["201"]["headers"]


def test_documented_status_codes(doc: dict[str, Any]) -> None:
    post = doc["paths"]["/click2dial/calls"]["post"]["responses"]
    assert set(post) == {
        "201",
        "200",
        "400",
        "401",
        "403",
        "409",
        "413",
        "415",
        "422",
        "429",
        "503",
    }
    assert "Retry-After" in post["429"]["headers"]
    assert "Idempotent-Replayed" in post["200"]["headers"]
    assert "Location" in post["201"]["headers"]
    unauthorized = doc["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    for path in ("/healthz", "/readyz", "/openapi.json", "/phone", "/phone/config.json"):
        assert doc["paths"][path]["get"]["security"] == []
    # Metrics name every integrator: they are served on the operator listener only.
    assert "/metrics" not in doc["paths"]


# --- the integrator's guide ----------------------------------------------------

API_GUIDE = APP_PY.parents[3] / "docs" / "api.md"


def _guide_examples() -> list[Any]:
    blocks = re.findall(r"```json\n(.*?)```", API_GUIDE.read_text(), flags=re.DOTALL)
    return [json.loads(block) for block in blocks]


def _schema_for(example: dict[str, Any]) -> str:
    if "error" in example:
        return "Error"
    if "calls" in example:
        return "CallList"
    if example.get("type") == "cdr":
        return "CdrNotification"
    if example.get("type") == "call":
        return "AgentNotification"
    return "Call"


def test_guide_examples_match_the_schemas(doc: dict[str, Any]) -> None:
    examples = _guide_examples()
    shown = {_schema_for(e) for e in examples}
    assert shown == {"Error", "CallList", "CdrNotification", "AgentNotification", "Call"}
    schemas = doc["components"]["schemas"]
    for example in examples:
        name = _schema_for(example)
        assert _errors(doc, schemas[name], example, name) == []
        if name == "Call":
            assert set(example) == set(schemas["Call"]["properties"])


def test_guide_names_every_rule_status_and_end_reason() -> None:
    text = API_GUIDE.read_text()
    for name in (*FIELD_ERROR_RULES, *CALL_STATUSES, *END_REASONS):
        assert f"| `{name}` |" in text, name
    for regex in (
        rules.AGENT_PATTERN,
        rules.CALLEE_PATTERN,
        rules.OUTBOUND_ID_PATTERN,
        rules.CONTACT_REF_PATTERN,
    ):
        in_table = regex.replace("|", "\\|")  # Markdown tables need | escaped
        assert f"`{in_table}`" in text, regex
