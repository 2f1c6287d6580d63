"""Rise/fall hysteresis: one flaky probe neither ejects a host nor lets a sick one back."""

from __future__ import annotations

from dataclasses import dataclass

from gremlinlb.core.endpoints import HostState


@dataclass
class HealthCounter:
    rise: int
    fall: int
    passes: int = 0
    failures: int = 0

    def record(self, state: HostState, ok: bool) -> HostState:
        """Count one probe result and return the state it leads to."""
        if ok:
            self.passes += 1
            self.failures = 0
            if state is HostState.DOWN and self.passes >= self.rise:
                return HostState.HEALTHY
        else:
            self.failures += 1
            self.passes = 0
            if state is HostState.HEALTHY and self.failures >= self.fall:
                return HostState.DOWN
        return state

    def reset(self) -> None:
        self.passes = 0
        self.failures = 0
