"""Ground rules checked on the source of the product (src/gremlinlb, sidecar/, operator/) and
of the build (hack/): every module readable in one sitting, and every stop that can end."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("src/gremlinlb", "sidecar", "operator", "hack")
MAX_LINES = 750


def product_modules() -> list[Path]:
    modules = [path for folder in PRODUCT for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(modules) > 100  # the folders were found
    return modules


def test_no_module_of_the_product_is_over_750_lines() -> None:
    modules = product_modules()
    over = {
        str(path.relative_to(REPO)): lines
        for path in modules
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not over, (
        f"modules over {MAX_LINES} lines: {over}; split each where its parts have separate "
        "reasons to change (docs/architecture.md lists the modules)"
    )


def test_no_module_of_the_product_bounds_a_wait_with_asyncio_wait_for() -> None:
    """On Python 3.11, asyncio.wait_for drops a cancellation that arrives as the awaited call
    finishes, so a loop built on it can outlive its stop (the operator's leader election hung
    its stop that way); ``async with asyncio.timeout(...)`` never does."""
    users = []
    for path in product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            called = (
                isinstance(node, ast.Attribute)
                and node.attr == "wait_for"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            )
            imported = isinstance(node, ast.ImportFrom) and any(
                alias.name == "wait_for" for alias in node.names
            )
            if called or imported:
                users.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}")
    assert not users, f"use `async with asyncio.timeout(seconds):` instead of wait_for in {users}"
