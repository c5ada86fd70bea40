"""SPEC §2's call-request rules, at every boundary, and a property test that
the validator never raises and never lets a bad value through."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from click2dial.calls.rules import (
    AGENT_PATTERN,
    CALLEE_PATTERN,
    CONTACT_REF_MAX_LENGTH,
    CONTACT_REF_PATTERN,
    OUTBOUND_ID_PATTERN,
    CallRequest,
    FieldError,
    generate_contact_ref,
    is_agent,
    is_extension,
    is_external_number,
    is_outbound_number,
    number_text,
    validate_call_request,
)

GOOD = {"agent": "1001", "callee": "0821234567", "outbound_id": "27110000001"}


def ok(data: Mapping[str, object], **kwargs: object) -> CallRequest:
    result = validate_call_request(data, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, CallRequest), result
    return result


def errors(data: Mapping[str, object], **kwargs: object) -> list[FieldError]:
    result = validate_call_request(data, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, list), result
    return result


def only_error(data: Mapping[str, object], **kwargs: object) -> FieldError:
    found = errors(data, **kwargs)
    assert len(found) == 1, found
    return found[0]


def test_spec_regexes_are_verbatim() -> None:
    # Copied from SPEC §2; a drift here is a contract change.
    assert AGENT_PATTERN == r"([0-9]{3,4}|0[0-9]{9}|27[0-9]{9}|00[0-9]{11,14})"
    assert CALLEE_PATTERN == r"(0[0-9]{9}|27[0-9]{9}|00[0-9]{11,14})"
    assert OUTBOUND_ID_PATTERN == r"(random|0[0-9]{9}|27[0-9]{9})"
    assert CONTACT_REF_PATTERN == r"[A-Za-z0-9._~:-]*"


def test_minimal_valid_request() -> None:
    request = ok(GOOD, new_contact_ref=lambda: "gen-1")
    assert request == CallRequest(
        agent="1001",
        callee="0821234567",
        outbound_id="27110000001",
        contact_ref="gen-1",
        contact_ref_generated=True,
        call_type="outbound",
        warnings=(),
    )


# --- agent -------------------------------------------------------------------

AGENT_ACCEPTED = [
    "100",  # 3-digit extension
    "0000",
    "9999",  # 4-digit extension
    "0821234567",  # 10 digits starting 0
    "27821234567",  # 11 digits starting 27
    "0044123456789",  # 13 digits starting 00
    "0012345678901234",  # 16 digits starting 00
]
AGENT_REJECTED = [
    "10",  # 2 digits
    "10011",  # 5 digits, not starting 0
    "01234",  # 5 digits starting 0
    "082123456",  # 9 digits starting 0
    "08212345678",  # 11 digits starting 0 (not 00)
    "2782123456",  # 10 digits starting 27 (not 0)
    "278212345678",  # 12 digits starting 27
    "17821234567",  # 11 digits not starting 27
    "004412345678",  # 12 digits starting 00
    "00123456789012345",  # 17 digits starting 00
    "+27821234567",
    " 1001",
    "1001 ",
    "1001\n",
    "27 82 123 4567",
    "082-123-4567",
    "\uff11\uff10\uff10\uff11",  # full-width digits
    "\u0661\u0660\u0660\u0661",  # Arabic-Indic digits
    "10\u0663",  # one Arabic-Indic digit among ASCII ones
    "abcd",
    "-100",
]


@pytest.mark.parametrize("agent", AGENT_ACCEPTED)
def test_agent_accepted(agent: str) -> None:
    callee = "0829999999" if agent != "0829999999" else "0821234567"
    assert ok({**GOOD, "agent": agent, "callee": callee}).agent == agent


@pytest.mark.parametrize("agent", AGENT_REJECTED)
def test_agent_rejected(agent: str) -> None:
    error = only_error({**GOOD, "agent": agent})
    assert (error.field, error.rule, error.value) == ("agent", "pattern", agent)
    assert "3-4 digit extension" in error.message
    assert "13-16 digits starting 00" in error.message


def test_agent_rejection_hints() -> None:
    assert "no + or spaces" in only_error({**GOOD, "agent": "+27821234567"}).message
    assert "ASCII digits" in only_error({**GOOD, "agent": "\u0661\u0660\u0660\u0661"}).message


# --- callee ------------------------------------------------------------------

CALLEE_ACCEPTED = [
    "0821234567",
    "0000000000",
    "27821234567",
    "0044123456789",
    "00441234567890",
    "004412345678901",
    "0044123456789012",
]
CALLEE_REJECTED = [
    "082123456",  # 9 digits
    "08212345678",  # 11 digits starting 0
    "2782123456",  # 10 digits starting 27
    "278212345678",  # 12 digits starting 27
    "8821234567",  # 10 digits not starting 0
    "004412345678",  # 12 digits starting 00
    "00441234567890123",  # 17 digits starting 00
    "+27821234567",
    "0821234567 ",
    " 0821234567",
    "082 123 4567",
    "\uff10\uff18\uff12\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
    "\u0660\u0668\u0662\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
    "10",
    "10011",
    "random",
]


@pytest.mark.parametrize("callee", CALLEE_ACCEPTED)
def test_callee_accepted(callee: str) -> None:
    request = ok({**GOOD, "callee": callee})
    assert request.callee == callee
    assert request.call_type == "outbound"


@pytest.mark.parametrize("callee", CALLEE_REJECTED)
def test_callee_rejected(callee: str) -> None:
    error = only_error({**GOOD, "callee": callee}, allow_internal=True)
    assert (error.field, error.rule, error.value) == ("callee", "pattern", callee)
    assert (
        "10 digits starting 0, 11 digits starting 27, or 13-16 digits starting 00" in error.message
    )


# --- call types --------------------------------------------------------------


def test_external_agent_makes_an_external_call() -> None:
    request = ok({**GOOD, "agent": "0831112222", "callee": "0044123456789"})
    assert request.call_type == "external"


@pytest.mark.parametrize("callee", ["100", "1002", "010", "0000"])
def test_extension_callee_is_an_internal_call_when_allowed(callee: str) -> None:
    request = ok({**GOOD, "callee": callee}, allow_internal=True)
    assert (request.call_type, request.callee) == ("internal", callee)


def test_extension_callee_not_allowed_without_internal() -> None:
    error = only_error({**GOOD, "callee": "1002"})
    assert (error.field, error.rule, error.value) == ("callee", "not_allowed", "1002")
    assert "internal" in error.message
    assert "10 digits starting 0" in error.message


@pytest.mark.parametrize("allow_internal", [False, True])
def test_external_agent_cannot_call_an_extension(allow_internal: bool) -> None:
    error = only_error(
        {**GOOD, "agent": "0831112222", "callee": "1002"}, allow_internal=allow_internal
    )
    assert (error.field, error.rule) == ("callee", "call_type")


@pytest.mark.parametrize("callee", ["10", "10023", "00100"])
def test_extension_callee_boundaries(callee: str) -> None:
    assert only_error({**GOOD, "callee": callee}, allow_internal=True).rule == "pattern"


def test_callee_must_differ_from_agent() -> None:
    error = only_error({**GOOD, "agent": "1001", "callee": "1001"}, allow_internal=True)
    assert (error.field, error.rule) == ("callee", "same_as_agent")
    error = only_error({**GOOD, "agent": "0821234567", "callee": "0821234567"})
    assert (error.field, error.rule) == ("callee", "same_as_agent")


def test_bad_agent_does_not_make_an_extension_callee_a_call_type_error() -> None:
    found = errors({**GOOD, "agent": "x", "callee": "1002"}, allow_internal=True)
    assert [(e.field, e.rule) for e in found] == [("agent", "pattern")]


# --- outbound_id -------------------------------------------------------------


@pytest.mark.parametrize("outbound_id", ["random", "27110000001", "27000000000"])
def test_outbound_id_accepted_without_warning(outbound_id: str) -> None:
    request = ok({**GOOD, "outbound_id": outbound_id})
    assert request.outbound_id == outbound_id
    assert request.warnings == ()


def test_national_outbound_id_accepted_with_warning() -> None:
    request = ok({**GOOD, "outbound_id": "0110000001"})
    assert request.outbound_id == "0110000001"
    assert len(request.warnings) == 1
    assert "carriers often reject" in request.warnings[0]
    assert "0110000001" in request.warnings[0]


@pytest.mark.parametrize(
    "outbound_id",
    [
        "Random",
        "RANDOM",
        "random ",
        "011000000",  # 9 digits
        "01100000011",  # 11 digits starting 0
        "2711000000",  # 10 digits starting 27
        "271100000011",  # 12 digits starting 27
        "0044123456789",  # 00 numbers are callees, not caller IDs
        "1001",
        "+27110000001",
        "\uff127110000001",
    ],
)
def test_outbound_id_rejected(outbound_id: str) -> None:
    error = only_error({**GOOD, "outbound_id": outbound_id})
    assert (error.field, error.rule, error.value) == ("outbound_id", "pattern", outbound_id)
    assert '"random"' in error.message
    assert "11 digits starting 27" in error.message


def test_missing_outbound_id_uses_the_default() -> None:
    data = {"agent": "1001", "callee": "0821234567"}
    request = ok(data, default_outbound_id="27110000009")
    assert (request.outbound_id, request.outbound_id_defaulted) == ("27110000009", True)
    assert request.warnings == ()
    assert ok(data, default_outbound_id="random").outbound_id == "random"


def test_empty_outbound_id_counts_as_missing() -> None:
    data = {**GOOD, "outbound_id": ""}
    assert ok(data, default_outbound_id="27110000009").outbound_id == "27110000009"
    error = only_error(data)
    assert (error.field, error.rule, error.value) == ("outbound_id", "required", "")


def test_national_default_outbound_id_warns_too() -> None:
    request = ok({"agent": "1001", "callee": "0821234567"}, default_outbound_id="0110000001")
    assert "carriers often reject" in request.warnings[0]


def test_missing_outbound_id_without_default_is_required() -> None:
    error = only_error({"agent": "1001", "callee": "0821234567"})
    assert (error.field, error.rule, error.value) == ("outbound_id", "required", None)
    assert "no default" in error.message


def test_given_outbound_id_beats_the_default() -> None:
    request = ok(GOOD, default_outbound_id="27110000009")
    assert (request.outbound_id, request.outbound_id_defaulted) == ("27110000001", False)


def test_null_outbound_id_is_a_type_error_even_with_a_default() -> None:
    error = only_error({**GOOD, "outbound_id": None}, default_outbound_id="27110000009")
    assert (error.field, error.rule) == ("outbound_id", "type")
    assert "leave it out" in error.message


def test_a_bad_default_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="default_outbound_id"):
        validate_call_request(GOOD, default_outbound_id="+27110000001")


# --- JSON integers and types -------------------------------------------------


def test_json_integers_become_decimal_strings() -> None:
    request = ok({"agent": 1001, "callee": 27821234567, "outbound_id": 27110000001})
    assert (request.agent, request.callee, request.outbound_id) == (
        "1001",
        "27821234567",
        "27110000001",
    )


def test_integer_loses_its_leading_zero() -> None:
    error = only_error({**GOOD, "callee": 821234567})
    assert (error.rule, error.value) == ("pattern", 821234567)
    assert "leading 0" in error.message
    # No such hint where a zero would not help.
    assert "leading 0" not in only_error({**GOOD, "agent": 123456}).message


def test_negative_and_huge_integers_are_pattern_errors() -> None:
    assert only_error({**GOOD, "agent": -100}).rule == "pattern"
    huge = 10**5000  # beyond CPython's int-to-str limit
    error = only_error({**GOOD, "callee": huge})
    assert (error.rule, error.value) == ("pattern", huge)
    assert "thousands of digits" in error.message


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "a boolean"),
        (False, "a boolean"),
        (None, "null"),
        (1001.0, "a decimal number"),
        (821234567.0, "a decimal number"),
        (["1001"], "a list"),
        ({"n": "1001"}, "an object"),
        (b"1001", "a bytes"),
    ],
)
@pytest.mark.parametrize("field", ["agent", "callee", "outbound_id"])
def test_type_errors(field: str, value: object, kind: str) -> None:
    error = only_error({**GOOD, field: value})
    assert (error.field, error.rule, error.value) == (field, "type", value)
    assert kind in error.message


@pytest.mark.parametrize("field", ["agent", "callee"])
@pytest.mark.parametrize("data_change", [{}, {"_": ""}])
def test_required_fields(field: str, data_change: dict[str, str]) -> None:
    data: dict[str, object] = {k: v for k, v in GOOD.items() if k != field}
    if data_change:
        data[field] = ""
    error = only_error(data)
    assert (error.field, error.rule) == (field, "required")
    assert error.value == ("" if data_change else None)


def test_number_text() -> None:
    assert number_text("0821") == "0821"
    assert number_text(1001) == "1001"
    assert number_text(True) is None
    assert number_text(1.0) is None
    assert number_text(None) is None


def test_number_predicates() -> None:
    assert is_extension("1001") and not is_extension("10011")
    assert is_external_number("0821234567") and not is_external_number("1001")
    assert is_agent("1001") and is_agent("0821234567") and not is_agent("+1")
    assert is_outbound_number("27110000001") and not is_outbound_number("random")


# --- several bad fields at once ----------------------------------------------


def test_one_error_per_bad_field_all_at_once() -> None:
    found = errors(
        {
            "agent": "+1001",
            "callee": 3.5,
            "outbound_id": "0044123456789",
            "contact_ref": "a b",
            "unknown": object(),
        }
    )
    assert [(e.field, e.rule) for e in found] == [
        ("agent", "pattern"),
        ("callee", "type"),
        ("outbound_id", "pattern"),
        ("contact_ref", "pattern"),
    ]


def test_empty_body_reports_every_required_field() -> None:
    assert [(e.field, e.rule) for e in errors({})] == [
        ("agent", "required"),
        ("callee", "required"),
        ("outbound_id", "required"),
    ]


def test_unknown_fields_are_ignored() -> None:
    assert ok({**GOOD, "foo": [1, 2], "Agent": "x", "status": None}).agent == "1001"


# --- contact_ref and the legacy call_ref -------------------------------------


@pytest.mark.parametrize("ref", ["A", "acct-42", "x.y_z~1:2-3", "0" * 230, "CRM:ticket:99"])
def test_contact_ref_accepted_as_given(ref: str) -> None:
    request = ok({**GOOD, "contact_ref": ref})
    assert (request.contact_ref, request.contact_ref_generated) == (ref, False)
    assert request.warnings == ()


@pytest.mark.parametrize(
    "ref", ["a b", " a", "a/b", "a+b", "a@b", "a#b", "é", "a\tb", "a\n", "ü" * 3, "\uff11"]
)
def test_contact_ref_rejected(ref: str) -> None:
    error = only_error({**GOOD, "contact_ref": ref})
    assert (error.field, error.rule, error.value) == ("contact_ref", "pattern", ref)
    assert "letters, digits and . - _ ~ :" in error.message


def test_contact_ref_integer_is_its_decimal_string() -> None:
    assert ok({**GOOD, "contact_ref": 4711}).contact_ref == "4711"


@pytest.mark.parametrize("value", [True, 1.5, ["a"], {"a": 1}])
def test_contact_ref_type_errors(value: object) -> None:
    error = only_error({**GOOD, "contact_ref": value})
    assert (error.field, error.rule, error.value) == ("contact_ref", "type", value)


def test_contact_ref_exactly_230_is_kept() -> None:
    ref = "a" * 230
    request = ok({**GOOD, "contact_ref": ref})
    assert (request.contact_ref, request.contact_ref_truncated, request.warnings) == (
        ref,
        False,
        (),
    )


def test_contact_ref_231_is_truncated_with_a_warning() -> None:
    ref = "a" * 229 + "bc"
    request = ok({**GOOD, "contact_ref": ref})
    assert request.contact_ref == "a" * 229 + "b"
    assert len(request.contact_ref) == CONTACT_REF_MAX_LENGTH
    assert request.contact_ref_truncated
    assert request.warnings == (
        "contact_ref was 231 characters long and was truncated to its first 230",
    )


def test_contact_ref_is_checked_whole_before_truncation() -> None:
    ref = "a" * 300 + " "
    error = only_error({**GOOD, "contact_ref": ref})
    assert (error.rule, error.value) == ("pattern", ref)


@pytest.mark.parametrize("absent", [{}, {"contact_ref": ""}, {"contact_ref": None}])
def test_absent_or_empty_contact_ref_is_generated(absent: dict[str, object]) -> None:
    request = ok({**GOOD, **absent}, new_contact_ref=lambda: "made-up")
    assert (request.contact_ref, request.contact_ref_generated) == ("made-up", True)


def test_generated_contact_ref_follows_the_rule() -> None:
    refs = {generate_contact_ref() for _ in range(50)}
    assert len(refs) == 50
    for ref in refs:
        assert re.fullmatch(r"c2d-[0-9a-f]{20}", ref)
        assert re.fullmatch(CONTACT_REF_PATTERN, ref)
    request = ok(GOOD)
    assert request.contact_ref_generated
    assert re.fullmatch(r"c2d-[0-9a-f]{20}", request.contact_ref)


def test_a_generator_breaking_the_rule_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="generated contact_ref"):
        validate_call_request(GOOD, new_contact_ref=lambda: "not valid")


def test_legacy_call_ref_is_used_with_a_deprecation_warning() -> None:
    request = ok({**GOOD, "call_ref": "T-1"})
    assert (request.contact_ref, request.contact_ref_generated) == ("T-1", False)
    assert len(request.warnings) == 1
    assert "deprecated" in request.warnings[0]


def test_contact_ref_wins_over_call_ref() -> None:
    request = ok({**GOOD, "contact_ref": "new", "call_ref": "old"})
    assert request.contact_ref == "new"
    assert request.warnings == (
        "call_ref was ignored: contact_ref was sent too, and contact_ref wins "
        "(call_ref is the pre-3.0 name of contact_ref)",
    )


def test_same_value_in_both_is_quiet() -> None:
    assert ok({**GOOD, "contact_ref": "same", "call_ref": "same"}).warnings == ()


def test_ignored_call_ref_is_not_validated() -> None:
    assert ok({**GOOD, "contact_ref": "ok", "call_ref": "not ok!"}).contact_ref == "ok"


@pytest.mark.parametrize("empty", ["", None])
def test_empty_contact_ref_gives_way_to_call_ref(empty: object) -> None:
    request = ok({**GOOD, "contact_ref": empty, "call_ref": "legacy"})
    assert request.contact_ref == "legacy"


def test_bad_legacy_call_ref_is_reported_under_its_own_name() -> None:
    error = only_error({**GOOD, "call_ref": "a b"})
    assert (error.field, error.rule) == ("call_ref", "pattern")


def test_legacy_call_ref_truncation_warns_under_its_name() -> None:
    request = ok({**GOOD, "call_ref": "z" * 231})
    assert request.contact_ref == "z" * 230
    assert any(w.startswith("call_ref was 231 characters") for w in request.warnings)


def test_warnings_accumulate_in_field_order() -> None:
    request = ok({**GOOD, "outbound_id": "0110000001", "call_ref": "q" * 240})
    assert len(request.warnings) == 3
    assert "carriers" in request.warnings[0]
    assert "deprecated" in request.warnings[1]
    assert "truncated" in request.warnings[2]


# --- property ----------------------------------------------------------------

KNOWN = {"agent", "callee", "outbound_id", "contact_ref", "call_ref"}
SPEC = {
    "agent": re.compile(AGENT_PATTERN),
    "callee": re.compile(CALLEE_PATTERN),
    "outbound_id": re.compile(OUTBOUND_ID_PATTERN),
}

digitish = st.text(alphabet="0123456789", min_size=0, max_size=18)
shaped = st.one_of(
    st.sampled_from(["0", "27", "00", "+27", "random", " "]).flatmap(
        lambda prefix: digitish.map(lambda rest: prefix + rest)
    ),
    digitish,
)
scalar = st.one_of(
    shaped,
    st.text(max_size=240),
    st.text(alphabet="abcXYZ019._~:-", max_size=300),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
)
value = st.one_of(scalar, st.lists(scalar, max_size=2), st.dictionaries(st.text(), scalar))
payload = st.dictionaries(st.one_of(st.sampled_from(sorted(KNOWN)), st.text()), value, max_size=7)


@given(
    data=payload,
    default=st.one_of(st.none(), st.sampled_from(["random", "0110000001", "27110000001"])),
    allow_internal=st.booleans(),
)
def test_property_accepts_only_spec_values_and_never_raises(
    data: dict[str, object], default: str | None, allow_internal: bool
) -> None:
    result = validate_call_request(data, default_outbound_id=default, allow_internal=allow_internal)
    if isinstance(result, list):
        assert result
        assert all(isinstance(e, FieldError) for e in result)
        fields = [e.field for e in result]
        assert set(fields) <= KNOWN
        assert len(fields) == len(set(fields))  # one error per field
        assert all(e.rule and e.message for e in result)
        return
    assert SPEC["agent"].fullmatch(result.agent)
    assert SPEC["outbound_id"].fullmatch(result.outbound_id)
    if result.call_type == "internal":
        assert allow_internal
        assert re.fullmatch("[0-9]{3,4}", result.agent)
        assert re.fullmatch("[0-9]{3,4}", result.callee)
    else:
        assert SPEC["callee"].fullmatch(result.callee)
        assert result.call_type == (
            "outbound" if re.fullmatch("[0-9]{3,4}", result.agent) else "external"
        )
    assert result.callee != result.agent
    assert re.fullmatch(CONTACT_REF_PATTERN, result.contact_ref)
    assert 0 < len(result.contact_ref) <= CONTACT_REF_MAX_LENGTH
    if not result.contact_ref_generated:
        sent = data.get("contact_ref")
        if sent is None or sent == "":
            sent = data.get("call_ref")
        assert result.contact_ref == str(number_text(sent))[:CONTACT_REF_MAX_LENGTH]


@given(
    agent=st.from_regex(AGENT_PATTERN, fullmatch=True),
    callee=st.from_regex(CALLEE_PATTERN, fullmatch=True),
    outbound_id=st.from_regex(OUTBOUND_ID_PATTERN, fullmatch=True),
    contact_ref=st.from_regex(CONTACT_REF_PATTERN, fullmatch=True),
)
def test_property_every_spec_value_is_accepted_unchanged(
    agent: str, callee: str, outbound_id: str, contact_ref: str
) -> None:
    if agent == callee:
        return
    result = validate_call_request(
        {"agent": agent, "callee": callee, "outbound_id": outbound_id, "contact_ref": contact_ref}
    )
    assert isinstance(result, CallRequest), result
    assert (result.agent, result.callee, result.outbound_id) == (agent, callee, outbound_id)
    if contact_ref:
        assert result.contact_ref == contact_ref[:230]
