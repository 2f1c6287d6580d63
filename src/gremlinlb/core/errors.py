"""Errors a caller can act on. Each message says what happened and what to do next."""

from __future__ import annotations


class GremlinLBError(Exception):
    """Base class of every error gremlinlb raises on purpose."""


class InvalidEndpointError(GremlinLBError, ValueError):
    """An endpoint string that cannot name a Gremlin Server."""


class UnknownEndpointError(GremlinLBError, LookupError):
    """An operation named a host the balancer does not have."""


class InvalidSettingError(GremlinLBError, ValueError):
    """A setting outside the range it can work in."""


class BalancerClosedError(GremlinLBError):
    """The balancer was closed; requests are no longer accepted."""


class NoHealthyEndpointError(GremlinLBError):
    """No backend could take the request and it could not wait for one."""


class AllHostsTriedError(NoHealthyEndpointError):
    """Every healthy host already failed this request: the retry budget has nowhere to go."""


class BufferFullError(NoHealthyEndpointError):
    """The wait buffer hit one of its bounds; `bound` names which one."""

    def __init__(self, bound: str, limit: int, message: str) -> None:
        super().__init__(message)
        self.bound = bound
        self.limit = limit


class BufferTimeoutError(NoHealthyEndpointError, TimeoutError):
    """A request waited `max_wait` seconds and no backend became healthy.

    Also a TimeoutError (aiohttp's ServerTimeoutError pattern), so callers catch either."""


class RequestMayHaveBeenAppliedError(GremlinLBError):
    """A request that may write was sent, then its connection failed.

    It is not retried: re-running it could apply a write twice. The caller must check the
    graph (or make the write idempotent, e.g. with mergeV) before trying again.
    """

    def __init__(self, endpoint: str, cause: BaseException) -> None:
        super().__init__(
            f"the request was sent to {endpoint} and the connection failed before an answer "
            f"({type(cause).__name__}: {cause}); it may or may not have been applied, so it "
            "was not retried. Check the graph before re-running it, or make it idempotent "
            "(mergeV/mergeE)."
        )
        self.endpoint = endpoint


class SessionLostError(GremlinLBError):
    """The connection holding a session or transaction broke; its uncommitted work is gone."""

    def __init__(self, endpoint: str, cause: BaseException) -> None:
        super().__init__(
            f"the connection to {endpoint} that held this session/transaction was lost "
            f"({type(cause).__name__}: {cause}); Gremlin Server rolls back uncommitted work "
            "when the connection closes. Start a new transaction."
        )
        self.endpoint = endpoint
