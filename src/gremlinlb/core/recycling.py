"""When a backend connection is pinged or recycled: pure decisions shared by both adapters.

Load balancers, NAT tables and databases cut WebSockets that were idle too long or open too
long, silently or with a close the client sees only when it next writes. The adapters keep
their connections alive with WebSocket pings and replace old ones before they are cut; what
"too idle" and "too old" mean lives here, next to the settings.
"""

from __future__ import annotations

from gremlinlb.core.settings import BalancerSettings

#: Neptune closes IAM-authenticated (SigV4) connections after 10 days; with SigV4 on and no
#: max_connection_age set, pooled connections are replaced a day before that, between
#: requests, instead of being cut under one.
SIGV4_MAX_CONNECTION_AGE = 9 * 24 * 3600.0


def keepalive_due(settings: BalancerSettings, last_activity: float, now: float) -> bool:
    """A connection with nothing sent or received since `last_activity` should be pinged."""
    interval = settings.keepalive_interval
    return interval > 0 and now - last_activity >= interval


def past_max_age(settings: BalancerSettings, opened_at: float, now: float) -> bool:
    """A connection opened at `opened_at` should take no new request and be replaced."""
    age = max_age(settings)
    return age > 0 and now - opened_at >= age


def max_age(settings: BalancerSettings) -> float:
    """The effective maximum age (0: none): the setting, else Neptune's bound with SigV4 on."""
    if settings.max_connection_age > 0:
        return settings.max_connection_age
    return SIGV4_MAX_CONNECTION_AGE if settings.sigv4.enabled else 0.0


def heartbeat(settings: BalancerSettings) -> float | None:
    """The ping interval for a WebSocket library's heartbeat option (None: no pings)."""
    return settings.keepalive_interval or None
