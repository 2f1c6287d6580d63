"""TinkerPop's own feature suite through the sidecar, compared with the same suite direct.

The Gherkin files and the Java step definitions that run them come unchanged from TinkerPop's
gremlin-test jar (tests/features/build.sh fetches them with Maven into the cache, with the one
adapter class that names the endpoint). One Gremlin Server holds TinkerPop's test graphs
(:class:`TestGraphsServerProcess`); a sidecar stands in front of it. The suite runs through the
sidecar, then direct, and every scenario that passes direct must pass through the sidecar; the
scenarios that do not pass direct are listed with their reasons. One server, because scenarios
on the empty graph write and then read what they wrote: behind two independent in-memory servers
the read may meet the other graph, which says nothing about the sidecar.

`make features` runs :func:`main`; tests/integration/test_tinkerpop_features.py runs the same.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
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
    through_sidecar: SuiteRun
    direct: SuiteRun
    sidecar_requests: int  # what the sidecar counted as sent to the server during its run

    def regressions(self) -> list[str]:
        """Scenarios that pass direct but not through the sidecar, with what happened there."""
        lines = []
        for name in self.direct.named("passed"):
            result = self.through_sidecar.results.get(name, Result("failed", "did not run"))
            if result.outcome != "passed":
                lines.append(f"{name}: {result.outcome} through the sidecar: {result.reason}")
        return lines

    def report(self) -> str:
        lines = [
            f"through the sidecar: {self.through_sidecar.counts()} "
            f"({self.through_sidecar.seconds:.0f} s, {self.sidecar_requests} requests relayed)",
            f"direct:              {self.direct.counts()} ({self.direct.seconds:.0f} s)",
            "not passing direct (so not required through the sidecar):",
        ]
        not_passing: tuple[Outcome, ...] = ("failed", "skipped")
        for outcome in not_passing:
            lines += [
                f"  {outcome}: {name}: {self.direct.results[name].reason}"
                for name in self.direct.named(outcome)
            ]
        regressions = self.regressions()
        lines.append(f"passing direct but not through the sidecar: {len(regressions)}")
        lines += [f"  {line}" for line in regressions]
        return "\n".join(lines)


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
        "classpath:org/apache/tinkerpop/gremlin/test/features",
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


def compare_through_sidecar(work: Path) -> Comparison:
    """Start the test-graph server and a sidecar over it; run the suite through it, then direct."""
    server = TestGraphsServerProcess(ephemeral_port(), work / "server")
    config = SidecarConfig(endpoints=(parse_endpoint(server.address),))
    with server, SidecarThread(config) as sidecar:
        host, port = sidecar.sidecar.address.rsplit(":", 1)
        through = run_suite(host, int(port), work, "through-sidecar")
        relayed = sum(h.requests for h in sidecar.balancer.hosts())
        direct = run_suite(server.host, server.port, work, "direct")
    return Comparison(through, direct, relayed)


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
    return 1 if comparison.regressions() else 0


if __name__ == "__main__":
    sys.exit(main())
