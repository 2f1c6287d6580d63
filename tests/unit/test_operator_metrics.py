"""The operator's metrics: sidecars out of sync read from the push groups, push latency."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import pytest
from gremlinlb.operator.app import OperatorOptions
from gremlinlb.operator.cli import options_from_args, register
from gremlinlb.operator.metrics import OperatorMetrics
from gremlinlb.operator.push import PushGroup, SendOutcome
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_operator_push import FAST, FakeSidecars, closed, payload, settle, wait_until


@dataclass
class Followed:
    key: tuple[str, str]
    group: PushGroup


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_sidecar_that_refuses_its_list_counts_as_out_of_sync() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()

        async def refuse(_generation: int) -> SendOutcome:
            return SendOutcome(False, 500, error="500: broken")

        sidecars.behaviour["http://b"] = refuse
        group = PushGroup("ns/graph", sidecars, asyncio.Semaphore(4), backoff=FAST)
        metrics = OperatorMetrics(lambda: [Followed(("ns", "graph"), group)], lambda: True)
        group.set_payload(payload(1))
        group.set_targets({"a": "http://a", "b": "http://b"})
        await settle(group, 1, ["a"])
        await wait_until(lambda: any(s.failures for s in group.statuses()))
        found = samples(metrics)
        labels = (("cluster", "graph"), ("cluster_namespace", "ns"))
        assert found["gremlinlb_operator_sidecars", labels] == 2
        assert found["gremlinlb_operator_sidecars_out_of_sync", labels] == 1
        assert found["gremlinlb_operator_leader", ()] == 1
        await closed(group)

    asyncio.run(scenario())


def test_push_durations_are_counted_by_outcome() -> None:
    metrics = OperatorMetrics(list, lambda: False)
    metrics.observe_push(0.002, SendOutcome(True, 200))
    metrics.observe_push(0.003, SendOutcome(True, 200))
    metrics.observe_push(5.0, SendOutcome(False, error="no answer within 5 s"))
    found = samples(metrics)
    assert found["gremlinlb_operator_push_duration_seconds_count", (("outcome", "ok"),)] == 2
    assert found["gremlinlb_operator_push_duration_seconds_count", (("outcome", "error"),)] == 1
    assert found["gremlinlb_operator_leader", ()] == 0


def operator_options(*argv: str) -> OperatorOptions:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return options_from_args(parser.parse_args(["operator", *argv]))


def test_metrics_are_served_on_8081_unless_told_otherwise() -> None:
    assert operator_options().metrics == ("0.0.0.0", 8081)
    assert operator_options("--metrics-listen", "127.0.0.1:9100").metrics == ("127.0.0.1", 9100)
    assert operator_options("--metrics-listen", "").metrics is None


def test_a_bad_metrics_address_is_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"--metrics-listen: expected HOST:PORT .* got '8081x'"):
        operator_options("--metrics-listen", "8081x")
