"""The OpenAPI document is exactly as strict as the server where JSON Schema
can say it: the error rules it names, integer numbers, blank fields, the
legacy endpoint's required parameters, the listing's query parameters.
(tests/api/test_schemathesis.py then runs generated requests against the
running server.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from click2dial.api import app as api_app
from click2dial.api.openapi import FIELD_ERROR_RULES, openapi_document
from click2dial.calls import rules
from click2dial.store.base import encode_cursor
from click2dial.store.model import CallRecord
from tests.api.test_openapi import _errors, _request_schemas

SRC = Path(__file__).resolve().parents[2] / "src" / "click2dial"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document()


def _rules_in_source() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "FieldError"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                found.add(node.args[1].value)
    return found


def test_every_rule_name_in_the_source_is_documented() -> None:
    used = _rules_in_source()
    assert {"invalid", "enum", "pattern", "busy"} <= used  # the scan finds them
    assert used - set(FIELD_ERROR_RULES) == set()


INTEGERS = [0, 1, 99, 100, 1001, 9999, 10000, 821234567, 26999999999, 27000000000,
            27821234567, 27999999999, 28000000000, 2782123456712]  # fmt: skip


@pytest.mark.parametrize("field", ["agent", "callee", "outbound_id"])
@pytest.mark.parametrize("number", INTEGERS)
def test_integer_numbers_documented_as_the_rules_take_them(
    doc: dict[str, Any], field: str, number: int
) -> None:
    schema = _request_schemas(doc)[0]["properties"][field]
    documented = _errors(doc, schema, number, field) == []
    body: dict[str, object] = {"agent": "1001", "callee": "27821234567", "outbound_id": "random"}
    body[field] = number
    result = rules.validate_call_request(body)
    accepted = not isinstance(result, list) or all(e.field != field for e in result)
    assert documented == accepted


def test_blank_outbound_id_is_documented_as_not_given(doc: dict[str, Any]) -> None:
    json_schema, form = _request_schemas(doc)
    legacy = {
        p["name"]: p for p in doc["paths"]["/call.php"]["get"]["parameters"] if p["in"] == "query"
    }
    for schema in (
        json_schema["properties"]["outbound_id"],
        form["properties"]["outbound_id"],
        legacy["outbound_id"]["schema"],
    ):
        assert _errors(doc, schema, "", "outbound_id") == []
    accepted = rules.validate_call_request(
        {"agent": "1001", "callee": "27821234567", "outbound_id": ""},
        default_outbound_id="27110000001",
    )
    assert isinstance(accepted, rules.CallRequest)
    # agent and callee stay required: blank is missing.
    for field in ("agent", "callee"):
        assert _errors(doc, form["properties"][field], "", field)
        assert legacy[field]["required"] is True


def test_listing_parameters_are_the_servers(doc: dict[str, Any]) -> None:
    listing = doc["paths"]["/click2dial/calls"]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    since = params["since"]["pattern"]
    assert since == f"^(?:{api_app._UNIX_SECONDS.pattern})$"
    for text in ("1733486400", "1733486400.25", "-1", "1e9", ""):
        assert (re.search(since, text) is not None) == (
            api_app._UNIX_SECONDS.fullmatch(text) is not None
        )
    cursor = params["cursor"]["pattern"]
    # encode_cursor reads these two fields only.
    record = cast(CallRecord, SimpleNamespace(call_ref="9b2f0c8e-4d7a", created_at=1733486400.5))
    assert re.search(cursor, encode_cursor(record))
    assert re.search(cursor, "") is None  # `cursor=` is refused (422 invalid)
