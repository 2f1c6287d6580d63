"""Amazon Neptune's own errors: what each answer means for a retry and for its host.

Neptune answers a failed Gremlin request with an error status (500 for most, e.g.
`ConcurrentModificationException`) whose status *message* is a JSON object with `code`,
`requestId` and `detailedMessage` (docs/neptune-errors.md has the sources). The rules, each a
row of the README's failure table:

- `ConcurrentModificationException`: the transaction was rolled back (nothing applied), so
  the request is retried on the writer after an exponential backoff with full jitter, within
  the request's AttemptLimit and the fleet's RetryBudget; when those run out the client gets
  Neptune's answer unchanged.
- `ReadOnlyViolationException` on a request that may write: it reached a reader (a failover
  moved the writer); nothing was written. The adapter asks its topology source to read the
  cluster at once and re-sends the write, once, to the writer the topology then names, if
  that is another host and the request's deadline allows; otherwise the answer is unchanged.
- Throttling (`ThrottlingException`, `TooManyRequestsException`, `MemoryLimitExceededException`,
  `QueryLimitExceededException`): backpressure, not a failure: never evidence against the host.
  A read is retried on another host like a Gremlin 429; a write is not (Neptune does not
  document those as never executed) and gets the answer unchanged.

Only what Neptune says did not apply is re-sent: a write never runs twice. Pure: no I/O.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable

from gremlinlb.core.endpoints import Endpoint, Role
from gremlinlb.core.outcomes import Outcome

CONCURRENT_MODIFICATION = "ConcurrentModificationException"
READ_ONLY_VIOLATION = "ReadOnlyViolationException"
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "MemoryLimitExceededException",
        "QueryLimitExceededException",
    }
)

# The backoff before the n-th retry after a conflict: uniform in [0, min(CAP, BASE * 2**(n-1))]
# ("full jitter": conflicting writers spread out instead of colliding again in step).
CONFLICT_BACKOFF_BASE = 0.05
CONFLICT_BACKOFF_CAP = 1.0
# A write refused by a reader waits for the topology to name another writer, reading the
# cluster again at most this often, until its deadline.
REROUTE_RECHECK = 0.5

_MAX_MESSAGE = 64 * 1024  # a Neptune error message is small; anything larger is not one


class NeptuneVerdict(enum.Enum):
    """What a Neptune error answer means (None from `classify`: not one of these)."""

    CONFLICT = "conflict"  # ConcurrentModificationException: rolled back, retry on the writer
    READ_ONLY = "read_only"  # ReadOnlyViolationException: a write reached a reader
    THROTTLED = "throttled"  # backpressure: the host is fine

    def outcome(self, read_only: bool) -> Outcome:
        """How the attempt counts: OVERLOADED (an answer, no evidence against the host, a
        retry costs the extra-request budget) where a re-send is allowed, SERVER_ERROR (the
        answer goes to the client unchanged, the host is fine) where it is not."""
        if self is NeptuneVerdict.THROTTLED and not read_only:
            return Outcome.SERVER_ERROR
        if self is NeptuneVerdict.READ_ONLY and read_only:
            return Outcome.SERVER_ERROR  # not Neptune's case; nothing to re-route
        return Outcome.OVERLOADED


def neptune_code(message: str | None) -> str | None:
    """The `code` of Neptune's JSON status message; None for any other message."""
    if not message or len(message) > _MAX_MESSAGE:
        return None
    text = message.strip()
    if not text.startswith("{"):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def classify(status: int, message: str | None) -> NeptuneVerdict | None:
    """The verdict on a final answer with `status` and status `message`; None when it is not
    a Neptune error this module has a rule for (the generic rules apply)."""
    if status < 400:  # 200, 204, 206, 407: not an error
        return None
    code = neptune_code(message)
    if code == CONCURRENT_MODIFICATION:
        return NeptuneVerdict.CONFLICT
    if code == READ_ONLY_VIOLATION:
        return NeptuneVerdict.READ_ONLY
    if code in THROTTLING_CODES:
        return NeptuneVerdict.THROTTLED
    return None


def conflict_backoff(retry: int, draw: float) -> float:
    """Seconds to wait before the `retry`-th (1, 2, ...) retry after a conflict; `draw` is a
    uniform random number in [0, 1) (the adapter's `random.random()`)."""
    ceiling = min(CONFLICT_BACKOFF_CAP, CONFLICT_BACKOFF_BASE * 2.0 ** max(0, retry - 1))
    return draw * ceiling


def new_writer(refused: Endpoint, hosts: Iterable[Endpoint]) -> Endpoint | None:
    """A writer the topology names other than `refused` (the host that answered a write with
    ReadOnlyViolationException); None while it names none."""
    for host in hosts:
        if host.role is Role.WRITER and host != refused:
            return host
    return None
