"""Tunables of the balancing core, validated once so adapters can trust them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gremlinlb.core.errors import InvalidSettingError


class Policy(enum.Enum):
    """How the next backend is chosen among the healthy ones."""

    ROUND_ROBIN = "round_robin"
    # Power of two choices by fewest requests in flight (Linkerd's and Envoy's default family):
    # steers away from a backend that is slow right now without global coordination.
    LEAST_IN_FLIGHT = "least_in_flight"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSettingError(message)


@dataclass(frozen=True, slots=True)
class HealthCheckSettings:
    """Active health checking: a real traversal, with rise/fall hysteresis like HAProxy."""

    interval: float = 10.0
    timeout: float = 5.0
    rise: int = 1
    fall: int = 2
    probe_healthy: bool = True
    # None sends the bytecode of g.V().limit(1); a string is sent as a script (op `eval`).
    probe_script: str | None = None

    def __post_init__(self) -> None:
        _require(self.interval > 0, f"health interval must be > 0 seconds, got {self.interval}")
        _require(self.timeout > 0, f"health probe timeout must be > 0 seconds, got {self.timeout}")
        _require(self.rise >= 1, f"rise must be >= 1 consecutive passes, got {self.rise}")
        _require(self.fall >= 1, f"fall must be >= 1 consecutive failures, got {self.fall}")
        if self.probe_script is not None:
            _require(bool(self.probe_script.strip()), "probe_script must not be blank")


@dataclass(frozen=True, slots=True)
class BufferSettings:
    """The bounded wait room used while no backend is healthy (Tremor's in-memory WAL idea)."""

    max_elements: int = 1000
    max_bytes: int = 1024 * 1024
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        _require(self.max_elements >= 0, f"max_elements must be >= 0, got {self.max_elements}")
        _require(self.max_bytes >= 0, f"max_bytes must be >= 0, got {self.max_bytes}")
        _require(self.max_wait >= 0, f"max_wait must be >= 0 seconds, got {self.max_wait}")

    @property
    def enabled(self) -> bool:
        return self.max_elements > 0 and self.max_bytes > 0 and self.max_wait > 0


@dataclass(frozen=True, slots=True)
class BalancerSettings:
    """Everything the core needs; adapters add only their own I/O settings."""

    policy: Policy = Policy.ROUND_ROBIN
    health: HealthCheckSettings = field(default_factory=HealthCheckSettings)
    buffer: BufferSettings = field(default_factory=BufferSettings)
    # Tries per request, the first included. Retries only ever go to other hosts.
    max_attempts: int = 3
    # A request with no answer after this long counts as a connection failure of its host.
    request_timeout: float = 30.0
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, f"max_attempts must be >= 1, got {self.max_attempts}")
        _require(
            self.request_timeout > 0,
            f"request_timeout must be > 0 seconds, got {self.request_timeout}",
        )
        _require(
            self.connect_timeout > 0,
            f"connect_timeout must be > 0 seconds, got {self.connect_timeout}",
        )
