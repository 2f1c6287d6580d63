"""Each `gremlinlb` sub-command imports only what it needs: the sidecar runs in every pod."""

from __future__ import annotations

import json
import subprocess
import sys

from gremlinlb import cli

# Loaded by `gremlinlb sidecar`, the modules below would cost every pod memory for nothing.
OPERATOR_ONLY = ("kopf", "kubernetes", "cryptography")

_PROBE = """
import json, sys
from gremlinlb import cli
try:
    cli.main(["sidecar", "--help"])
except SystemExit:
    pass
import gremlinlb.sidecar.server  # what `gremlinlb sidecar` runs
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_sidecar_command_imports_neither_kopf_nor_kubernetes_nor_cryptography() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "gremlinlb" in loaded  # the probe did import the sidecar
    assert loaded.isdisjoint(OPERATOR_ONLY), sorted(loaded & set(OPERATOR_ONLY))


def test_every_sub_command_is_listed_even_when_another_one_runs() -> None:
    parser = cli.build_parser(["sidecar"])
    help_text = parser.format_help()
    for name in cli.COMMANDS:
        assert name in help_text


def test_the_named_sub_command_gets_its_own_arguments() -> None:
    args = cli.build_parser(["sidecar"]).parse_args(["sidecar", "--endpoints", "a:8182"])
    assert args.command == "sidecar"
    assert args.endpoints == "a:8182"
