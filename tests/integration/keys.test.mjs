// keys.test.mjs - virtual API keys and the spend ledger end to end:
// `hybridgw keys ...` / `hybridgw spend` (run synchronously, same build dir)
// against a gateway with `ledger: { database: sqlite:///... }`.
//
// Keys: secret format, Bearer and x-api-key, static keys next to virtual
// ones, no open mode with a ledger, unknown / expired / revoked keys, model
// lists, the frontier tier and x-hybridgw-tier, rotation, Anthropic error
// shapes, keys picked up and changed while the gateway runs. Ledger: every
// answered request appended off the request path (the metric), flushed on
// SIGTERM, reported by `spend`, persisted across a restart. Secrets: never in
// the gateway's stdout/stderr, nor in `keys list/show/teams`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  Sim, Gateway, gatewayYamlMulti, stopAndCheck, chatBody, http, sseData, waitFor, metricSample, tempDir,
  GATEWAY_BIN, T,
} from './lib/harness.mjs';

// USD per million tokens; frontier-b is the counterfactual reference
const PRICES = { 'local-a': { input: 2, output: 8 }, 'frontier-b': { input: 10, output: 40 } };
const SECRET_RE = /^hgw-[A-Za-z0-9]{40}$/;
const ID_RE = /^vk_[0-9a-f]{16}$/;
const REVOKED_MSG = 'This API key has been revoked.';
/** A refresh is 1 s; allow for scheduling (and sanitizers). */
const REFRESH_WAIT = T(3000);

let sim;
let dir;
let dbUrl;
let gw; // the main gateway: ledger + the static key sk-test
const gateways = []; // every gateway started here, for the secret check and after()
const secrets = new Set(); // every secret the CLI handed out (old ones too)
const keys = {}; // name -> { id, name, prefix, secret }

// ---- the command line --------------------------------------------------------------------

/** Run `hybridgw args...` synchronously; { code, stdout, stderr }, never throws on exit status. */
function cli(args, { db = dbUrl } = {}) {
  const full = db ? [...args, '--db', db] : args;
  // no HYBRIDGW_DATABASE_URL from the caller's environment: --db says which database
  const env = { ...process.env };
  delete env.HYBRIDGW_DATABASE_URL;
  try {
    const stdout = execFileSync(GATEWAY_BIN, full, {
      encoding: 'utf8', env, timeout: T(15000), stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    if (e.status === null || e.status === undefined) throw e; // spawn error or timeout
    return { code: e.status, stdout: e.stdout || '', stderr: e.stderr || '' };
  }
}

/** cli() that must exit 0; returns stdout. */
function cliOk(args, opts) {
  const r = cli(args, opts);
  assert.equal(r.code, 0, `hybridgw ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** `keys create --json`: { id, name, prefix, secret }, remembered by name. */
function createKey(name, extra = [], opts) {
  const k = JSON.parse(cliOk(['keys', 'create', '--name', name, ...extra, '--json'], opts));
  assert.match(k.secret, SECRET_RE, 'secret: hgw- + 40 base62');
  assert.match(k.id, ID_RE, 'id: vk_ + 16 hex');
  assert.equal(k.name, name);
  assert.equal(k.prefix, k.secret.slice(0, 12), 'prefix: the first 12 characters of the secret');
  secrets.add(k.secret);
  keys[name] = k;
  return k;
}

function spendJson(by, opts) {
  return JSON.parse(cliOk(['spend', '--by', by, '--since', 'all', '--json'], opts));
}

// ---- HTTP with a given key -----------------------------------------------------------------

const bearer = (s) => ({ authorization: `Bearer ${s}` });
const xApiKey = (s) => ({ 'x-api-key': s });

function chatAs(g, headers, body = chatBody('hi [sim:output_tokens=3]')) {
  return http(`${g.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

function messagesAs(g, headers, body = {
  model: 'auto', max_tokens: 50, messages: [{ role: 'user', content: 'hi [sim:output_tokens=2]' }],
}) {
  return http(`${g.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers },
    body: JSON.stringify(body),
  });
}

/** An OpenAI-shaped error: status, type, code, param (when given) and message. */
function assertOpenAIError(r, status, { type, code, param, message } = {}) {
  assert.equal(r.status, status, `status ${r.status}: ${r.text}`);
  assert.ok(r.json && typeof r.json.error === 'object', `OpenAI error body: ${r.text}`);
  const e = r.json.error;
  if (type) assert.equal(e.type, type, r.text);
  if (code) assert.equal(e.code, code, r.text);
  if (param !== undefined) assert.equal(e.param, param, r.text);
  if (message instanceof RegExp) assert.match(e.message, message);
  else if (message) assert.equal(e.message, message);
}

/** An Anthropic-shaped error: { type: "error", error: { type, message } }. */
function assertAnthropicError(r, status, type, message) {
  assert.equal(r.status, status, `status ${r.status}: ${r.text}`);
  assert.ok(r.json, `JSON body: ${r.text}`);
  assert.equal(r.json.type, 'error', r.text);
  assert.equal(r.json.error?.type, type, r.text);
  assert.equal(typeof r.json.error.message, 'string');
  if (message instanceof RegExp) assert.match(r.json.error.message, message);
  else if (message) assert.equal(r.json.error.message, message);
}

// ---- gateways --------------------------------------------------------------------------------

function yamlFor(url, { staticKey = true } = {}) {
  const y = gatewayYamlMulti({
    admin: true,
    backends: Object.entries(PRICES).map(([name, p]) => ({
      name,
      tier: name.startsWith('local') ? 'local' : 'frontier',
      url: sim.url,
      extra: `    price: { per_mtok: { input: ${p.input}, output: ${p.output} } }`,
    })),
    models: { coder: 'local-a' },
    router: { default_tier: 'local' },
    extra: `ledger: { database: "${url}" }`,
  });
  if (staticKey) return y;
  const stripped = y.replace(/^auth:.*\n/m, '');
  assert.notEqual(stripped, y, 'the static key line was removed');
  return stripped;
}

async function startGateway(url, opts = {}) {
  const g = await Gateway.start(yamlFor(url, opts), { name: opts.name || 'gateway-keys', env: opts.env || {} });
  gateways.push(g);
  assert.ok(g.adminPort, 'the admin listener is up');
  return g;
}

/** The ledger writer's counters and queue from /metrics. */
async function ledgerState(g) {
  const text = await g.metrics();
  const rec = (result) => metricSample(text, new RegExp(`^hybridgw_ledger_records_total\\{result="${result}"\\}`));
  const st = {
    written: rec('written'), dropped: rec('dropped'), failed: rec('failed'),
    queued: metricSample(text, /^hybridgw_ledger_queue_records\b/),
  };
  for (const [k, v] of Object.entries(st)) assert.ok(Number.isFinite(v), `${k} in /metrics: ${v}`);
  return st;
}

/** The cost of a 200 response's usage on a backend, with PRICES. */
function costOf(usage, backend) {
  const inp = usage.prompt_tokens ?? usage.input_tokens;
  const out = usage.completion_tokens ?? usage.output_tokens;
  assert.ok(Number.isInteger(inp) && Number.isInteger(out), `usage ${JSON.stringify(usage)}`);
  return {
    input: inp,
    output: out,
    cost: (inp * PRICES[backend].input + out * PRICES[backend].output) / 1e6,
    counterfactual: (inp * PRICES['frontier-b'].input + out * PRICES['frontier-b'].output) / 1e6,
  };
}
const near = (a, b) => Math.abs(a - b) <= 1e-9 + 1e-6 * Math.abs(b);

/** What the "ledger" key's answered requests should add up to. */
const ledgerSent = { requests: 0, input: 0, output: 0, cost: 0, counterfactual: 0 };

/** The usage of a 200 response: JSON, an OpenAI stream (include_usage) or an Anthropic stream. */
function usageOf(r, kind) {
  if (kind === 'chat' || kind === 'messages') return r.json.usage;
  const events = sseData(r.text).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
  if (kind === 'chat-stream') {
    const u = events.find((c) => c.usage)?.usage;
    assert.ok(u, `a usage chunk in ${r.text}`);
    return u;
  }
  const start = events.find((e) => e.type === 'message_start');
  const delta = events.find((e) => e.type === 'message_delta');
  assert.ok(start && delta, `message_start and message_delta in ${r.text}`);
  return { input_tokens: start.message.usage.input_tokens, output_tokens: delta.usage.output_tokens };
}

/** n answered requests with the "ledger" key, cycling through both dialects, streaming or not. */
async function ledgerTraffic(g, n) {
  const k = keys['ledger-key'];
  const kinds = ['chat', 'messages', 'chat-stream', 'messages-stream'];
  for (let i = 0; i < n; i++) {
    const kind = kinds[(ledgerSent.requests + i) % kinds.length];
    const content = `ledger ${i} [sim:output_tokens=${i + 2}]`;
    const stream = kind.endsWith('-stream');
    const r = kind.startsWith('messages')
      ? await messagesAs(g, xApiKey(k.secret), {
        model: 'auto', max_tokens: 50, stream, messages: [{ role: 'user', content }],
      })
      : await chatAs(g, bearer(k.secret), chatBody(content, stream ? { stream, stream_options: { include_usage: true } } : {}));
    assert.equal(r.status, 200, r.text);
    const backend = r.headers.get('x-hybridgw-backend');
    assert.equal(backend, 'local-a');
    const c = costOf(usageOf(r, kind), backend);
    assert.equal(c.output, i + 2, `${kind}: the sim answers with the requested number of tokens`);
    ledgerSent.requests += 1;
    ledgerSent.input += c.input;
    ledgerSent.output += c.output;
    ledgerSent.cost += c.cost;
    ledgerSent.counterfactual += c.counterfactual;
  }
}

function assertLedgerTeamRow(report, what) {
  const row = report.rows.find((x) => x.group === 'team-ledger');
  assert.ok(row, `${what}: a team-ledger row in ${JSON.stringify(report)}`);
  assert.equal(row.requests, ledgerSent.requests, `${what}: requests`);
  assert.equal(row.input_tokens, ledgerSent.input, `${what}: input tokens`);
  assert.equal(row.output_tokens, ledgerSent.output, `${what}: output tokens`);
  assert.ok(near(row.cost_usd, ledgerSent.cost), `${what}: cost ${row.cost_usd}, want ${ledgerSent.cost}`);
  assert.ok(near(row.counterfactual_usd, ledgerSent.counterfactual),
    `${what}: counterfactual ${row.counterfactual_usd}, want ${ledgerSent.counterfactual}`);
  assert.ok(ledgerSent.cost > 0, 'priced traffic costs something');
  return row;
}

// ---- fixture -----------------------------------------------------------------------------------

before(async () => {
  sim = await Sim.start({ name: 'sim-keys' });
  dir = tempDir('hybridgw-keys-');
  dbUrl = `sqlite://${path.join(dir, 'ledger.db')}`; // dir is absolute: sqlite:///tmp/...
  // keys that exist before the gateway starts (read at start-up)
  createKey('alice', ['--team', 'team-a']);
  createKey('limited', ['--team', 'team-b', '--models', 'coder,local']);
  createKey('forcer', ['--team', 'team-b', '--force-tier']);
  createKey('expired', ['--expires', '2020-01-01']);
  createKey('to-revoke', ['--team', 'team-a']);
  createKey('to-rotate', ['--team', 'team-a']);
  createKey('ledger-key', ['--team', 'team-ledger']);
  gw = await startGateway(dbUrl);
  await gw.proc.waitStderr(/keys: 7 virtual keys from the sqlite database/);
});

after(async () => {
  for (const g of gateways) await g.stop({ signal: 'SIGKILL' });
  if (sim) await sim.stop({ signal: 'SIGKILL' });
});

// ---- the command line --------------------------------------------------------------------

test('keys create prints the secret once with the id; bad flags exit 2, unknown ids 1', () => {
  const r = cli(['keys', 'create', '--name', 'text-output', '--team', 'team-x']);
  assert.equal(r.code, 0, r.stderr);
  const secretsShown = r.stdout.match(/hgw-[A-Za-z0-9]{40}/g) || [];
  assert.equal(secretsShown.length, 1, `one secret in:\n${r.stdout}`);
  assert.match(r.stdout, /vk_[0-9a-f]{16}/, 'the key id is printed');
  assert.match(r.stdout, /shown once/i);
  secrets.add(secretsShown[0]);
  assert.notEqual(secretsShown[0], keys.alice.secret, 'secrets differ');

  assert.equal(cli(['keys', 'create', '--team', 'x']).code, 2, '--name is required');
  assert.equal(cli(['keys', 'create', '--name', 'x', '--expires', 'soonish']).code, 2);
  assert.equal(cli(['spend', '--by', 'colour']).code, 2);
  const unknown = cli(['keys', 'revoke', 'vk_0000000000000000']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no such key/);
});

test('keys list / show / teams never print a secret or its hash', () => {
  const outs = {
    'keys list --json': cliOk(['keys', 'list', '--json']),
    'keys list': cliOk(['keys', 'list']),
    'keys show --json': cliOk(['keys', 'show', keys.alice.id, '--json']),
    'keys show': cliOk(['keys', 'show', keys.alice.id]),
    'keys teams --json': cliOk(['keys', 'teams', '--json']),
  };
  const list = JSON.parse(outs['keys list --json']);
  assert.ok(Array.isArray(list));
  for (const name of Object.keys(keys)) {
    const k = list.find((x) => x.id === keys[name].id);
    assert.ok(k, `${name} is listed`);
    assert.equal(k.name, name);
    assert.equal(k.prefix, keys[name].prefix);
    assert.ok(!('secret' in k) && !('sha256' in k), `no secret/sha256 field: ${JSON.stringify(k)}`);
  }
  assert.equal(list.find((x) => x.id === keys.expired.id).status, 'expired');
  assert.equal(list.find((x) => x.id === keys.alice.id).status, 'active');
  assert.equal(list.find((x) => x.id === keys.forcer.id).may_force_tier, true);
  assert.equal(list.find((x) => x.id === keys.limited.id).allowed_models, 'coder,local');
  for (const s of secrets) {
    const hash = crypto.createHash('sha256').update(s).digest('hex');
    for (const [what, out] of Object.entries(outs)) {
      assert.ok(!out.includes(s), `${what} shows a secret`);
      assert.ok(!out.includes(s.slice(12)), `${what} shows the hidden part of a secret`);
      assert.ok(!out.toLowerCase().includes(hash), `${what} shows a secret's SHA-256`);
    }
  }
});

// ---- authentication ------------------------------------------------------------------------

test('a virtual key works as Bearer and as x-api-key; the static key keeps working', { timeout: T(8000) }, async () => {
  const s = keys.alice.secret;
  const a = await chatAs(gw, bearer(s));
  assert.equal(a.status, 200, a.text);
  assert.equal(a.json.object, 'chat.completion');
  const b = await chatAs(gw, xApiKey(s));
  assert.equal(b.status, 200, b.text);
  const m = await messagesAs(gw, xApiKey(s));
  assert.equal(m.status, 200, m.text);
  assert.equal(m.json.type, 'message');
  const st = await chatAs(gw, bearer('sk-test'));
  assert.equal(st.status, 200, `static key: ${st.text}`);
  // the access log names the key, never its secret
  const log = await gw.logFor(a.headers.get('x-request-id'));
  assert.equal(log.status, 200);
  assert.ok(!JSON.stringify(log).includes(s));
});

test('unknown, malformed and missing keys: 401 invalid_api_key', { timeout: T(8000) }, async () => {
  const unknown = `hgw-${'A1b2C3d4E5'.repeat(4)}`; // the shape of a secret, never issued
  assert.match(unknown, SECRET_RE);
  for (const h of [bearer(unknown), xApiKey(unknown), bearer('hgw-short'), bearer('sk-nope'), {}]) {
    const r = await chatAs(gw, h);
    assertOpenAIError(r, 401, { type: 'invalid_request_error', code: 'invalid_api_key' });
  }
  const r = await messagesAs(gw, xApiKey(unknown));
  assertAnthropicError(r, 401, 'authentication_error');
});

test('an expired key: 401 "...expired" (OpenAI and Anthropic shapes)', { timeout: T(8000) }, async () => {
  const s = keys.expired.secret;
  assertOpenAIError(await chatAs(gw, bearer(s)), 401, { code: 'invalid_api_key', message: /expired/ });
  assertAnthropicError(await messagesAs(gw, xApiKey(s)), 401, 'authentication_error', /expired/);
});

test('a key created while the gateway runs works within a refresh', { timeout: T(8000) }, async () => {
  const k = createKey('late', ['--team', 'team-a']);
  const t0 = Date.now();
  await waitFor(async () => (await chatAs(gw, bearer(k.secret))).status === 200, {
    timeout: REFRESH_WAIT, what: 'the new key to be accepted',
  });
  // once accepted it stays accepted (every worker has the new set)
  const elapsed = Date.now() - t0;
  for (let i = 0; i < 4; i++) assert.equal((await chatAs(gw, bearer(k.secret))).status, 200);
  assert.ok(elapsed < REFRESH_WAIT, `accepted after ${elapsed} ms`);
});

// ---- models and tiers ----------------------------------------------------------------------

test('--models is enforced: 403 permission_error model_not_allowed, param model', { timeout: T(8000) }, async () => {
  const s = keys.limited.secret;
  const ok = await chatAs(gw, bearer(s), chatBody('hi', { model: 'coder' }));
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.headers.get('x-hybridgw-backend'), 'local-a');
  const ok2 = await chatAs(gw, bearer(s), chatBody('hi', { model: 'local' }));
  assert.equal(ok2.status, 200, ok2.text);
  for (const model of ['auto', 'frontier-b', 'frontier']) {
    const r = await chatAs(gw, bearer(s), chatBody('hi', { model }));
    assertOpenAIError(r, 403, { type: 'permission_error', code: 'model_not_allowed', param: 'model', message: new RegExp(model) });
  }
  // the same on /v1/messages, in the Anthropic shape
  const m = await messagesAs(gw, xApiKey(s), { model: 'auto', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
  assertAnthropicError(m, 403, 'permission_error', /may not use the model/);
  // a key without a list may use any model
  const any = await chatAs(gw, bearer(keys.alice.secret), chatBody('hi', { model: 'frontier-b' }));
  assert.equal(any.status, 200, any.text);
  assert.equal(any.headers.get('x-hybridgw-backend'), 'frontier-b');
});

test('/v1/models shows a key what it may use', { timeout: T(8000) }, async () => {
  const list = async (secret) => {
    const r = await http(`${gw.url}/v1/models`, { headers: bearer(secret) });
    assert.equal(r.status, 200, r.text);
    return r.json.data.map((m) => m.id);
  };
  // --models coder,local: exactly those two
  assert.deepEqual((await list(keys.limited.secret)).sort(), ['coder', 'local']);
  // no list, no --force-tier: everything but the frontier alias
  const alice = await list(keys.alice.secret);
  assert.ok(alice.includes('auto') && alice.includes('frontier-b') && alice.includes('coder'), alice.join());
  assert.ok(!alice.includes('frontier'), alice.join());
  assert.ok((await list(keys.forcer.secret)).includes('frontier'));
  // one model: a hidden one reads as not existing
  const one = await http(`${gw.url}/v1/models/coder`, { headers: bearer(keys.limited.secret) });
  assert.equal(one.status, 200, one.text);
  assert.equal(one.json.id, 'coder');
  const hidden = await http(`${gw.url}/v1/models/frontier-b`, { headers: bearer(keys.limited.secret) });
  assertOpenAIError(hidden, 404, { type: 'invalid_request_error', code: 'model_not_found', param: 'model' });
  // static keys see everything, as before
  const all = await http(`${gw.url}/v1/models`, { headers: { authorization: 'Bearer sk-test' } });
  assert.ok(all.json.data.some((m) => m.id === 'frontier'));
});

test('model frontier needs --force-tier: 403 tier_not_allowed otherwise', { timeout: T(8000) }, async () => {
  const r = await chatAs(gw, bearer(keys.alice.secret), chatBody('hi', { model: 'frontier' }));
  assertOpenAIError(r, 403, { type: 'permission_error', code: 'tier_not_allowed', param: 'model' });
  const m = await messagesAs(gw, xApiKey(keys.alice.secret), { model: 'frontier', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
  assertAnthropicError(m, 403, 'permission_error', /frontier/);
  const f = await chatAs(gw, bearer(keys.forcer.secret), chatBody('hi', { model: 'frontier' }));
  assert.equal(f.status, 200, f.text);
  assert.equal(f.headers.get('x-hybridgw-backend'), 'frontier-b');
});

test('x-hybridgw-tier is honoured only for keys with --force-tier', { timeout: T(8000) }, async () => {
  const tier = { 'x-hybridgw-tier': 'frontier' };
  const plain = await chatAs(gw, { ...bearer(keys.alice.secret), ...tier });
  assert.equal(plain.status, 200, plain.text);
  assert.equal(plain.headers.get('x-hybridgw-backend'), 'local-a', 'ignored for a key without --force-tier');
  const forced = await chatAs(gw, { ...bearer(keys.forcer.secret), ...tier });
  assert.equal(forced.status, 200, forced.text);
  assert.equal(forced.headers.get('x-hybridgw-backend'), 'frontier-b', 'honoured with --force-tier');
  const back = await chatAs(gw, { ...bearer(keys.forcer.secret), 'x-hybridgw-tier': 'local' });
  assert.equal(back.headers.get('x-hybridgw-backend'), 'local-a');
});

test('keys update changes a running key within a refresh (models, force-tier, team, expiry)', { timeout: T(10000) }, async () => {
  const k = createKey('updatable', ['--team', 'team-a', '--models', 'coder']);
  await waitFor(async () => (await chatAs(gw, bearer(k.secret), chatBody('hi', { model: 'coder' }))).status === 200, {
    timeout: REFRESH_WAIT, what: 'the new key',
  });
  assert.equal((await chatAs(gw, bearer(k.secret))).status, 403, 'auto is not in its list yet');
  cliOk(['keys', 'update', k.id, '--models', 'coder,auto,frontier', '--force-tier', '--team', 'team-upd']);
  await waitFor(async () => (await chatAs(gw, bearer(k.secret))).status === 200, {
    timeout: REFRESH_WAIT, what: 'model auto to be allowed after keys update',
  });
  const f = await chatAs(gw, bearer(k.secret), chatBody('hi', { model: 'frontier' }));
  assert.equal(f.status, 200, f.text);
  assert.equal(f.headers.get('x-hybridgw-backend'), 'frontier-b');
  const show = JSON.parse(cliOk(['keys', 'show', k.id, '--json']));
  assert.equal(show.may_force_tier, true);
  assert.equal(show.allowed_models, 'coder,auto,frontier');
  assert.equal(show.team, 'team-upd');
  // an expiry set on a running key: refused as expired, then valid again with --expires never
  cliOk(['keys', 'update', k.id, '--expires', '2020-01-01']);
  const r = await waitFor(async () => {
    const x = await chatAs(gw, bearer(k.secret));
    return x.status === 401 ? x : null;
  }, { timeout: REFRESH_WAIT, what: 'the key to expire' });
  assertOpenAIError(r, 401, { code: 'invalid_api_key', message: /expired/ });
  cliOk(['keys', 'update', k.id, '--expires', 'never']);
  await waitFor(async () => (await chatAs(gw, bearer(k.secret))).status === 200, {
    timeout: REFRESH_WAIT, what: 'the key to be valid again',
  });
});

// ---- revocation and rotation ----------------------------------------------------------------

test('keys revoke: 401 "This API key has been revoked." within a refresh', { timeout: T(10000) }, async () => {
  const k = keys['to-revoke'];
  assert.equal((await chatAs(gw, bearer(k.secret))).status, 200);
  cliOk(['keys', 'revoke', k.id]);
  const t0 = Date.now();
  const r = await waitFor(async () => {
    const x = await chatAs(gw, bearer(k.secret));
    return x.status === 401 ? x : null;
  }, { timeout: REFRESH_WAIT, interval: 50, what: 'the revoked key to be refused' });
  const elapsed = Date.now() - t0;
  assertOpenAIError(r, 401, { type: 'invalid_request_error', code: 'invalid_api_key', message: REVOKED_MSG });
  // every worker refuses it from now on, in both dialects
  for (let i = 0; i < 4; i++) assert.equal((await chatAs(gw, xApiKey(k.secret))).status, 401);
  assertAnthropicError(await messagesAs(gw, xApiKey(k.secret)), 401, 'authentication_error', REVOKED_MSG);
  // other keys are untouched; revoking again is fine
  assert.equal((await chatAs(gw, bearer(keys.alice.secret))).status, 200);
  cliOk(['keys', 'revoke', k.id]);
  assert.equal(JSON.parse(cliOk(['keys', 'show', k.id, '--json'])).status, 'revoked');
  assert.ok(elapsed < REFRESH_WAIT, `refused after ${elapsed} ms`);
});

test('keys rotate: the old secret stops working within a refresh, the new one works', { timeout: T(10000) }, async () => {
  const k = keys['to-rotate'];
  assert.equal((await chatAs(gw, bearer(k.secret))).status, 200);
  const rot = JSON.parse(cliOk(['keys', 'rotate', k.id, '--json']));
  secrets.add(rot.secret);
  assert.equal(rot.id, k.id, 'rotation keeps the id');
  assert.match(rot.secret, SECRET_RE);
  assert.notEqual(rot.secret, k.secret);
  assert.equal(rot.prefix, rot.secret.slice(0, 12));
  await waitFor(async () => (await chatAs(gw, bearer(k.secret))).status === 401, {
    timeout: REFRESH_WAIT, what: 'the old secret to be refused',
  });
  assertOpenAIError(await chatAs(gw, bearer(k.secret)), 401, { code: 'invalid_api_key' });
  assertAnthropicError(await messagesAs(gw, xApiKey(k.secret)), 401, 'authentication_error');
  const n = await chatAs(gw, bearer(rot.secret));
  assert.equal(n.status, 200, n.text);
  assert.equal((await messagesAs(gw, xApiKey(rot.secret))).status, 200);
  const show = JSON.parse(cliOk(['keys', 'show', k.id, '--json']));
  assert.equal(show.prefix, rot.prefix);
  assert.equal(show.status, 'active');
  assert.equal(show.team, 'team-a');
  keys['to-rotate'] = { ...k, secret: rot.secret, prefix: rot.prefix, old: k.secret };
});

// ---- the ledger ----------------------------------------------------------------------------

test('every answered request is appended to the ledger off the request path', { timeout: T(10000) }, async () => {
  // what earlier tests sent is written within a second (the writer's wait): start from an empty queue
  const base = (await waitFor(async () => {
    const s = await ledgerState(gw);
    return s.queued === 0 ? s : null;
  }, { timeout: T(3000), what: 'an empty ledger queue' })).written;
  await ledgerTraffic(gw, 4);
  // refused requests (403 model/tier, 401) are not billable: no records
  assert.equal((await chatAs(gw, bearer(keys.alice.secret), chatBody('hi', { model: 'frontier' }))).status, 403);
  assert.equal((await chatAs(gw, bearer(keys.limited.secret))).status, 403);
  assert.equal((await chatAs(gw, bearer('sk-nope'))).status, 401);
  const s = await waitFor(async () => {
    const x = await ledgerState(gw);
    return x.queued === 0 && x.written >= base + 4 ? x : null;
  }, { timeout: T(3000), what: 'four more ledger records written' });
  assert.equal(s.written, base + 4, `written ${s.written}, before ${base}: one record per answered request`);
  assert.equal(s.dropped, 0);
  assert.equal(s.failed, 0);
});

test('SIGTERM flushes the ledger; spend --by team/key shows the requests and the cost', { timeout: T(20000) }, async () => {
  // more traffic right before the signal: flushed at shutdown, not lost
  await ledgerTraffic(gw, 2);
  const problem = await stopAndCheck(gw.proc);
  assert.equal(problem, '', problem);
  assert.match(gw.proc.stderr, /ledger: \d+ records written, 0 dropped, 0 failed/);

  const byTeam = spendJson('team');
  assert.equal(byTeam.by, 'team');
  assertLedgerTeamRow(byTeam, 'after SIGTERM');
  // team-upd: the team a running key was moved to by keys update
  for (const t of ['team-a', 'team-b', 'team-upd']) {
    const row = byTeam.rows.find((x) => x.group === t);
    assert.ok(row && row.requests > 0 && row.cost_usd > 0, `${t} has spend: ${JSON.stringify(byTeam.rows)}`);
  }
  const byKey = spendJson('key');
  const names = byKey.rows.map((x) => x.group);
  for (const n of ['alice', 'limited', 'forcer', 'ledger-key', 'to-rotate', 'test']) {
    assert.ok(names.includes(n), `spend --by key has ${n}: ${names.join(', ')}`);
  }
  assert.equal(byKey.rows.find((x) => x.group === 'ledger-key').requests, ledgerSent.requests);
  const byBackend = spendJson('backend');
  assert.deepEqual(new Set(byBackend.rows.map((x) => x.group)), new Set(['local-a', 'frontier-b']));
  const total = byTeam.rows.reduce((a, x) => a + x.requests, 0);
  assert.equal(byTeam.total.requests, total);
  // the human table has the group and a total line
  const table = cliOk(['spend', '--by', 'team', '--since', 'all']);
  assert.match(table, /team-ledger/);
});

test('the ledger rows carry the key id, name and team (read with sqlite3)', (t) => {
  if (spawnSync('sqlite3', ['-version'], { encoding: 'utf8' }).error) {
    t.skip('sqlite3 not installed');
    return;
  }
  const file = dbUrl.slice('sqlite://'.length);
  const out = execFileSync('sqlite3', ['-readonly', '-json', file,
    "SELECT key_id, key_name, team, backend, status FROM spend WHERE key_name = 'ledger-key'"], { encoding: 'utf8', timeout: T(5000) });
  const rows = JSON.parse(out || '[]');
  assert.equal(rows.length, ledgerSent.requests);
  for (const r of rows) {
    assert.equal(r.key_id, keys['ledger-key'].id);
    assert.equal(r.team, 'team-ledger');
    assert.equal(r.backend, 'local-a');
    assert.equal(r.status, 200);
  }
  const stat = JSON.parse(execFileSync('sqlite3', ['-readonly', '-json', file,
    "SELECT key_id, team FROM spend WHERE key_name = 'test' LIMIT 1"], { encoding: 'utf8', timeout: T(5000) }) || '[]');
  assert.equal(stat.length, 1, 'the static key has rows too');
  assert.equal(stat[0].key_id, '', 'a static key has no key id');
});

test('restart on the same database: no static keys -> a key is required; totals keep counting', { timeout: T(20000) }, async () => {
  // at debug level: more log lines that must not carry a secret (checked at the end)
  const g = await startGateway(dbUrl, { staticKey: false, name: 'gateway-keys-restart', env: { HYBRIDGW_LOG_LEVEL: 'debug' } });
  // no open mode: a ledger without static keys still wants a key
  assertOpenAIError(await chatAs(g, {}), 401, { code: 'invalid_api_key' });
  // the static key is gone with the config
  assertOpenAIError(await chatAs(g, bearer('sk-test')), 401, { code: 'invalid_api_key' });
  assertAnthropicError(await messagesAs(g, {}), 401, 'authentication_error');
  // state from before the restart: revoked stays revoked, rotated stays rotated
  assertOpenAIError(await chatAs(g, bearer(keys['to-revoke'].secret)), 401, { message: REVOKED_MSG });
  assert.equal((await chatAs(g, bearer(keys['to-rotate'].old))).status, 401);
  assert.equal((await chatAs(g, bearer(keys['to-rotate'].secret))).status, 200);
  // a SIGHUP reload keeps the virtual keys (they are not part of the config)
  g.proc.signal('SIGHUP');
  await g.proc.waitStderr(/config reloaded/);
  assert.equal((await chatAs(g, bearer(keys.alice.secret))).status, 200, 'a virtual key after SIGHUP');
  assert.equal((await chatAs(g, {})).status, 401, 'still no open mode after SIGHUP');
  const before1 = spendJson('team').rows.find((x) => x.group === 'team-ledger').requests;
  await ledgerTraffic(g, 3);
  const problem = await stopAndCheck(g.proc);
  assert.equal(problem, '', problem);
  const row = assertLedgerTeamRow(spendJson('team'), 'after the restart');
  assert.equal(row.requests, before1 + 3);
});

test('a ledger with no keys at all and no static keys is not an open gateway', { timeout: T(15000) }, async () => {
  const emptyDb = `sqlite://${path.join(dir, 'empty.db')}`;
  const g = await startGateway(emptyDb, { staticKey: false, name: 'gateway-keys-empty' });
  await g.proc.waitStderr(/keys: 0 virtual keys/);
  assertOpenAIError(await chatAs(g, {}), 401, { code: 'invalid_api_key' });
  assertOpenAIError(await chatAs(g, bearer('anything')), 401, { code: 'invalid_api_key' });
  const k = createKey('first', [], { db: emptyDb });
  await waitFor(async () => (await chatAs(g, bearer(k.secret))).status === 200, {
    timeout: REFRESH_WAIT, what: 'the first key on an empty database',
  });
  assertOpenAIError(await chatAs(g, {}), 401, { code: 'invalid_api_key' });
  const problem = await stopAndCheck(g.proc);
  assert.equal(problem, '', problem);
});

// With a ledger configured a key is always required (the tests above show the 401s), so the
// start-up log must not claim the API is open.
test('with a ledger and no static keys the gateway does not claim to be open', {
}, () => {
  const noStatic = gateways.filter((g) => g.proc.name !== 'gateway-keys');
  assert.ok(noStatic.length >= 2);
  for (const g of noStatic) {
    const line = g.proc.stderr.split('\n').find((l) => /accepts requests without a key/.test(l));
    assert.ok(!line, `${g.proc.name} says it is open: ${line}`);
  }
});

// ---- secrets ---------------------------------------------------------------------------------

test('no secret appears in any gateway stdout/stderr, nor in the database files', () => {
  assert.ok(secrets.size >= 10, `secrets collected: ${secrets.size}`);
  assert.ok(gateways.length >= 3);
  for (const g of gateways) {
    assert.ok(g.proc.stdout.length > 0, `${g.proc.name} wrote an access log`);
    for (const s of secrets) {
      for (const [stream, text] of [['stdout', g.proc.stdout], ['stderr', g.proc.stderr]]) {
        assert.ok(!text.includes(s.slice(12)), `${g.proc.name} ${stream} contains (part of) a secret with prefix ${s.slice(0, 12)}`);
      }
    }
    // nor a presented but unknown one
    const unknownTail = 'A1b2C3d4E5'.repeat(4).slice(8);
    assert.ok(!g.proc.stdout.includes(unknownTail) && !g.proc.stderr.includes(unknownTail),
      `${g.proc.name} logs a presented unknown key`);
  }
  for (const f of fs.readdirSync(dir)) {
    const data = fs.readFileSync(path.join(dir, f));
    for (const s of secrets) assert.ok(!data.includes(s.slice(12)), `${f} contains a secret`);
  }
});
