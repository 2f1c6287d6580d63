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


#: Handlers allowed to end a cancellation, and why each cannot lose a stopper's cancel.
ENDS_ITS_OWN_CANCEL = {
    # The outermost frame of a connection's own task (asyncio's server starts it): the task
    # ends either way, and FaultProxy.close waits for it with cancel_and_wait.
    "src/gremlinlb/devservers/faults.py:FaultProxy._accept",
}


def _catches_cancel(node: ast.expr | None) -> bool:
    """Whether an except clause's type (or a suppress argument) takes in CancelledError."""
    if node is None:  # a bare except
        return True
    names = node.elts if isinstance(node, ast.Tuple) else [node]
    return any(
        (isinstance(n, ast.Name) and n.id in ("BaseException", "CancelledError"))
        or (isinstance(n, ast.Attribute) and n.attr == "CancelledError")
        for n in names
    )


def _raises(body: list[ast.stmt]) -> bool:
    """Whether ``body`` raises, not counting functions defined in it."""
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Raise):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return False


def _is_suppress(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "suppress") or (
        isinstance(func, ast.Name) and func.id == "suppress"
    )


def _swallowed_cancels(tree: ast.Module) -> list[tuple[str, int]]:
    """(qualified function, line) of each place in a coroutine that ends a CancelledError."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, scope: str, in_coroutine: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
                visit(child, inner, isinstance(child, ast.AsyncFunctionDef))
                continue
            swallows = (
                isinstance(child, ast.ExceptHandler)
                and _catches_cancel(child.type)
                and not _raises(child.body)
            ) or (
                isinstance(child, ast.Call)
                and _is_suppress(child.func)
                and any(_catches_cancel(a) for a in child.args)
            )
            if in_coroutine and swallows:
                found.append((scope, getattr(child, "lineno", 0)))
            visit(child, scope, in_coroutine)

    visit(tree, "", False)
    return found


def test_no_coroutine_of_the_product_swallows_a_cancellation() -> None:
    """A coroutine that ends a CancelledError (``suppress(CancelledError)``, or an except of it,
    of BaseException or bare, that does not raise again) can swallow the cancel of its own task:
    a task cancelled while it awaits another is handed on to the awaited one and comes back as
    that one's CancelledError. A loop then outlives its stop, and whatever awaits that stop
    hangs. Stop tasks with gremlinlb.tasks.cancel_and_wait; let a cancel through with `raise`."""
    found = []
    for path in product_modules():
        where = str(path.relative_to(REPO))
        for scope, line in _swallowed_cancels(ast.parse(path.read_text())):
            if f"{where}:{scope}" not in ENDS_ITS_OWN_CANCEL:
                found.append(f"{where}:{line} ({scope})")
    assert not found, (
        "a CancelledError ended in a coroutine (stop tasks with gremlinlb.tasks.cancel_and_wait;"
        f" re-raise a cancel after cleaning up): {found}"
    )


def test_the_rule_on_swallowed_cancels_finds_each_way_of_swallowing_one() -> None:
    source = """
async def stop(task):
    with contextlib.suppress(asyncio.CancelledError):
        await task
async def loop():
    while True:
        try:
            await step()
        except (OSError, asyncio.CancelledError):
            continue
async def fine():
    try:
        await step()
    except BaseException:
        cleanup()
        raise
def not_a_coroutine(loop, task):
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
"""
    assert _swallowed_cancels(ast.parse(source)) == [("stop", 3), ("loop", 9)]
