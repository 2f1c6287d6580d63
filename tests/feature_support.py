"""TinkerPop's own feature suite through the sidecar, compared with the same suite direct.

The Gherkin files and the Java step definitions that run them come unchanged from TinkerPop's
gremlin-test jar (tests/features/build.sh fetches them with Maven into the cache, with the one
adapter class that names the endpoint). Two Gremlin Servers each hold TinkerPop's test graphs
(:class:`TestGraphsServerProcess`). The suite runs through a sidecar over the first, through a
sidecar over both, then directly against the first. Every scenario that passes direct must pass
through the one-server sidecar; over two servers, every such scenario on a loaded test graph
(the scenarios on the empty graph write and then read what they wrote, and two independent
in-memory servers cannot agree on that, which says nothing about the sidecar). The scenarios
that do not pass direct are listed with their reasons.

`make features` runs :func:`main`; tests/integration/test_tinkerpop_features.py runs the same.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import parse_endpoint
from gremlinlb.devservers.featuregraphs import TestGraphsServerProcess
from gremlinlb.devservers.fetch import find_java
from gremlinlb.devservers.server import ephemeral_port

CACHE = Path(__file__).resolve().parent.parent / ".cache"
FEATURES = CACHE / "tinkerpop-features"
FEATURES_IN_JAR = "org/apache/tinkerpop/gremlin/test/features/"

#: What TinkerPop's own GraphBinaryRemoteFeatureTest leaves out for a remote TinkerGraph:
#: OLAP-only scenarios, and null property values (the server's TinkerGraph does not allow them).
TAGS = "not @GraphComputerOnly and not @AllowNullPropertyValues"

#: The whole suite takes about 35 s per run on the reference machine; this bounds a hung run.
RUN_TIMEOUT_S = 600.0

#: Guice 4.2 (TinkerPop's pin) defines classes by reflection into java.lang, closed on Java 17.
RUNNER_JVM_OPTIONS = (
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
)

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str  # the failure or skip message's first line; empty when passed


@dataclass(frozen=True)
class SuiteRun:
    """One run: each scenario ("<feature> | <scenario>") with its result, and how long it took."""

    results: Mapping[str, Result]
    seconds: float

    def named(self, outcome: Outcome) -> list[str]:
        return sorted(name for name, result in self.results.items() if result.outcome == outcome)

    def counts(self) -> str:
        outcomes: tuple[Outcome, ...] = ("passed", "failed", "skipped")
        return ", ".join(f"{len(self.named(o))} {o}" for o in outcomes)


@dataclass(frozen=True)
class Comparison:
    through_sidecar: SuiteRun  # a sidecar over one server
    balanced: SuiteRun  # a sidecar over two servers, each holding the same test graphs
    direct: SuiteRun
    sidecar_requests: int  # what the one-server sidecar counted as sent during its run
    balanced_requests: Mapping[str, int]  # what the two-server sidecar sent to each server
    graphs: Mapping[str, str]  # each scenario's test graph ("empty" for the empty graph)

    def regressions(self) -> list[str]:
        """Scenarios that pass direct but not through the sidecar, with what happened there."""
        return _regressions(self.direct, self.through_sidecar, "through the sidecar")

    def balanced_regressions(self) -> list[str]:
        """The same over two servers, for the scenarios on a loaded test graph: those on the
        empty graph write and read back, which two independent servers cannot agree on."""
        return _regressions(
            self.direct,
            self.balanced,
            "balanced over two servers",
            lambda name: self.graphs.get(name, "empty") != "empty",
        )

    def report(self) -> str:
        on_empty = sum(1 for name in self.direct.results if self.graphs.get(name) == "empty")
        lines = [
            f"through the sidecar:         {self.through_sidecar.counts()} "
            f"({self.through_sidecar.seconds:.0f} s, {self.sidecar_requests} requests relayed)",
            f"balanced over two servers:   {self.balanced.counts()} "
            f"({self.balanced.seconds:.0f} s, requests per server "
            f"{sorted(self.balanced_requests.values())}; the {on_empty} scenarios on the empty "
            "graph not compared)",
            f"direct:                      {self.direct.counts()} ({self.direct.seconds:.0f} s)",
            "not passing direct (so not required through the sidecar):",
        ]
        not_passing: tuple[Outcome, ...] = ("failed", "skipped")
        for outcome in not_passing:
            lines += [
                f"  {outcome}: {name}: {self.direct.results[name].reason}"
                for name in self.direct.named(outcome)
            ]
        for what, regressions in (
            ("through the sidecar", self.regressions()),
            ("balanced over two servers", self.balanced_regressions()),
        ):
            lines.append(f"passing direct but not {what}: {len(regressions)}")
            lines += [f"  {line}" for line in regressions]
        return "\n".join(lines)


def _regressions(
    direct: SuiteRun, other: SuiteRun, how: str, compared: Callable[[str], bool] = bool
) -> list[str]:
    lines = []
    for name in filter(compared, direct.named("passed")):
        result = other.results.get(name, Result("failed", "did not run"))
        if result.outcome != "passed":
            lines.append(f"{name}: {result.outcome} {how}: {result.reason}")
    return lines


def scenario_graphs(features: Mapping[str, str]) -> dict[str, str]:
    """Each scenario ("<feature> | <scenario>") and the test graph its "Given the X graph" names,
    from the text of the feature files."""
    graphs: dict[str, str] = {}
    for text in features.values():
        feature = scenario = ""
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("Feature:"):
                feature = stripped.removeprefix("Feature:").strip()
            elif stripped.startswith("Scenario:"):
                scenario = stripped.removeprefix("Scenario:").strip()
            elif scenario and (found := re.fullmatch(r"Given the (\w+) graph", stripped)):
                graphs[f"{feature} | {scenario}"] = found.group(1)
                scenario = ""
    return graphs


def feature_files() -> dict[str, str]:
    """The .feature files of the gremlin-test jar the runner uses, by path."""
    (jar,) = (FEATURES / "lib").glob("gremlin-test-*.jar")
    with zipfile.ZipFile(jar) as archive:
        return {
            name: archive.read(name).decode("utf-8")
            for name in archive.namelist()
            if name.startswith(FEATURES_IN_JAR) and name.endswith(".feature")
        }


def missing_runner() -> str | None:
    """Why the runner cannot start (not built), or None."""
    if not (FEATURES / "classes" / ".built").is_file():
        return f"TinkerPop's feature runner is not built in {FEATURES}: run `make features-runner`"
    return None


def parse_report(path: Path) -> dict[str, Result]:
    """Cucumber's JUnit XML report: one testcase per scenario (classname is the feature)."""
    results: dict[str, Result] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')} | {case.get('name')}"
        outcome: Outcome = "passed"
        reason = ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                text = child.get("message") or child.text or child.tag
                reason = text.strip().splitlines()[0][:300] if text.strip() else child.tag
        if name in results:
            raise ValueError(f"scenario {name!r} appears twice in {path}: the names must be unique")
        results[name] = Result(outcome, reason)
    return results


def run_suite(host: str, port: int, work: Path, label: str) -> SuiteRun:
    """Run the whole suite against ``host:port``; the runner's output goes to ``<label>.log``."""
    report = work / f"{label}.xml"
    log = work / f"{label}.log"
    command = [
        find_java(),
        *RUNNER_JVM_OPTIONS,
        f"-Dgremlinlb.features.host={host}",
        f"-Dgremlinlb.features.port={port}",
        f"-Dgremlinlb.features.root={FEATURES}",
        "-cp",
        f"{FEATURES / 'classes'}:{FEATURES / 'lib' / '*'}",
        "io.cucumber.core.cli.Main",
        *("--glue", "org.apache.tinkerpop.gremlin.features"),
        *("--object-factory", "gremlinlb.features.GremlinlbWorld$Factory"),
        *("--tags", TAGS),
        *("--plugin", f"junit:{report}"),
        *("--plugin", "summary"),
        "--monochrome",
        f"classpath:{FEATURES_IN_JAR}",
    ]
    started = time.monotonic()
    with log.open("w") as out:
        # Exit code 1 only says some scenario failed; the report says which.
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - started
    if not report.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"the feature runner wrote no report {report}; end of {log}:\n{tail}")
    return SuiteRun(parse_report(report), seconds)


def run_through_sidecar(
    servers: Sequence[TestGraphsServerProcess], work: Path, label: str
) -> tuple[SuiteRun, dict[str, int]]:
    """The suite through a sidecar with default settings over ``servers``, and what the sidecar
    counted as sent to each."""
    config = SidecarConfig(endpoints=tuple(parse_endpoint(s.address) for s in servers))
    with SidecarThread(config) as sidecar:
        host, port = sidecar.sidecar.address.rsplit(":", 1)
        run = run_suite(host, int(port), work, label)
        return run, {h.endpoint.address: h.requests for h in sidecar.balancer.hosts()}


def compare_through_sidecar(work: Path) -> Comparison:
    """Two test-graph servers: the suite through a sidecar over the first, through a sidecar
    over both, then direct against the first."""
    servers = [TestGraphsServerProcess(ephemeral_port(), work / f"server-{i}") for i in (1, 2)]
    with contextlib.ExitStack() as stack:
        for server in servers:  # both JVMs start at once
            server.start()
            stack.callback(server.stop)
        for server in servers:
            server.wait_ready()
        through, relayed = run_through_sidecar(servers[:1], work, "through-sidecar")
        balanced, spread = run_through_sidecar(servers, work, "balanced")
        direct = run_suite(servers[0].host, servers[0].port, work, "direct")
    graphs = scenario_graphs(feature_files())
    return Comparison(through, balanced, direct, sum(relayed.values()), spread, graphs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work-dir", type=Path, help="keep reports and logs here")
    args = parser.parse_args(argv)
    problem = missing_runner()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gremlinlb-features-"))
    work.mkdir(parents=True, exist_ok=True)
    comparison = compare_through_sidecar(work)
    print(comparison.report())
    print(f"reports and logs: {work}")
    return 1 if comparison.regressions() or comparison.balanced_regressions() else 0


if __name__ == "__main__":
    sys.exit(main())
