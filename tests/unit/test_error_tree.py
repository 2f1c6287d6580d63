"""One error tree (issue 23): every error gremlinlb raises on purpose is a GremlinLBError, and
every timeout is also a TimeoutError, so `except GremlinLBError` and `except TimeoutError` both
catch what the README says the client raises (aiohttp's ServerTimeoutError pattern)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import pkgutil
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest
from aiohttp import web

import gremlinlb
from gremlinlb.client.transport import PhaseTaggedTransport
from gremlinlb.core import GremlinLBError, ResponseTimeoutError
from gremlinlb.core.errors import BufferTimeoutError
from tests.helpers import serve_on_loopback

# Exception classes that never reach a caller, each with why. Nothing else belongs here.
NOT_ERRORS: frozenset[str] = frozenset(
    {
        # Control flow inside the write check's decoders; frame_may_write catches it.
        "gremlinlb.core.readonly._MayWrite",
    }
)


def modules() -> Iterator[ModuleType]:
    """Every module of gremlinlb, the sidecar and the operator (a namespace package, walked by
    its own path)."""
    packages = [gremlinlb, importlib.import_module("gremlinlb.operator")]
    seen: set[str] = set()
    for package in packages:
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name not in seen:
                seen.add(info.name)
                yield importlib.import_module(info.name)


def defined_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in modules():
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


def test_the_walk_sees_every_part() -> None:
    names = {cls.__module__ for cls in defined_exceptions()}
    for part in (
        "gremlinlb.core.",
        "gremlinlb.client.",
        "gremlinlb.sidecar.",
        "gremlinlb.operator.",
    ):
        assert any(name.startswith(part) for name in names), part


def test_every_exception_defined_is_a_gremlinlb_error() -> None:
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in defined_exceptions()
        if not issubclass(cls, GremlinLBError)
        and f"{cls.__module__}.{cls.__qualname__}" not in NOT_ERRORS
    ]
    assert strays == []


def test_every_timeout_is_a_timeout_error() -> None:
    timeouts = [cls for cls in defined_exceptions() if "Timeout" in cls.__name__]
    assert timeouts, "the walk found no timeout class"
    assert [cls.__qualname__ for cls in timeouts if not issubclass(cls, TimeoutError)] == []


@pytest.mark.parametrize(
    ("name", "second"),
    [
        ("gremlinlb.core.errors.InvalidEndpointError", ValueError),
        ("gremlinlb.core.errors.UnknownEndpointError", LookupError),
        ("gremlinlb.core.outcomes.NotSentError", ConnectionError),
        ("gremlinlb.core.outcomes.ConnectionLostError", ConnectionError),
        ("gremlinlb.core.outcomes.ResponseTimeoutError", ConnectionError),
        ("gremlinlb.sidecar.config.ConfigError", ValueError),
        ("gremlinlb.sidecar.hostlist.BadUpdateError", ValueError),
        ("gremlinlb.sidecar.frames.MalformedFrameError", ValueError),
        ("gremlinlb.schema.SettingsError", ValueError),
        ("gremlinlb.operator.spec.SpecError", ValueError),
        ("gremlinlb.devservers.errors.DevServerError", RuntimeError),
    ],
)
def test_second_bases_are_kept(name: str, second: type[BaseException]) -> None:
    """Existing `except ValueError` / `except ConnectionError` clauses still catch them."""
    module, _, attribute = name.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), attribute), second)


def test_except_gremlinlb_error_catches_the_clients_response_timeout() -> None:
    """The README: a read with no answer within request_timeout raises ResponseTimeoutError."""
    with pytest.raises(GremlinLBError):
        raise ResponseTimeoutError("no answer within 30s")
    with pytest.raises(TimeoutError):
        raise ResponseTimeoutError("no answer within 30s")


@contextlib.contextmanager
def silent_gremlin_server() -> Iterator[str]:
    """A WebSocket endpoint that accepts a request and never answers; yields its URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    address: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass  # read and never answer
        return ws

    async def serve() -> web.AppRunner:
        runner, port = await serve_on_loopback("/gremlin", handler)
        address.append(f"ws://127.0.0.1:{port}/gremlin")
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield address[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_except_gremlinlb_error_catches_the_client_transports_read_timeout() -> None:
    """The client's own path: a request sent, no answer within the read timeout."""
    transport = PhaseTaggedTransport(connect_timeout=5, read_timeout=0.2, write_timeout=5)
    with silent_gremlin_server() as url:
        transport.connect(url)
        transport.write(b"\x00request")
        caught: BaseException | None = None
        try:
            transport.read()
        except GremlinLBError as error:
            caught = error
        finally:
            transport.close()
    assert isinstance(caught, ResponseTimeoutError)
    assert isinstance(caught, TimeoutError)


def test_except_gremlinlb_error_catches_the_buffer_timeout() -> None:
    error = BufferTimeoutError("no Gremlin Server became healthy within max_wait=1s")
    assert isinstance(error, GremlinLBError)
    assert isinstance(error, TimeoutError)
    assert str(error) == "no Gremlin Server became healthy within max_wait=1s"
