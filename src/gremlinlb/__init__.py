"""gremlinlb: per-request load balancing for Apache TinkerPop Gremlin Servers."""

from typing import TYPE_CHECKING

# First: with GREMLINLB_PURE=1 the compiled modules must load from source (gremlinlb.native).
from gremlinlb import native as native
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

if TYPE_CHECKING:
    from gremlinlb.client import AnswerNotReadableError, RoundRobinClientRemoteConnection

__version__ = "0.1.0"

#: Names of the in-process client, imported at first use (PEP 562): the client loads
#: gremlinpython, which a sidecar (every pod) or the operator importing gremlinlb never needs.
_CLIENT = frozenset({"AnswerNotReadableError", "RoundRobinClientRemoteConnection"})


def __getattr__(name: str) -> object:
    if name in _CLIENT:
        from gremlinlb import client

        return getattr(client, name)
    raise AttributeError(f"module 'gremlinlb' has no attribute {name!r}")


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
