"""Every setting outside the range it can work in is refused, naming it and the bound."""

from typing import Any

import pytest

from gremlinlb.core import (
    BalancerSettings,
    BudgetSettings,
    BufferSettings,
    HealthCheckSettings,
    HedgeSettings,
    InvalidSettingError,
    OutlierSettings,
)


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        (HealthCheckSettings, {"unhealthy_interval": 0}, r"unhealthy_interval must be >= 0\.1 sec"),
        (HealthCheckSettings, {"outage_interval": 2.0}, "outage_interval must be <= unhealthy"),
        (BufferSettings, {"release_per_host": 0}, "release_per_host must be >= 1"),
        (OutlierSettings, {"consecutive_failures": 0}, "consecutive_failures must be >= 1"),
        (OutlierSettings, {"base_ejection": 0}, r"base_ejection must be >= 0\.1 sec"),
        (OutlierSettings, {"base_ejection": 90.0}, "base_ejection must be <= max_ej"),
        (OutlierSettings, {"max_ejected_share": 1.0}, "max_ejected_share must be >= 0 and < 1"),
        (OutlierSettings, {"stuck_factor": 0.5}, "stuck_factor must be >= 1"),
        (OutlierSettings, {"stuck_floor": 0}, r"stuck_floor must be >= 0\.05 sec"),
        (OutlierSettings, {"slow_factor": 1.0}, "slow_factor must be > 1"),
        (OutlierSettings, {"slow_floor": -1}, "slow_floor must be >= 0"),
        (HedgeSettings, {"percentile": 1.0}, "percentile must be >= 0.5 and < 1"),
        (HedgeSettings, {"delay_floor": 0}, r"delay_floor must be >= 0\.001 sec"),
        (HedgeSettings, {"max_delay": 0.001}, "delay_floor must be <= max_delay"),
        (BudgetSettings, {"ratio": 1.5}, "ratio must be between 0 and 1"),
        (BudgetSettings, {"min_per_second": -1}, "min_per_second must be >= 0"),
        (BudgetSettings, {"window": 0}, "window must be >= 1 sec"),
        (BalancerSettings, {"slow_start": -1}, r"slow_start must be 0 \(off\) or >= 0.1 sec"),
    ],
)
def test_a_setting_out_of_range_is_refused_with_its_name(
    kind: type[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSettingError, match=message):
        kind(**kwargs)


def test_the_defaults_are_valid_together() -> None:
    settings = BalancerSettings()
    assert settings.outlier.consecutive_failures == 5
    assert settings.buffer.release_per_host >= 1
