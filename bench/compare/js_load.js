// A multiplexing client for bench/compare: the JavaScript Gremlin driver (gremlin on npm, as
// installed by `make js-driver`) sends every worker's requests on ONE WebSocket connection, as
// the Java, .NET and Go drivers do. Same protocol as load.py's child: the spec (JSON) is the
// first argument; prints `ready`, reads {"start", "end"} (CLOCK_MONOTONIC seconds, the clock of
// Python's time.monotonic() and of libuv's hrtime) from stdin, runs the read mix until `end`,
// writes spec.out and prints `done`. Bounded: it exits by itself `grace` seconds after `end`.
'use strict';
const fs = require('fs');
const readline = require('readline');
const gremlin = require('gremlin');

const spec = JSON.parse(process.argv[2]);
const traversal = gremlin.process.AnonymousTraversalSource.traversal;
const { DriverRemoteConnection } = gremlin.driver;
const PEOPLE = 1000;
const STREAM_LENGTH = 300;
const ERROR_PAUSE = 100;

const now = () => Number(process.hrtime.bigint()) / 1e9;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function tagOf(row) {
  if (row === undefined || row === null) return null;
  return row instanceof Map ? row.get('srv') : row.srv;
}

async function request(g, rnd) {
  const x = rnd();
  const uid = Math.floor(rnd() * PEOPLE);
  let kind;
  let query;
  if (x < 0.70) {
    kind = 0;
    query = g.V().has('person', 'uid', uid);
  } else if (x < 0.95) {
    kind = 1;
    query = g.V().has('person', 'uid', uid).out('knows').out('knows').dedup().limit(10);
  } else {
    kind = 2;
    const first = Math.floor(rnd() * (PEOPLE - STREAM_LENGTH));
    query = g.V().hasLabel('person').range(first, first + STREAM_LENGTH);
  }
  const rows = await query.project('name', 'srv').by('name').by('srv').toList();
  if (kind === 2 && rows.length !== STREAM_LENGTH) {
    throw new Error(`streamed ${rows.length} results, expected ${STREAM_LENGTH}`);
  }
  return [kind, tagOf(rows[0])];
}

(async () => {
  const index = new Map(spec.addresses.map((address, i) => [address, i]));
  const connection = new DriverRemoteConnection(spec.target.url);
  const g = traversal().withRemote(connection);
  await g.V().limit(1).toList(); // open the one connection before the clock starts
  console.log('ready');
  const lines = readline.createInterface({ input: process.stdin });
  const go = JSON.parse(await new Promise((resolve) => lines.once('line', resolve)));
  lines.close();
  const start = Number(go.start);
  const end = Number(go.end);
  const grace = Number(spec.grace ?? 10);
  const log = { t: [], lat: [], ok: [], srv: [], kind: [], errors: {} };
  let inFlight = 0;

  async function worker(id) {
    const rnd = mulberry32(Number(spec.seed) * 1000 + id);
    for (;;) {
      const began = now();
      if (began >= end) return;
      const measured = began >= start;
      let kind = -1;
      let tag = null;
      let error = null;
      if (measured) inFlight += 1;
      try {
        [kind, tag] = await request(g, rnd);
      } catch (exc) {
        error = `${exc.name}: ${String(exc.message).split('\n')[0].slice(0, 100)}`;
      }
      if (measured) {
        inFlight -= 1;
        const done = now();
        log.t.push(Math.round((began - start) * 1e5) / 1e5);
        log.lat.push(Math.round((done - began) * 1e7) / 1e4);
        log.ok.push(error ? 0 : 1);
        log.srv.push(tag !== null && index.has(tag) ? index.get(tag) : -1);
        log.kind.push(kind);
        if (error) log.errors[error] = (log.errors[error] || 0) + 1;
      }
      if (error) await sleep(Math.max(0, Math.min(ERROR_PAUSE, (end - now()) * 1000)));
    }
  }

  const workers = Promise.all(spec.workers.map((id) => worker(id)));
  const deadline = sleep(Math.max(0, (end + grace - now()) * 1000));
  await Promise.race([workers, deadline]);
  log.unfinished = inFlight;
  fs.writeFileSync(spec.out, JSON.stringify(log));
  console.log('done');
  await Promise.race([connection.close().catch(() => {}), sleep(3000)]);
  process.exit(0);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
