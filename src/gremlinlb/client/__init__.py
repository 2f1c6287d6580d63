"""The in-process client: gremlinpython adapters around the core."""

from gremlinlb.client.remote_connection import PinnedSession, RoundRobinClientRemoteConnection

__all__ = ["PinnedSession", "RoundRobinClientRemoteConnection"]
