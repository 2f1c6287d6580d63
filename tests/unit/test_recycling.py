"""When a backend connection is pinged, and when it is drained and replaced."""

from __future__ import annotations

import pytest

from gremlinlb.core import BalancerSettings, InvalidSettingError
from gremlinlb.core.recycling import heartbeat, keepalive_due, past_max_age


def test_a_connection_idle_for_the_keepalive_interval_is_pinged() -> None:
    settings = BalancerSettings(keepalive_interval=30)
    assert not keepalive_due(settings, last_activity=100, now=129.9)
    assert keepalive_due(settings, last_activity=100, now=130)


def test_keepalive_zero_sends_no_pings() -> None:
    settings = BalancerSettings(keepalive_interval=0)
    assert not keepalive_due(settings, last_activity=0, now=1e9)
    assert heartbeat(settings) is None


def test_connections_are_pinged_every_30_s_and_never_recycled_by_default() -> None:
    settings = BalancerSettings()
    assert heartbeat(settings) == 30.0
    assert not past_max_age(settings, opened_at=0, now=1e9)


def test_a_connection_older_than_max_connection_age_is_recycled() -> None:
    settings = BalancerSettings(max_connection_age=3600)
    assert not past_max_age(settings, opened_at=0, now=3599)
    assert past_max_age(settings, opened_at=0, now=3600)


@pytest.mark.parametrize("field", ["keepalive_interval", "max_connection_age"])
def test_negative_or_infinite_intervals_are_refused(field: str) -> None:
    for value in (-1.0, float("inf")):
        with pytest.raises(InvalidSettingError, match=rf"{field} must be 0 \(off\) or >= 1 sec"):
            BalancerSettings(**{field: value})  # type: ignore[arg-type]
