"""The compiled hot path (gremlinlb.native): one install runs compiled or, asked, pure.

`make unit` and `make test` run the unit suite twice: on the build installed (compiled when
`make package` had mypyc and a C compiler) and with GREMLINLB_PURE=1 (the same sources as
Python). These specs make sure each run is the build it claims to be.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from gremlinlb import native

_ORIGINS = (
    "import importlib, gremlinlb.native as n; "
    "print('\\n'.join(importlib.import_module(m).__file__ for m in n.COMPILED))"
)


def _run(code: list[str], pure: bool) -> str:
    env = {"PATH": "/usr/bin:/bin", "GREMLINLB_PURE": "1" if pure else "0"}
    done = subprocess.run(
        [sys.executable, *code], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    return done.stdout


def _installed_compiled() -> bool:
    """An extension file sits next to the first compiled module's source in this install."""
    package, _, module = native.COMPILED[0].rpartition(".")
    folder = Path(importlib.import_module(package).__file__ or "").parent
    return any(folder.glob(f"{module}.*.so"))


def test_this_run_is_the_build_it_claims() -> None:
    compiled = native.compiled_modules()
    if native.pure_forced():
        assert compiled == []
    elif _installed_compiled():
        assert compiled == list(native.COMPILED)
    else:
        assert compiled == [], "no extension installed, yet a module was loaded compiled"


def test_pure_env_loads_every_compiled_module_from_its_python_source() -> None:
    origins = _run(["-c", _ORIGINS], pure=True).split()
    assert len(origins) == len(native.COMPILED)
    assert all(origin.endswith(".py") for origin in origins), origins


def test_version_names_the_build_and_its_compiled_modules() -> None:
    assert "pure Python (GREMLINLB_PURE=1)" in _run(["-m", "gremlinlb.cli", "--version"], True)
    printed = _run(["-m", "gremlinlb.cli", "--version"], pure=False)
    if not _installed_compiled():
        pytest.skip("this install is pure (make package without mypyc or a C compiler)")
    assert "compiled with mypyc: " in printed
    assert all(name.removeprefix("gremlinlb.") in printed for name in native.COMPILED), printed
