"""What happened to one attempt, and what that means for the host and for a retry.

The rule that keeps retries safe: only a request that certainly did not run, or that cannot
write, may run again.
"""

from __future__ import annotations

import enum

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

    @property
    def marks_host_down(self) -> bool:
        return self in (Outcome.NOT_SENT, Outcome.CONNECTION_LOST, Outcome.TIMEOUT)

    @property
    def may_have_executed(self) -> bool:
        return self in (Outcome.CONNECTION_LOST, Outcome.TIMEOUT)


class ConnectionFailure(ConnectionError):
    """A connection-level failure of one attempt, tagged with what it means for a retry.

    Adapters raise the subclass that says how far the request got; the core's rules then decide
    whether the host goes down and whether another host may be tried.
    """

    outcome: Outcome = Outcome.CONNECTION_LOST


class NotSentError(ConnectionFailure):
    """Nothing of the request left this process (refused, handshake failed, socket closed)."""

    outcome = Outcome.NOT_SENT


class ConnectionLostError(ConnectionFailure):
    """The request was (maybe partly) sent, then the connection broke."""

    outcome = Outcome.CONNECTION_LOST


class ResponseTimeoutError(ConnectionFailure):
    """The request was sent and no answer came within the request timeout."""

    outcome = Outcome.TIMEOUT


def may_retry(outcome: Outcome, read_only: bool) -> bool:
    """Whether another host may be tried after this outcome."""
    if outcome in (Outcome.SUCCESS, Outcome.SERVER_ERROR):
        return False
    if outcome.may_have_executed:
        return read_only
    return True


class RetryBudget:
    """How many more attempts a request may make.

    `max_attempts` bounds attempts that cost a server work or may be the request's own fault:
    overload answers and timeouts (a slow query must not walk through every host and take each
    one down). Attempts that failed because the host itself failed at the connection level
    (refused, or the connection broke) take that host out of rotation; once no host is left the
    request waits in the buffer instead of failing, so a total outage loses nothing that may be
    retried. Those are bounded separately, so a host that flaps cannot loop a request forever.
    """

    def __init__(self, max_attempts: int, host_count: int) -> None:
        self._answered_left = max_attempts - 1
        self._host_failures_left = 2 * max(host_count, 1) + max_attempts

    def allows_another(self, outcome: Outcome) -> bool:
        """Record a failed attempt; True if one more may be made."""
        if outcome in (Outcome.NOT_SENT, Outcome.CONNECTION_LOST):
            self._host_failures_left -= 1
            return self._host_failures_left > 0
        self._answered_left -= 1
        return self._answered_left >= 0
