"""The SIP face of a refused agent-placed call, and which integrator an agent
belongs to (SPEC §4)."""

from __future__ import annotations

import pytest

from click2dial.calls.agent_calls import sip_refusal, warnings_for
from click2dial.calls.rules import FieldError
from click2dial.calls.service import CallError
from click2dial.config import ConfigError, parse_config


def error(status: int, *fields: str) -> CallError:
    return CallError(status, "no", [FieldError(f, "rule", "v", "m") for f in fields])


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (error(403, "outbound_id"), 403),
        (error(409, "agent"), 486),
        (error(429), 503),
        (error(503), 503),
        (error(422, "callee"), 484),
        (error(422, "callee", "outbound_id"), 400),
        (error(422, "contact_ref"), 400),
        (error(500), 500),
    ],
)
def test_each_refusal_has_its_sip_status(refusal: CallError, status: int) -> None:
    assert sip_refusal(refusal) == status


def test_one_warning_per_field_error_names_field_and_rule() -> None:
    errors = [
        FieldError("outbound_id", "not_allowed", "1", "m"),
        FieldError("callee", 'a"b', "", ""),
    ]
    assert warnings_for("sip.example.com", errors) == [
        ("Warning", '399 sip.example.com "outbound_id: not_allowed"'),
        ("Warning", '399 sip.example.com "callee: a\\"b"'),
    ]


BASE = """
[agents."1001"]
password = "pw-1001"
{agent}
[integrators.acme]
allow_keyless_loopback = true
{acme}
[integrators.beta]
api_keys = ["beta-key-0123456789abcdef"]
"""


def test_an_agent_belongs_to_the_integrator_it_names_or_the_only_one_admitting_it() -> None:
    named = parse_config(BASE.format(agent='integrator = "beta"', acme=""), "t.toml")
    assert named.agent_integrator("1001") is named.integrators["beta"]
    only = parse_config(BASE.format(agent="", acme='allowed_agents = ["2*"]'), "t.toml")
    assert only.agent_integrator("1001") is only.integrators["beta"]


@pytest.mark.parametrize(
    ("agent", "acme", "problem"),
    [
        ("", "", "integrators acme, beta all admit 1001"),
        ('integrator = "gamma"', "", 'no integrator is named "gamma"'),
        ('integrator = "acme"', 'allowed_agents = ["2*"]', "does not admit 1001"),
    ],
)
def test_an_agent_of_no_single_integrator_is_a_configuration_error(
    agent: str, acme: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(BASE.format(agent=agent, acme=acme), "t.toml")
    assert problem in str(raised.value)
