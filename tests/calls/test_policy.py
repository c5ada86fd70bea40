"""The integrator policy: what ``allowed_agents``, ``allowed_outbound_ids`` and
``clid_pool`` let an integrator use, and the prefix-pattern language."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from click2dial import config
from click2dial.calls import policy
from click2dial.calls.policy import (
    is_prefix_pattern,
    may_use_agent,
    may_use_outbound_id,
    pattern_allows,
    prefix_can_match,
)
from click2dial.config import IntegratorConfig


def test_may_use_agent() -> None:
    anyone = IntegratorConfig(name="a")
    assert may_use_agent(anyone, "1001") and may_use_agent(anyone, "0821234567")
    some = IntegratorConfig(name="a", allowed_agents=("1001", "20*", "2782*"))
    assert may_use_agent(some, "1001")
    assert not may_use_agent(some, "1002")
    assert may_use_agent(some, "200") and may_use_agent(some, "2099")
    assert may_use_agent(some, "27821234567")
    assert not may_use_agent(some, "27831234567")
    assert may_use_agent(IntegratorConfig(name="a", allowed_agents=("*",)), "0821234567")


def test_may_use_outbound_id() -> None:
    anything = IntegratorConfig(name="a")
    assert may_use_outbound_id(anything, "27110000001")
    assert not may_use_outbound_id(anything, "random")  # no pool to draw from
    pooled = IntegratorConfig(
        name="a", clid_pool=("27110000001",), allowed_outbound_ids=("2712*", "0110000001")
    )
    assert may_use_outbound_id(pooled, "random")
    assert may_use_outbound_id(pooled, "27110000001")  # in the pool
    assert may_use_outbound_id(pooled, "27120000005")  # by prefix
    assert may_use_outbound_id(pooled, "0110000001")
    assert not may_use_outbound_id(pooled, "27130000001")
    only_pool = IntegratorConfig(name="a", clid_pool=("27110000001",), allowed_outbound_ids=())
    assert may_use_outbound_id(only_pool, "27110000001")
    assert not may_use_outbound_id(only_pool, "27110000002")


def test_pattern_allows() -> None:
    assert pattern_allows(["1001", "20*"], "1001") and pattern_allows(["20*"], "2099")
    assert not pattern_allows(["1001"], "10010") and not pattern_allows([], "1001")
    assert pattern_allows(["*"], "1001")


@pytest.mark.parametrize(
    ("text", "ok"), [("2711*", True), ("*", True), ("27*1", False), ("2711", False), ("a*", False)]
)
def test_is_prefix_pattern(text: str, ok: bool) -> None:
    assert is_prefix_pattern(text) is ok


def test_prefix_can_match() -> None:
    assert prefix_can_match("", "agent") and prefix_can_match("", "outbound")
    assert prefix_can_match("1", "agent")  # an extension
    assert not prefix_can_match("1", "outbound")
    assert prefix_can_match("2711", "outbound") and prefix_can_match("0011", "agent")
    assert not prefix_can_match("3", "outbound") and not prefix_can_match("28", "outbound")
    assert not prefix_can_match("0" * 11, "outbound")


def test_settings_carry_no_policy() -> None:
    assert not hasattr(IntegratorConfig, "may_use_agent")
    assert not hasattr(IntegratorConfig, "may_use_outbound_id")


def test_policy_imports_nothing_at_run_time() -> None:
    """Only for the type checker does it import the configuration, so the
    configuration can ask it about ``default_outbound_id`` without a cycle."""
    tree = ast.parse(Path(policy.__file__).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("click2dial")
    assert config.IntegratorConfig is IntegratorConfig
