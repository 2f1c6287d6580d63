"""The ping's budget: what tells a busy server from a hung one (core/liveness.py)."""

from gremlinlb.core import BalancerSettings, HealthCheckSettings
from gremlinlb.core.liveness import PING_BUDGET, hung_error, ping_budget


def test_the_ping_budget_is_one_second_with_the_default_probe_timeout() -> None:
    assert ping_budget(BalancerSettings()) == PING_BUDGET == 1.0


def test_the_ping_budget_is_never_longer_than_the_probe_timeout() -> None:
    settings = BalancerSettings(health=HealthCheckSettings(timeout=0.3))
    assert ping_budget(settings) == 0.3


def test_a_hung_verdict_names_the_budget_it_waited() -> None:
    assert hung_error(0.5) == "no answer to a ping within 0.5s: the server is hung"
