"""The call-request rules of SPEC §2: the one place that decides what
``agent``, ``callee``, ``outbound_id`` and ``contact_ref`` may be.

Everything that accepts a call (the REST API, the legacy ``/call.php``, a
WebRTC phone's INVITE) hands its fields to :func:`validate_call_request` and
gets back either a :class:`CallRequest` or one :class:`FieldError` per bad
field.  The configuration reuses the number checks below for caller-ID pools
and agent lists, so a number means the same thing everywhere.

Theory of operation:

* Validation is exact.  Strings are matched as given with ``re.fullmatch``:
  no stripping, no removal of ``+`` or spaces, no digit folding.  ``[0-9]``
  (not ``\\d``) keeps Arabic-Indic or full-width digits out.
* A JSON integer is a number written without quotes; it becomes its decimal
  string first (so ``1001`` is the extension ``"1001"``).  A boolean is not
  a number even though Python says ``True`` is an ``int``.
* Every field is checked independently and reports at most one error, so an
  integrator sees all of its mistakes in one response.
* Internal calls (extension → extension): SPEC's ``callee`` rule has no
  extension form, so a 3-4 digit callee is accepted only when the caller
  passes ``allow_internal=True`` (the integrator's ``call_types`` lists
  ``internal``) and the agent is an extension as well.

Rule names in :attr:`FieldError.rule` are stable machine names:

``required``     the field is missing (or an empty string)
``type``         not a string of digits / not a string or integer
``pattern``      a string that is none of the accepted forms
``not_allowed``  well-formed, but this integrator's configuration forbids it
                 (an extension callee without ``internal``): HTTP 403
``call_type``    no call type joins this agent to this callee
``same_as_agent`` the callee is the agent itself
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from .. import ids
from ..vocabulary import CallType

__all__ = [
    "AGENT_FORMS",
    "AGENT_PATTERN",
    "CALLEE_FORMS",
    "CALLEE_PATTERN",
    "CONTACT_REF_FORMS",
    "CONTACT_REF_MAX_LENGTH",
    "CONTACT_REF_PATTERN",
    "EXTENSION_PATTERN",
    "OUTBOUND_ID_FORMS",
    "OUTBOUND_ID_PATTERN",
    "OUTBOUND_NUMBER_FORMS",
    "OUTBOUND_NUMBER_PATTERN",
    "CallRequest",
    "CallType",
    "FieldError",
    "generate_contact_ref",
    "is_agent",
    "is_extension",
    "is_external_number",
    "is_outbound_number",
    "number_text",
    "validate_call_request",
]

# The regular expressions exactly as SPEC §2 writes them (used with fullmatch).
AGENT_PATTERN: Final = r"([0-9]{3,4}|0[0-9]{9}|27[0-9]{9}|00[0-9]{11,14})"
CALLEE_PATTERN: Final = r"(0[0-9]{9}|27[0-9]{9}|00[0-9]{11,14})"
OUTBOUND_ID_PATTERN: Final = r"(random|0[0-9]{9}|27[0-9]{9})"
CONTACT_REF_PATTERN: Final = r"[A-Za-z0-9._~:-]*"
# Derived from the above: the extension half of ``agent`` and the numeric half
# of ``outbound_id`` (what a caller-ID pool may hold).
EXTENSION_PATTERN: Final = r"[0-9]{3,4}"
OUTBOUND_NUMBER_PATTERN: Final = r"(0[0-9]{9}|27[0-9]{9})"

CONTACT_REF_MAX_LENGTH: Final = 230

_AGENT = re.compile(AGENT_PATTERN)
_CALLEE = re.compile(CALLEE_PATTERN)
_OUTBOUND_ID = re.compile(OUTBOUND_ID_PATTERN)
_CONTACT_REF = re.compile(CONTACT_REF_PATTERN)
_EXTENSION = re.compile(EXTENSION_PATTERN)
_OUTBOUND_NUMBER = re.compile(OUTBOUND_NUMBER_PATTERN)
_NATIONAL = re.compile(r"0[0-9]{9}")

# Human descriptions of the accepted forms, used in every message about them.
CALLEE_FORMS: Final = "10 digits starting 0, 11 digits starting 27, or 13-16 digits starting 00"
AGENT_FORMS: Final = (
    "a 3-4 digit extension, 10 digits starting 0, 11 digits starting 27, "
    "or 13-16 digits starting 00"
)
OUTBOUND_NUMBER_FORMS: Final = "10 digits starting 0 or 11 digits starting 27"
OUTBOUND_ID_FORMS: Final = '"random", 10 digits starting 0, or 11 digits starting 27'
CONTACT_REF_FORMS: Final = "letters, digits and . - _ ~ :"

_MISSING: Final = object()


@dataclass(frozen=True)
class FieldError:
    """One bad field: which, which rule it broke, what was received, and a
    sentence for a human that names the accepted forms."""

    field: str
    rule: str
    value: object
    message: str


@dataclass(frozen=True)
class CallRequest:
    """A call request that passed every rule, with the values to use.

    ``outbound_id`` is ``"random"`` or a number, as given (or the integrator's
    default when the request had none: ``outbound_id_defaulted``).
    ``contact_ref`` is what is stored: possibly truncated to 230 characters
    (``contact_ref_truncated``) or generated (``contact_ref_generated``).
    """

    agent: str
    callee: str
    outbound_id: str
    contact_ref: str
    contact_ref_generated: bool
    call_type: CallType
    warnings: tuple[str, ...] = ()
    outbound_id_defaulted: bool = False
    contact_ref_truncated: bool = False


def generate_contact_ref() -> str:
    """A fresh contact reference for a request that brought none:
    ``c2d-`` and 20 hex digits (80 random bits), inside the contact_ref rule."""
    return "c2d-" + ids.token_hex(10)


def number_text(value: object) -> str | None:
    """``value`` as the text of a number: a string as it is, an integer as its
    decimal string; ``None`` for anything else (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        # int.__repr__ rather than str(): an IntEnum would print its name.
        # Beyond ~4300 digits CPython refuses the conversion; no such integer
        # can match a rule, so any non-matching text will do.
        try:
            return int.__repr__(value)
        except ValueError:
            return "-"
    return None


def is_extension(text: str) -> bool:
    """A 3-4 digit extension."""
    return _EXTENSION.fullmatch(text) is not None


def is_external_number(text: str) -> bool:
    """A number the trunk can dial (SPEC's ``callee`` forms)."""
    return _CALLEE.fullmatch(text) is not None


def is_agent(text: str) -> bool:
    """Any of SPEC's ``agent`` forms."""
    return _AGENT.fullmatch(text) is not None


def is_outbound_number(text: str) -> bool:
    """A number usable as caller ID (``outbound_id`` without ``random``)."""
    return _OUTBOUND_NUMBER.fullmatch(text) is not None


def _is_empty(value: object) -> bool:
    return isinstance(value, str) and not value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer too long for CPython to print
        return "an integer thousands of digits long"
    return text if len(text) <= 40 else text[:37] + "..."


def _hint(raw: object, text: str, rule: re.Pattern[str]) -> str:
    """A reason the integrator is likely to need, after the accepted forms."""
    if isinstance(raw, int):
        if rule.fullmatch("0" + text) or rule.fullmatch("00" + text):
            return " (a JSON integer cannot keep a leading 0: send numbers as strings)"
        return ""
    if text[:1] == "+" or any(c.isspace() for c in text):
        return " (digits only: write international numbers as 27... or 00..., no + or spaces)"
    if any(c.isdigit() and not "0" <= c <= "9" for c in text):
        return " (ASCII digits 0-9 only)"
    return ""


def _number_field(
    data: Mapping[str, object], name: str, forms: str, errors: list[FieldError]
) -> tuple[object, str | None]:
    """Fetch ``name`` as the text of a number, reporting required/type errors.

    Returns the raw value and its text (``None`` once an error is recorded).
    """
    raw = data.get(name, _MISSING)
    if raw is _MISSING or _is_empty(raw):
        errors.append(
            FieldError(name, "required", None if raw is _MISSING else raw, f"{name} is required")
        )
        return raw, None
    text = number_text(raw)
    if text is None:
        errors.append(
            FieldError(
                name,
                "type",
                raw,
                f"{name} must be a string of digits or a JSON integer ({forms}), "
                f"got {_json_kind(raw)}",
            )
        )
    return raw, text


def _pattern_error(
    name: str, raw: object, text: str, forms: str, rule: re.Pattern[str]
) -> FieldError:
    hint = _hint(raw, text, rule)
    return FieldError(name, "pattern", raw, f"{name} must be {forms}{hint}; got {_shown(raw)}")


def _check_agent(data: Mapping[str, object], errors: list[FieldError]) -> str | None:
    raw, text = _number_field(data, "agent", AGENT_FORMS, errors)
    if text is None:
        return None
    if _AGENT.fullmatch(text) is None:
        errors.append(_pattern_error("agent", raw, text, AGENT_FORMS, _AGENT))
        return None
    return text


def _check_callee(
    data: Mapping[str, object], agent: str | None, allow_internal: bool, errors: list[FieldError]
) -> str | None:
    forms = CALLEE_FORMS
    if allow_internal:
        forms = f"{CALLEE_FORMS}, or a 3-4 digit extension when the agent is an extension"
    raw, text = _number_field(data, "callee", forms, errors)
    if text is None:
        return None
    if _CALLEE.fullmatch(text) is None and _EXTENSION.fullmatch(text) is None:
        errors.append(_pattern_error("callee", raw, text, forms, _CALLEE))
        return None
    if text == agent:
        errors.append(
            FieldError("callee", "same_as_agent", raw, f"callee must differ from agent {agent}")
        )
        return None
    if _EXTENSION.fullmatch(text) is not None:
        if agent is not None and _EXTENSION.fullmatch(agent) is None:
            errors.append(
                FieldError(
                    "callee",
                    "call_type",
                    raw,
                    f"callee {text} is an extension, but agent {agent} is an external number: "
                    "an extension can be called only from an extension (an internal call); "
                    f"an external agent's callee must be {CALLEE_FORMS}",
                )
            )
            return None
        if not allow_internal:
            errors.append(
                FieldError(
                    "callee",
                    "not_allowed",
                    raw,
                    f"callee {text} is an extension, and internal (extension to extension) "
                    f"calls are not enabled for this integrator; callee must be {CALLEE_FORMS}",
                )
            )
            return None
    return text


def _national_warning(number: str) -> str:
    return (
        f"outbound_id {number} is a national number (10 digits starting 0): accepted, but "
        "carriers often reject it as a caller ID; 11 digits starting 27 is recommended"
    )


def _check_outbound_id(
    data: Mapping[str, object],
    default: str | None,
    errors: list[FieldError],
    warnings: list[str],
) -> tuple[str | None, bool]:
    raw = data.get("outbound_id", _MISSING)
    # An empty value is what an HTML form or a query string sends for a field
    # left blank: it means "not given", the same as leaving it out.
    if raw is _MISSING or _is_empty(raw):
        if default is None:
            errors.append(
                FieldError(
                    "outbound_id",
                    "required",
                    None if raw is _MISSING else raw,
                    f"outbound_id is required (this integrator has no default): "
                    f"send {OUTBOUND_ID_FORMS}",
                )
            )
            return None, False
        if _NATIONAL.fullmatch(default):
            warnings.append(_national_warning(default))
        return default, True
    text = number_text(raw)
    if text is None:
        errors.append(
            FieldError(
                "outbound_id",
                "type",
                raw,
                f"outbound_id must be a string or a JSON integer ({OUTBOUND_ID_FORMS}), "
                f"got {_json_kind(raw)}"
                + (" (leave it out to use the integrator's default)" if raw is None else ""),
            )
        )
        return None, False
    if _OUTBOUND_ID.fullmatch(text) is None:
        errors.append(_pattern_error("outbound_id", raw, text, OUTBOUND_ID_FORMS, _OUTBOUND_ID))
        return None, False
    if _NATIONAL.fullmatch(text):
        warnings.append(_national_warning(text))
    return text, False


def _given(value: object) -> bool:
    # null counts as "not sent" here: contact_ref is optional, and JSON
    # serialisers commonly write unset optional fields as null.
    return value is not _MISSING and value is not None and not _is_empty(value)


def _check_contact_ref(
    data: Mapping[str, object],
    new_contact_ref: Callable[[], str],
    errors: list[FieldError],
    warnings: list[str],
) -> tuple[str | None, bool, bool]:
    """Returns (contact_ref, generated, truncated)."""
    current = data.get("contact_ref", _MISSING)
    legacy = data.get("call_ref", _MISSING)
    if _given(current):
        name, raw = "contact_ref", current
        if _given(legacy) and legacy != current:
            warnings.append(
                "call_ref was ignored: contact_ref was sent too, and contact_ref wins "
                "(call_ref is the pre-3.0 name of contact_ref)"
            )
    elif _given(legacy):
        name, raw = "call_ref", legacy
        warnings.append(
            "call_ref is the pre-3.0 name of contact_ref and is deprecated: send contact_ref"
            " (in responses call_ref is Click2Dial's own id for the call)"
        )
    else:
        generated = new_contact_ref()
        if (
            not generated
            or len(generated) > CONTACT_REF_MAX_LENGTH
            or _CONTACT_REF.fullmatch(generated) is None
        ):
            raise ValueError(f"generated contact_ref {generated!r} breaks the contact_ref rule")
        return generated, True, False

    text = number_text(raw)  # a CRM's numeric record id is fine as a reference
    if text is None:
        errors.append(
            FieldError(
                name,
                "type",
                raw,
                f"{name} must be a string of {CONTACT_REF_FORMS}, got {_json_kind(raw)}",
            )
        )
        return None, False, False
    # The rule is checked on the whole value: a bad character past 230 must
    # not slip through by being cut off.
    if _CONTACT_REF.fullmatch(text) is None:
        bad = sorted({c for c in text if _CONTACT_REF.fullmatch(c) is None})
        shown_bad = " ".join(repr(c) for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        errors.append(
            FieldError(
                name,
                "pattern",
                raw,
                f"{name} may contain only {CONTACT_REF_FORMS}; it contains {shown_bad}",
            )
        )
        return None, False, False
    if len(text) > CONTACT_REF_MAX_LENGTH:
        warnings.append(
            f"{name} was {len(text)} characters long and was truncated to its first "
            f"{CONTACT_REF_MAX_LENGTH}"
        )
        return text[:CONTACT_REF_MAX_LENGTH], False, True
    return text, False, False


def _call_type(agent: str, callee: str) -> CallType:
    if _EXTENSION.fullmatch(callee):
        return CallType.INTERNAL
    return CallType.OUTBOUND if _EXTENSION.fullmatch(agent) else CallType.EXTERNAL


def validate_call_request(
    data: Mapping[str, object],
    *,
    default_outbound_id: str | None = None,
    allow_internal: bool = False,
    new_contact_ref: Callable[[], str] = generate_contact_ref,
) -> CallRequest | list[FieldError]:
    """Check a call request's fields against SPEC §2.

    ``data`` is the decoded JSON object or form (unknown keys are ignored).
    ``default_outbound_id`` is the integrator's default caller ID, used when
    the request has no ``outbound_id`` (or an empty one); ``allow_internal``
    lets a 3-4 digit callee through for an extension agent.

    Returns the accepted request, or one :class:`FieldError` per bad field in
    the order agent, callee, outbound_id, contact_ref.  Raises only on a
    programming error: a ``default_outbound_id`` or a generated reference that
    breaks the rules itself.
    """
    if default_outbound_id is not None and _OUTBOUND_ID.fullmatch(default_outbound_id) is None:
        raise ValueError(f"default_outbound_id {default_outbound_id!r} breaks the outbound_id rule")
    errors: list[FieldError] = []
    warnings: list[str] = []
    agent = _check_agent(data, errors)
    callee = _check_callee(data, agent, allow_internal, errors)
    outbound_id, defaulted = _check_outbound_id(data, default_outbound_id, errors, warnings)
    contact_ref, generated, truncated = _check_contact_ref(data, new_contact_ref, errors, warnings)
    if errors:
        return errors
    assert agent is not None and callee is not None
    assert outbound_id is not None and contact_ref is not None
    return CallRequest(
        agent=agent,
        callee=callee,
        outbound_id=outbound_id,
        contact_ref=contact_ref,
        contact_ref_generated=generated,
        call_type=_call_type(agent, callee),
        warnings=tuple(warnings),
        outbound_id_defaulted=defaulted,
        contact_ref_truncated=truncated,
    )
