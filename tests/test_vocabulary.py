"""The one vocabulary (:mod:`click2dial.vocabulary`): a leaf module, whose enums
are exactly what the OpenAPI document lists, what the store accepts and what
the configuration reads."""

from __future__ import annotations

import ast
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from click2dial import config, vocabulary
from click2dial.api.openapi import CALL_STATUSES, END_REASONS, openapi_document
from click2dial.store import model
from click2dial.store.base import check_finish, check_update
from click2dial.vocabulary import (
    CallSource,
    CallState,
    CallType,
    EndReason,
    HangupSide,
    LegState,
)
from tests.store.support import make_call

VOCABULARIES: list[type[StrEnum]] = [
    CallSource,
    CallState,
    CallType,
    EndReason,
    HangupSide,
    LegState,
]


def _words(vocabulary_: type[StrEnum]) -> list[str]:
    return [word.value for word in vocabulary_]


def test_vocabulary_is_a_leaf() -> None:
    tree = ast.parse(Path(vocabulary.__file__).read_text(encoding="utf-8"))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative import in the vocabulary"
            imported.append(node.module or "")
        elif isinstance(node, ast.Import):
            imported.extend(alias.name for alias in node.names)
    assert not [name for name in imported if name.split(".")[0] == "click2dial"]


@pytest.mark.parametrize("vocabulary_", VOCABULARIES, ids=lambda v: v.__name__)
def test_words_are_plain_strings(vocabulary_: type[StrEnum]) -> None:
    for word in vocabulary_:
        assert word == word.value and str(word) == word.value and f"{word}" == word.value
        assert json.loads(json.dumps({"w": word})) == {"w": word.value}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    document: dict[str, Any] = openapi_document()
    result: dict[str, Any] = document["components"]["schemas"]
    return result


def test_openapi_enums_are_the_vocabulary(schemas: dict[str, Any]) -> None:
    call = schemas["Call"]["properties"]
    assert call["status"]["enum"] == _words(CallState)
    assert call["call_type"]["enum"] == _words(CallType)
    assert call["source"]["enum"] == _words(CallSource)
    assert call["end_reason"]["enum"] == [*_words(EndReason), None]
    assert call["hangup_side"]["enum"] == [*_words(HangupSide), None]
    for leg in ("agent", "callee"):
        state = call["legs"]["properties"][leg]["properties"]["state"]
        assert state["enum"] == [*_words(LegState), None]
    cdr = schemas["CdrNotification"]["properties"]["payload"]["properties"]
    assert cdr["end_reason"]["enum"] == _words(EndReason)
    assert cdr["call_type"]["enum"] == _words(CallType)
    assert cdr["hangup_side"]["enum"] == [*_words(HangupSide), None]
    # The described words are the vocabulary's, in its order.
    assert list(CALL_STATUSES) == _words(CallState)
    assert list(END_REASONS) == _words(EndReason)


def test_store_and_config_sets_come_from_the_vocabulary() -> None:
    assert frozenset(_words(CallType)) == model.CALL_TYPES
    assert frozenset(_words(CallSource)) == model.SOURCES
    assert frozenset(_words(CallState)) == model.STATES
    assert model.STATES - {CallState.ENDED} == model.LIVE_STATES
    assert frozenset(_words(EndReason)) == model.END_REASONS
    assert tuple(CallType) == config.CALL_TYPES
    assert frozenset(CallType) >= config.DEFAULT_CALL_TYPES


@pytest.mark.parametrize(
    ("name", "vocabulary_"),
    [
        ("call_type", CallType),
        ("source", CallSource),
        ("state", CallState),
        ("end_reason", EndReason),
    ],
)
def test_store_accepts_every_word_and_refuses_any_other(
    name: str, vocabulary_: type[StrEnum]
) -> None:
    for word in vocabulary_:
        make_call(**{name: word}).validate()
        make_call(**{name: word.value}).validate()
    for wrong in ("", "no_such_word", 1):
        with pytest.raises(ValueError, match=name):
            make_call(**{name: wrong}).validate()
    # A near miss: the right word in the wrong case.
    with pytest.raises(ValueError, match=name):
        make_call(**{name: next(iter(vocabulary_)).value.upper()}).validate()


def test_store_refuses_unknown_states_and_end_reasons_on_update_and_finish() -> None:
    for state in model.LIVE_STATES:
        check_update({"state": state})
    with pytest.raises(ValueError, match="unknown call state"):
        check_update({"state": "ringing"})
    with pytest.raises(ValueError, match="finish_call"):
        check_update({"state": CallState.ENDED})
    for reason in EndReason:
        check_finish(reason, [])
    with pytest.raises(ValueError, match="end_reason"):
        check_finish("hung_up", [])
