"""The balancing core: endpoint set, health, picking, safe retries, bounded wait buffer,
leases for every attempt in flight, outlier ejection, slow start, and the hedging budget.

No networking and no I/O framework here (no aiohttp, kopf or kubernetes): the in-process
client, the sidecar and the operator are adapters that report to it and act on its decisions.
"""

from gremlinlb.core import janusgraph_types  # noqa: F401  (registers JanusGraph's types)
from gremlinlb.core.balancer import CHECK_INTERVAL, Acquired, Balancer
from gremlinlb.core.buffer import PendingBuffer, Waiter
from gremlinlb.core.endpoints import Endpoint, HostState, Role, parse_endpoint
from gremlinlb.core.errors import (
    AllHostsTriedError,
    BalancerClosedError,
    BufferFullError,
    BufferTimeoutError,
    GremlinLBError,
    InvalidEndpointError,
    InvalidSettingError,
    NoHealthyEndpointError,
    RequestMayHaveBeenAppliedError,
    SessionLostError,
    UnknownEndpointError,
)
from gremlinlb.core.events import BalancerStats, EventKind, HostEvent, HostStatus
from gremlinlb.core.lease import Lease
from gremlinlb.core.outcomes import (
    OVERLOAD_STATUS_CODES,
    AttemptLimit,
    ConnectionFailure,
    ConnectionLostError,
    NotSentError,
    Outcome,
    ResponseTimeoutError,
    UpgradeBusyError,
    may_retry,
)
from gremlinlb.core.readonly import (
    MUTATING_STEPS,
    bytecode_may_write,
    frame_may_write,
    register_graphbinary_type,
    register_graphson_type,
)
from gremlinlb.core.settings import (
    BalancerSettings,
    BudgetSettings,
    BufferSettings,
    HealthCheckSettings,
    HedgeSettings,
    OutlierSettings,
    Policy,
    ReadRouting,
    SigV4Settings,
)
from gremlinlb.core.topology import ZonePlan, plan_zones

__all__ = [
    "CHECK_INTERVAL",
    "MUTATING_STEPS",
    "OVERLOAD_STATUS_CODES",
    "Acquired",
    "AllHostsTriedError",
    "AttemptLimit",
    "Balancer",
    "BalancerClosedError",
    "BalancerSettings",
    "BalancerStats",
    "BudgetSettings",
    "BufferFullError",
    "BufferSettings",
    "BufferTimeoutError",
    "ConnectionFailure",
    "ConnectionLostError",
    "Endpoint",
    "EventKind",
    "GremlinLBError",
    "HealthCheckSettings",
    "HedgeSettings",
    "HostEvent",
    "HostState",
    "HostStatus",
    "InvalidEndpointError",
    "InvalidSettingError",
    "Lease",
    "NoHealthyEndpointError",
    "NotSentError",
    "Outcome",
    "OutlierSettings",
    "PendingBuffer",
    "Policy",
    "ReadRouting",
    "RequestMayHaveBeenAppliedError",
    "ResponseTimeoutError",
    "Role",
    "SessionLostError",
    "SigV4Settings",
    "UnknownEndpointError",
    "UpgradeBusyError",
    "Waiter",
    "ZonePlan",
    "bytecode_may_write",
    "frame_may_write",
    "may_retry",
    "parse_endpoint",
    "plan_zones",
    "register_graphbinary_type",
    "register_graphson_type",
]
