"""The ground rule that keeps every module readable in one sitting: no module of the product
(src/gremlinlb, sidecar/, operator/) or of the build (hack/) is over 750 lines."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("src/gremlinlb", "sidecar", "operator", "hack")
MAX_LINES = 750


def test_no_module_of_the_product_is_over_750_lines() -> None:
    modules = [path for folder in PRODUCT for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(modules) > 100  # the folders were found
    over = {
        str(path.relative_to(REPO)): lines
        for path in modules
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not over, (
        f"modules over {MAX_LINES} lines: {over}; split each where its parts have separate "
        "reasons to change (docs/architecture.md lists the modules)"
    )
