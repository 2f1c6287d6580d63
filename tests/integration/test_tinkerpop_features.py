"""TinkerPop's own feature suite passes through the sidecar unchanged.

The suite (gremlin-test 3.8.1's Gherkin files and Java step definitions, as fetched by
`make features-runner`) runs through a sidecar over a Gremlin Server holding TinkerPop's test
graphs, through a sidecar over two such servers, then directly against the first
(tests/feature_support.py; 2 to 3 minutes on the reference machine). The comparison's report
(counts, every scenario that does not pass direct with its reason) is printed and shows with -s
or on a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.feature_support import Comparison, compare_through_sidecar, missing_runner

#: Both runs and the server's start-up, with room for a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

#: How TinkerPop's step definitions say a scenario is outside what a remote Gherkin run can check
#: ("nothing should happen because ..."; Edge parameters the gremlin-language parser lacks).
SUITE_OWN_SKIPS = ("This test is not supported by Gherkin", "This test uses a Edge as a parameter")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    problem = missing_runner()
    if problem:
        pytest.fail(problem)
    work: Path = tmp_path_factory.mktemp("tinkerpop-features")
    result = compare_through_sidecar(work)
    print(result.report())
    return result


def test_every_scenario_that_passes_direct_passes_through_the_sidecar(
    comparison: Comparison,
) -> None:
    assert comparison.regressions() == [], comparison.report()


def test_the_run_through_the_sidecar_was_relayed_by_the_sidecar(comparison: Comparison) -> None:
    # Each scenario sends at least one request (its traversal) through the sidecar.
    assert comparison.sidecar_requests >= len(comparison.through_sidecar.results)


def test_every_scenario_on_a_test_graph_that_passes_direct_passes_balanced_over_two_servers(
    comparison: Comparison,
) -> None:
    assert comparison.balanced_regressions() == [], comparison.report()


def test_balanced_over_two_servers_both_servers_answer(comparison: Comparison) -> None:
    assert len(comparison.balanced_requests) == 2
    assert min(comparison.balanced_requests.values()) > 0, comparison.balanced_requests


def test_direct_every_scenario_passes_but_those_the_suite_itself_skips(
    comparison: Comparison,
) -> None:
    """The server holds the test graphs the suite expects, so the comparison covers the suite."""
    direct = comparison.direct
    assert direct.named("failed") == [], comparison.report()
    own_skips = [
        name
        for name in direct.named("skipped")
        if not direct.results[name].reason.startswith(SUITE_OWN_SKIPS)
    ]
    assert own_skips == [], comparison.report()
