"""The operator reaches the Kubernetes API through one module only (operator/client.py).

Which modules may import a Kubernetes client library is an import-linter contract
(`.importlinter`, "kubernetes-in-one-module", run by `make lint`); this spec keeps the
hand-written client it replaced from coming back.
"""

from __future__ import annotations

from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def test_the_hand_written_client_is_gone() -> None:
    assert not (OPERATOR / "kube.py").exists()
