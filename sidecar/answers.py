"""The answers the sidecar writes itself, and how a server's answer counts.

A backend failure never closes the client's socket (gremlinpython never reconnects one): the
request gets a final error frame with its own id instead. Every such frame's status and text
is made here, so what a client reads for each way a request can fail is in one place (the
table "Error codes the sidecar writes" in sidecar/README.md): 596 may be retried (the message
says whether it was sent at all), 598 is request_timeout (never re-sent), 500 may have been
applied.
"""

from __future__ import annotations

from gremlinlb.sidecar import frames

from gremlinlb.core import (
    OVERLOAD_STATUS_CODES,
    BufferFullError,
    BufferTimeoutError,
    ConnectionFailure,
    Endpoint,
    GremlinLBError,
    Outcome,
)

#: Every message the sidecar writes starts with this, so a reader knows who said it.
PREFIX = "gremlinlb sidecar: "

#: Outcomes whose answer (or error frame) the client already has.
ANSWERED = (Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.OVERLOADED, Outcome.CLIENT_ERROR)

#: An answer: the status code and the message of a final error frame.
Answer = tuple[int, str]


class StatusError(GremlinLBError):
    """A backend's own answer (429/596) recorded as the error of an attempt."""

    def __init__(self, endpoint: Endpoint, code: int) -> None:
        super().__init__(f"{endpoint.address} answered status {code}")
        self.code = code


class AnswerTooLargeError(GremlinLBError):
    """An answer frame over max_message_bytes: the request's own failure, not its host's."""


class ClientLeftError(ConnectionFailure):
    """The client left: its requests not yet sent are withdrawn (never sent), and a session
    statement in flight ends with the session. Says nothing about any host."""

    outcome = Outcome.CLIENT_ERROR


def answer_outcome(code: int) -> Outcome:
    """How a server's final status counts for its host and for a retry."""
    if code in OVERLOAD_STATUS_CODES:
        return Outcome.OVERLOADED
    return Outcome.SUCCESS if code in (frames.SUCCESS, frames.NO_CONTENT) else Outcome.SERVER_ERROR


def retry_advice(sent: bool, read_only: bool) -> str:
    """What the client may do next, by whether the request reached a server and may write."""
    if not sent:
        return "it was not sent to any server and may be retried"
    if read_only:
        return "it was sent, but it is read-only and may be retried"
    return "it may or may not have been applied; check before re-running it"


def shutting_down(sent: bool, read_only: bool) -> Answer:
    """The balancer closed while the request waited for a host."""
    return (
        frames.SERVER_ERROR_TEMPORARY,
        "the sidecar is shutting down; " + retry_advice(sent, read_only),
    )


def no_host(error: BaseException | None, sent: bool, read_only: bool, max_wait: float) -> Answer:
    """No server could take the request: all tried, the buffer full, or its wait over."""
    if sent and isinstance(error, BufferTimeoutError):  # its text says "not sent"
        error = RuntimeError(f"no Gremlin Server became healthy within max_wait={max_wait}s")
    elif sent and isinstance(error, BufferFullError):
        error = RuntimeError("no Gremlin Server is healthy and the wait buffer is full")
    retry = read_only or not sent
    return (
        frames.SERVER_ERROR_TEMPORARY if retry else frames.SERVER_ERROR,
        f"no Gremlin Server could take the request ({error}); " + retry_advice(sent, read_only),
    )


def not_retried(
    endpoint: Endpoint, outcome: Outcome, error: BaseException, read_only: bool, timeout: float
) -> Answer:
    """A sent request that may not be re-sent: a timeout (read or write: a slow query would
    run once per server), or a lost connection under a request that may write."""
    if outcome is Outcome.TIMEOUT:
        return (
            frames.SERVER_TIMEOUT,
            f"the request was sent to {endpoint.address}, which gave no answer within "
            f"request_timeout={timeout:g}s ({error}). It was not re-sent elsewhere: a slow "
            "query would run once per server (Gremlin Server cannot cancel it), and it may "
            "still be running there. "
            + (
                "Raise request_timeout for slow queries, or make the query cheaper."
                if read_only
                else "It may or may not have been applied: check the graph before "
                "re-running it, or make it idempotent (mergeV/mergeE)."
            ),
        )
    return (
        frames.SERVER_ERROR,
        f"the request was sent to {endpoint.address}, which lost the connection ({error}). "
        "It may write, so it was not retried: it may or may not have been applied. Check "
        "the graph before re-running it, or make it idempotent (mergeV/mergeE).",
    )


def incomplete(endpoint: Endpoint, error: BaseException) -> Answer:
    """The attempt whose answer was being streamed failed midway."""
    return (
        frames.SERVER_ERROR,
        f"{endpoint.address} failed after part of the results was sent ({error}); the "
        "results are incomplete",
    )


def past_deadline(timeout: float, where: str, received: int) -> Answer:
    """request_timeout passed since the first send of a request that was re-sent."""
    return (
        frames.SERVER_TIMEOUT,
        f"no answer within request_timeout={timeout:g}s of the request's first send (sent "
        f"to {where}; {received} attempts in all). It was not re-sent further: "
        "a slow query would run once per server (Gremlin Server cannot cancel it), and it "
        "may still be running. Raise request_timeout for slow queries, or make the query "
        "cheaper.",
    )


def too_large(error: AnswerTooLargeError, incomplete: bool) -> Answer:
    """An answer frame over max_message_bytes was dropped."""
    dropped = "; the answer was dropped"
    if incomplete:
        dropped += " after part of the results was sent, so they are incomplete"
    return (
        frames.SERVER_ERROR,
        f"{error}{dropped}. Ask for less per request (limit(), range() paging, fewer "
        "properties), or raise --max-message-bytes here and in the client.",
    )


def internal(error: BaseException) -> Answer:
    """A bug in the sidecar: it costs one request, never the client's socket."""
    return frames.SERVER_ERROR, f"internal error: {error}"


def stopped(sent: bool) -> Answer:
    """The sidecar's grace period ended before the request was answered."""
    if sent:
        return (
            frames.SERVER_ERROR,
            "the sidecar stopped before the backend answered; the request may or may "
            "not have been applied",
        )
    return (
        frames.SERVER_ERROR_TEMPORARY,
        "the sidecar stopped before the request was sent; it may be retried",
    )


def no_session(error: BaseException) -> Answer:
    """The session's backend connection could not be opened: nothing was sent."""
    return (
        frames.SERVER_ERROR_TEMPORARY,
        f"could not open a session connection ({error}); nothing was sent",
    )


def session_was_lost(endpoint: Endpoint, broken: BaseException) -> Answer:
    """A later request on a client connection whose session connection broke earlier."""
    return (
        frames.SERVER_ERROR,
        f"the session connection to {endpoint.address} was lost ({broken}); "
        "Gremlin Server rolled back uncommitted work. Start a new transaction on a new "
        "connection.",
    )


def session_timeout(endpoint: Endpoint, error: BaseException | None, timeout: float) -> Answer:
    """A long statement in a session: this request's problem only, the session stays."""
    return (
        frames.SERVER_TIMEOUT,
        f"no answer from {endpoint.address} within request_timeout={timeout:g}s "
        f"({error}). The statement may still be running in the session, and "
        "may or may not have been applied; the session stays open (its next request "
        "runs once this one ends). Raise request_timeout for long statements.",
    )


def session_failed(endpoint: Endpoint, broken: BaseException) -> Answer:
    """The session's connection failed under this request."""
    return (
        frames.SERVER_ERROR,
        f"the session connection to {endpoint.address} failed ({broken}); Gremlin "
        "Server rolls back uncommitted work when it loses the connection, and this request "
        "may or may not have been applied. Start a new transaction on a new connection.",
    )
