"""The in-process client: gremlinpython adapters around the core."""

from gremlinlb.client.errors import AnswerNotReadableError
from gremlinlb.client.remote_connection import RoundRobinClientRemoteConnection
from gremlinlb.client.session import PinnedSession

__all__ = ["AnswerNotReadableError", "PinnedSession", "RoundRobinClientRemoteConnection"]
