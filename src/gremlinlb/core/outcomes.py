"""What happened to one attempt, and what that means for the host and for a retry.

The rule that keeps retries safe: only a request that certainly did not run, or that cannot
write, may run again.
"""

from __future__ import annotations

import enum

from gremlinlb.core.errors import GremlinLBError

# Gremlin Server status codes that mean "I did not (fully) do it, try elsewhere".
TOO_MANY_REQUESTS = 429  # work queue full: rejected before execution
SERVER_ERROR_TEMPORARY = 596  # the protocol allows the request to be retried as-is
OVERLOAD_STATUS_CODES = frozenset({TOO_MANY_REQUESTS, SERVER_ERROR_TEMPORARY})


class Outcome(enum.Enum):
    SUCCESS = "success"
    # The request never left this process: refused, handshake failed, connect timed out.
    NOT_SENT = "not_sent"
    # Sent, then the connection broke or went silent: it may have run, in part or whole.
    CONNECTION_LOST = "connection_lost"
    TIMEOUT = "timeout"
    # The server said it is overloaded (429/596): not applied, safe anywhere else.
    OVERLOADED = "overloaded"
    # The server answered with an error of the request itself (597, 499, ...): the host is fine.
    SERVER_ERROR = "server_error"
    # The request's or the client's own fault (an answer it cannot decode, a serializer error,
    # an answer over the size limit): says nothing about the host.
    CLIENT_ERROR = "client_error"

    @property
    def marks_host_down(self) -> bool:
        """Certain host failure: nothing could even be sent there. The host goes down at once."""
        return self is Outcome.NOT_SENT

    @property
    def counts_against_host(self) -> bool:
        """Evidence, not a verdict: counts toward outlier ejection (consecutive failures).

        A timeout is first evidence about the *request* (a slow query times out on a fine
        host), so one alone never takes a host out (Envoy, Linkerd).
        """
        return self in (Outcome.CONNECTION_LOST, Outcome.TIMEOUT)

    @property
    def may_have_executed(self) -> bool:
        return self in (Outcome.CONNECTION_LOST, Outcome.TIMEOUT)

    @property
    def retry_costs_extra(self) -> bool:
        """A retry after this outcome spends the extra-request budget (`try_spend_extra`):
        the server may have done the work already, or said it is overloaded. A retry after
        NOT_SENT costs no server anything and is free."""
        return self in (Outcome.CONNECTION_LOST, Outcome.TIMEOUT, Outcome.OVERLOADED)


class ConnectionFailure(GremlinLBError, ConnectionError):
    """A connection-level failure of one attempt, tagged with what it means for a retry.

    Adapters raise the subclass that says how far the request got; the core's rules then decide
    whether the host goes down and whether another host may be tried.
    """

    outcome: Outcome = Outcome.CONNECTION_LOST


class NotSentError(ConnectionFailure):
    """Nothing of the request left this process (refused, handshake failed, socket closed)."""

    outcome = Outcome.NOT_SENT


class UpgradeBusyError(NotSentError):
    """The server answered the WebSocket upgrade with 429 (Neptune over its connection limit):
    nothing was sent, and the host is busy, not down; the request may go to another host."""

    outcome = Outcome.OVERLOADED


class ConnectionLostError(ConnectionFailure):
    """The request was (maybe partly) sent, then the connection broke."""

    outcome = Outcome.CONNECTION_LOST


class ResponseTimeoutError(ConnectionFailure, TimeoutError):
    """The request was sent and no answer came within the request timeout.

    Also a TimeoutError (aiohttp's ServerTimeoutError pattern), so callers catch either."""

    outcome = Outcome.TIMEOUT


def may_retry(outcome: Outcome, read_only: bool) -> bool:
    """Whether another host may be tried after this outcome.

    A timeout is not retried: the query may just be slow, and Gremlin 3.x cannot cancel it,
    so a retry would run it once per host. Hedging is how a read gets a fast answer.
    """
    if outcome in (Outcome.NOT_SENT, Outcome.OVERLOADED):
        return True
    if outcome is Outcome.CONNECTION_LOST:
        return read_only
    return False  # SUCCESS, SERVER_ERROR, CLIENT_ERROR, TIMEOUT


class AttemptLimit:
    """One attempt limit per request: how many more attempts it may make, of every kind.

    Finagle's per-request `RetryPolicy.tries`, not its RetryBudget (the fleet-wide ratio of
    extra requests, `gremlinlb.core.budget.RetryBudget`).

    Every attempt a server *received* counts against `max_attempts`, whatever sent it: the
    first, a retry, a hedge, a re-dispatch away from an ejected host. Counted apart, they let a
    read whose connection closes before its answer run 2+2+1 times with max_attempts 3 (issue
    20): each reception may be a full execution on a server. The adapter says how many
    attempts were received (`received`: written to a server, the first included).

    Attempts no server received (NOT_SENT: refused, never written) cost nothing there; they and
    connection losses are also bounded by `max_attempts + 2`: a refused connection takes its
    host out of rotation, so the next try goes elsewhere, and once no host is left the request
    waits in the buffer instead of failing (a total outage loses nothing). The bound keeps a
    long list of dead hosts from costing one request a connect timeout each (it was 2N+3). A
    connection lost after the request was written counts as received, in both adapters: the
    server may have run it. (The in-process client looks for a close on an idle pooled socket
    before writing on it, so a socket its server closed meanwhile is reopened, not written to.)

    A read is re-sent while an earlier attempt may still run (a hedge, a re-dispatch) at most
    once: each such copy may run in full (Gremlin 3.x cannot cancel a query), so a slow query
    re-sent from host to host would take one server after another.
    """

    def __init__(self, max_attempts: int) -> None:
        self._max_attempts = max_attempts
        self._not_sent_left = max_attempts + 2
        self._resent = False

    def allows_another(self, outcome: Outcome, received: int) -> bool:
        """Record a failed attempt (`outcome`); True if one more may be made, `received`
        attempts having reached a server so far."""
        if outcome in (Outcome.NOT_SENT, Outcome.CONNECTION_LOST):
            self._not_sent_left -= 1
            if self._not_sent_left <= 0:
                return False
        return received < self._max_attempts

    def allows_resend(self, received: int) -> bool:
        """Whether a copy of a read may be sent while an earlier attempt may still run (a
        hedge, a re-dispatch): once per request, and within the attempts left."""
        return not self._resent and received < self._max_attempts

    def resend(self) -> None:
        """A hedge or a re-dispatch was sent: no further copy while attempts may still run."""
        self._resent = True
