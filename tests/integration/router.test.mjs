// router.test.mjs - the router end to end: load spill with hysteresis
// (the gateway reads the local vLLM's /metrics and sends `auto` work to the
// frontier while the queue is over router.spill.waiting_above, and back
// once it is down to back_below), a header rule that keeps restricted data
// local even while spilling, x-hybridgw-tier only for a key with
// force_tier, and hybridgw_route_decisions_total counting what was sent.
//
// Two simulators: sim-local as a vLLM server that runs 2 requests at a
// time (more wait in its FIFO and show in vllm:num_requests_waiting), and
// sim-frontier as the OpenAI API. The queue is filled with slow streams
// pinned to the local backend (model local-a: explicit, so never moved),
// and emptied by raising the simulator's max_concurrency at run time.
//
// The classifier is off and default_tier is local, so an `auto` request
// goes local unless a constraint (here: spill) moves it: deterministic.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sim, Gateway, http, waitFor, metricSample, sleep, T,
} from './lib/harness.mjs';

let simLocal;
let simFront;
let gw;
const held = []; // { ctrl, done } of the slow streams that fill the queue

const KEY = 'sk-plain'; // may not force a tier
const OPS = 'sk-ops'; // force_tier: true

function routerYaml(localUrl, frontUrl) {
  return [
    'listen: "127.0.0.1:0"',
    'admin_listen: "127.0.0.1:0"',
    'workers: 2',
    'access_log: stdout',
    'limits: { max_body_bytes: 64KiB, header_timeout: 2s, body_timeout: 2s, idle_timeout: 5s, shutdown_timeout: 5s }',
    'auth:',
    '  keys:',
    `    - { name: plain, key: "${KEY}" }`,
    `    - { name: ops, key: "${OPS}", force_tier: true }`,
    'backends:',
    '  local-a:',
    '    tier: local',
    '    provider: vllm',
    `    url: "${localUrl}"`,
    '    model: sim-model',
    // queued requests get no head until they run: a long first_byte
    '    timeouts: { connect: 1s, first_byte: 30s, stream_idle: 10s, request: 60s }',
    '    health: { path: /health, interval: 0s, fail_threshold: 1000 }',
    '    retry: { attempts: 0 }',
    '    circuit: { failures: 1000 }',
    '  frontier-b:',
    '    tier: frontier',
    '    provider: openai',
    `    url: "${frontUrl}/v1"`,
    '    model: sim-model',
    '    timeouts: { connect: 1s, first_byte: 5s, stream_idle: 5s, request: 30s }',
    '    health: { interval: 0s }',
    '    retry: { attempts: 0 }',
    '    circuit: { failures: 1000 }',
    'router:',
    '  default_tier: local',
    '  classifier: off',
    // the simulated KV cache is running / max_concurrency (1.0 when full):
    // kv_cache_above: 1 keeps this test about the queue only
    '  spill: { waiting_above: 2, back_below: 0, kv_cache_above: 1, interval: 200ms }',
    '  rules:',
    '    - { name: keep-local, header: "x-data-class", equals: restricted, tier: local }',
  ].join('\n') + '\n';
}

before(async () => {
  simLocal = await Sim.start({ name: 'sim-local-router', args: ['--max-concurrency', '2'] });
  simFront = await Sim.start({ name: 'sim-frontier-router' });
  gw = await Gateway.start(routerYaml(simLocal.url, simFront.url), { name: 'gateway-router' });
});

after(async () => {
  for (const h of held) h.ctrl.abort();
  await Promise.allSettled(held.map((h) => h.done));
  for (const p of [gw?.proc, simLocal?.proc, simFront?.proc]) if (p) await p.stop({ signal: 'SIGKILL' });
});

// ---- helpers ----

/** POST an `auto` chat with key and extra headers; { status, headers, json }. */
function chat(content, { key = KEY, headers = {}, model = 'auto', timeout = T(8000) } = {}) {
  return http(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, ...headers },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
    timeout,
  });
}

/** A slow stream pinned to local-a, held open until aborted. */
function holdSlowStream(i) {
  const ctrl = new AbortController();
  const done = fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({
      model: 'local-a',
      stream: true,
      messages: [{ role: 'user', content: `hold ${i} [sim:output_tokens=5000] [sim:tokens_per_sec=2]` }],
    }),
    signal: ctrl.signal,
  }).then(async (r) => {
    // read until aborted (or the gateway ends it)
    for await (const chunk of r.body) void chunk;
  }).catch(() => {});
  held.push({ ctrl, done });
}

async function gwMetric(re) {
  return metricSample(await gw.metrics(), re);
}

const SPILL = /^hybridgw_spill_active\{backend="local-a"/;
const GW_WAITING = /^hybridgw_vllm_requests_waiting\{backend="local-a"/;

async function waitSpill(v, what) {
  await waitFor(async () => (await gwMetric(SPILL)) === v, {
    timeout: T(5000), interval: 50, what,
  });
}

async function frontierRequests() {
  return (await simFront.stats()).requests_total;
}

function assertRoute(r, { tier, backend, reason, what }) {
  assert.equal(r.status, 200, `${what}: ${r.text}`);
  assert.equal(r.headers.get('x-hybridgw-route'), tier, what);
  assert.equal(r.headers.get('x-hybridgw-backend'), backend, what);
  if (reason instanceof RegExp) assert.match(r.headers.get('x-hybridgw-reason'), reason, what);
  else assert.equal(r.headers.get('x-hybridgw-reason'), reason, what);
}

// What this file sends, by (stage, label, tier), checked against /metrics.
const sent = new Map();
function count(stage, tier, n = 1) {
  const k = `${stage}|none|${tier}`;
  sent.set(k, (sent.get(k) || 0) + n);
}

// ---- tests (in order; each builds on the state the previous left) ----

test('no load: auto goes local (default stage)', { timeout: T(8000) }, async () => {
  const r = await chat('hello there');
  count('default', 'local');
  assertRoute(r, { tier: 'local', backend: 'local-a', reason: 'default:local', what: 'auto' });
  // the scraper has read the idle queue
  await waitFor(async () => (await gwMetric(GW_WAITING)) === 0, { timeout: T(3000), what: 'a first scrape' });
  assert.equal(await gwMetric(SPILL), 0);
});

test('x-hybridgw-tier is ignored without force_tier and honoured with it', { timeout: T(8000) }, async () => {
  const f0 = await frontierRequests();
  const plain = await chat('hello', { headers: { 'x-hybridgw-tier': 'frontier' } });
  count('default', 'local');
  assertRoute(plain, { tier: 'local', backend: 'local-a', reason: 'default:local', what: 'key without force_tier' });
  assert.equal(await frontierRequests(), f0);

  const ops = await chat('hello', { key: OPS, headers: { 'x-hybridgw-tier': 'frontier' } });
  count('explicit', 'frontier');
  assertRoute(ops, { tier: 'frontier', backend: 'frontier-b', reason: 'explicit:header=frontier', what: 'key with force_tier' });
  assert.equal(await frontierRequests(), f0 + 1);

  // an unknown tier name is ignored even for a key that may force
  const bad = await chat('hello', { key: OPS, headers: { 'x-hybridgw-tier': 'fastest' } });
  count('default', 'local');
  assertRoute(bad, { tier: 'local', backend: 'local-a', reason: 'default:local', what: 'x-hybridgw-tier: fastest' });
});

let restricted; // the keep-local request sent while spilling, answered later

test('a full local queue spills auto work to the frontier; a rule keeps restricted data local', { timeout: T(12000) }, async () => {
  // 2 run, 3 wait: over waiting_above (2)
  for (let i = 0; i < 5; i++) holdSlowStream(i);
  count('explicit', 'local', 5);
  await waitFor(async () => (await simLocal.stats()).waiting === 3, {
    timeout: T(5000), what: 'sim-local: 3 requests waiting',
  });
  await waitSpill(1, 'hybridgw_spill_active 1');
  assert.equal(await gwMetric(GW_WAITING), 3);

  const f0 = await frontierRequests();
  const r = await chat('hello while busy');
  count('spill', 'frontier');
  assertRoute(r, {
    tier: 'frontier', backend: 'frontier-b', reason: 'default:local; spill:local-queue 3>2', what: 'auto while spilling',
  });
  assert.match(r.headers.get('x-hybridgw-reason'), /spill:local-queue/);
  assert.equal(await frontierRequests(), f0 + 1);

  // restricted data stays local: it joins the local queue (answered once
  // the queue moves, below) and never reaches the frontier
  restricted = chat('restricted numbers', { headers: { 'x-data-class': 'restricted' }, timeout: T(30000) });
  count('rules', 'local');
  await waitFor(async () => (await simLocal.stats()).waiting === 4, {
    timeout: T(5000), what: 'sim-local: the restricted request queued (4 waiting)',
  });
  assert.equal(await frontierRequests(), f0 + 1);
});

test('hysteresis: between back_below and waiting_above it keeps spilling', { timeout: T(12000) }, async () => {
  // 2 more slots: 4 run, 2 wait (at waiting_above, above back_below)
  await simLocal.config({ max_concurrency: 4 });
  await waitFor(async () => (await simLocal.stats()).waiting === 2, { timeout: T(5000), what: 'sim-local: 2 waiting' });
  await waitFor(async () => (await gwMetric(GW_WAITING)) === 2, { timeout: T(5000), what: 'the gateway reading 2 waiting' });
  // the same scrape that read 2 kept the spill flag
  assert.equal(await gwMetric(SPILL), 1);
  const r = await chat('hello, still busy');
  count('spill', 'frontier');
  assertRoute(r, {
    tier: 'frontier', backend: 'frontier-b', reason: /^default:local; spill:local-queue 2(?:\D|$)/, what: 'auto in the band',
  });
});

test('the queue drains: spill stops and auto goes local again', { timeout: T(12000) }, async () => {
  await simLocal.config({ max_concurrency: 0 }); // no limit: everything runs
  await waitFor(async () => (await simLocal.stats()).waiting === 0, { timeout: T(5000), what: 'sim-local: 0 waiting' });

  // the restricted request ran on local-a, as the rule decided
  const rr = await restricted;
  assertRoute(rr, { tier: 'local', backend: 'local-a', reason: 'rule:keep-local', what: 'restricted' });
  const entry = await gw.waitLog((e) => e.reason === 'rule:keep-local');
  assert.equal(entry.backend, 'local-a');
  assert.equal(entry.stage, 'rules');

  await waitSpill(0, 'hybridgw_spill_active 0');
  const f0 = await frontierRequests();
  const r = await chat('hello again');
  count('default', 'local');
  assertRoute(r, { tier: 'local', backend: 'local-a', reason: 'default:local', what: 'auto after the drain' });
  assert.equal(await frontierRequests(), f0);

  // the held streams are still running on local-a
  assert.equal((await simLocal.stats()).running, 5);
});

test('hybridgw_route_decisions_total counts what was sent', { timeout: T(8000) }, async () => {
  const text = await gw.metrics();
  const got = new Map();
  for (const line of text.split('\n')) {
    const m = line.match(/^hybridgw_route_decisions_total\{stage="([^"]*)",label="([^"]*)",tier="([^"]*)"\} (\S+)$/);
    if (m) got.set(`${m[1]}|${m[2]}|${m[3]}`, Number(m[4]));
  }
  assert.deepEqual(Object.fromEntries([...got].sort()), Object.fromEntries([...sent].sort()), text
    .split('\n').filter((l) => l.startsWith('hybridgw_route_decisions_total')).join('\n'));
});

// router.spill not configured: the router never spills, so the gauge that
// says it does must stay 0. Today serve.c's scrape_done sets the target's
// spilling flag with the default marks (waiting 8, kv 0.9) whatever the
// config, and /metrics shows that flag.
test('without router.spill, hybridgw_spill_active stays 0', {
  timeout: T(10000),
}, async () => {
  const sim = await Sim.start({ name: 'sim-local-nospill', args: ['--max-concurrency', '1'] });
  const yaml = routerYaml(sim.url, simFront.url)
    .replace(/^ {2}spill: .*\n/m, '')
    .replace(/^ {2}rules:\n.*\n/m, '');
  assert.doesNotMatch(yaml, /spill:/);
  const g = await Gateway.start(yaml, { name: 'gateway-nospill' });
  const ctrl = new AbortController();
  const done = fetch(`${g.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({
      model: 'local-a', stream: true, messages: [{ role: 'user', content: 'hold [sim:output_tokens=5000] [sim:tokens_per_sec=2]' }],
    }),
    signal: ctrl.signal,
  }).then(async (r) => {
    for await (const chunk of r.body) void chunk;
  }).catch(() => {});
  try {
    // one running on one slot: the simulated KV cache reads 1.0 (> 0.9)
    await waitFor(async () => metricSample(await g.metrics(), /^hybridgw_vllm_requests_running\{backend="local-a"/) === 1,
      { timeout: T(5000), what: 'the gateway reading 1 running' });
    await sleep(300); // a few more scrapes
    assert.equal(metricSample(await g.metrics(), /^hybridgw_spill_active\{backend="local-a"/) ?? 0, 0);
  } finally {
    ctrl.abort();
    await done;
    await g.proc.stop({ signal: 'SIGKILL' });
    await sim.proc.stop({ signal: 'SIGKILL' });
  }
});

test('the gateway reported no sanitizer errors', () => {
  assert.deepEqual(gw.proc.sanitizerReports(), []);
});
