// resilience.test.mjs - retries, retry-after, fallback local -> frontier
// (whole and streamed), pinned models, non-retryable 4xx, the circuit
// breaker and router.deadline, seen through headers, the access log,
// /metrics and the simulators' request counters.
//
// Deterministic by construction: faults are switched by the test (global
// /sim/config or per-request directives), never left to a fault rate, and
// the one timing-sensitive step (switching a fault off between two
// attempts) has a backoff of at least a second to do it in.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sim, Gateway, gatewayYamlMulti, stopAndCheck, postChat, postMessages, chatBody, sseData, sseEvents,
  metricSample, closedPort, waitFor, sleep, T,
} from './lib/harness.mjs';

let simLocal;
let simFront; // Anthropic stand-in
let gw; // the shared gateway: local-a retries once, fallback on
const started = []; // every gateway, killed in after()

const LOCAL_RETRY = '{ attempts: 1, backoff: 50ms, max_backoff: 2s }';

function backends({ localRetry = LOCAL_RETRY, localCircuit, localUrl, localTimeouts } = {}) {
  return [
    {
      name: 'local-a', tier: 'local', provider: 'vllm', url: localUrl || simLocal.url,
      retry: localRetry, circuit: localCircuit, timeouts: localTimeouts,
    },
    { name: 'frontier-b', tier: 'frontier', provider: 'anthropic', url: simFront.url, model: 'claude-sim' },
  ];
}

async function startGw(opts, name) {
  const g = await Gateway.start(gatewayYamlMulti({ admin: true, ...opts }), { name });
  started.push(g);
  return g;
}

before(async () => {
  simLocal = await Sim.start({ name: 'sim-local' });
  simFront = await Sim.start({ name: 'sim-frontier' });
  gw = await startGw({ backends: backends(), models: { coder: 'local-a' } }, 'gateway-resilience');
});

afterEach(async () => {
  // no fault outlives its test
  for (const s of [simLocal, simFront]) {
    if (s?.proc.running) await s.config({ fault: 'none', fault_rate: 1, ttft_ms: 0 });
  }
});

after(async () => {
  for (const g of started) await g.proc.stop({ signal: 'SIGKILL' });
  for (const s of [simLocal, simFront]) if (s) await s.proc.stop({ signal: 'SIGKILL' });
});

/** Generation requests each simulator has answered (or refused). */
async function counts() {
  const [a, b] = await Promise.all([simLocal.stats(), simFront.stats()]);
  return {
    local: a.requests.chat_completions + a.requests.messages,
    front: b.requests.chat_completions + b.requests.messages,
  };
}

async function metric(g, re) {
  return metricSample(await g.metrics(), re) ?? 0;
}
const circuitRe = (b) => new RegExp(`^hybridgw_circuit_state\\{backend="${b}"`);

// an upper bound for "at once" that stays well below the 5 s being avoided
const QUICK = Math.min(T(2500), 4000);

const hi = (extra = '') => chatBody(`hello ${extra} [sim:output_tokens=2]`);

test('retry then success: the fault is switched off between two attempts', { timeout: T(15000) }, async () => {
  // a backoff of 2 s with jitter waits at least 1 s: time enough to switch
  const g = await startGw({
    backends: backends({ localRetry: '{ attempts: 1, backoff: 2s, max_backoff: 4s }' }),
  }, 'gateway-retry');
  await simLocal.config({ fault: 'status=503', fault_rate: 1 });
  const c0 = await counts();
  const t0 = Date.now();
  const pending = postChat(g, hi('retry'), { timeout: T(10000) });
  await waitFor(async () => (await counts()).local === c0.local + 1, {
    timeout: T(3000), interval: 10, what: 'the first attempt',
  });
  await simLocal.config({ fault: 'none' });
  const r = await pending;
  const elapsed = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('x-hybridgw-backend'), 'local-a', 'answered by the same backend');
  assert.equal(r.headers.get('x-hybridgw-fallback-from'), null, 'no fallback');
  assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:status_503,local-a:ok');
  assert.ok(elapsed >= 1000, `waited the backoff (${elapsed} ms)`);
  const c1 = await counts();
  assert.equal(c1.local - c0.local, 2, 'two upstream attempts');
  assert.equal(c1.front, c0.front, 'the frontier was not asked');
  assert.equal(await metric(g, /^hybridgw_retries_total\{backend="local-a",reason="status_503"\}/), 1);
  assert.equal(await metric(g, /^hybridgw_fallbacks_total\{/), 0, 'no fallback counted');
  const log = await g.logFor(r.headers.get('x-request-id'));
  assert.equal(log.attempts, 2);
  assert.equal(log.attempt_log, 'local-a:status_503,local-a:ok');
  assert.equal(log.fallback_from, undefined);
  assert.equal(await stopAndCheck(g.proc), '');
});

test('connection refused is retried, then the fallback answers', { timeout: T(10000) }, async () => {
  const port = await closedPort();
  const g = await startGw({
    backends: backends({ localUrl: `http://127.0.0.1:${port}` }),
  }, 'gateway-refused');
  const r = await postChat(g, hi('refused'));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('x-hybridgw-backend'), 'frontier-b');
  assert.equal(r.headers.get('x-hybridgw-fallback-from'), 'local-a');
  const attempts = r.headers.get('x-hybridgw-attempts');
  const m = attempts.match(/^local-a:([a-z_0-9]+),local-a:\1,frontier-b:ok$/);
  assert.ok(m && m[1] !== 'ok', `two failed connects then the frontier: ${attempts}`);
  assert.equal(await metric(g, new RegExp(`^hybridgw_retries_total\\{backend="local-a",reason="${m[1]}"\\}`)), 1);
  assert.equal(await metric(g, new RegExp(`^hybridgw_fallbacks_total\\{from="local-a",to="frontier-b",reason="${m[1]}"\\}`)), 1);
  assert.equal(await stopAndCheck(g.proc), '');
});

test('retry-after is honoured when it is within max_backoff', { timeout: T(10000) }, async () => {
  // pinned: the retry is the only thing to wait for; both attempts fail
  const c0 = await counts();
  const t0 = Date.now();
  const r = await postChat(gw, { ...hi('[sim:fault=status=503,retry_after=1]'), model: 'local-a' });
  const elapsed = Date.now() - t0;
  assert.equal(r.status, 503, r.text);
  assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:status_503,local-a:status_503');
  assert.ok(elapsed >= 1000, `the retry waited retry-after: 1 (${elapsed} ms, backoff alone is 25-50 ms)`);
  assert.equal(r.headers.get('retry-after'), '1', 'the last retry-after reaches the client');
  assert.equal((await counts()).local - c0.local, 2);
});

test('retry-after longer than max_backoff: no retry on that backend, the fallback answers at once', { timeout: T(10000) }, async () => {
  await simLocal.config({ fault: 'status=503,retry_after=5', fault_rate: 1 });
  const c0 = await counts();
  const t0 = Date.now();
  const r = await postChat(gw, hi('ra5'));
  const elapsed = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('x-hybridgw-backend'), 'frontier-b');
  assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:status_503,frontier-b:ok');
  assert.ok(elapsed < QUICK, `did not wait 5 s (${elapsed} ms)`);
  const c1 = await counts();
  assert.equal(c1.local - c0.local, 1, 'local-a not retried');
  assert.equal(c1.front - c0.front, 1);

  // pinned: nothing else to try, the 503 comes back at once
  const t1 = Date.now();
  const p = await postChat(gw, { ...hi('ra5 pinned'), model: 'local-a' });
  assert.equal(p.status, 503);
  assert.ok(Date.now() - t1 < QUICK, 'no 5 s wait');
  assert.equal(p.headers.get('x-hybridgw-attempts'), null, 'one attempt only');
  assert.equal(p.headers.get('retry-after'), '5');
  assert.equal((await counts()).local - c1.local, 1);
});

test('fallback local -> frontier: headers, access log and metrics say why', { timeout: T(10000) }, async () => {
  await simLocal.config({ fault: 'status=503', fault_rate: 1 });
  const fb0 = await metric(gw, /^hybridgw_fallbacks_total\{from="local-a",to="frontier-b",reason="status_503"\}/);
  const rt0 = await metric(gw, /^hybridgw_retries_total\{backend="local-a",reason="status_503"\}/);
  const c0 = await counts();
  const r = await postChat(gw, hi('fallback'));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'chat.completion');
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  assert.equal(r.headers.get('x-hybridgw-backend'), 'frontier-b');
  assert.equal(r.headers.get('x-hybridgw-fallback-from'), 'local-a');
  assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:status_503,local-a:status_503,frontier-b:ok');
  const c1 = await counts();
  assert.equal(c1.local - c0.local, 2, 'one try and one retry on local-a');
  assert.equal(c1.front - c0.front, 1);
  const log = await gw.logFor(r.headers.get('x-request-id'));
  assert.equal(log.status, 200);
  assert.equal(log.backend, 'frontier-b');
  assert.equal(log.provider, 'anthropic');
  assert.equal(log.translated, true);
  assert.equal(log.dialect, 'openai');
  assert.equal(log.attempts, 3);
  assert.equal(log.attempt_log, 'local-a:status_503,local-a:status_503,frontier-b:ok');
  assert.equal(log.fallback_from, 'local-a');
  assert.equal(await metric(gw, /^hybridgw_fallbacks_total\{from="local-a",to="frontier-b",reason="status_503"\}/) - fb0, 1);
  assert.equal(await metric(gw, /^hybridgw_retries_total\{backend="local-a",reason="status_503"\}/) - rt0, 1);

  // model "local" (a tier) falls back too; and an Anthropic client gets
  // the frontier's answer as is (no translation)
  const t = await postChat(gw, { ...hi('tier'), model: 'local' });
  assert.equal(t.headers.get('x-hybridgw-backend'), 'frontier-b');
  const a = await postMessages(gw, { model: 'auto', max_tokens: 32, messages: [{ role: 'user', content: 'anthropic fallback [sim:output_tokens=2]' }] });
  assert.equal(a.status, 200, a.text);
  assert.equal(a.json.type, 'message');
  assert.equal(a.headers.get('x-hybridgw-backend'), 'frontier-b');
  assert.equal(a.headers.get('x-hybridgw-fallback-from'), 'local-a');
  const alog = await gw.logFor(a.headers.get('request-id'));
  assert.equal(alog.dialect, 'anthropic');
  assert.equal(alog.translated, undefined, 'anthropic -> anthropic is not translated');
});

for (const fault of ['disconnect@0', 'malformed@0', 'status=503']) {
  test(`streaming fallback (${fault} before the first event): one clean stream from the frontier`, { timeout: T(10000) }, async () => {
    await simLocal.config({ fault, fault_rate: 1 });
    const c0 = await counts();
    const client = gw.client();
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'auto', stream: true, messages: [{ role: 'user', content: 'stream fallback [sim:output_tokens=4]' }] })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(response.headers.get('x-hybridgw-backend'), 'frontier-b');
    assert.equal(response.headers.get('x-hybridgw-fallback-from'), 'local-a');
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one stream');
    assert.equal(chunks.filter((c) => c.choices[0]?.delta?.role).length, 1, 'one role delta');
    assert.deepEqual(chunks.map((c) => c.choices[0]?.finish_reason).filter((f) => f), ['stop']);
    const text = chunks.map((c) => c.choices[0]?.delta?.content || '').join('');
    assert.equal(text.trim().split(/\s+/).length, 4, text);
    const c1 = await counts();
    if (fault.startsWith('disconnect')) {
      // libcurl itself re-sends a request whose reused connection closed
      // before a byte came back (see the todo test below)
      assert.ok(c1.local - c0.local >= 2 && c1.local - c0.local <= 4, `local-a tried: ${c1.local - c0.local}`);
    } else {
      assert.equal(c1.local - c0.local, 2, 'local-a tried twice');
    }
    assert.equal(c1.front - c0.front, 1);
    const log = await gw.logFor(response.headers.get('x-request-id'));
    assert.equal(log.status, 200);
    assert.equal(log.backend, 'frontier-b');
    assert.equal(log.fallback_from, 'local-a');
    assert.match(log.attempt_log, /^local-a:(\w+),local-a:\1,frontier-b:ok$/);

    // the same on the wire, for an Anthropic client
    const r = await postMessages(gw, {
      model: 'auto', max_tokens: 32, stream: true, messages: [{ role: 'user', content: 'anthropic stream fallback [sim:output_tokens=3]' }],
    });
    assert.equal(r.status, 200);
    const names = sseEvents(r.text).map((e) => e.event).filter((n) => n !== 'ping');
    assert.equal(names.filter((n) => n === 'message_start').length, 1);
    assert.equal(names.at(-1), 'message_stop');
    assert.ok(!names.includes('error'), names.join(' '));
  });
}

test('a streamed fallback lists the answering attempt in x-hybridgw-attempts', {
  timeout: T(8000),
}, async () => {
  await simLocal.config({ fault: 'status=503', fault_rate: 1 });
  const r = await postChat(gw, { ...hi('hdr'), stream: true });
  assert.equal(r.status, 200);
  assert.equal(sseData(r.text).at(-1), '[DONE]');
  assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:status_503,local-a:status_503,frontier-b:ok');
});

test('a request answered after a retry or a fallback has no error in its access-log line', {
  timeout: T(8000),
}, async () => {
  await simLocal.config({ fault: 'status=503', fault_rate: 1 });
  for (const stream of [false, true]) {
    const r = await postChat(gw, { ...hi('log-error'), stream });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-hybridgw-backend'), 'frontier-b');
    const log = await gw.logFor(r.headers.get('x-request-id'));
    assert.equal(log.status, 200);
    assert.equal(log.error, undefined, `stream=${stream}: error=${log.error} on a 200`);
  }
});

test('a reused connection that drops before any byte: libcurl re-sends once, the gateway counts one attempt', {
  timeout: T(8000),
}, async () => {
  // Documented behaviour (src/api/proxy.c): when a pooled keep-alive
  // connection turns out closed before any response byte, libcurl sends the
  // request again once on a new connection (the stale keep-alive race, e.g.
  // uvicorn's 5 s keep-alive timeout). The gateway counts that as one
  // attempt. So each attempt reaches the upstream at most twice.
  for (let i = 0; i < 2; i++) assert.equal((await postChat(gw, { ...hi('warm'), model: 'local-a' })).status, 200);
  const c0 = await counts();
  const r = await postChat(gw, { ...hi('[sim:fault=disconnect@0]'), model: 'local-a' });
  assert.equal(r.status, 502, r.text);
  assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:io,local-a:io');
  const sent = (await counts()).local - c0.local;
  assert.ok(sent >= 2 && sent <= 4, `two attempts reach the upstream 2 to 4 times, saw ${sent}`);
});

test('a pinned model (alias or backend name) is retried but never falls back', { timeout: T(10000) }, async () => {
  await simLocal.config({ fault: 'status=503', fault_rate: 1 });
  for (const model of ['local-a', 'coder']) {
    const c0 = await counts();
    const r = await postChat(gw, { ...hi('pinned'), model });
    assert.equal(r.status, 503, `${model}: ${r.text}`);
    assert.equal(r.headers.get('x-hybridgw-backend'), 'local-a');
    assert.equal(r.headers.get('x-hybridgw-fallback-from'), null);
    assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:status_503,local-a:status_503');
    const c1 = await counts();
    assert.equal(c1.local - c0.local, 2, `${model}: retried once`);
    assert.equal(c1.front, c0.front, `${model}: the frontier was not asked`);
    const log = await gw.logFor(r.headers.get('x-request-id'));
    assert.equal(log.fallback_from, undefined);
    assert.equal(log.attempts, 2);
  }
});

test('a non-retryable 4xx is answered at once: one upstream request, no fallback', { timeout: T(8000) }, async () => {
  for (const st of [400, 422]) {
    const rt0 = await metric(gw, new RegExp(`^hybridgw_retries_total\\{backend="local-a",reason="status_${st}"\\}`));
    const c0 = await counts();
    const r = await postChat(gw, hi(`[sim:fault=status=${st}]`));
    assert.equal(r.status, st, r.text);
    assert.equal(r.headers.get('x-hybridgw-attempts'), null, 'one attempt');
    assert.equal(r.headers.get('x-hybridgw-fallback-from'), null);
    const c1 = await counts();
    assert.equal(c1.local - c0.local, 1, `status ${st}: exactly one upstream request`);
    assert.equal(c1.front, c0.front, `status ${st}: no fallback`);
    assert.equal(await metric(gw, new RegExp(`^hybridgw_retries_total\\{backend="local-a",reason="status_${st}"\\}`)), rt0);
  }
});

test('circuit breaker: opens after N failures, half-open after the cooldown, closes on a good probe', { timeout: T(20000) }, async () => {
  const cooldown = 1000;
  const g = await startGw({
    backends: backends({
      localRetry: '{ attempts: 0 }',
      localCircuit: `{ failures: 3, window: 10s, cooldown: ${cooldown}ms }`,
      localTimeouts: '{ connect: 1s, first_byte: 5s, stream_idle: 5s, request: 30s }',
    }),
  }, 'gateway-circuit');
  const state = () => metric(g, circuitRe('local-a'));
  assert.equal(await state(), 0, 'closed at start');
  await simLocal.config({ fault: 'status=503', fault_rate: 1 });

  // three failures: each request still answered, by the fallback
  const c0 = await counts();
  for (let i = 0; i < 3; i++) {
    const r = await postChat(g, hi(`c${i}`));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-hybridgw-backend'), 'frontier-b');
    assert.equal(r.headers.get('x-hybridgw-attempts'), 'local-a:status_503,frontier-b:ok');
  }
  let c1 = await counts();
  assert.equal(c1.local - c0.local, 3);
  assert.equal(await state(), 1, 'open after 3 failures');

  // open: local-a is not asked any more; the fallback answers
  for (let i = 0; i < 3; i++) {
    const r = await postChat(g, hi(`open${i}`));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-hybridgw-backend'), 'frontier-b');
    assert.equal(r.headers.get('x-hybridgw-fallback-from'), 'local-a');
    const log = await g.logFor(r.headers.get('x-request-id'));
    assert.match(log.attempt_log, /^local-a:unavailable,frontier-b:ok$/);
  }
  // pinned to it: nothing else to try
  const pinned = await postChat(g, { ...hi('pinned-open'), model: 'local-a' });
  assert.equal(pinned.status, 503);
  assert.equal(pinned.json.error.code, 'no_healthy_backend');
  let c2 = await counts();
  assert.equal(c2.local, c1.local, 'the sim request count stopped growing while open');
  assert.equal(c2.front - c1.front, 3);

  // after the cooldown one probe goes through; it fails: open again
  await sleep(cooldown + 200);
  const f = await postChat(g, hi('probe-fail'));
  assert.equal(f.status, 200);
  assert.equal(f.headers.get('x-hybridgw-attempts'), 'local-a:status_503,frontier-b:ok', 'the probe went to local-a');
  c1 = await counts();
  assert.equal(c1.local - c2.local, 1, 'exactly one probe');
  assert.equal(await state(), 1, 'open again after a failed probe');
  const again = await postChat(g, hi('after-failed-probe'));
  assert.equal(again.headers.get('x-hybridgw-backend'), 'frontier-b');
  c2 = await counts();
  assert.equal(c2.local, c1.local, 'no request to local-a right after the failed probe');

  // the upstream recovers (slowly, so the probe can be seen in flight)
  await simLocal.config({ fault: 'none', ttft_ms: 2000 });
  await sleep(cooldown + 200);
  assert.equal(await state(), 1, 'still open until a request probes it');
  const probe = postChat(g, hi('probe-ok'), { timeout: T(10000) });
  await waitFor(async () => (await state()) === 2, { timeout: 1800, interval: 20, what: 'half-open during the probe' });
  // only one probe at a time: a second request meanwhile goes elsewhere
  const side = await postChat(g, hi('during-probe'));
  assert.equal(side.headers.get('x-hybridgw-backend'), 'frontier-b');
  const p = await probe;
  assert.equal(p.status, 200);
  assert.equal(p.headers.get('x-hybridgw-backend'), 'local-a', 'the probe answered');
  assert.equal(await state(), 0, 'closed after a good probe');
  await simLocal.config({ ttft_ms: 0 });
  const back = await postChat(g, hi('closed'));
  assert.equal(back.headers.get('x-hybridgw-backend'), 'local-a');
  assert.equal(back.headers.get('x-hybridgw-fallback-from'), null);
  assert.equal(await stopAndCheck(g.proc), '');
});

test('router.deadline stops the retries', { timeout: T(15000) }, async () => {
  // 10 retries of 150-300 ms would take 1.5-3 s; the deadline is 1 s
  const g = await startGw({
    backends: backends({
      localRetry: '{ attempts: 10, backoff: 300ms, max_backoff: 300ms }',
      localTimeouts: '{ connect: 1s, first_byte: 10s, stream_idle: 5s, request: 30s }',
    }),
    router: { deadline: '1s' },
  }, 'gateway-deadline');
  const c0 = await counts();
  const t0 = Date.now();
  const r = await postChat(g, { ...hi('[sim:fault=status=503]'), model: 'local-a' });
  const elapsed = Date.now() - t0;
  assert.equal(r.status, 503, r.text);
  const log = await g.logFor(r.headers.get('x-request-id'));
  assert.ok(log.attempts >= 2 && log.attempts <= 8, `attempts ${log.attempts} (11 without a deadline)`);
  assert.equal(log.attempt_log, Array(log.attempts).fill('local-a:status_503').join(','));
  assert.equal((await counts()).local - c0.local, log.attempts);
  assert.ok(elapsed < 1000 + Math.min(T(700), 1400), `ended near the deadline (${elapsed} ms)`);

  // the deadline also caps one attempt's wait for a first byte (10 s here)
  const t1 = Date.now();
  const s = await postChat(g, { ...hi('[sim:fault=stall@0]'), model: 'local-a' }, { timeout: T(8000) });
  const e1 = Date.now() - t1;
  assert.ok(s.status === 504 || s.status === 503, `${s.status} ${s.text}`);
  assert.ok(e1 < 1000 + QUICK, `a stalled upstream is abandoned at the deadline, not after first_byte 10 s (${e1} ms)`);
  assert.equal(await stopAndCheck(g.proc), '');
});

test('gateway and simulators exit cleanly on SIGTERM', { timeout: T(20000) }, async () => {
  const g = await stopAndCheck(gw.proc);
  const a = await stopAndCheck(simLocal.proc);
  const b = await stopAndCheck(simFront.proc);
  assert.equal(g, '', g);
  assert.equal(a, '', a);
  assert.equal(b, '', b);
});
