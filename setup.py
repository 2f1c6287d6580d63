"""The build: pyproject.toml says what the package is; this adds the mypyc-compiled hot path.

The modules listed in gremlinlb.native.COMPILED are compiled with mypyc when it can be done (mypyc
importable, a C compiler on PATH, GREMLINLB_PURE unset); otherwise the same sources install
pure. mypyc names a module by its folder, and sidecar/ imports as gremlinlb.sidecar, so the sources
are first laid out as installed under build/mypyc/src. The extensions are kept in
build/mypyc/cache/<hash of every source, this file, mypyc and Python> so that `make package`,
which re-links on every run, compiles again only when one of them changed. The editable install
copies each extension next to its .py (git-ignored *.so) and links the copy; a pure build links
none of them.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
NATIVE = runpy.run_path(str(ROOT / "src" / "gremlinlb" / "native.py"))
# Folder in the tree -> its place in the installed package (pyproject.toml's package-dir).
LAYOUT = {
    "src/gremlinlb": "gremlinlb",
    "sidecar": "gremlinlb/sidecar",
    "operator": "gremlinlb/operator",
}
WORK = ROOT / "build" / "mypyc"
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def _why_pure() -> str | None:
    if NATIVE["pure_forced"]():
        return f"{NATIVE['PURE_ENV']} is set"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler (cc) on PATH"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed (it comes with mypy: requirements/dev.txt, compile.txt)"
    return None


def _sources() -> list[tuple[Path, str]]:
    """Every .py file of the package with its path as installed."""
    found = []
    for folder, installed in LAYOUT.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            found.append((path, f"{installed}/{path.relative_to(ROOT / folder).as_posix()}"))
    return found


def _fingerprint(sources: list[tuple[Path, str]]) -> str:
    import mypy.version

    digest = hashlib.sha256(f"{sys.version}|{mypy.version.__version__}".encode())
    digest.update(Path(__file__).read_bytes())  # the compile options below
    for path, installed in sources:
        digest.update(installed.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class CachedBuildExt(build_ext):  # type: ignore[misc]  # untyped setuptools
    """Builds each extension once per fingerprint; later builds copy it from the cache."""

    cache: Path

    def build_extension(self, ext: Extension) -> None:
        target = Path(self.get_ext_fullpath(ext.name))
        cached = self.cache / (ext.name + EXT_SUFFIX)
        if not cached.exists():
            super().build_extension(ext)
            self.cache.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, cached.with_suffix(".tmp"))
            cached.with_suffix(".tmp").replace(cached)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cached, target)


def _extensions() -> list[Extension]:
    why = _why_pure()
    if why is not None:
        print(f"gremlinlb: installing pure Python ({why})", file=sys.stderr)
        return []
    sources = _sources()
    cache = WORK / "cache" / _fingerprint(sources)
    for old in (WORK / "cache").glob("*"):  # builds of older sources: never used again
        if old != cache:
            shutil.rmtree(old, ignore_errors=True)
    CachedBuildExt.cache = cache
    names = [*NATIVE["COMPILED"], NATIVE["SHARED_LIBRARY"]]
    if all((cache / (name + EXT_SUFFIX)).exists() for name in names):
        return [Extension(name, sources=[]) for name in names]  # all cached: nothing to compile
    from mypyc.build import mypycify

    staged = WORK / "src"
    shutil.rmtree(staged, ignore_errors=True)
    for path, installed in sources:
        (staged / installed).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, staged / installed)
    print("gremlinlb: compiling the hot path with mypyc (about a minute)", file=sys.stderr)
    files = [str(staged / (name.replace(".", "/") + ".py")) for name in NATIVE["COMPILED"]]
    return mypycify(
        ["--config-file", str(ROOT / "pyproject.toml"), *files],
        opt_level="3",
        group_name=NATIVE["SHARED_LIBRARY"].removesuffix("__mypyc"),
        target_dir=str(WORK / "c"),
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": CachedBuildExt})
