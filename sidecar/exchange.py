"""One client request across its attempts: the `Exchange`, and each `Attempt` on a host.

An exchange is what the client asked once; an attempt is one try of it on one host (the
first, a retry, a hedge, a re-dispatch), the sink its backend connection delivers answer
frames to. Reads may have more than one attempt in flight: the first attempt to answer owns
the request (`Exchange.owner`); the others become orphans whose answers are read and dropped,
so their leases still end with a real latency.

The life of an exchange (`ExchangeState`, allowed moves in `TRANSITIONS`):

    STARTED --an attempt written--> SENT
    STARTED | SENT --> ANSWERED | FAILED | WITHDRAWN | ABANDONED   (ANSWERED only from SENT)

Two moments, named apart: the exchange is `replied` once the client has its final frame (or
nobody is left to get one: `reply` records which of the four it was), and `ended` once
`Proxy.end` did its bookkeeping, which happens exactly once per exchange. They coincide except
while attempts still run (a session statement's task resumes a loop turn later; at shutdown
the sidecar answers first and the attempts end when their connections close).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gremlinlb.sidecar import answers, frames
from gremlinlb.sidecar.answers import (
    AnswerTooLargeError,
    ClientLeftError,
    StatusError,
    answer_outcome,
)
from gremlinlb.sidecar.frames import Request, ResponseHeader
from gremlinlb.sidecar.neptune_retry import status_message
from gremlinlb.sidecar.sources import answer_says_source_unknown, request_source

from gremlinlb.core import AttemptLimit, ConnectionFailure, Endpoint, Lease, Outcome
from gremlinlb.core.neptune_errors import NeptuneVerdict, classify
from gremlinlb.core.sources import INVALID_REQUEST_ARGUMENTS

if TYPE_CHECKING:
    from gremlinlb.sidecar.clients import ClientConnection


class ExchangeState(enum.Enum):
    """Where one client request stands; the last four are final, reached through `Proxy.end`."""

    STARTED = "started"  # waiting for a host, a connection or a retry; nothing written yet
    SENT = "sent"  # an attempt was written to a server: it may run there
    ANSWERED = "answered"  # the client got a server's final frame (success or its error)
    FAILED = "failed"  # the client got a final error the sidecar wrote (answers.py)
    WITHDRAWN = "withdrawn"  # its client left before it was (re-)sent: never sent again
    ABANDONED = "abandoned"  # its client left, then it ended (a server's answer or an error
    # of the sidecar's) with nobody to give the reply to: the reply was dropped

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        ExchangeState.ANSWERED,
        ExchangeState.FAILED,
        ExchangeState.WITHDRAWN,
        ExchangeState.ABANDONED,
    }
)

#: The moves an exchange may make. A server can only have answered what was sent; anything
#: else may end before a send (no host, its client left, a bug) as after one.
TRANSITIONS: dict[ExchangeState, frozenset[ExchangeState]] = {
    ExchangeState.STARTED: frozenset(_FINAL - {ExchangeState.ANSWERED} | {ExchangeState.SENT}),
    ExchangeState.SENT: _FINAL,
    **{final: frozenset() for final in _FINAL},
}


def may_become(state: ExchangeState, new: ExchangeState) -> bool:
    """Whether an exchange in `state` may move to `new` (see TRANSITIONS)."""
    return new in TRANSITIONS[state]


class Exchange:
    """One client request, across its attempts (a retry, a hedge, a re-dispatch)."""

    __slots__ = (
        "_budget",
        "client",
        "deadline_timer",
        "final",
        "forwarded",
        "hedge_armed",
        "held",
        "last_error",
        "live",
        "max_attempts",
        "owner",
        "read_only",
        "reply",
        "request",
        "rerouted",
        "sent",
        "sent_at",
        "sent_attempts",
        "source",
        "started",
        "tasks",
        "tried",
    )

    def __init__(
        self, client: ClientConnection, request: Request, read_only: bool, max_attempts: int
    ) -> None:
        self.client = client
        self.request = request
        self.read_only = read_only
        self.source = request_source(request)  # the traversal source it names (None: default)
        self.started = time.monotonic()
        self.forwarded = False  # a frame reached the client: committed to `owner`
        self.sent = False  # some attempt was written to a backend (STARTED -> SENT)
        # What the client got as its final frame, or why it gets none (a final state).
        self.reply: ExchangeState | None = None
        self.final: ExchangeState | None = None  # how it ended: set by Proxy.end only
        self.live: list[Attempt] = []  # attempts whose answer would still reach the client
        self.owner: Attempt | None = None  # the attempt whose answer the client gets
        self.tried: list[Endpoint] = []
        self.max_attempts = max_attempts
        self._budget: AttemptLimit | None = None  # made when first asked (most never are)
        self.sent_attempts: list[Attempt] = []  # handed to a backend connection
        self.sent_at = 0.0  # when its first attempt was sent: request_timeout runs from here
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.held: tuple[bytes | str, ResponseHeader] | None = None  # a 429/596 to give back
        self.last_error: BaseException | None = None
        self.rerouted = False  # a write refused by a reader was sent to the new writer
        self.hedge_armed = False  # its hedge check is queued (Resender.hedges)
        # Tasks waiting for a host or a connection for it, nothing of theirs sent yet: what
        # is cancelled when its client leaves. Made on the first; most requests never wait.
        self.tasks: set[asyncio.Task[None]] | None = None

    @property
    def state(self) -> ExchangeState:
        if self.final is not None:
            return self.final
        return ExchangeState.SENT if self.sent else ExchangeState.STARTED

    @property
    def budget(self) -> AttemptLimit:
        """Every attempt of it, of every kind, counts against max_attempts (see
        AttemptLimit). Made on the first retry or hedge decision: most requests make none."""
        if self._budget is None:
            self._budget = AttemptLimit(self.max_attempts)
        return self._budget

    @property
    def replied(self) -> bool:
        """The client has its final frame, or nobody is left to get one: nothing more of any
        attempt reaches it."""
        return self.reply is not None

    @property
    def ended(self) -> bool:
        """`Proxy.end` did its bookkeeping (slot, bytes, timers, metrics): once only."""
        return self.final is not None

    def settle(self) -> ExchangeState:
        """How it ends by what its client got: its reply, or (none) WITHDRAWN before a send
        and ABANDONED after one."""
        if self.reply is not None:
            return self.reply
        return ExchangeState.ABANDONED if self.sent else ExchangeState.WITHDRAWN

    def received(self) -> int:
        """How many of its attempts a server received (written, whatever came of them)."""
        return sum(1 for a in self.sent_attempts if a.written)

    def carried(self) -> bool:
        """Some attempt of it was written and has not ended: it ends on its own."""
        return any(a.written and not a.ended for a in self.live)

    def forward(self, frame: bytes | str, header: ResponseHeader) -> None:
        """Pass a server's answer frame on, with the client's id; its final one is the reply."""
        if self.reply is not None:
            return
        self.forwarded = True
        if header.final:
            self._replied(ExchangeState.ANSWERED)
        self.client.send(frames.with_response_id(frame, header, self.request.request_id))

    def answer_error(self, code: int, message: str) -> None:
        """Reply with a final error of the sidecar's own (answers.py), unless replied."""
        if self.reply is not None:
            return
        self._replied(ExchangeState.FAILED)
        self.client.send_error(self.request.channel, self.request.request_id, code, message)

    def withdraw(self) -> None:
        """Its client left before it was (re-)sent: it gets no reply."""
        if self.reply is None:
            self.reply = ExchangeState.WITHDRAWN

    def _replied(self, how: ExchangeState) -> None:
        self.reply = ExchangeState.ABANDONED if self.client.closed else how


class Attempt:
    """One try of an exchange on one host: the sink its backend connection delivers to.

    Only the exchange's owner (the first attempt to answer) reaches the client. Any other
    attempt (a hedge that lost, one re-dispatched away from an ejected host) is an orphan: its
    answer is read and dropped, and its lease ends then, so the core still learns its latency.
    """

    __slots__ = (
        "ended",
        "endpoint",
        "error",
        "exchange",
        "held",
        "last_activity",
        "lease",
        "neptune",
        "on_end",
        "orphaned",
        "outcome",
        "report",
        "result",
        "written",
    )

    def __init__(
        self,
        exchange: Exchange,
        lease: Lease,
        report: Callable[[Lease, Outcome, BaseException | None], None],
        on_end: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.lease = lease
        self.endpoint = lease.endpoint
        self.report = report
        # Either someone awaits `result` (sessions) or `on_end` is called in place (every
        # other request: no task is spent on a request that succeeds at once).
        self.on_end = on_end
        self.result: asyncio.Future[Outcome] | None = (
            None if on_end is not None else asyncio.get_running_loop().create_future()
        )
        self.outcome: Outcome | None = None
        self.written = False
        self.last_activity = 0.0  # stamped by BackendConnection.send: the timeout starts there
        self.ended = False
        self.orphaned = False
        self.error: BaseException | None = None
        self.held: tuple[bytes | str, ResponseHeader] | None = None
        self.neptune: NeptuneVerdict | None = None  # Neptune's own error, if it answered one

    def _lost_the_race(self) -> bool:
        exchange = self.exchange
        return self.orphaned or exchange.replied or exchange.owner not in (None, self)

    def _own(self) -> None:
        exchange = self.exchange
        if exchange.owner is None:
            exchange.owner = self
            if self.lease.hedge:
                exchange.client.proxy.balancer.hedge_won(self.lease)

    def on_frame(self, frame: bytes | str, header: ResponseHeader) -> None:
        self.last_activity = time.monotonic()
        if self._lost_the_race():
            if header.final:
                self._end(answer_outcome(header.code), None)
            return
        if not header.final:
            self._own()  # a 206 went out: the request is committed to this attempt
            self.exchange.forward(frame, header)
            return
        outcome = answer_outcome(header.code)
        if header.code == INVALID_REQUEST_ARGUMENTS and self._source_elsewhere(frame):
            outcome = Outcome.OVERLOADED  # refused before it ran: retried like a 429
        elif outcome is Outcome.SERVER_ERROR:
            outcome = self._neptune_outcome(frame, header, outcome)
        if outcome is Outcome.OVERLOADED:
            error = StatusError(self.endpoint, header.code)
            if not self.exchange.forwarded:
                self.held = (frame, header)  # the retry decides whether the client sees it
            else:
                self.exchange.forward(frame, header)
            self._end(outcome, error)
            return
        self._own()
        self.exchange.forward(frame, header)
        self._end(outcome, None)

    def _neptune_outcome(
        self, frame: bytes | str, header: ResponseHeader, outcome: Outcome
    ) -> Outcome:
        """Neptune's own error (core.neptune_errors): OVERLOADED where a re-send is allowed
        (the answer is held: the retry decides whether the client sees it), else unchanged."""
        self.neptune = classify(header.code, status_message(frame, self.exchange.request.channel))
        if self.neptune is None:
            return outcome
        return self.neptune.outcome(self.exchange.read_only)

    def on_failure(self, error: ConnectionFailure) -> None:
        self._end(error.outcome, error)

    def _source_elsewhere(self, frame: bytes | str) -> bool:
        """This host refused the request for lacking its traversal source (nothing ran): note
        that, and say whether a healthy host that may serve the source can take it instead.
        When none can, the client gets this server's own error."""
        exchange = self.exchange
        if exchange.forwarded or not answer_says_source_unknown(frame):
            return False
        balancer = exchange.client.proxy.balancer
        source = exchange.source or balancer.sources.default
        balancer.sources.record(self.endpoint, source, served=False)
        return balancer.serves_elsewhere(source, [*exchange.tried, self.endpoint])

    def on_oversize(self, size: int, limit: int) -> None:
        exchange = self.exchange
        incomplete = exchange.forwarded
        error = AnswerTooLargeError(
            f"{self.endpoint.address} answered with a {size}-byte frame, over the sidecar's "
            f"limit of {limit} bytes (max_message_bytes)"
        )
        if not self._lost_the_race():
            self._own()
            exchange.answer_error(*answers.too_large(error, incomplete))
        self._end(Outcome.CLIENT_ERROR, error)

    def _end(self, outcome: Outcome, error: BaseException | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.error = error
        self.outcome = outcome
        self.report(self.lease, outcome, error)
        if not isinstance(error, ClientLeftError):  # not how the host did
            sample = not self.lease.session and outcome is not Outcome.NOT_SENT
            self.exchange.client.proxy.metrics.count_request(
                self.endpoint, outcome, time.monotonic() - self.lease.started if sample else None
            )
        if self.on_end is not None:
            self.on_end(self)
        elif self.result is not None and not self.result.done():
            self.result.set_result(outcome)
