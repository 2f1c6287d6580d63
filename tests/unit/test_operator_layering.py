"""The operator reaches the Kubernetes API through one module only (operator/client.py)."""

from __future__ import annotations

import ast
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_client_module_imports_a_kubernetes_client_library() -> None:
    users = sorted(
        path.name
        for path in OPERATOR.glob("*.py")
        if imported_roots(path) & {"kubernetes_asyncio", "kubernetes"}
    )
    assert users == ["client.py"]


def test_the_hand_written_client_is_gone() -> None:
    assert not (OPERATOR / "kube.py").exists()
