"""contrib/click2dial.service: accepted by ``systemd-analyze verify`` and
sandboxed as docs/operations.md says.

``verify`` checks that every Exec* command exists, so it runs in a throw-away
root laid out as an installed system: the distribution's own unit files (for
the targets the unit is ordered after), the unit in /etc/systemd/system, and
an executable at each path the unit starts.  ``systemd-analyze`` comes with
Debian's ``systemd`` package, which ``make sys-deps`` installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "click2dial.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: `make sys-deps` installs Debian's systemd"
    return tool


def _directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, repeated keys kept in order."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _install_root(tmp_path: Path, unit_text: str) -> Path:
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / UNIT.name).write_text(unit_text)
    for key, values in _directives(unit_text).items():
        if key.startswith("Exec"):
            for value in values:
                command = Path(value.lstrip("-@:+!").split()[0])
                target = root / command.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("#!/bin/sh\n")
                target.chmod(0o755)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), "verify", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    result = _verify(_install_root(tmp_path, UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    # verify reports unknown keys and unparsable values but still exits 0.
    assert result.stdout + result.stderr == ""


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("ProtectSystem=strict", "ProtectSystm=strict"), "Unknown key"),
        (("RestrictAddressFamilies=AF_INET", "RestrictAddressFamilies=AF_BOGUS"), "AF_BOGUS"),
    ],
)
def test_verify_would_catch_a_broken_unit(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    """The check above is not vacuous: a typo in the unit shows in verify's output."""
    broken = UNIT.read_text().replace(*change)
    result = _verify(_install_root(tmp_path, broken))
    assert complaint in result.stdout + result.stderr


def test_unit_is_sandboxed() -> None:
    unit = _directives(UNIT.read_text())
    expected = {
        "User": "click2dial",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "ReadWritePaths": "/var/lib/click2dial",
        "LimitNOFILE": "65536",
        "Restart": "on-failure",
    }
    assert {key: unit.get(key, [None])[-1] for key in expected} == expected
    assert unit["SystemCallFilter"][0] == "@system-service"
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit["EnvironmentFile"]
    assert all(" serve " in cmd or " check-config " in cmd for cmd in unit["ExecStart"])


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    root = _install_root(tmp_path, UNIT.read_text())
    result = subprocess.run(
        [_analyze(), "security", "--offline=yes", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= 2.0, result.stdout
