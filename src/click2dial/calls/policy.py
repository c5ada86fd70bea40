"""The integrator policy (SPEC §3): which agents and caller IDs an integrator's
configuration lets it use, and the pattern language of ``allowed_agents`` and
``allowed_outbound_ids`` that says so.

The configuration reads and validates those lists (:mod:`click2dial.config`);
this module decides what they allow.  The call service asks it for every call
(:meth:`click2dial.calls.service.CallService.place`), and the configuration
asks it once at start-up whether an integrator's ``default_outbound_id`` is
one it may use, so that the two can never disagree.

A pattern is a whole number (matched exactly) or digits followed by ``*``
(any number starting with those digits; ``*`` alone is any number).

This module imports nothing from Click2Dial at run time (the integrator's
type is for the type checker only), so the configuration may use it without
an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from ..config import IntegratorConfig

__all__ = [
    "NumberKind",
    "is_prefix_pattern",
    "may_use_agent",
    "may_use_outbound_id",
    "pattern_allows",
    "prefix_can_match",
]

NumberKind = Literal["agent", "outbound"]
"""Which numbers a pattern list holds: agents, or caller IDs."""

_PREFIX_PATTERN: Final = re.compile(r"[0-9]*\*")

# (leading digits, shortest, longest) of each accepted form of SPEC §2, for
# prefix checks: agents (extension, national, 27, 00) and caller IDs.
_FORMS: Final[Mapping[NumberKind, tuple[tuple[str, int, int], ...]]] = {
    "agent": (("", 3, 4), ("0", 10, 10), ("27", 11, 11), ("00", 13, 16)),
    "outbound": (("0", 10, 10), ("27", 11, 11)),
}


def is_prefix_pattern(text: str) -> bool:
    """Whether ``text`` is a well-formed prefix pattern: digits then ``*``."""
    return _PREFIX_PATTERN.fullmatch(text) is not None


def prefix_can_match(prefix: str, kind: NumberKind) -> bool:
    """Whether some number of ``kind``'s accepted forms starts with ``prefix``
    (the digits of a prefix pattern, without its ``*``)."""
    return any(
        len(prefix) <= longest and prefix[: len(lead)] == lead[: len(prefix)]
        for lead, _shortest, longest in _FORMS[kind]
    )


def pattern_allows(patterns: Iterable[str], number: str) -> bool:
    """Whether any of ``patterns`` (exact numbers or prefixes ending ``*``)
    matches ``number``."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if number.startswith(pattern[:-1]):
                return True
        elif number == pattern:
            return True
    return False


def may_use_agent(integrator: IntegratorConfig, agent: str) -> bool:
    """Whether ``integrator`` may ring ``agent`` (an extension or number that
    already passed the agent rule).  No ``allowed_agents``: any."""
    allowed = integrator.allowed_agents
    return allowed is None or pattern_allows(allowed, agent)


def may_use_outbound_id(integrator: IntegratorConfig, number: str) -> bool:
    """Whether ``integrator`` may present ``number`` as caller ID.

    ``"random"`` is allowed when the pool has numbers.  A number is allowed
    when ``allowed_outbound_ids`` is absent, lists it (exactly or by prefix),
    or the integrator's own ``clid_pool`` holds it.
    """
    if number == "random":
        return bool(integrator.clid_pool)
    allowed = integrator.allowed_outbound_ids
    if allowed is None or number in integrator.clid_pool:
        return True
    return pattern_allows(allowed, number)
