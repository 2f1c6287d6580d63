"""Which modules run compiled (mypyc) and the switch that runs them as the pure-Python source.

The build (setup.py) compiles COMPILED with mypyc when a C compiler and mypyc are there and
GREMLINLB_PURE is not set; otherwise it installs the same sources pure. A compiled build still
ships every .py file, so GREMLINLB_PURE=1 at run time loads the source instead of the extension
(the finder below): one install runs both, which is how the unit suite checks both.
`gremlinlb --version` says which one runs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

#: The per-request modules setup.py compiles. Left pure, and why: core.outcomes (its errors
#: subclass ConnectionError and TimeoutError, which mypyc cannot compile), core.samples (a
#: deque subclass, likewise), core.endpoints (it checks untyped input, e.g. a port given as an
#: int, and must say what was wrong: compiled, the call fails first with a bare TypeError), the
#: sidecar's exchange, answers, clients and backend (asyncio protocol code, not measured yet).
COMPILED = (
    "gremlinlb.core.picking",
    "gremlinlb.core.latency",
    "gremlinlb.core.budget",
    "gremlinlb.core.lease",
    "gremlinlb.core.hosts",
    "gremlinlb.core.routing",
    "gremlinlb.core.balancer",
    "gremlinlb.core.hoststates",
    "gremlinlb.core.hedging",
    "gremlinlb.core.outliers",
    "gremlinlb.core.slowstart",
    "gremlinlb.core.admission",
    "gremlinlb.core.buffer",
    "gremlinlb.sidecar.frames",
    "gremlinlb.sidecar.ids",
)
#: The extension holding the compiled code of every module above (mypyc's shared library).
SHARED_LIBRARY = "gremlinlb.native__mypyc"
PURE_ENV = "GREMLINLB_PURE"


def pure_forced() -> bool:
    """GREMLINLB_PURE=1 (or true/yes): run, and build, the pure-Python source."""
    return os.environ.get(PURE_ENV, "").strip().lower() in {"1", "true", "yes"}


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds a compiled module's .py next to its extension and loads that instead."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            return spec
        source = os.path.join(os.path.dirname(spec.origin), fullname.rpartition(".")[2] + ".py")
        return importlib.util.spec_from_file_location(fullname, source)


def use_source_if_forced() -> None:
    """Put the source-first finder in front when GREMLINLB_PURE asks (before any import)."""
    if pure_forced() and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def compiled_modules() -> list[str]:
    """The modules of COMPILED that were loaded from an extension in this process."""
    found = []
    for name in COMPILED:
        origin = getattr(importlib.import_module(name), "__file__", None) or ""
        if not origin.endswith(".py"):
            found.append(name)
    return found


def describe() -> str:
    """What `gremlinlb --version` prints about the build that runs."""
    compiled = compiled_modules()
    if not compiled:
        why = f"{PURE_ENV}=1" if pure_forced() else "not compiled at install"
        return f"pure Python ({why})"
    short = ", ".join(name.removeprefix("gremlinlb.") for name in compiled)
    return f"compiled with mypyc: {short}"


use_source_if_forced()
