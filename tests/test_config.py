"""The issued configuration (SPEC §3, §7): the SPEC example, the embedded
defaults, and every rule rejected with a message naming file and key."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from click2dial.calls.policy import may_use_outbound_id
from click2dial.config import (
    ENV_VAR,
    AgentConfig,
    Config,
    ConfigError,
    ExtensionsConfig,
    IntegratorConfig,
    ServerConfig,
    SipConfig,
    SipListen,
    TrunkConfig,
    check_config,
    default_config,
    load_config,
    load_effective_config,
    parse_config,
    resolve_config_path,
)

SRC = "/etc/c2d.toml"

# SPEC §7's example, with its "…" placeholders filled in.
SPEC_EXAMPLE = """
[server]
http_host = "0.0.0.0"
http_port = 8300                         # the shared integrator port
database  = "sqlite:///var/lib/click2dial/click2dial.db"   # or postgresql://...

[sip]
listen      = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060", "ws:0.0.0.0:8088"]  # ws path /ws
public_host = "pbx.example.com"          # host used in Via / Contact / From
rtpengine   = "127.0.0.1:2223"           # optional ng control address

[trunk]                                  # where external numbers go
uri      = "sip:gateway.example.net:5060;transport=udp"
username = ""                            # digest credentials, optional
password = ""

[extensions]
mode    = "registrar"                    # our own registrar, or "pbx"
pbx_uri = "sip:pbx.example.com:5060"     # with mode = "pbx"

[agents."1001"]                          # optional, per extension
password    = "s3cret"                   # registrar digest password
auto_answer = "call-info"                # none | answer-mode | call-info | alert-info
contact     = "sip:1001@192.0.2.10:5062" # fixed contact instead of registration

[integrators.acme]
api_keys            = ["k-acme-0123456789abcdef"]  # sent as: Authorization: Bearer <key>
http_port           = 8301               # optional own listener
redis               = "redis://127.0.0.1:6379/3"
webhook_url         = "https://crm.example.com/click2dial"
webhook_secret      = "whsec-0123456789abcdef"
clid_pool           = ["27110000001", "27110000002"]   # for outbound_id = "random"
default_outbound_id = "27110000001"
call_types          = ["outbound", "external"]         # "internal" to allow extension → extension
max_cps             = 10
max_concurrent      = 50
agent_ring_timeout  = 30
callee_ring_timeout = 60
max_call_duration   = 14400
"""

ACME = '[integrators.acme]\napi_keys = ["acme-key-0123456789"]\n'


def acme(extra: str = "") -> str:
    """A valid file whose one integrator gets the extra lines."""
    return ACME + extra


def problems(text: str, source: str = SRC) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source)
    assert caught.value.problems, "a ConfigError must carry its problems"
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- the SPEC example and the defaults ---------------------------------------


def test_spec_example_parses() -> None:
    config = parse_config(SPEC_EXAMPLE, SRC)
    assert config.source == SRC
    assert (config.server.http_host, config.server.http_port) == ("0.0.0.0", 8300)
    assert config.server.database == "sqlite:///var/lib/click2dial/click2dial.db"
    assert config.server.database_kind == "sqlite"
    assert config.sip.listen == ("udp:0.0.0.0:5060", "tcp:0.0.0.0:5060", "ws:0.0.0.0:8088")
    assert config.sip.listeners == (
        SipListen("udp", "0.0.0.0", 5060),
        SipListen("tcp", "0.0.0.0", 5060),
        SipListen("ws", "0.0.0.0", 8088),
    )
    assert (config.sip.public_host, config.sip.rtpengine) == ("pbx.example.com", "127.0.0.1:2223")
    assert config.trunk.uri == "sip:gateway.example.net:5060;transport=udp"
    assert (config.trunk.username, config.trunk.password) == ("", "")
    assert config.extensions.mode == "registrar"
    assert config.extensions.pbx_uri == "sip:pbx.example.com:5060"
    agent = config.agents["1001"]
    assert (agent.extension, agent.password, agent.auto_answer, agent.contact) == (
        "1001",
        "s3cret",
        "call-info",
        "sip:1001@192.0.2.10:5062",
    )
    acme = config.integrators["acme"]
    assert acme == IntegratorConfig(
        name="acme",
        api_keys=("k-acme-0123456789abcdef",),
        http_port=8301,
        redis="redis://127.0.0.1:6379/3",
        webhook_url="https://crm.example.com/click2dial",
        webhook_secret="whsec-0123456789abcdef",
        clid_pool=("27110000001", "27110000002"),
        default_outbound_id="27110000001",
        call_types=frozenset({"outbound", "external"}),
        max_cps=10.0,
        max_concurrent=50,
        agent_ring_timeout=30,
        callee_ring_timeout=60,
        max_call_duration=14400,
    )
    assert acme.redis_db == 3


def test_spec_example_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "click2dial.toml"
    path.write_text(SPEC_EXAMPLE, encoding="utf-8")
    assert check_config(path) == []
    assert load_config(path).source == str(path)
    assert load_config(str(path)).integrators["acme"].http_port == 8301


def test_default_config() -> None:
    config = default_config()
    assert config.source == "<embedded defaults>"
    assert (config.server.http_host, config.server.http_port) == ("127.0.0.1", 8300)
    assert config.server.database == "sqlite:///click2dial.db"
    assert config.server.node_id  # the host name
    assert config.sip.listen == ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:8088")
    assert config.sip.public_host == "127.0.0.1"
    assert config.sip.rtpengine is None
    assert config.trunk.uri == "sip:127.0.0.1:5080"
    assert config.extensions.mode == "registrar"
    assert dict(config.agents) == {}
    assert list(config.integrators) == ["default"]
    default = config.integrators["default"]
    assert default.api_keys == ()
    assert default.allow_keyless_loopback is True
    assert default.http_port is None
    assert default.call_types == frozenset({"outbound", "external"})
    assert (default.agent_ring_timeout, default.callee_ring_timeout) == (30, 60)
    assert default.max_call_duration == 14400
    assert default.redis is None and default.webhook_url is None


def test_an_absent_key_takes_the_embedded_default() -> None:
    text = '[server]\nnode_id = "n1"\n[integrators.default]\nallow_keyless_loopback = true\n'
    config = parse_config(text, SRC)
    defaults = default_config()
    assert config == dataclasses.replace(
        defaults, server=dataclasses.replace(defaults.server, node_id="n1"), source=SRC
    )


def test_node_id_defaults_to_the_host_name() -> None:
    import socket

    assert parse_config(acme(), SRC).server.node_id == socket.gethostname()


def test_config_is_frozen() -> None:
    config = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.http_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.integrators["x"] = config.integrators["default"]  # type: ignore[index]


def test_secrets_stay_out_of_repr() -> None:
    config = parse_config(SPEC_EXAMPLE, SRC)
    text = repr(config)
    for secret in ("s3cret", "k-acme-0123456789abcdef", "whsec-0123456789abcdef"):
        assert secret not in text


def test_allowed_lists_parse() -> None:
    integrator = parse_config(
        acme(
            'allowed_agents = ["1001", "20*", 27821234567]\n'
            'allowed_outbound_ids = ["2711*"]\nclid_pool = [27110000001]\n'
            'default_outbound_id = "random"\n'
        ),
        SRC,
    ).integrators["acme"]
    assert integrator.allowed_agents == ("1001", "20*", "27821234567")
    assert integrator.allowed_outbound_ids == ("2711*",)
    assert integrator.clid_pool == ("27110000001",)
    assert integrator.default_outbound_id == "random"


# --- every rule, rejected ------------------------------------------------------

REJECTED: list[tuple[str, str, str]] = [
    # (file text, dotted key, a fragment of the problem)
    ('[server]\nhttp_host = "not a host"\n' + ACME, "server.http_host", "host name"),
    ("[server]\nhttp_port = 0\n" + ACME, "server.http_port", "1-65535, got 0"),
    ("[server]\nhttp_port = 65536\n" + ACME, "server.http_port", "got 65536"),
    ('[server]\nhttp_port = "8300"\n' + ACME, "server.http_port", 'got "8300"'),
    ("[server]\nhttp_port = true\n" + ACME, "server.http_port", "got true"),
    ('[server]\ndatabase = "mysql://x/y"\n' + ACME, "server.database", "unsupported"),
    ('[server]\ndatabase = "sqlite://host/x.db"\n' + ACME, "server.database", "sqlite:///"),
    ('[server]\ndatabase = "sqlite:///"\n' + ACME, "server.database", "SQLite"),
    ('[server]\ndatabase = "postgresql://h:99999/db"\n' + ACME, "server.database", "port"),
    ('[server]\nnode_id = "a b"\n' + ACME, "server.node_id", "letters"),
    ('[server]\nnode_id = ""\n' + ACME, "server.node_id", "empty"),
    ("[server]\nport = 1\n" + ACME, "server.port", "unknown key"),
    ('[sip]\nlisten = "udp:0.0.0.0:5060"\n' + ACME, "sip.listen", "array"),
    ("[sip]\nlisten = []\n" + ACME, "sip.listen", "at least one"),
    ('[sip]\nlisten = ["sctp:127.0.0.1:5060"]\n' + ACME, "sip.listen[0]", "udp, tcp, tls"),
    ('[sip]\nlisten = ["udp:127.0.0.1:0"]\n' + ACME, "sip.listen[0]", "1-65535"),
    ('[sip]\nlisten = ["udp:127.0.0.1:65536"]\n' + ACME, "sip.listen[0]", "1-65535"),
    ('[sip]\nlisten = ["udp:127.0.0.1"]\n' + ACME, "sip.listen[0]", "HOST:PORT"),
    ('[sip]\nlisten = ["udp:::1:5060"]\n' + ACME, "sip.listen[0]", "brackets"),
    ('[sip]\nlisten = ["udp:[zz]:5060"]\n' + ACME, "sip.listen[0]", "IPv6"),
    ('[sip]\nlisten = ["udp127.0.0.1"]\n' + ACME, "sip.listen[0]", "TRANSPORT:HOST:PORT"),
    ("[sip]\nlisten = [5060]\n" + ACME, "sip.listen[0]", "must be a string"),
    (
        '[sip]\nlisten = ["udp:127.0.0.1:5060", "udp:127.0.0.1:5060"]\n' + ACME,
        "sip.listen[1]",
        "listed twice",
    ),
    ('[sip]\nlisten = ["udp:0.0.0.0:5060"]\n' + ACME, "sip.public_host", "required"),
    ('[sip]\npublic_host = "a_b!"\n' + ACME, "sip.public_host", "host name"),
    ('[sip]\nrtpengine = "127.0.0.1"\n' + ACME, "sip.rtpengine", "HOST:PORT"),
    ('[sip]\nrtpengine = "127.0.0.1:0"\n' + ACME, "sip.rtpengine", "1-65535"),
    ('[sip]\ntls_certificate = "nope.pem"\n' + ACME, "sip.tls_certificate", "no such file"),
    ('[trunk]\nuri = "gateway.example.net"\n' + ACME, "trunk.uri", "SIP URI"),
    ('[trunk]\nuri = "tel:+27110000001"\n' + ACME, "trunk.uri", "sip: or sips:"),
    ('[trunk]\nuri = "http://gw.example.net"\n' + ACME, "trunk.uri", "sip: or sips:"),
    ('[trunk]\nuri = "sip:gw.example.net:0"\n' + ACME, "trunk.uri", "1-65535"),
    ('[trunk]\nuri = ""\n' + ACME, "trunk.uri", "empty"),
    ('[trunk]\npassword = "pw"\n' + ACME, "trunk.password", "username"),
    ('[trunk]\nproxy = "sip:x"\n' + ACME, "trunk.proxy", "unknown key"),
    ('[extensions]\nmode = "asterisk"\n' + ACME, "extensions.mode", '"registrar" or "pbx"'),
    ('[extensions]\nmode = "pbx"\n' + ACME, "extensions.pbx_uri", "required"),
    ('[extensions]\npbx_uri = "pbx.example.com"\n' + ACME, "extensions.pbx_uri", "SIP URI"),
    ('[agents."10011"]\npassword = "x"\n' + ACME, "agents.10011", "3-4 digit extension"),
    ('[agents.bob]\npassword = "x"\n' + ACME, "agents.bob", "3-4 digit extension"),
    ('[agents."1001"]\nauto_answer = "yes"\n' + ACME, "agents.1001.auto_answer", "call-info"),
    ('[agents."1001"]\ncontact = "1001@host"\n' + ACME, "agents.1001.contact", "SIP URI"),
    ('[agents."1001"]\npassword = ""\n' + ACME, "agents.1001.password", "empty"),
    ('[agents."1001"]\npasword = "x"\n' + ACME, "agents.1001.pasword", "did you mean password"),
    ('[agents]\n"1001" = "x"\n' + ACME, "agents.1001", "must be a table"),
    ("", "integrators", "no integrator"),
    ("[integrators]\n", "integrators", "no integrator"),
    ('[integrators."acme corp"]\napi_keys = ["k" ]\n', 'integrators."acme corp"', "name"),
    ("[integrators.acme]\nmax_cps = 1\n", "integrators.acme.api_keys", "required"),
    ("[integrators.acme]\napi_keys = []\n", "integrators.acme.api_keys", "empty"),
    ('[integrators.acme]\napi_keys = ["short"]\n', "integrators.acme.api_keys[0]", "16"),
    ('[integrators.acme]\napi_keys = [""]\n', "integrators.acme.api_keys[0]", "16"),
    (
        '[integrators.acme]\napi_keys = ["has spaces in the key"]\n',
        "integrators.acme.api_keys[0]",
        "Bearer",
    ),
    (
        '[integrators.acme]\napi_keys = ["acme-key-0123456789", "acme-key-0123456789"]\n',
        "integrators.acme.api_keys[1]",
        "listed twice",
    ),
    ("[integrators.acme]\napi_keys = [12345678901234567]\n", "api_keys[0]", "must be a string"),
    ('[integrators.acme]\napi_keys = "acme-key-0123456789"\n', "acme.api_keys", "array"),
    (acme("allow_keyless_loopback = 1\n"), "acme.allow_keyless_loopback", "true or false"),
    (acme("http_port = 8300\n"), "integrators.acme.http_port", "shared port"),
    (acme("http_port = 70000\n"), "integrators.acme.http_port", "1-65535"),
    (acme('redis = "127.0.0.1:6379"\n'), "integrators.acme.redis", "redis://"),
    (acme('redis = "http://127.0.0.1/3"\n'), "integrators.acme.redis", "redis://"),
    (acme('redis = "redis://127.0.0.1:6379/x"\n'), "integrators.acme.redis", "number"),
    (acme('redis = "redis://127.0.0.1:99999/1"\n'), "integrators.acme.redis", "port"),
    (acme('redis = "redis:///3"\n'), "integrators.acme.redis", "no host"),
    (acme('redis = "redis://h/1?x=1"\n'), "integrators.acme.redis", "query"),
    (
        acme('webhook_url = "ftp://crm"\nwebhook_secret = "s' + "x" * 20 + '"\n'),
        "webhook_url",
        "http",
    ),
    (acme('webhook_url = "https://crm.example.com/hook"\n'), "acme.webhook_secret", "required"),
    (
        acme('webhook_url = "https://crm.example.com/h"\nwebhook_secret = "short"\n'),
        "acme.webhook_secret",
        "at least 16",
    ),
    (acme('clid_pool = ["+27110000001"]\n'), "integrators.acme.clid_pool[0]", "11 digits"),
    (acme('clid_pool = ["random"]\n'), "integrators.acme.clid_pool[0]", "10 digits"),
    (acme('clid_pool = ["0044123456789"]\n'), "integrators.acme.clid_pool[0]", "27"),
    (acme('clid_pool = ["2711000000"]\n'), "integrators.acme.clid_pool[0]", "27"),
    (acme("clid_pool = [true]\n"), "integrators.acme.clid_pool[0]", "must be a string"),
    (
        acme('clid_pool = ["27110000001", "27110000001"]\n'),
        "integrators.acme.clid_pool[1]",
        "listed twice",
    ),
    (acme('default_outbound_id = "2711"\n'), "acme.default_outbound_id", '"random" or 10'),
    (acme('default_outbound_id = ""\n'), "acme.default_outbound_id", "empty"),
    (acme('default_outbound_id = "random"\n'), "acme.default_outbound_id", "clid_pool is empty"),
    (
        acme('allowed_outbound_ids = ["2712*"]\ndefault_outbound_id = "27110000001"\n'),
        "acme.default_outbound_id",
        "not in allowed_outbound_ids",
    ),
    (acme('call_types = ["outbound", "inbound"]\n'), "acme.call_types[1]", "internal"),
    (acme("call_types = []\n"), "integrators.acme.call_types", "empty"),
    (acme('call_types = ["outbound", "outbound"]\n'), "acme.call_types[1]", "listed twice"),
    (acme("allowed_agents = []\n"), "integrators.acme.allowed_agents", "leave it out"),
    (acme('allowed_agents = ["10"]\n'), "integrators.acme.allowed_agents[0]", "extension"),
    (acme('allowed_agents = ["1*0"]\n'), "integrators.acme.allowed_agents[0]", "prefix"),
    (acme('allowed_agents = ["+27*"]\n'), "integrators.acme.allowed_agents[0]", "prefix"),
    (acme('allowed_agents = ["12345*"]\n'), "acme.allowed_agents[0]", "no number"),
    (acme('allowed_outbound_ids = ["3*"]\n'), "acme.allowed_outbound_ids[0]", "no number"),
    (acme('allowed_outbound_ids = ["1001"]\n'), "acme.allowed_outbound_ids[0]", "10 digits"),
    (acme("max_cps = -1\n"), "integrators.acme.max_cps", "must be a positive number, got -1"),
    (acme("max_cps = 0\n"), "integrators.acme.max_cps", "positive number, got 0"),
    (acme("max_cps = inf\n"), "integrators.acme.max_cps", "positive number, got inf"),
    (acme("max_cps = nan\n"), "integrators.acme.max_cps", "positive number, got nan"),
    (acme('max_cps = "10"\n'), "integrators.acme.max_cps", "positive number"),
    (acme("max_concurrent = 0\n"), "integrators.acme.max_concurrent", "positive integer"),
    (acme("max_concurrent = 2.5\n"), "integrators.acme.max_concurrent", "positive integer"),
    (acme("agent_ring_timeout = 0\n"), "acme.agent_ring_timeout", "1-600, got 0"),
    (acme("agent_ring_timeout = 601\n"), "acme.agent_ring_timeout", "1-600, got 601"),
    (acme("callee_ring_timeout = 0\n"), "acme.callee_ring_timeout", "1-600"),
    (acme("callee_ring_timeout = 30.5\n"), "acme.callee_ring_timeout", "integer"),
    (acme("max_call_duration = 0\n"), "acme.max_call_duration", "1-86400"),
    (acme("max_call_duration = 86401\n"), "acme.max_call_duration", "1-86400"),
    (acme("max_cpss = 5\n"), "integrators.acme.max_cpss", "did you mean max_cps"),
    (ACME + "[integrator.beta]\n", "integrator", "did you mean integrators"),
    ("server = 1\n" + ACME, "server", "must be a table"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), REJECTED)
def test_rule_rejected_naming_file_and_key(text: str, key: str, fragment: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    message = found[0]
    assert message.startswith(f"{SRC}: "), message
    named = message.removeprefix(f"{SRC}: ").split(": ", 1)[0]
    assert named.endswith(key), message
    assert fragment in message, message


def test_message_format_of_the_brief() -> None:
    assert one_problem(acme("max_cps = -1\n")) == (
        "/etc/c2d.toml: integrators.acme.max_cps: must be a positive number, got -1"
    )


@pytest.mark.parametrize(
    "database",
    [
        "sqlite:///click2dial.db",
        "sqlite:///var/lib/click2dial/click2dial.db",
        "sqlite:////var/lib/click2dial/click2dial.db",
        "sqlite:///:memory:",
        "sqlite://:memory:",
        "postgresql://c2d:pw@db.example.com:5432/click2dial",
        "postgres://db.example.com/click2dial",
        "postgresql:///click2dial?host=/var/run/postgresql",
    ],
)
def test_database_urls_accepted(database: str) -> None:
    config = parse_config(f'[server]\ndatabase = "{database}"\n' + ACME, SRC)
    assert config.server.database == database
    assert config.server.database_kind == (
        "sqlite" if database.startswith("sqlite") else "postgresql"
    )


def test_database_password_is_not_shown() -> None:
    message = one_problem('[server]\ndatabase = "postgresql://u:hunter2@h:0x/db"\n' + ACME)
    assert "hunter2" not in message


def test_redis_password_is_not_shown() -> None:
    message = one_problem(acme('redis = "redis://:hunter2@h/x"\n'))
    assert "hunter2" not in message
    assert "***" in message


def test_secrets_are_not_shown_in_problems() -> None:
    found = problems(
        '[trunk]\npassword = "hunter2-trunk"\n'
        '[integrators.acme]\napi_keys = ["hunter2", "hunter2 hunter2 hunter2"]\n'
        'webhook_url = "https://x.example/h"\nwebhook_secret = "hunter2"\n'
    )
    assert len(found) == 4, found
    assert not any("hunter2" in p for p in found), found


@pytest.mark.parametrize(
    "listen",
    [
        "udp:127.0.0.1:1",
        "tcp:127.0.0.1:65535",
        "ws:127.0.0.1:8088",
        "udp:[::1]:5060",
        "tcp:localhost:5060",
    ],
)
def test_listen_forms_accepted(listen: str) -> None:
    config = parse_config(f'[sip]\nlisten = ["{listen}"]\n' + ACME, SRC)
    assert config.sip.listen == (listen,)
    assert str(config.sip.listeners[0]) == listen


def test_ipv6_listener_bind_host() -> None:
    config = parse_config('[sip]\nlisten = ["udp:[::1]:5060"]\n' + ACME, SRC)
    assert config.sip.listeners[0].bind_host == "::1"


def test_tls_listener_with_its_certificate(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    path = tmp_path / "c2d.toml"
    path.write_text(
        '[sip]\nlisten = ["tls:127.0.0.1:5061", "wss:127.0.0.1:8089"]\n'
        'tls_certificate = "cert.pem"\ntls_private_key = "key.pem"\n' + ACME
    )
    config = load_config(path)
    assert config.sip.tls_certificate == str(tmp_path / "cert.pem")
    assert config.sip.tls_private_key == str(tmp_path / "key.pem")
    assert [e.transport for e in config.sip.listeners] == ["tls", "wss"]


def test_tls_listener_needs_certificate_and_key() -> None:
    assert problems('[sip]\nlisten = ["wss:127.0.0.1:8089"]\n' + ACME) == [
        f"{SRC}: sip.tls_certificate: required by the listener wss:127.0.0.1:8089",
        f"{SRC}: sip.tls_private_key: required by the listener wss:127.0.0.1:8089",
    ]


def test_pbx_mode() -> None:
    config = parse_config(
        '[extensions]\nmode = "pbx"\npbx_uri = "sip:pbx.example.com:5060"\n' + ACME, SRC
    )
    assert (config.extensions.mode, config.extensions.pbx_uri) == (
        "pbx",
        "sip:pbx.example.com:5060",
    )


def test_trunk_credentials() -> None:
    config = parse_config(
        '[trunk]\nuri = "sips:gw.example.net"\nusername = "u"\npassword = "p"\n' + ACME, SRC
    )
    assert (config.trunk.uri, config.trunk.username, config.trunk.password) == (
        "sips:gw.example.net",
        "u",
        "p",
    )


def test_agent_defaults() -> None:
    agent = parse_config('[agents."100"]\n' + ACME, SRC).agents["100"]
    assert (agent.password, agent.auto_answer, agent.contact) == (None, "none", None)


@pytest.mark.parametrize("mode", ["none", "answer-mode", "call-info", "alert-info"])
def test_auto_answer_modes(mode: str) -> None:
    config = parse_config(f'[agents."1001"]\nauto_answer = "{mode}"\n' + ACME, SRC)
    assert config.agents["1001"].auto_answer == mode


def test_limits_and_numbers() -> None:
    integrator = parse_config(
        acme(
            "max_cps = 0.5\nmax_concurrent = 1\nagent_ring_timeout = 1\n"
            "callee_ring_timeout = 600\nmax_call_duration = 86400\n"
            'call_types = ["internal"]\ndefault_outbound_id = 27110000001\n'
            'redis = "rediss://:pw@redis.example.com"\n'
        ),
        SRC,
    ).integrators["acme"]
    assert integrator.max_cps == 0.5
    assert (integrator.max_concurrent, integrator.agent_ring_timeout) == (1, 1)
    assert (integrator.callee_ring_timeout, integrator.max_call_duration) == (600, 86400)
    assert integrator.call_types == frozenset({"internal"})
    assert integrator.default_outbound_id == "27110000001"
    assert integrator.redis_db == 0


# --- across integrators and listeners ------------------------------------------


def test_integer_that_lost_its_leading_zero_gets_a_hint() -> None:
    message = one_problem(acme("clid_pool = [821234567]\n"))
    assert "leading 0" in message
    assert "leading 0" not in one_problem(acme("clid_pool = [1234]\n"))


def test_duplicate_api_keys_across_integrators() -> None:
    message = one_problem(
        ACME + '[integrators.beta]\napi_keys = ["beta-key-0123456789", "acme-key-0123456789"]\n'
    )
    assert message == (
        f"{SRC}: integrators.beta.api_keys[1]: the same key is already issued at "
        "integrators.acme.api_keys[0]: keys must be unique"
    )


def test_integrator_ports_must_be_distinct() -> None:
    message = one_problem(
        acme("http_port = 8301\n")
        + '[integrators.beta]\napi_keys = ["beta-key-0123456789"]\nhttp_port = 8301\n'
    )
    assert "integrators.beta.http_port: 8301 is already the port of integrators.acme" in message


def test_one_keyless_integrator_per_listener() -> None:
    text = (
        "[integrators.a]\nallow_keyless_loopback = true\n"
        "[integrators.b]\nallow_keyless_loopback = true\n"
        "[integrators.c]\nallow_keyless_loopback = true\nhttp_port = 8310\n"
    )
    message = one_problem(text)
    assert message.startswith(f"{SRC}: integrators.b.allow_keyless_loopback: integrators.a")


def test_integrators_may_not_share_a_redis_database() -> None:
    text = acme('redis = "redis://127.0.0.1:6379/3"\n') + (
        '[integrators.beta]\napi_keys = ["beta-key-0123456789"]\nredis = "redis://127.0.0.1/3"\n'
        '[integrators.gamma]\napi_keys = ["gamma-key-0123456789"]\n'
        'redis = "redis://127.0.0.1:6379/4"\n'
    )
    message = one_problem(text)
    assert message.startswith(f"{SRC}: integrators.beta.redis: the same Redis database")


def test_http_port_may_not_collide_with_a_sip_listener() -> None:
    message = one_problem(
        '[sip]\nlisten = ["udp:127.0.0.1:5060", "ws:0.0.0.0:8300"]\npublic_host = "h.example"\n'
        + ACME
    )
    assert message.startswith(f"{SRC}: sip.listen[1]: port 8300 is also taken by server.http_port")


def test_tcp_and_tls_on_one_port_collide(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    path = tmp_path / "c2d.toml"
    path.write_text(
        '[sip]\nlisten = ["tcp:127.0.0.1:5061", "tls:127.0.0.1:5061", "udp:127.0.0.1:5061"]\n'
        'tls_certificate = "c.pem"\ntls_private_key = "c.pem"\n' + ACME
    )
    assert check_config(path) == [
        f"{path}: sip.listen[1]: port 5061 is also taken by sip.listen[0] (tcp:127.0.0.1:5061)"
    ]


def test_udp_and_tcp_may_share_a_port() -> None:
    config = parse_config(
        '[sip]\nlisten = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]\n' + ACME, SRC
    )
    assert len(config.sip.listeners) == 2


def test_several_problems_reported_at_once() -> None:
    text = (
        "[server]\nhttp_port = 0\n"
        '[sip]\nlisten = ["udp:0.0.0.0:99999"]\n'
        '[trunk]\nuri = "gateway"\n'
        "[integrators.acme]\nmax_cps = -1\ncall_types = []\ncolour = 1\n"
    )
    found = problems(text)
    keys = [p.removeprefix(f"{SRC}: ").split(": ", 1)[0] for p in found]
    assert keys == [
        "server.http_port",
        "sip.listen[0]",
        "trunk.uri",
        "integrators.acme.api_keys",
        "integrators.acme.call_types",
        "integrators.acme.max_cps",
        "integrators.acme.colour",
    ]


# --- TOML syntax, files and the environment -------------------------------------


def test_toml_syntax_error_names_line_and_column() -> None:
    text = '[server]\nhttp_host = "0.0.0.0"\nhttp_port = @\n'
    assert problems(text) == [f"{SRC}: line 3, column 13: TOML syntax error: Invalid value"]
    (message,) = problems('[server]\nhttp_host = "a\\q"\n')
    assert message.startswith(f"{SRC}: line 2, column ")
    assert "Unescaped" in message


def test_toml_error_at_the_end_of_the_file() -> None:
    (message,) = problems("[server]\nhttp_port =")
    assert message.startswith(f"{SRC}: line 2, column 12: TOML syntax error: ")
    assert "end of the file" in message


def test_duplicate_table_is_a_syntax_error() -> None:
    (message,) = problems(ACME + ACME)
    assert message.startswith(f"{SRC}: line 3, column ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    found = check_config(path)
    assert len(found) == 1
    assert found[0].startswith(f"{path}: cannot read the file: ")
    with pytest.raises(ConfigError):
        load_config(path)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nnode_id = "caf\xe9"\n')
    (message,) = check_config(path)
    assert message.startswith(f"{path}: not UTF-8")


def test_check_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c2d.toml"
    path.write_text(acme("max_cps = -1\n"))
    assert check_config(path) == [
        f"{path}: integrators.acme.max_cps: must be a positive number, got -1"
    ]


def test_resolve_config_path() -> None:
    assert resolve_config_path("/a.toml", {ENV_VAR: "/b.toml"}) == "/a.toml"
    assert resolve_config_path(None, {ENV_VAR: "/b.toml"}) == "/b.toml"
    assert resolve_config_path(None, {ENV_VAR: ""}) is None
    assert resolve_config_path(None, {}) is None


def test_click2dial_config_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text(SPEC_EXAMPLE)
    monkeypatch.setenv("CLICK2DIAL_CONFIG", str(path))
    assert resolve_config_path(None) == str(path)
    config = load_effective_config(None)
    assert config.source == str(path)
    assert "acme" in config.integrators
    # --config wins over the environment.
    other = tmp_path / "cli.toml"
    other.write_text(acme())
    assert load_effective_config(str(other)).source == str(other)


def test_without_a_file_the_defaults_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLICK2DIAL_CONFIG", raising=False)
    assert resolve_config_path(None) is None
    config = load_effective_config(None)
    assert isinstance(config, Config)
    assert config.source == "<embedded defaults>"
    assert os.environ.get("CLICK2DIAL_CONFIG") is None


# --- the operator's reference stays true -----------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _toml_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split("```toml\n")[1:]]


def test_documented_defaults_are_the_embedded_defaults() -> None:
    embedded = _toml_blocks()[0]
    config = parse_config(embedded, SRC)
    assert dataclasses.replace(config, source=default_config().source) == default_config()


def test_documented_example_is_valid(tmp_path: Path) -> None:
    example = _toml_blocks()[-1]
    for name in ("fullchain.pem", "privkey.pem"):
        (tmp_path / name).write_text("x")
    example = example.replace("/etc/click2dial/tls/", "")
    config = parse_config(example, str(tmp_path / "c2d.toml"))
    assert set(config.integrators) == {"acme", "helpdesk"}
    assert may_use_outbound_id(config.integrators["acme"], "27110000099")


def test_every_key_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    fields = [
        f.name
        for cls in (ServerConfig, SipConfig, TrunkConfig, ExtensionsConfig, AgentConfig)
        for f in dataclasses.fields(cls)
        if f.name not in ("extension", "worker")  # worker: set by the supervisor, not a key
    ]
    fields += [f.name for f in dataclasses.fields(IntegratorConfig) if f.name != "name"]
    missing = [name for name in fields if f"| `{name}` |" not in text]
    assert missing == []


def test_sip_liveness_and_session_timer_keys_have_defaults_and_ranges() -> None:
    sip = parse_config(acme(), SRC).sip
    assert (sip.probe_interval, sip.session_expires, sip.min_se) == (45, 1800, 90)
    found = "\n".join(
        problems("[sip]\nprobe_interval = 2\nsession_expires = 100\nmin_se = 120\n" + acme())
    )
    assert "sip.probe_interval" in found and "at least 5 seconds" in found
    assert "sip.session_expires" in found and "min_se (120)" in found


def test_agents_are_behind_nat_unless_configured_otherwise() -> None:
    cfg = parse_config('[agents."1001"]\n[agents."1002"]\nnat = false\n' + acme(), SRC)
    assert cfg.agents["1001"].nat is True
    assert cfg.agents["1002"].nat is False


# --- the operator listener ---------------------------------------------------


def test_operator_listener_defaults_to_loopback_and_can_be_turned_off() -> None:
    assert default_config().server.operator_listen == "127.0.0.1:9300"
    assert default_config().server.operator_address == ("127.0.0.1", 9300)
    ipv6 = parse_config('[server]\noperator_listen = "[::1]:9400"\n' + ACME, SRC)
    assert ipv6.server.operator_address == ("::1", 9400)
    off = parse_config('[server]\noperator_listen = ""\n' + ACME, SRC)
    assert off.server.operator_address is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('"9300"', "must be HOST:PORT"),
        ('"127.0.0.1:0"', "the port must be 1-65535"),
        ('"::1:9300"', "brackets"),
        ("9300", "must be a string"),
    ],
)
def test_operator_listen_is_checked(value: str, fragment: str) -> None:
    problem = one_problem(f"[server]\noperator_listen = {value}\n" + ACME)
    assert problem.startswith(f"{SRC}: server.operator_listen: ")
    assert fragment in problem


def test_operator_listener_never_shares_an_integrator_port() -> None:
    shared = one_problem('[server]\noperator_listen = "127.0.0.1:8300"\n' + ACME)
    assert "server.operator_listen: port 8300 is also taken by server.http_port" in shared
    own = one_problem('[server]\noperator_listen = "0.0.0.0:8301"\n' + acme("http_port = 8301\n"))
    assert "port 8301 is also taken by integrators.acme.http_port" in own
    sip = one_problem('[server]\noperator_listen = "127.0.0.1:5070"\n'
                      '[sip]\nlisten = ["tcp:127.0.0.1:5070"]\n' + ACME)  # fmt: skip
    assert "sip.listen[0]: port 5070 is also taken by server.operator_listen" in sip


def test_node_liveness_keys_have_defaults_and_takeover_after_outlasts_two_heartbeats() -> None:
    server = parse_config(acme(), SRC).server
    assert (server.heartbeat_interval, server.takeover_after) == (2.0, 10.0)
    quick = parse_config("[server]\nheartbeat_interval = 0.5\ntakeover_after = 2\n" + acme(), SRC)
    assert (quick.server.heartbeat_interval, quick.server.takeover_after) == (0.5, 2.0)
    assert one_problem("[server]\nheartbeat_interval = 3\ntakeover_after = 6\n" + acme()) == (
        f"{SRC}: server.takeover_after: must be more than twice heartbeat_interval (3 s), got 6"
    )
    # Defaults stand in for the bad value: only it is reported.
    assert one_problem("[server]\nheartbeat_interval = 0\ntakeover_after = 1\n" + acme()) == (
        f"{SRC}: server.heartbeat_interval: must be a positive number, got 0"
    )
    assert "server.takeover_after" in one_problem("[server]\ntakeover_after = 4\n" + acme())


def test_event_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    assert parse_config(acme(), SRC).server.event_loop == "uvloop"
    chosen = parse_config('[server]\nevent_loop = "asyncio"\n' + acme(), SRC)
    assert chosen.server.event_loop == "asyncio"
    assert one_problem('[server]\nevent_loop = "trio"\n' + acme()) == (
        f'{SRC}: server.event_loop: must be one of uvloop, asyncio, got "trio"'
    )


def test_sip_edges_are_hosts() -> None:
    assert parse_config(acme(), SRC).sip.edges == ()
    sip = parse_config('[sip]\nedges = ["10.0.0.5", "[2001:db8::5]", "edge.example.com"]\n'
                       + acme(), SRC).sip  # fmt: skip
    assert sip.edges == ("10.0.0.5", "2001:db8::5", "edge.example.com")
    found = one_problem('[sip]\nedges = ["10.0.0.5:5060"]\n' + acme())
    assert "sip.edges[0]" in found and "host name or an IP address" in found


def test_extensions_nonce_secret_is_a_secret_of_16_characters_or_more() -> None:
    assert parse_config(acme(), SRC).extensions.nonce_secret is None
    cfg = parse_config('[extensions]\nnonce_secret = "0123456789abcdef"\n' + acme(), SRC)
    assert cfg.extensions.nonce_secret == "0123456789abcdef"
    assert "0123456789abcdef" not in repr(cfg)
    found = one_problem('[extensions]\nnonce_secret = "short"\n' + acme())
    assert "extensions.nonce_secret" in found and "at least 16" in found
    os.environ["C2D_TEST_NONCE_SECRET"] = "from-the-environment-0123"
    try:
        cfg = parse_config(
            '[extensions]\nnonce_secret_env = "C2D_TEST_NONCE_SECRET"\n' + acme(), SRC
        )
    finally:
        del os.environ["C2D_TEST_NONCE_SECRET"]
    assert cfg.extensions.nonce_secret == "from-the-environment-0123"


def test_workers_default_to_one_per_core_and_each_gets_its_own_ports_and_name() -> None:
    from click2dial.config import AUTO_WORKERS_MAX, auto_workers
    from click2dial.workers import worker_config

    cores = len(os.sched_getaffinity(0))
    expected = max(1, min(AUTO_WORKERS_MAX, cores))
    assert auto_workers("sqlite:///c2d.db") == expected
    # "auto" is the default, with or without a [server] table, on SQLite too.
    assert parse_config(acme(), SRC).server.workers == expected
    assert parse_config("[server]\nhttp_port = 8301\n" + acme(), SRC).server.workers == expected
    assert parse_config('[server]\nworkers = "auto"\n' + acme(), SRC).server.workers == expected
    assert parse_config("[server]\nworkers = 3\n" + acme(), SRC).server.workers == 3
    assert parse_config("[server]\nworkers = 1\n" + acme(), SRC).server.workers == 1
    # An in-memory database is one process's.
    memory = '[server]\ndatabase = "sqlite://:memory:"\n'
    assert auto_workers("sqlite://:memory:") == auto_workers("sqlite:///:memory:") == 1
    assert parse_config(memory + acme(), SRC).server.workers == 1
    assert one_problem(memory + "workers = 2\n" + acme()).startswith(
        f"{SRC}: server.workers: more than 1 needs a database file"
    )
    assert 'server.workers: must be "auto" or a whole number 1-64, got 0' in one_problem(
        "[server]\nworkers = 0\n" + acme()
    )
    assert "server.workers: must be" in one_problem('[server]\nworkers = "many"\n' + acme())
    # Worker i binds each SIP and operator port plus i: a listener on 5061
    # (TLS's usual port; here WebSocket) beside TCP on 5060 leaves no room.
    # "auto" takes as many as fit (one), a number chosen is a problem that
    # names the clash.
    tight = '[sip]\nlisten = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:5061"]\n'
    assert parse_config(tight + acme(), SRC).server.workers == 1
    found = one_problem("[server]\nworkers = 2\n" + tight + acme())
    assert found.startswith(f"{SRC}: server.workers: worker 1's sip.listen[1] (port 5061)")
    assert "is also taken by sip.listen[2] (ws:127.0.0.1:5061)" in found
    # UDP and TCP are separate ports; the operator's next port counts too.
    apart = '[sip]\nlisten = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5061"]\n'
    assert parse_config("[server]\nworkers = 2\n" + apart + acme(), SRC).server.workers == 2
    near = '[server]\nworkers = 2\noperator_listen = "127.0.0.1:8299"\n'
    assert "worker 1's server.operator_listen (port 8300) is also taken by server.http_port" in (
        one_problem(near + acme())
    )
    config = parse_config(
        '[server]\nworkers = 2\ndatabase = "postgresql://db.example/c2d"\nnode_id = "n1"\n'
        'operator_listen = "127.0.0.1:9300"\nspool = "ends.jsonl"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:8088"]\n'
        + acme(),
        SRC,
    )
    first, second = worker_config(config, 0), worker_config(config, 1)
    assert (first.server.node_id, second.server.node_id) == ("n1-w0", "n1-w1")
    assert first.sip.listen == config.sip.listen
    assert second.sip.listen == ("udp:127.0.0.1:5061", "tcp:127.0.0.1:5061", "ws:127.0.0.1:8089")
    assert (first.server.operator_listen, second.server.operator_listen) == (
        "127.0.0.1:9300",
        "127.0.0.1:9301",
    )
    assert (first.server.spool, second.server.spool) == ("ends.jsonl", "ends.jsonl.w1")
    assert (first.server.worker, second.server.worker) == (0, 1)
    # Workers close a kept-alive connection after 100 requests; one process never.
    assert first.server.requests_per_connection == 100
    one = "[server]\nworkers = 1\n"
    assert parse_config(one + acme(), SRC).server.requests_per_connection == 0
    chosen = parse_config("[server]\nmax_requests_per_connection = 7\n" + acme(), SRC)
    assert chosen.server.requests_per_connection == 7
    assert first.server.http_port == second.server.http_port == config.server.http_port


def test_sip_udp_receive_buffer() -> None:
    # The kernel's default buffer overflows in a short stall at a few
    # hundred calls a second: the default asks for 4 MiB.
    assert parse_config(acme(), SRC).sip.udp_receive_buffer == 4 << 20
    assert parse_config("[sip]\nudp_receive_buffer = 0\n" + acme(), SRC).sip.udp_receive_buffer == 0
    found = one_problem("[sip]\nudp_receive_buffer = 1000\n" + acme())
    assert "sip.udp_receive_buffer" in found and "at least 65536" in found
    found = one_problem("[sip]\nudp_receive_buffer = -1\n" + acme())
    assert "sip.udp_receive_buffer" in found
