"""Errors of one request's answer that say nothing about the server that sent it."""

from __future__ import annotations

from gremlinlb.core import GremlinLBError, Outcome


class AnswerNotReadableError(GremlinLBError):
    """The server answered, but this client could not read the answer.

    A type gremlinpython cannot decode (e.g. the Tree of `tree()`), an answer over the size
    limit, or an error frame that names no request: the request's own problem. The host is
    not marked and the request is not retried (it ran; running it elsewhere gives the same).
    """

    outcome = Outcome.CLIENT_ERROR

    def __init__(self, url: str, problem: str, advice: str) -> None:
        super().__init__(
            f"the answer from {url} could not be read: {problem}. The request was sent and ran "
            f"on the server, which is fine and stays in rotation; {advice}"
        )
        self.url = url
