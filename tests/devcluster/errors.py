"""Errors raised by the development control plane and its network namespaces."""

from __future__ import annotations


class DevClusterError(RuntimeError):
    """Base class: anything that stops the test control plane or its network from working."""


class BinariesMissingError(DevClusterError):
    """etcd, kube-apiserver or kubectl has not been built into the cache yet."""


class ControlPlaneStartError(DevClusterError):
    """etcd or kube-apiserver exited, or never became ready, during start-up."""


class NetnsError(DevClusterError):
    """A network namespace, bridge or veth pair could not be created, used or removed."""
