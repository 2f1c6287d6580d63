"""When the cluster e2e's install hangs or fails, the failure says which README line, what it
printed so far, and what the cluster says, before pytest's own timeout could fire.

The README lines run in a real bash; the cluster is a stand-in whose answers are canned (the
report's wording is what is specified here; the real cluster runs in test_cluster_e2e.py).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e_backends import Backend
from tests.integration import test_cluster_e2e as e2e


class CannedCluster(Backend):
    name = "canned"
    kubeconfig = Path("/nonexistent")

    def shell_env(self) -> dict[str, str]:
        return dict(os.environ)

    def kubectl(self, *args: str, timeout: float = 120.0) -> str:
        if args[:2] == ("get", "events"):
            return "LAST SEEN   TYPE      REASON    MESSAGE\n1s   Warning   BackOff   restarting"
        if args[:2] == ("get", "pods") and "-l" in args:
            pod = {"metadata": {"name": "operator-0"}, "spec": {"containers": [{"name": "op"}]}}
            return '{"items": [' + str(pod).replace("'", '"') + "]}"
        if args[:2] == ("get", "pods"):
            return "NAME         READY   STATUS\noperator-0   0/1     CrashLoopBackOff"
        raise AssertionError(f"kubectl {' '.join(args)}: unexpected")

    def logs(self, namespace: str, pod: str, container: str) -> str:
        return "\n".join(f"log line {n}" for n in range(100)) + "\nmount: no such file"

    def exec_popen(
        self, namespace: str, pod: str, container: str, argv: Sequence[str]
    ) -> subprocess.Popen[str]:
        raise NotImplementedError

    def served(self, namespace: str, pods: Sequence[str]) -> dict[str, int]:
        raise NotImplementedError


def test_a_readme_line_that_does_not_finish_is_named_with_its_output_and_the_clusters_account() -> (
    None
):
    with pytest.raises(pytest.fail.Exception) as failed:
        e2e.run_quick_start(
            CannedCluster(), ["true", "echo waiting for rollout; sleep 30"], budget=1
        )

    message = str(failed.value)
    assert "did not finish within the install's 1 s: echo waiting for rollout; sleep 30" in message
    assert "waiting for rollout" in message.split("--- its output so far ---", 1)[1]
    assert "operator-0   0/1     CrashLoopBackOff" in message
    assert "BackOff   restarting" in message
    assert "last log lines of gremlinlb-system/operator-0/op" in message
    assert "mount: no such file" in message
    assert "log line 50" not in message  # the last lines only


def test_a_readme_line_that_fails_is_named_with_its_exit_status_and_output() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        e2e.run_quick_start(CannedCluster(), ["echo applied; echo refused >&2; exit 3"], budget=30)

    message = str(failed.value)
    assert "exited with 3: echo applied; echo refused >&2; exit 3" in message
    assert "applied\nrefused" in message


def test_comment_lines_and_lines_the_back_end_does_itself_are_not_run() -> None:
    lines = ["# 1. the image", "docker build -t gremlinlb .", "true"]
    e2e.run_quick_start(CannedCluster(), lines, budget=30)  # would fail: no docker here


def test_each_readme_wait_ends_before_the_install_budget_and_that_before_pytests_timeout() -> None:
    own_timeouts = [
        float(found)
        for line in e2e.readme_quick_start()
        for found in re.findall(r"--timeout=(\d+)s", line)
    ]
    assert own_timeouts, "the quick start's waits name their own timeouts"
    assert max(own_timeouts) < e2e.INSTALL_BUDGET_S
    assert e2e.pytestmark.args[0] > e2e.INSTALL_BUDGET_S + e2e.WAIT_SHOWN_S
