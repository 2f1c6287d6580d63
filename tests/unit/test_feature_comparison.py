"""How the TinkerPop feature runs are read and compared (tests/feature_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.feature_support import Comparison, Result, SuiteRun, parse_report, scenario_graphs

REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Cucumber" tests="3" skipped="1" failures="1" errors="0">
<testcase classname="Step - V()" name="g_V" time="0.1"/>
<testcase classname="Step - V()" name="g_VX1X" time="0.1">
<failure message="expected 1 got 2&#10;second line" type="AssertionError">trace</failure>
</testcase>
<testcase classname="Step - write()" name="g_io_write" time="0.0">
<skipped message="This test is not supported by Gherkin because: reasons"/>
</testcase>
</testsuite>
"""


def run(**outcomes: str) -> SuiteRun:
    return SuiteRun({name: Result(o, f"{o} here") for name, o in outcomes.items()}, 1.0)  # type: ignore[arg-type]


def test_the_report_gives_each_scenario_its_outcome_and_first_line_of_reason(
    tmp_path: Path,
) -> None:
    path = tmp_path / "report.xml"
    path.write_text(REPORT, encoding="utf-8")
    assert parse_report(path) == {
        "Step - V() | g_V": Result("passed", ""),
        "Step - V() | g_VX1X": Result("failed", "expected 1 got 2"),
        "Step - write() | g_io_write": Result(
            "skipped", "This test is not supported by Gherkin because: reasons"
        ),
    }


def test_a_scenario_named_twice_in_a_report_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    twice = '<testcase classname="F" name="s"/>'
    path.write_text(f"<testsuite>{twice}{twice}</testsuite>", encoding="utf-8")
    with pytest.raises(ValueError, match="appears twice"):
        parse_report(path)


def comparison(
    through: SuiteRun, direct: SuiteRun, balanced: SuiteRun | None = None, **graphs: str
) -> Comparison:
    return Comparison(through, balanced or through, direct, 2, {"h1": 1, "h2": 1}, graphs)


def test_a_scenario_passing_direct_but_not_through_the_sidecar_is_a_regression() -> None:
    found = comparison(run(a="failed", b="passed"), run(a="passed", b="passed"))
    assert found.regressions() == ["a: failed through the sidecar: failed here"]


def test_a_scenario_passing_direct_and_missing_through_the_sidecar_is_a_regression() -> None:
    assert comparison(run(), run(a="passed")).regressions() == [
        "a: failed through the sidecar: did not run"
    ]


def test_scenarios_not_passing_direct_are_listed_but_not_required() -> None:
    found = comparison(run(a="failed", b="skipped"), run(a="failed", b="skipped"))
    assert found.regressions() == []
    assert "  failed: a: failed here" in found.report()
    assert "  skipped: b: skipped here" in found.report()


def test_over_two_servers_only_scenarios_on_a_loaded_test_graph_are_required() -> None:
    found = comparison(
        run(a="passed", b="passed", c="passed"),
        run(a="passed", b="passed", c="passed"),
        run(a="failed", b="failed", c="failed"),
        a="modern",
        b="empty",
    )
    assert found.balanced_regressions() == ["a: failed balanced over two servers: failed here"]


def test_each_scenario_is_given_the_graph_its_first_step_names() -> None:
    feature = """@StepClassMap
Feature: Step - V()

  Scenario: g_V
    Given the modern graph
    And the traversal of
      \"\"\"
      g.V()
      \"\"\"

  Scenario: g_addV
    Given the empty graph
    And the graph initializer of

  Scenario: g_unsupported
    Given an unsupported test
"""
    assert scenario_graphs({"V.feature": feature}) == {
        "Step - V() | g_V": "modern",
        "Step - V() | g_addV": "empty",
    }
