"""Secrets outside the configuration file: every secret key ``X`` may be given
as ``X_env`` (an environment variable's name) or ``X_file`` (a file's path),
read and checked while the file is read, never shown in a problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from click2dial.config import ConfigError, check_config, parse_config

SRC = "c2d.toml"
KEY = "acme-key-from-file-0123456789"
OTHER_KEY = "acme-key-next-abcdef0123456789"
WEBHOOK_SECRET = "whsec-from-env-0123456789"
TRUNK_PASSWORD = "trunk-pass-from-env"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, SRC)
    return caught.value.problems


def test_every_secret_from_files_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "acme.keys"
    keys.write_text(f"# rotated on 2026-12-01\n{KEY}\n\n  {OTHER_KEY}  \n")
    agent = tmp_path / "agent-1001"
    agent.write_text("agent-secret\n")  # the line break `echo` adds is not part of it
    monkeypatch.setenv("C2D_TRUNK_PASSWORD", TRUNK_PASSWORD)
    monkeypatch.setenv("C2D_WEBHOOK", WEBHOOK_SECRET)
    monkeypatch.setenv("C2D_BETA_KEY", "beta-key-from-env-0123456789")
    config = parse_config(
        f"""
[trunk]
uri = "sip:trunk.example.com"
username = "c2d"
password_env = "C2D_TRUNK_PASSWORD"
[agents."1001"]
password_file = "{agent}"
integrator = "acme"
[integrators.acme]
api_keys_file = "{keys}"
webhook_url = "https://crm.example.com/hook"
webhook_secret_env = "C2D_WEBHOOK"
[integrators.beta]
api_keys_env = ["C2D_BETA_KEY"]
""",
        SRC,
    )
    assert config.trunk.password == TRUNK_PASSWORD
    assert config.agents["1001"].password == "agent-secret"
    assert config.integrators["acme"].api_keys == (KEY, OTHER_KEY)
    assert config.integrators["acme"].webhook_secret == WEBHOOK_SECRET
    assert config.integrators["beta"].api_keys == ("beta-key-from-env-0123456789",)


def test_relative_secret_file_is_taken_from_the_configuration_folder(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "acme").write_text(KEY)
    config_file = tmp_path / "c2d.toml"
    config_file.write_text('[integrators.acme]\napi_keys_file = "secrets/acme"\n')
    assert check_config(config_file) == []


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            'password_env = "C2D_UNSET_VARIABLE"',
            "c2d.toml: trunk.password_env: environment variable C2D_UNSET_VARIABLE is not set",
        ),
        (
            'password_env = "C2D_EMPTY_VARIABLE"',
            "c2d.toml: trunk.password_env: environment variable C2D_EMPTY_VARIABLE is empty",
        ),
        (
            'password_env = "not a name"',
            'c2d.toml: trunk.password_env: "not a name" is not an environment variable name',
        ),
        (
            'password_file = "/nonexistent/trunk"',
            "c2d.toml: trunk.password_file: cannot read /nonexistent/trunk: "
            "No such file or directory",
        ),
        (
            'password = "x"\npassword_file = "/run/secrets/trunk"',
            "c2d.toml: trunk.password: give only one of password, password_file",
        ),
    ],
)
def test_unreadable_secret_is_a_problem_naming_the_key(
    lines: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("C2D_UNSET_VARIABLE", raising=False)
    monkeypatch.setenv("C2D_EMPTY_VARIABLE", "")
    text = f'[trunk]\nuri = "sip:trunk.example.com"\nusername = "c2d"\n{lines}\n'
    text += f'[integrators.acme]\napi_keys = ["{KEY}"]\n'
    assert _problems(text) == [expected]


def test_empty_secret_file_and_keyless_key_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    comments = tmp_path / "comments"
    comments.write_text("# no key yet\n")
    assert _problems(
        f'[integrators.acme]\napi_keys_file = "{comments}"\n'
        f'webhook_url = "https://crm.example.com/hook"\nwebhook_secret_file = "{empty}"\n'
    ) == [
        f"c2d.toml: integrators.acme.api_keys_file: {comments} holds no key",
        f"c2d.toml: integrators.acme.webhook_secret_file: {empty} is empty",
    ]


def test_secrets_read_from_outside_go_through_the_same_rules_and_stay_unshown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("short-key\nacme-key has spaces-0123456789\n")
    monkeypatch.setenv("C2D_WEBHOOK", "too-short")
    problems = _problems(
        f'[integrators.acme]\napi_keys_file = "{keys}"\n'
        'webhook_url = "https://crm.example.com/hook"\nwebhook_secret_env = "C2D_WEBHOOK"\n'
    )
    assert problems[0].startswith("c2d.toml: integrators.acme.api_keys_file[0]: an API key must")
    assert problems[1].startswith("c2d.toml: integrators.acme.api_keys_file[1]: an API key may")
    assert problems[2] == (
        "c2d.toml: integrators.acme.webhook_secret: must be at least 16 characters, got 9"
    )
    shown = "\n".join(problems)
    assert "short-key" not in shown and "has spaces" not in shown and "too-short" not in shown


def test_check_config_never_prints_secrets_read_from_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Secrets read from outside pass; the one problem left does not show them.
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    monkeypatch.setenv("C2D_TRUNK_PASSWORD", TRUNK_PASSWORD)
    config_file = tmp_path / "c2d.toml"
    config_file.write_text(
        '[trunk]\nuri = "sip:trunk.example.com"\nusername = "c2d"\n'
        'password_env = "C2D_TRUNK_PASSWORD"\n'
        f'[integrators.acme]\napi_keys_file = "{keys}"\nunknown_key = 1\n'
    )
    problems = check_config(config_file)
    assert len(problems) == 1
    assert problems[0].startswith(f"{config_file}: integrators.acme.unknown_key: unknown key")
    assert KEY not in problems[0] and TRUNK_PASSWORD not in problems[0]
