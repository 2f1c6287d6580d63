// The JavaScript driver (gremlin, npm, installed into .cache/js by `make js-driver`) against the
// sidecar, with the same command line and output as the Go and Java programs:
//
//   node sidecar_client.js URL graphbinary|graphson multiplex|commit|rollback|load|roles [COUNT]
//
// One DriverRemoteConnection (one WebSocket) carries every request. Each mode prints one JSON
// line; `multiplex` then waits for a line on stdin (so the caller can count open connections);
// `load` prints "started" after 100 answers, and reads "mark" and "stop" from stdin.
'use strict';

const readline = require('readline');
const gremlin = require('gremlin');

const traversal = gremlin.process.AnonymousTraversalSource.traversal;
const { DriverRemoteConnection, Client } = gremlin.driver;
const MIME_TYPES = {
  graphbinary: 'application/vnd.graphbinary-v1.0',
  graphson: 'application/vnd.gremlin-v3.0+json',
};
const LOAD_WORKERS = 8;
const LOAD_MAX_ANSWERS = 100000;
const LOAD_MAX_MS = 300000;
const LOAD_AFTER_MARK = 150; // "mark" ends the run this many answers (or errors) later

const [url, serializer, mode, countText] = process.argv.slice(2);
const count = Number(countText || 200);
const lines = readline.createInterface({ input: process.stdin });

function nextLine() {
  return new Promise((resolve) => {
    lines.once('line', resolve);
    lines.once('close', () => resolve(null));
  });
}

const indexes = (n) => [...Array(n).keys()];

async function multiplex(g, connection) {
  // All at once on the driver's single connection: the sidecar must route each answer.
  const values = await Promise.all(indexes(count).map((i) => g.inject(i).next()));
  const scripts = await Promise.all(indexes(Math.floor(count / 4)).map(
    (i) => connection._client.submit('x + 1000', { x: i }).then((r) => r.first())));
  const names = await Promise.all(
    indexes(30).map(() => g.V().hasLabel('server').values('name').next()));
  return {
    values: values.map((r) => Number(r.value)),
    scripts: scripts.map(Number),
    names: names.map((r) => r.value),
  };
}

async function transaction(g, label, commit) {
  const tx = g.tx();
  const gtx = tx.begin();
  await gtx.addV(label).property('driver', 'js').iterate();
  const inside = await gtx.V().hasLabel(label).count().next();
  await (commit ? tx.commit() : tx.rollback());
  return { inside: Number(inside.value) };
}

async function load(g) {
  const names = [];
  const errors = [];
  let mark = -1;
  let endAt = LOAD_MAX_ANSWERS;
  let stopped = false;
  let started = false;
  lines.on('line', (line) => {
    if (line.trim() === 'mark') {
      mark = names.length;
      endAt = Math.min(endAt, names.length + errors.length + LOAD_AFTER_MARK);
    }
    if (line.trim() === 'stop') stopped = true;
  });
  lines.on('close', () => { stopped = true; });
  const deadline = Date.now() + LOAD_MAX_MS;
  const worker = async () => {
    while (!stopped && Date.now() < deadline && names.length + errors.length < endAt) {
      try {
        names.push(...await g.V().hasLabel('server').values('name').toList());
      } catch (error) {
        errors.push(String(error));
      }
      if (!started && names.length >= 100) {
        started = true;
        console.log('started');
      }
    }
  };
  await Promise.all(indexes(LOAD_WORKERS).map(worker));
  return { names, errors, mark };
}

// Only the JavaScript driver's spec of roles: nested writes, a transaction and a session.
async function roles(g) {
  const names = [];
  for (let batch = 0; batch < 10; batch++) { // 20 at a time on the one connection
    names.push(...await Promise.all(
      indexes(20).map(() => g.V().hasLabel('server').values('name').next())));
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
  const session = new Client(url, {
    traversalSource: 'g', mimeType: MIME_TYPES[serializer], session: 'roles-session',
  });
  const sessionName = await session.submit("g.V().hasLabel('server').values('name')");
  await session.close();
  return { names: names.map((r) => r.value), inside: inside.value, session: sessionName.first() };
}

(async () => {
  if (!(serializer in MIME_TYPES)) throw new Error(`unknown serializer ${serializer}`);
  const connection = new DriverRemoteConnection(url, { mimeType: MIME_TYPES[serializer] });
  const g = traversal().withRemote(connection);
  let out;
  if (mode === 'multiplex') out = await multiplex(g, connection);
  else if (mode === 'commit') out = await transaction(g, 'js', true);
  else if (mode === 'rollback') out = await transaction(g, 'js_rolled_back', false);
  else if (mode === 'load') out = await load(g);
  else if (mode === 'roles') out = await roles(g);
  else throw new Error(`unknown mode ${mode}`);
  console.log(JSON.stringify(out));
  if (mode === 'multiplex') await nextLine();
  await connection.close();
  lines.close();
})().catch((error) => { console.error(error); process.exit(1); });
