"""The JavaScript driver through the sidecar: it sends many requests at once on one connection.

gremlin (npm) 3.8.2 is installed into .cache/js by `make js-driver` (part of `make setup`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import BalancerSettings, HealthCheckSettings, parse_endpoint
from gremlinlb.devservers import GremlinServerProcess
from tests.driver_support import SPREAD_SPECS_OUTLIERS, count_on_each, running_sidecar
from tests.fleet_fixtures import free_port_block
from tests.roles_support import assert_reads_even, role_endpoints

pytestmark = pytest.mark.integration

NODE_MODULES = Path(__file__).resolve().parents[2] / ".cache" / "js" / "node_modules"

SCRIPT = r"""
const gremlin = require('gremlin');
const traversal = gremlin.process.AnonymousTraversalSource.traversal;
const { DriverRemoteConnection } = gremlin.driver;
const [url, mimeType, count] = process.argv.slice(2);

(async () => {
  const connection = new DriverRemoteConnection(url, { mimeType });
  const g = traversal().withRemote(connection);
  const indexes = [...Array(Number(count)).keys()];
  // All at once on the driver's single connection: the sidecar must route each answer.
  const values = await Promise.all(indexes.map((i) => g.inject(i).toList()));
  const names = await Promise.all(
    [...Array(30).keys()].map(() => g.V().hasLabel('server').values('name').toList()));
  const tx = g.tx();
  const gtx = tx.begin();
  await gtx.addV('js').property('mime', mimeType).iterate();
  const inside = await gtx.V().hasLabel('js').count().next();
  await tx.commit();
  await connection.close();
  console.log(JSON.stringify({
    values: values.map((r) => r[0]),
    names: names.map((r) => r[0]),
    inside: Number(inside.value),
  }));
})().catch((error) => { console.error(error); process.exit(1); });
"""


ROLES_SCRIPT = r"""
const gremlin = require('gremlin');
const traversal = gremlin.process.AnonymousTraversalSource.traversal;
const { DriverRemoteConnection, Client } = gremlin.driver;
const [url] = process.argv.slice(2);

(async () => {
  const connection = new DriverRemoteConnection(url);
  const g = traversal().withRemote(connection);
  const names = [];
  for (let batch = 0; batch < 10; batch++) {  // 20 at a time on the one connection
    names.push(...await Promise.all(
      [...Array(20).keys()].map(() => g.V().hasLabel('server').values('name').toList())));
  }
  for (let i = 0; i < 10; i++) {
    await g.addV('js_written').property('i', i).iterate();
    await g.inject(i).sideEffect(gremlin.process.statics.addV('js_nested')).iterate();
  }
  const tx = g.tx();
  const gtx = tx.begin();
  await gtx.addV('js_tx').iterate();
  const inside = await gtx.V().hasLabel('server').values('name').next();
  await tx.commit();
  await connection.close();
  const session = new Client(url, { traversalSource: 'g', session: 'roles-session' });
  const sessionName = await session.submit("g.V().hasLabel('server').values('name')");
  await session.close();
  console.log(JSON.stringify({
    names: names.map((r) => r[0]),
    inside: inside.value,
    session: sessionName.first(),
  }));
})().catch((error) => { console.error(error); process.exit(1); });
"""


READS_SCRIPT = r"""
const gremlin = require('gremlin');
const traversal = gremlin.process.AnonymousTraversalSource.traversal;
const [url, count] = process.argv.slice(2);

(async () => {
  const connection = new gremlin.driver.DriverRemoteConnection(url);
  const g = traversal().withRemote(connection);
  const names = await Promise.all([...Array(Number(count)).keys()].map(
    () => g.V().hasLabel('server').values('name').toList()));
  await connection.close();
  console.log(JSON.stringify({ names: names.map((r) => r[0]) }));
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.fixture
def node_script(tmp_path: Path) -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is not installed")
    if not (NODE_MODULES / "gremlin").is_dir():
        pytest.fail("the JavaScript driver is missing: run `make js-driver`")
    script = tmp_path / "multiplex.js"
    script.write_text(SCRIPT)
    (tmp_path / "roles.js").write_text(ROLES_SCRIPT)
    (tmp_path / "reads.js").write_text(READS_SCRIPT)
    return script


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    config = SidecarConfig(
        endpoints=tuple(parse_endpoint(s.address) for s in servers),
        settings=BalancerSettings(
            health=HealthCheckSettings(interval=0.5),
            request_timeout=10.0,
            outlier=SPREAD_SPECS_OUTLIERS,
        ),
    )
    with SidecarThread(config) as running:
        yield running


def run_node(script: Path, url: str, *args: object) -> dict[str, Any]:
    completed = subprocess.run(
        ["node", str(script), url, *map(str, args)],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def count_everywhere(servers: Sequence[GremlinServerProcess], label: str) -> int:
    total = 0
    for server in servers:
        connection = DriverRemoteConnection(server.url, "g")
        try:
            total += traversal().with_(connection).V().has_label(label).count().next()
        finally:
            connection.close()
    return total


@pytest.mark.parametrize(
    "mime", ["application/vnd.graphbinary-v1.0", "application/vnd.gremlin-v3.0+json"]
)
def test_javascript_driver_multiplexing_on_one_connection_gets_every_answer(
    node_script: Path,
    sidecar: SidecarThread,
    servers: Sequence[GremlinServerProcess],
    mime: str,
) -> None:
    result = run_node(node_script, sidecar.url, mime, 300)
    assert result["values"] == list(range(300))
    assert Counter(result["names"]) == {s.address: 10 for s in servers}
    assert result["inside"] == 1
    assert count_everywhere(servers, "js") == 1


def test_javascript_driver_reads_go_to_the_readers_and_writes_to_the_writer(
    node_script: Path, servers: Sequence[GremlinServerProcess]
) -> None:
    with running_sidecar(servers, endpoints=role_endpoints(servers), hedge=False) as sidecar:
        result = run_node(node_script.with_name("roles.js"), sidecar.url)
    writer, *readers = servers
    assert_reads_even(Counter(result["names"]), readers)
    assert (result["inside"], result["session"]) == (writer.address, writer.address)
    for label, count in [("js_written", 10), ("js_nested", 10), ("js_tx", 1)]:
        assert count_on_each(servers, label) == {s.address: count * (s is writer) for s in servers}


def test_javascript_driver_reads_go_to_the_writer_while_no_reader_is_up(
    node_script: Path, servers: Sequence[GremlinServerProcess]
) -> None:
    writer = servers[0]
    # Two readers whose ports nobody listens on: down from the start.
    base = free_port_block(19281, 2)
    absent = [f"127.0.0.1:{port}?role=reader" for port in (base, base + 1)]
    endpoints = [f"{writer.address}?role=writer", *absent]
    with running_sidecar(servers, endpoints=endpoints, hedge=False) as sidecar:
        result = run_node(node_script.with_name("reads.js"), sidecar.url, 40)
    assert Counter(result["names"]) == {writer.address: 40}
