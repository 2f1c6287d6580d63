"""The one-Service kube-proxy of a devcluster pod: the ``kubernetes`` Service's cluster IP,
reached from inside the pod's network namespace."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading

from tests.devcluster.errors import NetnsError
from tests.devcluster.netns import NetnsHost, find_ip_tool

_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


class ServiceForwarder:
    """Inside one pod's namespace, ``service_ip:port`` leads to ``127.0.0.1:target_port`` on
    the host: the one Service (``kubernetes``) in-cluster clients need, without kube-proxy."""

    def __init__(self, host: NetnsHost, service_ip: str, port: int, target_port: int) -> None:
        self.host = host
        self.service_ip = service_ip
        self.port = port
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        subprocess.run(
            [
                find_ip_tool(),
                "-n",
                self.host.name,
                "addr",
                "add",
                f"{self.service_ip}/32",
                "dev",
                "lo",
            ],
            check=True,
            capture_output=True,
            timeout=20,
        )
        thread = threading.Thread(target=self._serve, name=f"svc-{self.host.name}", daemon=True)
        thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise NetnsError(f"service forwarder in {self.host.name}: {self._error}")

    def _serve(self) -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.host.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.service_ip, self.port))
                listener.listen(64)
                listener.settimeout(0.5)
            finally:
                _setns(own)  # connections to the apiserver leave from the host's namespace
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        finally:
            os.close(own)
            os.close(target)
        self._listener = listener
        self._ready.set()
        with listener:
            while not self._closed.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                except OSError:
                    conn.close()
                    continue
                conn.settimeout(None)
                upstream.settimeout(None)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
