"""Packaging: pyproject.toml's ranges, the hashed lock files `make install`
installs from, and the Python versions that are tested.

CI runs `make test` in a fresh clone, which builds the environment with
``pip install --require-hashes -r requirements-dev.lock`` (pip refuses any
package, transitive ones included, that is not pinned with a hash) and then
installs click2dial with ``--no-deps``: ``test_environment_is_the_lock``
proves the suite then runs on exactly the locked set.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {"runtime": ROOT / "requirements.lock", "dev": ROOT / "requirements-dev.lock"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _entries(path: Path) -> list[str]:
    """The lock file's requirement entries, each with its continuation lines joined."""
    entries: list[str] = []
    current = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            entries.append(current.strip())
            current = ""
    assert not current, f"{path.name} ends inside an entry"
    return entries


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for entry in _entries(path):
        match = _PIN.match(entry)
        assert match, f"{path.name}: not an exact pin: {entry[:80]}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _declared(kind: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    names = list(project["dependencies"]) + list(PYPROJECT["build-system"]["requires"])
    if kind == "dev":
        names += project["optional-dependencies"]["dev"]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_every_declared_dependency_is_locked_within_its_range(kind: str) -> None:
    pins = _pins(LOCKS[kind])
    for requirement in _declared(kind):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{LOCKS[kind].name} lacks {requirement.name} (run `make lock`)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCKS[kind].name}: {name}=={pins[name]} is outside {requirement}"
        )


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_every_lock_entry_is_pinned_and_hashed(kind: str) -> None:
    entries = _entries(LOCKS[kind])
    assert entries
    for entry in entries:
        assert _PIN.match(entry), entry[:80]
        assert re.search(r"--hash=sha256:[0-9a-f]{64}\b", entry), f"no hash: {entry[:80]}"


def test_declared_dependencies_are_ranges_not_pins() -> None:
    project = PYPROJECT["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        operators = {spec.operator for spec in requirement.specifier}
        assert "==" not in operators, f"{requirement}: an exact pin belongs in the lock file"
        assert operators & {">=", "~="}, f"{requirement}: no lower bound"
        assert operators & {"<", "~="}, f"{requirement}: no upper bound"


def test_runtime_and_dev_locks_agree() -> None:
    runtime, dev = _pins(LOCKS["runtime"]), _pins(LOCKS["dev"])
    assert {name: dev.get(name) for name in runtime} == runtime


def test_running_python_is_a_declared_tested_version() -> None:
    version = ".".join(map(str, sys.version_info[:3]))
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version)
    minor = f"Programming Language :: Python :: {sys.version_info[0]}.{sys.version_info[1]}"
    assert minor in PYPROJECT["project"]["classifiers"]


def test_environment_is_the_lock() -> None:
    """The suite runs on exactly the locked versions: what `make install` gave it."""
    wrong = {}
    for name, version in _pins(LOCKS["dev"]).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs locked (run `make install`): {wrong}"
