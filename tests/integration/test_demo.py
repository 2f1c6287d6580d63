"""`make demo` as a user sees it: the demo's own narrative on stdout, and nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet_fixtures import free_port_block

pytestmark = pytest.mark.integration

GREMLINLB = Path(sys.executable).with_name("gremlinlb")


def test_the_demo_tells_its_story_with_no_failed_read_no_lost_request_and_no_noise() -> None:
    base = free_port_block(18581, 4)
    # The command `make demo` runs, at its default log level.
    done = subprocess.run(
        [str(GREMLINLB), "--log-level", "WARNING", "demo", "--base-port", str(base)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr
    out = done.stdout
    steps = [int(n) for n in re.findall(r"^(\d)\. ", out, re.M)]
    assert steps == [1, 2, 3, 4, 5, 6, 7], out
    assert "failed reads: 0" in out, out
    assert "all 5 answered, in order: [[0], [1], [2], [3], [4]]" in out, out
    assert "200 reads: 200 answered, 0 failed" in out, out
    assert re.search(r"^Done in \d+ s\.$", out, re.M), out
