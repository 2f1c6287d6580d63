"""gremlinlb: per-request load balancing for Apache TinkerPop Gremlin Servers."""

from gremlinlb.client import RoundRobinClientRemoteConnection
from gremlinlb.core import (
    BalancerSettings,
    BufferFullError,
    BufferSettings,
    BufferTimeoutError,
    GremlinLBError,
    HealthCheckSettings,
    InvalidEndpointError,
    Policy,
    RequestMayHaveBeenAppliedError,
    SessionLostError,
    UnknownEndpointError,
)

__version__ = "0.1.0"

__all__ = [
    "BalancerSettings",
    "BufferFullError",
    "BufferSettings",
    "BufferTimeoutError",
    "GremlinLBError",
    "HealthCheckSettings",
    "InvalidEndpointError",
    "Policy",
    "RequestMayHaveBeenAppliedError",
    "RoundRobinClientRemoteConnection",
    "SessionLostError",
    "UnknownEndpointError",
    "__version__",
]
