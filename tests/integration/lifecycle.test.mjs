// lifecycle.test.mjs - health, readiness, metrics, SIGHUP reload, secrets
// in logs, backend ejection and recovery, admin listener, SIGTERM drain.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  Sim, Gateway, Proc, gatewayYaml, stopAndCheck, postChat, chatBody, http, sseData, waitFor,
  connectionRefused, tempDir, withTimeout, GATEWAY_BIN, AUTH, T,
} from './lib/harness.mjs';

const UPSTREAM_SECRET = 'sk-upstream-SECRET-4242';
const WRONG_KEY = 'sk-wrong-SECRET-1717';

let sim;
let gw;
let client;
const extra = []; // processes started by single tests, stopped in after()

before(async () => {
  sim = await Sim.start();
  gw = await Gateway.start(gatewayYaml({ simUrl: sim.url, admin: true, apiKey: UPSTREAM_SECRET }));
  client = gw.client();
});

after(async () => {
  for (const p of [gw?.proc, sim?.proc, ...extra]) if (p) await p.stop({ signal: 'SIGKILL' });
});

/** Run promtool check metrics on text; resolves { code, out }. */
function promtool(text) {
  return withTimeout(new Promise((resolve, reject) => {
    const p = spawn('/usr/bin/promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out }));
    p.stdin.end(text);
  }), T(10000), 'promtool');
}

/** The value of one sample line (name{labels} value) or undefined. */
function sample(text, re) {
  const line = text.split('\n').find((l) => !l.startsWith('#') && re.test(l));
  return line === undefined ? undefined : Number(line.trim().split(/\s+/).at(-1));
}

async function modelIds() {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  return ids;
}

test('/healthz answers 200', { timeout: T(5000) }, async () => {
  assert.ok(gw.adminPort, 'this gateway has an admin listener');
  const r = await http(`${gw.adminUrl}/healthz`);
  assert.equal(r.status, 200);
  assert.equal(r.json.status, 'ok');
});

test('/readyz answers 200 with a healthy backend', { timeout: T(5000) }, async () => {
  const r = await http(`${gw.adminUrl}/readyz`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.config_generation, 1);
});

test('/metrics has the request counters and passes promtool check metrics', { timeout: T(15000) }, async () => {
  // traffic first, so the families have samples
  const c = await client.chat.completions.create({ model: 'auto', messages: [{ role: 'user', content: 'm [sim:output_tokens=3]' }] });
  assert.equal(c.usage.completion_tokens, 3);
  await postChat(gw, chatBody('x'), { headers: { authorization: `Bearer ${WRONG_KEY}` } });
  const r = await http(`${gw.adminUrl}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain/);
  assert.match(r.text, /^# TYPE hybridgw_requests_total counter$/m);
  assert.ok(sample(r.text, /^hybridgw_requests_total\{.*status="200"/) >= 1, 'a 200 counted');
  assert.ok(sample(r.text, /^hybridgw_tokens_total\{.*kind="output"/) >= 3, 'output tokens counted');
  assert.equal(sample(r.text, /^hybridgw_backend_up\{backend="local-a"/), 1);
  assert.doesNotMatch(r.text, /sk-test|SECRET/, 'no key in metrics');
  const p = await promtool(r.text);
  assert.equal(p.code, 0, `promtool check metrics:\n${p.out}`);
});

test('SIGHUP reloads the config: a new model alias appears', { timeout: T(10000) }, async () => {
  gw.writeConfig(gatewayYaml({ simUrl: sim.url, admin: true, apiKey: UPSTREAM_SECRET, models: { coder: 'local-a', writer: 'local-a' } }));
  gw.proc.signal('SIGHUP');
  await waitFor(async () => (await modelIds()).includes('writer'), { timeout: T(3000), what: 'writer in /v1/models' });
  const { data, response } = await client.chat.completions
    .create({ model: 'writer', messages: [{ role: 'user', content: 'w [sim:output_tokens=2]' }] })
    .withResponse();
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.equal(response.headers.get('x-hybridgw-backend'), 'local-a');
  const ready = await http(`${gw.adminUrl}/readyz`);
  assert.equal(ready.json.config_generation, 2);
  const m = await http(`${gw.adminUrl}/metrics`);
  assert.equal(sample(m.text, /^hybridgw_config_reloads_total\{result="ok"\}/), 1);
});

test('SIGHUP with a broken config keeps the old one serving', { timeout: T(10000) }, async () => {
  // broken on purpose, with secrets in the bad values: the error message
  // must name the place, not echo the value
  gw.writeConfig(gatewayYaml({ simUrl: `http://user:${UPSTREAM_SECRET}@127.0.0.1:1`, apiKey: UPSTREAM_SECRET })
    + 'no_such_field: true\n');
  const errBefore = (gw.proc.stderr.match(/reload rejected/g) || []).length;
  gw.proc.signal('SIGHUP');
  await waitFor(() => (gw.proc.stderr.match(/reload rejected/g) || []).length > errBefore, {
    timeout: T(3000), what: 'the reload to be rejected',
  });
  assert.ok(gw.proc.running, 'the gateway is still running');
  assert.ok((await modelIds()).includes('writer'), 'the previous config still serves');
  const c = await client.chat.completions.create({ model: 'writer', messages: [{ role: 'user', content: 'still [sim:output_tokens=1]' }] });
  assert.equal(c.choices[0].finish_reason, 'stop');
  const ready = await http(`${gw.adminUrl}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal(ready.json.config_generation, 2);
  const m = await http(`${gw.adminUrl}/metrics`);
  assert.equal(sample(m.text, /^hybridgw_config_reloads_total\{result="error"\}/), 1);
  // back to a good config for what follows
  gw.writeConfig(gatewayYaml({ simUrl: sim.url, admin: true, apiKey: UPSTREAM_SECRET, models: { coder: 'local-a', writer: 'local-a' } }));
});

test('SIGHUP while a stream is in flight: the stream finishes on the old config', { timeout: T(10000) }, async () => {
  const stream = await client.chat.completions.create({
    model: 'writer', stream: true,
    messages: [{ role: 'user', content: 'reload under me [sim:output_tokens=8] [sim:tokens_per_sec=10]' }],
  });
  let n = 0;
  let content = 0;
  let finish = null;
  for await (const c of stream) {
    if (++n === 2) {
      gw.writeConfig(gatewayYaml({ simUrl: sim.url, admin: true, apiKey: UPSTREAM_SECRET, models: { coder: 'local-a', writer: 'local-a', editor: 'local-a' } }));
      gw.proc.signal('SIGHUP');
    }
    if (c.choices[0]?.delta?.content) content++;
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(content, 8, 'every token arrived');
  assert.equal(finish, 'stop');
  await waitFor(async () => (await modelIds()).includes('editor'), { timeout: T(3000), what: 'editor in /v1/models' });
  const ready = await http(`${gw.adminUrl}/readyz`);
  assert.equal(ready.json.config_generation, 3);
});

test('no key, upstream api_key or wrong key appears in stdout or stderr', { timeout: T(5000) }, async () => {
  const all = gw.proc.stdout + gw.proc.stderr;
  assert.ok(all.length > 0);
  for (const secret of ['sk-test', UPSTREAM_SECRET, WRONG_KEY]) {
    assert.equal(all.includes(secret), false, `${secret} found in the gateway's output`);
  }
  // the key's name is what the log shows
  assert.ok(gw.accessLog().some((e) => e.key === 'test'));
});

test('a config that fails to load at start: exit 2, file:line in the message, no secret', { timeout: T(10000) }, async () => {
  const dir = tempDir();
  const file = path.join(dir, 'bad.yaml');
  fs.writeFileSync(file, gatewayYaml({ simUrl: `http://u:${UPSTREAM_SECRET}@127.0.0.1:1`, apiKey: UPSTREAM_SECRET }));
  const p = new Proc('bad-gateway', GATEWAY_BIN, ['serve', '-c', file], { logDir: dir });
  extra.push(p);
  const r = await withTimeout(p.exited, T(5000), 'the gateway to exit');
  assert.equal(r.code, 2, p.stderr);
  assert.match(p.stderr, /bad\.yaml:\d+: backends\.local-a\.url/);
  assert.equal(p.stderr.includes(UPSTREAM_SECRET), false, 'the secret is not printed');
  assert.deepEqual(p.sanitizerReports(), []);
});

test('/readyz turns 503 when the only backend dies, and 200 when it is back', { timeout: T(20000) }, async () => {
  const s2 = await Sim.start({ name: 'sim-dies' });
  extra.push(s2.proc);
  const g2 = await Gateway.start(gatewayYaml({ simUrl: s2.url }), { name: 'gateway-readyz' });
  extra.push(g2.proc);
  assert.equal((await http(`${g2.adminUrl}/readyz`)).status, 200);
  const port = s2.port;
  const down = await s2.stop();
  assert.equal(down.code, 0, 'the simulator exits 0 on SIGTERM');
  const t0 = Date.now();
  const r = await waitFor(async () => {
    const x = await http(`${g2.adminUrl}/readyz`);
    return x.status === 503 ? x : null;
  }, { timeout: T(6000), interval: 100, what: '/readyz 503' });
  assert.equal(r.json.status, 'no healthy backend');
  assert.ok(Date.now() - t0 < T(6000));
  const m = await http(`${g2.adminUrl}/metrics`);
  assert.equal(sample(m.text, /^hybridgw_backend_up\{backend="local-a"/), 0);
  const chat = await postChat(g2, chatBody('anyone?'));
  assert.equal(chat.status, 503, chat.text);
  assert.equal(chat.json.error.code, 'no_healthy_backend');
  // the same port again: probes of the ejected URL bring it back
  const s3 = await Sim.start({ name: 'sim-back', port });
  extra.push(s3.proc);
  await waitFor(async () => (await http(`${g2.adminUrl}/readyz`)).status === 200, {
    timeout: T(6000), interval: 100, what: '/readyz 200 again',
  });
  const ok = await postChat(g2, chatBody('back [sim:output_tokens=1]'));
  assert.equal(ok.status, 200);
  assert.equal(await stopAndCheck(g2.proc), '');
  assert.equal(await stopAndCheck(s3.proc), '');
});

test('passive ejection: fail_threshold upstream failures in a row take the backend out', { timeout: T(20000) }, async () => {
  const s = await Sim.start({ name: 'sim-flaky' });
  extra.push(s.proc);
  const g = await Gateway.start(gatewayYaml({
    simUrl: s.url,
    health: '{ path: /health, interval: 0s, fail_threshold: 3 }',
  }), { name: 'gateway-passive' });
  extra.push(g.proc);
  for (let i = 0; i < 3; i++) {
    const r = await postChat(g, chatBody('boom [sim:fault=status=500]'));
    assert.equal(r.status, 502, `failure ${i + 1}`);
  }
  const r = await postChat(g, chatBody('after [sim:output_tokens=1]'));
  assert.equal(r.status, 503, `the 4th request: ${r.text}`);
  assert.equal(r.json.error.code, 'no_healthy_backend');
  assert.equal((await http(`${g.adminUrl}/readyz`)).status, 503);
  // the simulator itself is fine: the re-probe of an ejected URL brings it back
  await waitFor(async () => (await postChat(g, chatBody('again [sim:output_tokens=1]'))).status === 200, {
    timeout: T(6000), interval: 200, what: 'the backend to come back',
  });
  assert.equal(await stopAndCheck(g.proc), '');
  assert.equal(await stopAndCheck(s.proc), '');
});

test('admin_listen on port 0 next to listen on port 0', { timeout: T(10000) }, async () => {
  let g;
  try {
    g = await Gateway.start(gatewayYaml({ simUrl: sim.url, admin: true }), { name: 'gateway-admin' });
  } catch (e) {
    assert.fail(`the gateway does not start with admin_listen 127.0.0.1:0: ${e.message.split('\n').slice(0, 3).join(' ')}`);
  }
  extra.push(g.proc);
  assert.ok(g.adminPort, 'admin listening line printed');
  assert.notEqual(g.adminPort, g.port);
  assert.equal((await http(`http://127.0.0.1:${g.adminPort}/metrics`)).status, 200);
  assert.equal((await http(`http://127.0.0.1:${g.adminPort}/readyz`)).status, 200);
  assert.equal((await http(`${g.url}/metrics`)).status, 404, '/metrics is only on the admin listener');
  assert.equal((await http(`${g.url}/healthz`)).status, 200, 'probes may hit either listener');
  assert.equal(await stopAndCheck(g.proc), '');
});

test('SIGTERM drains: the running stream completes, new connections are refused, exit 0', { timeout: T(20000) }, async () => {
  // 20 tokens at 10 tokens/s: about 2 s
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...AUTH },
    body: JSON.stringify(chatBody('drain me [sim:output_tokens=20] [sim:tokens_per_sec=10]', { stream: true })),
    signal: AbortSignal.timeout(T(10000)),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = '';
  // read until a few events are in, then SIGTERM
  while (sseData(text).length < 3) {
    const { value, done } = await reader.read();
    assert.ok(!done, 'the stream ended early');
    text += dec.decode(value, { stream: true });
  }
  const tTerm = Date.now();
  gw.proc.signal('SIGTERM');
  await waitFor(() => connectionRefused(gw.port), { timeout: T(2000), interval: 50, what: 'new connections to be refused' });
  assert.ok(gw.proc.running, 'still running while the stream is in flight');
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
  }
  const data = sseData(text);
  assert.equal(data.at(-1), '[DONE]', 'the stream completed with [DONE]');
  const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
  assert.ok(chunks.every((c) => !c.error), 'no error event');
  const content = chunks.filter((c) => c.choices[0]?.delta?.content);
  assert.equal(content.length, 20, 'all 20 tokens arrived');
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  assert.ok(Date.now() - tTerm >= 1000, 'the stream went on after SIGTERM');
  const r = await gw.proc.wait(T(10000)); // already signalled
  assert.equal(r.killed, false, 'exited by itself');
  assert.equal(r.code, 0, gw.proc.tail());
  assert.deepEqual(gw.proc.sanitizerReports(), []);
  assert.match(gw.proc.stderr, /draining/);
});

test('the simulator exits cleanly on SIGTERM', { timeout: T(10000) }, async () => {
  assert.equal(await stopAndCheck(sim.proc), '');
});
