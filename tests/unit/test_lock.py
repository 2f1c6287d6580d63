"""requirements/*.txt: the lock files `make setup` installs agree with pyproject.toml's pins.

A dependency changed in pyproject.toml without `make lock` would install something else than the
pin says (or fail on a machine whose pip checks the hashes): these specs catch that at once.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: Which lock installs which part of pyproject.toml (hack/lock.sh makes them).
LOCKS = {
    "runtime.txt": (),
    "dev.txt": ("dev",),
    "compile.txt": ("compile",),
    "bench.txt": ("dev", "bench"),
}


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def locked(lock: str) -> dict[str, str]:
    """Package name -> pinned version, from a pip-compile output file."""
    text = (REPO / "requirements" / lock).read_text(encoding="utf-8")
    return {
        _name(m["name"]): m["version"]
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9][\w.-]*)==(?P<version>[^\s;]+)", text, re.M)
    }


def pinned(extras: tuple[str, ...]) -> dict[str, str]:
    """Package name -> version of the direct dependencies pyproject.toml pins with ==."""
    requirements = list(PROJECT["dependencies"])
    for extra in extras:
        requirements += PROJECT["optional-dependencies"][extra]
    found = {}
    for requirement in requirements:
        name, _, rest = requirement.partition("==")
        name = name.split("[")[0]  # moto[server]: the lock names the package (--strip-extras)
        found[_name(name.strip())] = rest.split(";")[0].strip()
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_every_direct_dependency_is_locked_at_its_pyproject_pin(lock: str) -> None:
    versions = locked(lock)
    wrong = {
        name: (version, versions.get(name, "missing"))
        for name, version in pinned(LOCKS[lock]).items()
        if versions.get(name) != version
    }
    assert not wrong, f"requirements/{lock} is stale (pyproject pin, lock): {wrong}; run make lock"


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("runtime.txt", "dev.txt"),
        ("dev.txt", "bench.txt"),
        ("runtime.txt", "compile.txt"),
        ("compile.txt", "dev.txt"),
    ],
)
def test_a_larger_lock_keeps_every_version_of_the_smaller_one(smaller: str, larger: str) -> None:
    small, large = locked(smaller), locked(larger)
    assert small
    assert {name: large.get(name) for name in small} == small


def test_the_no_deps_lock_pins_exactly_the_dev_no_deps_extra_with_hashes() -> None:
    """requirements/dev-no-deps.txt is installed with --no-deps: it must hold the extra's
    packages at their pins and nothing else (anything more would go in unresolved)."""
    text = (REPO / "requirements" / "dev-no-deps.txt").read_text(encoding="utf-8")
    extra = {
        _name(r.partition("==")[0].strip()): r.partition("==")[2].strip()
        for r in PROJECT["optional-dependencies"]["dev-no-deps"]
    }
    assert locked("dev-no-deps.txt") == extra, "requirements/dev-no-deps.txt is stale; make lock"
    assert text.count("--hash=sha256:") >= len(extra)
