"""`gremlinlb demo`: the in-process balancer on three real local Gremlin Servers, in plain words.

Every answer is read back from the servers themselves: each holds one `server` vertex with its
own address, so "answered by" is what the server said, not what the balancer believes.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource

from gremlinlb.client import RoundRobinClientRemoteConnection
from gremlinlb.core import BalancerSettings, HealthCheckSettings
from gremlinlb.devservers import Fleet, GremlinServerProcess

HEALTH_INTERVAL = 2.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="show balancing, failover, recovery, scale-out and a hung server on local servers",
        description=__doc__,
    )
    parser.add_argument("--base-port", type=int, default=8181, help="first server port")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # gremlinpython logs every error answer with its whole results table; the late answers of
    # abandoned attempts (step 7) are expected and handled, not news for the person watching.
    logging.getLogger("gremlinpython").setLevel(logging.CRITICAL)
    # The demo takes servers down on purpose and narrates each transition itself; at the
    # default level the balancer's warnings about them would only repeat the narrative.
    # Asking for INFO or DEBUG (make demo DEMO_LOG_LEVEL=INFO) shows them again.
    balancer_log = logging.getLogger("gremlinlb.core.balancer")
    if balancer_log.getEffectiveLevel() >= logging.WARNING:
        balancer_log.setLevel(logging.ERROR)
    say = _Narrator()
    say.step("Starting 3 Apache TinkerPop Gremlin Servers on 127.0.0.1 (real JVMs)...")
    with Fleet(3, base_port=args.base_port) as fleet:
        for server in fleet:
            server.add_name_vertex()
        say.line("ready: " + ", ".join(fleet.addresses))

        settings = BalancerSettings(
            health=HealthCheckSettings(interval=HEALTH_INTERVAL, timeout=2.0, rise=1, fall=1),
            request_timeout=5.0,
            connect_timeout=2.0,
        )
        rr = RoundRobinClientRemoteConnection(fleet.addresses, settings=settings)
        try:
            _wait_for(lambda: all(rr.get_available().values()), 30)
            say.line("each host joined once its first probe passed (joining -> healthy)")
            g = traversal().with_(rr)
            _round_robin(say, g)
            _failover(say, g, rr, fleet[1])
            _scale_out(say, g, rr, fleet)
            _transaction(say, g, fleet)
            _outage(say, g, rr, fleet)
            _hung(say, g, rr, fleet)
        finally:
            rr.close()
        say.step("Stopping the servers.")
    say.step(f"Done in {say.elapsed():.0f} s.")
    return 0


def _round_robin(say: _Narrator, g: GraphTraversalSource) -> None:
    say.step("1. Six traversals through one RoundRobinClientRemoteConnection:")
    for i in range(6):
        say.line(f"traversal {i + 1} answered by {_who(g)}")


def _failover(
    say: _Narrator,
    g: GraphTraversalSource,
    rr: RoundRobinClientRemoteConnection,
    victim: GremlinServerProcess,
) -> None:
    say.step(f"2. Killing {victim.address} (SIGKILL), then running 9 read-only traversals:")
    victim.kill()
    answers = Counter(_who(g) for _ in range(9))
    say.line(f"answers: {dict(answers)}; failed reads: 0 (the balancer retried and skipped it)")
    say.line(f"{victim.address} available: {rr.get_available()[victim.url]}")

    health = rr.balancer.settings.health
    say.step(
        f"3. Restarting {victim.address}; a down host is probed every "
        f"{health.unhealthy_interval:g} s (healthy ones every {health.interval:g} s)."
    )
    victim.restart()
    victim.add_name_vertex()
    back = time.monotonic()
    _wait_for(lambda: rr.get_available()[victim.url], 30)
    say.line(f"back in rotation {time.monotonic() - back:.1f} s after it could answer")
    say.line("next 3 traversals answered by " + ", ".join(_who(g) for _ in range(3)))


def _scale_out(
    say: _Narrator, g: GraphTraversalSource, rr: RoundRobinClientRemoteConnection, fleet: Fleet
) -> None:
    say.step("4. Starting a 4th server and adding it at runtime with add_host():")
    fourth = fleet.add()
    fourth.add_name_vertex()
    rr.add_host(fourth.address)
    _wait_for(lambda: rr.get_available()[fourth.url], 30)  # its first probe
    answers = Counter(_who(g) for _ in range(8))
    say.line(f"8 traversals: {dict(answers)}")
    say.line(
        f"{fourth.address} received {answers[fourth.address]} of them: it takes requests once "
        f"its first probe passed, and ramps up to a full share over slow_start="
        f"{rr.balancer.settings.slow_start:g} s"
    )


def _transaction(say: _Narrator, g: GraphTraversalSource, fleet: Fleet) -> None:
    say.step("5. A transaction (g.tx()) stays on one server from begin to commit:")
    tx = g.tx()
    gtx = tx.begin()
    for i in range(3):
        gtx.add_v("order").property("line", i).iterate()
    tx.commit()
    for server in fleet:
        count = _direct(server, lambda s: s.V().has_label("order").count().next())
        say.line(f"{server.address} holds {count} committed order vertices")


def _outage(
    say: _Narrator, g: GraphTraversalSource, rr: RoundRobinClientRemoteConnection, fleet: Fleet
) -> None:
    say.step("6. Every server down at once: requests wait in the bounded buffer, nothing is lost.")
    for server in fleet:
        server.kill()
    pending = [rr.submit_async(g.inject(i).bytecode) for i in range(5)]
    _wait_for(lambda: rr.balancer.buffered == len(pending), 30)
    say.line(f"{rr.balancer.buffered} requests waiting (bounds: max_elements, max_bytes, max_wait)")
    down_since = time.monotonic()
    fleet[0].restart()
    results = [[t.object for t in future.result(timeout=60).traversers] for future in pending]
    say.line(
        f"{fleet[0].address} restarted; all {len(results)} answered, in order: {results} "
        f"({time.monotonic() - down_since:.1f} s after the restart began)"
    )


def _hung(
    say: _Narrator, g: GraphTraversalSource, rr: RoundRobinClientRemoteConnection, fleet: Fleet
) -> None:
    say.step("7. A hung server (SIGSTOP) while 4 threads read: it still accepts connections.")
    rr.remove_host(fleet[3].address)
    for server in fleet[1:3]:
        server.start()
    for server in fleet[1:3]:
        server.wait_ready()
        server.add_name_vertex()
    _wait_for(lambda: all(rr.get_available().values()), 30)
    for i in range(30):
        g.inject(i).to_list()  # recent latencies: the hedge delay adapts to them
    hung = fleet[2]
    hung.pause()
    slowest = [0.0]
    failed: list[BaseException] = []

    def reads() -> None:
        for i in range(50):
            started = time.monotonic()
            try:
                g.inject(i).to_list()
            except Exception as error:
                failed.append(error)
            slowest[0] = max(slowest[0], time.monotonic() - started)

    threads = [threading.Thread(target=reads) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = {h.endpoint.address: h for h in rr.hosts()}[hung.address]
    stats = rr.balancer.stats()
    say.line(
        f"200 reads: {200 - len(failed)} answered, {len(failed)} failed; the slowest took "
        f"{slowest[0]:.2f} s"
    )
    say.line(
        f"{hung.address} is {status.state.value} (ejected {status.ejections}x, by reason: "
        f"{stats.ejections}); hedged reads: {stats.hedges_sent} sent, {stats.hedges_won} won"
    )
    hung.resume()
    say.line("resumed: its late answers to the abandoned attempts are read and discarded")


def _who(g: GraphTraversalSource) -> str:
    name: str = g.V().has_label("server").values("name").next()
    return name


def _direct(server: GremlinServerProcess, work: Callable[[GraphTraversalSource], object]) -> object:
    connection = DriverRemoteConnection(server.url, "g")
    try:
        return work(traversal().with_(connection))
    finally:
        connection.close()


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(0.05)


class _Narrator:
    """Plain-words output for a person watching the demo."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def step(self, text: str) -> None:
        print(f"\n{text}", flush=True)

    def line(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self._started
