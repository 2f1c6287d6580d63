"""The operator reaches the Kubernetes API through one module only (operator/client.py).

Which modules may import a Kubernetes client library is an import-linter contract
(`.importlinter`, "kubernetes-in-one-module", run by `make lint`); this spec keeps the
hand-written client it replaced from coming back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def test_the_hand_written_client_is_gone() -> None:
    assert not (OPERATOR / "kube.py").exists()


def test_loading_the_webhook_loads_no_sidecar_runtime() -> None:
    """The runtime side of the "operator reads sidecar.options only" contract: the webhook,
    pure by its docstring, loads sidecar.options and no other sidecar module."""
    probe = (
        "import json, sys, gremlinlb.operator.webhook, gremlinlb.operator.spec; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gremlinlb.sidecar.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == ["gremlinlb.sidecar.options"]
