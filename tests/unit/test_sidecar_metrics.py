"""What the sidecar exports before anything has happened."""

from __future__ import annotations

from gremlinlb.sidecar.metrics import RETRY_REASONS, SidecarMetrics

from gremlinlb.core import Balancer, parse_endpoint


def test_every_retry_reason_is_exported_at_zero_before_the_first_retry() -> None:
    balancer = Balancer([parse_endpoint("127.0.0.1:8182")])
    try:
        metrics = SidecarMetrics(balancer, dict)
        values = {
            reason: metrics.registry.get_sample_value(
                "gremlinlb_sidecar_retries_total", {"reason": reason}
            )
            for reason in RETRY_REASONS
        }
    finally:
        balancer.close()
    assert values == dict.fromkeys(RETRY_REASONS, 0.0)
    assert {"not_sent", "overloaded", "connection_lost", "neptune_conflict"} <= set(values)
