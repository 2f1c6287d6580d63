"""gremlinlb: per-request load balancing for Apache TinkerPop Gremlin Servers."""

# First: with GREMLINLB_PURE=1 the compiled modules must load from source (gremlinlb.native).
from gremlinlb import native as native
from gremlinlb.client import AnswerNotReadableError, RoundRobinClientRemoteConnection
from gremlinlb.core import (
    BalancerSettings,
    BudgetSettings,
    BufferFullError,
    BufferSettings,
    BufferTimeoutError,
    GremlinLBError,
    HealthCheckSettings,
    HedgeSettings,
    InvalidEndpointError,
    OutlierSettings,
    Policy,
    RequestMayHaveBeenAppliedError,
    SessionLostError,
    UnknownEndpointError,
)

__version__ = "0.1.0"

__all__ = [
    "AnswerNotReadableError",
    "BalancerSettings",
    "BudgetSettings",
    "BufferFullError",
    "BufferSettings",
    "BufferTimeoutError",
    "GremlinLBError",
    "HealthCheckSettings",
    "HedgeSettings",
    "InvalidEndpointError",
    "OutlierSettings",
    "Policy",
    "RequestMayHaveBeenAppliedError",
    "RoundRobinClientRemoteConnection",
    "SessionLostError",
    "UnknownEndpointError",
    "__version__",
]
