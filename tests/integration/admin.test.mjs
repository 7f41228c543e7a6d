// admin.test.mjs - the admin HTTP API (src/api/admin.c) end to end, on
// admin_listen behind auth.admin_key, with a sqlite ledger:
//
//   GET/POST /admin/keys, GET /admin/keys/{id}, POST /admin/keys/{id}/revoke,
//   POST /admin/keys/{id}/rotate, GET /admin/spend?by=...&since=...
//
// Authentication (Bearer and x-api-key; 401 otherwise, on every route), the
// API off without admin_key (404), not served on the client listener,
// creating keys (201, secret shown once, usable at once), listing without
// secrets, bad bodies (400 with a message), revoke and rotate taking effect
// on the very next request of this replica, 409 / 404, the spend report
// against the responses' usage and the configured prices, wrong methods
// (405 with Allow), and a clean SIGTERM with no secret and no admin key in
// the gateway's output.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import {
  Sim, Gateway, stopAndCheck, chatBody, http, waitFor, tempDir, T,
} from './lib/harness.mjs';

const ADMIN_KEY = 'adm-test-key';
const PRICE = { input: 1, output: 2 }; // USD per million tokens, local-a
const SECRET_RE = /^hgw-[A-Za-z0-9]{40}$/;
const ID_RE = /^vk_[0-9a-f]{16}$/;
const REVOKED_MSG = 'This API key has been revoked.';

let sim;
let gw; // the main gateway: admin_key + ledger
const gateways = []; // every gateway started here (the SIGTERM / secrets check, after())
const secrets = new Set(); // every secret the API handed out, old ones too

// ---- config and processes ----------------------------------------------------------------

function yaml({ db, adminKey = ADMIN_KEY }) {
  const auth = adminKey
    ? `auth: { admin_key: "${adminKey}", keys: [ { name: test, key: "sk-test" } ] }`
    : 'auth: { keys: [ { name: test, key: "sk-test" } ] }';
  return [
    'listen: "127.0.0.1:0"',
    'admin_listen: "127.0.0.1:0"',
    'workers: 2',
    'access_log: stdout',
    'limits: { max_body_bytes: 64KiB, header_timeout: 2s, body_timeout: 2s, idle_timeout: 5s, shutdown_timeout: 5s }',
    auth,
    db ? `ledger: { database: "${db}" }` : null,
    'backends:',
    '  local-a:',
    '    tier: local',
    '    provider: vllm',
    `    url: "${sim.url}"`,
    '    model: sim-model',
    '    timeouts: { connect: 1s, first_byte: 2s, stream_idle: 1s, request: 10s }',
    '    health: { path: /health, interval: 0s, fail_threshold: 1000 }',
    '    retry: { attempts: 0 }',
    '    circuit: { failures: 1000 }',
    `    price: { per_mtok: { input: ${PRICE.input}, output: ${PRICE.output} } }`,
    'router: { classifier: "off" }',
  ].filter((l) => l !== null).join('\n') + '\n';
}

async function startGateway(name, opts) {
  const dir = tempDir('hybridgw-admin-');
  const db = opts.db === false ? null : `sqlite://${path.join(dir, 'l.db')}`; // sqlite:///tmp/...
  const g = await Gateway.start(yaml({ ...opts, db }), { name, dir });
  gateways.push(g);
  assert.ok(g.adminPort, `${name}: the admin listener is up`);
  return g;
}

// ---- HTTP ------------------------------------------------------------------------------------

/** A request to the admin listener of g (or any base URL) with the admin key, Bearer by default. */
function adm(g, p, { method = 'GET', key = ADMIN_KEY, style = 'bearer', body, headers = {}, base } = {}) {
  const h = { ...headers };
  if (key !== null) {
    if (style === 'bearer') h.authorization = `Bearer ${key}`;
    else h['x-api-key'] = key;
  }
  if (body !== undefined) h['content-type'] = 'application/json';
  return http(`${base || g.adminUrl}${p}`, {
    method, headers: h, body: typeof body === 'string' || body === undefined ? body : JSON.stringify(body),
  });
}

/** POST /admin/keys that must answer 201; returns the key (secret remembered). */
async function createKey(g, body) {
  const r = await adm(g, '/admin/keys', { method: 'POST', body });
  assert.equal(r.status, 201, `create ${JSON.stringify(body)}: ${r.status} ${r.text}`);
  assert.match(r.json.secret, SECRET_RE, 'secret: hgw- + 40 base62');
  secrets.add(r.json.secret);
  assert.match(r.json.id, ID_RE, 'id: vk_ + 16 hex');
  return r.json;
}

async function listKeys(g) {
  const r = await adm(g, '/admin/keys');
  assert.equal(r.status, 200, r.text);
  assert.ok(Array.isArray(r.json?.keys), r.text);
  return r;
}

const bearer = (s) => ({ authorization: `Bearer ${s}` });

function chatAs(g, headers, body = chatBody('hi [sim:output_tokens=3]')) {
  return http(`${g.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

function messagesAs(g, headers, content = 'hi [sim:output_tokens=2]') {
  return http(`${g.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers },
    body: JSON.stringify({ model: 'auto', max_tokens: 50, messages: [{ role: 'user', content }] }),
  });
}

/** An OpenAI-shaped error with a non-empty message. */
function assertError(r, status, { type, message } = {}) {
  assert.equal(r.status, status, `status ${r.status}: ${r.text}`);
  assert.equal(r.headers.get('content-type'), 'application/json', r.text);
  assert.ok(r.json && typeof r.json.error === 'object', `error body: ${r.text}`);
  assert.equal(typeof r.json.error.message, 'string', r.text);
  assert.ok(r.json.error.message.length > 0, 'a message');
  if (type) assert.equal(r.json.error.type, type, r.text);
  if (message instanceof RegExp) assert.match(r.json.error.message, message);
  else if (message) assert.equal(r.json.error.message, message);
}

/** No secret (nor its hidden part, nor its SHA-256) and no admin key in text. */
function assertNoSecrets(text, what) {
  assert.ok(!text.includes(ADMIN_KEY), `${what} contains the admin key`);
  for (const s of secrets) {
    assert.ok(!text.includes(s.slice(12)), `${what} contains (part of) the secret with prefix ${s.slice(0, 12)}`);
    const hash = crypto.createHash('sha256').update(s).digest('hex');
    assert.ok(!text.toLowerCase().includes(hash), `${what} contains a secret's SHA-256`);
  }
}

// every admin route, with a method it accepts (an unknown id where one is needed)
const ROUTES = [
  ['GET', '/admin/keys'],
  ['POST', '/admin/keys', { name: 'must-not-exist' }],
  ['GET', '/admin/keys/vk_0123456789abcdef'],
  ['POST', '/admin/keys/vk_0123456789abcdef/revoke'],
  ['POST', '/admin/keys/vk_0123456789abcdef/rotate'],
  ['PATCH', '/admin/keys/vk_0123456789abcdef', { rpm: 1 }],
  ['GET', '/admin/teams'],
  ['PUT', '/admin/teams/must-not-exist', { rpm: 1 }],
  ['GET', '/admin/spend?by=team&since=3600'],
  ['GET', '/admin/nope'],
];

// ---- fixture ---------------------------------------------------------------------------------

before(async () => {
  sim = await Sim.start({ name: 'sim-admin' });
  gw = await startGateway('gateway-admin', {});
  await gw.proc.waitStderr(/keys: 0 virtual keys from the sqlite database/);
});

after(async () => {
  for (const g of gateways) await g.stop({ signal: 'SIGKILL' });
  if (sim) await sim.stop({ signal: 'SIGKILL' });
});

// ---- authentication and where the API is served ----------------------------------------------

test('every /admin route: 401 without the admin key or with a wrong one', { timeout: T(8000) }, async () => {
  const wrong = [
    ['no key', { key: null }],
    ['wrong Bearer', { key: 'adm-test-kez' }],
    ['wrong x-api-key', { key: 'adm-test-kez', style: 'x-api-key' }],
    ['a prefix of the key', { key: ADMIN_KEY.slice(0, -1) }],
    ['the key with more after it', { key: `${ADMIN_KEY}x` }],
    ['the client key', { key: 'sk-test' }],
    ['empty Bearer', { key: null, headers: { authorization: 'Bearer ' } }],
    ['another scheme', { key: null, headers: { authorization: `Basic ${ADMIN_KEY}` } }],
    ['a wrong Bearer beside a right x-api-key', { key: 'nope', headers: { 'x-api-key': ADMIN_KEY } }],
  ];
  for (const [method, p, body] of ROUTES) {
    for (const [what, o] of wrong) {
      const r = await adm(gw, p, { method, body, ...o });
      assertError(r, 401, { type: 'authentication_error' });
      assert.ok(!r.text.includes(ADMIN_KEY), `${method} ${p} (${what}) echoes the key`);
    }
  }
  // nothing was created by the refused POSTs
  assert.equal((await listKeys(gw)).json.keys.filter((k) => k.name === 'must-not-exist').length, 0);
});

test('the right admin key is accepted as Bearer (any case) and as x-api-key', { timeout: T(5000) }, async () => {
  for (const o of [{}, { style: 'x-api-key' }, { key: null, headers: { authorization: `bearer ${ADMIN_KEY}` } }]) {
    const r = await adm(gw, '/admin/keys', o);
    assert.equal(r.status, 200, `${JSON.stringify(o)}: ${r.text}`);
    assert.ok(Array.isArray(r.json.keys));
    const s = await adm(gw, '/admin/spend?by=team&since=3600', o);
    assert.equal(s.status, 200, s.text);
  }
  // an unknown /admin path: 404 once authorized
  assertError(await adm(gw, '/admin/nope'), 404);
});

test('the admin API is not served on the client listener', { timeout: T(5000) }, async () => {
  for (const [method, p, body] of ROUTES) {
    for (const o of [{}, { style: 'x-api-key' }]) {
      const r = await adm(gw, p, { method, body, base: gw.url, ...o });
      assertError(r, 404);
      assert.equal(r.json.error.code, 'unknown_url', r.text);
    }
  }
  assert.equal((await listKeys(gw)).json.keys.filter((k) => k.name === 'must-not-exist').length, 0);
});

test('without auth.admin_key (or without a ledger) the API is off: 404 on every route', { timeout: T(10000) }, async () => {
  const noKey = await startGateway('gateway-admin-nokey', { adminKey: null });
  const noDb = await startGateway('gateway-admin-nodb', { db: false });
  for (const g of [noKey, noDb]) {
    for (const [method, p, body] of ROUTES) {
      for (const key of [ADMIN_KEY, null, 'wrong']) {
        const r = await adm(g, p, { method, body, key });
        assertError(r, 404, { message: /off/ });
      }
    }
    // the rest of the admin listener and the client listener work as usual
    assert.equal((await http(`${g.adminUrl}/healthz`)).status, 200);
    const c = await chatAs(g, bearer('sk-test'));
    assert.equal(c.status, 200, c.text);
    const problem = await stopAndCheck(g.proc);
    assert.equal(problem, '', problem);
    assertNoSecrets(g.proc.stdout + g.proc.stderr, g.proc.name);
  }
});

// ---- create, list, show -----------------------------------------------------------------------

let alice; // created with every field

test('POST /admin/keys: 201 with the secret and the id; the secret works at once', { timeout: T(8000) }, async () => {
  const body = {
    name: 'alice', team: 'team-a', models: ['auto', 'local'], rpm: 600, tpm: 100000, max_concurrent: 4,
    budget_day: 5, budget_month: 50.5, budget_total: 500, downgrade: false, force_tier: false,
    metadata: { owner: 'bob', cost_center: 42, tags: ['x', 'y'] },
  };
  const k = await createKey(gw, body);
  assert.equal(k.name, 'alice');
  assert.equal(k.team, 'team-a');
  assert.equal(k.prefix, k.secret.slice(0, 12), 'prefix: the first 12 characters of the secret');
  assert.equal(k.status, 'active');
  assert.equal(k.revoked_at, 0);
  assert.equal(k.rpm, 600);
  assert.equal(k.tpm, 100000);
  assert.equal(k.max_concurrent, 4);
  assert.equal(k.budget_day, 5);
  assert.equal(k.budget_month, 50.5);
  assert.equal(k.budget_total, 500);
  assert.equal(k.force_tier, false);
  assert.deepEqual(k.metadata, body.metadata);
  const models = Array.isArray(k.models) ? k.models.join(',') : k.models;
  assert.equal(models, 'auto,local');
  assert.ok(Math.abs(k.created_at - Date.now() / 1000) < 60, `created_at ${k.created_at}`);
  alice = k;

  // no wait: the key set is re-read before the 201
  const c = await chatAs(gw, bearer(k.secret));
  assert.equal(c.status, 200, c.text);
  const m = await messagesAs(gw, { 'x-api-key': k.secret });
  assert.equal(m.status, 200, m.text);
  // its model list applies
  const f = await chatAs(gw, bearer(k.secret), chatBody('hi', { model: 'local-a' }));
  assertError(f, 403);

  // a second key: a different secret and id
  const b = await createKey(gw, { name: 'bare' });
  assert.notEqual(b.secret, k.secret);
  assert.notEqual(b.id, k.id);
  assert.equal(b.team, '');
  assert.deepEqual(b.metadata, {});
  assert.equal((await chatAs(gw, bearer(b.secret))).status, 200);
});

test('GET /admin/keys and /admin/keys/{id} show the keys, never a secret', { timeout: T(5000) }, async () => {
  assert.ok(alice, 'the create test ran');
  const r = await listKeys(gw);
  const k = r.json.keys.find((x) => x.id === alice.id);
  assert.ok(k, `alice in ${r.text}`);
  for (const x of r.json.keys) {
    assert.ok(!('secret' in x) && !('sha256' in x), `no secret/sha256 field: ${JSON.stringify(x)}`);
  }
  const { secret, ...shown } = alice;
  assert.ok(secret);
  assert.deepEqual(k, shown, 'the list shows what the create answered, less the secret');
  assertNoSecrets(r.text, 'GET /admin/keys');

  const one = await adm(gw, `/admin/keys/${alice.id}`);
  assert.equal(one.status, 200, one.text);
  assert.deepEqual(one.json, shown);
  assert.ok(!('secret' in one.json));
  assertNoSecrets(one.text, `GET /admin/keys/${alice.id}`);
});

test('bad POST /admin/keys bodies: 400 with a message, nothing created', { timeout: T(8000) }, async () => {
  const before1 = (await listKeys(gw)).json.keys.length;
  const bad = [
    ['not JSON', '{"name": "x",'],
    ['empty body', ''],
    ['a JSON array', '[{"name":"x"}]'],
    ['a JSON string', '"x"'],
    ['no name', { team: 'team-a' }],
    ['name not a string', { name: 5 }],
    ['models not a list', { name: 'x', models: 'auto,local' }],
    ['models an object', { name: 'x', models: { auto: true } }],
    ['a model not a string', { name: 'x', models: ['auto', 3] }],
    ['negative budget_day', { name: 'x', budget_day: -1 }],
    ['negative budget_month', { name: 'x', budget_month: -0.01 }],
    ['negative budget_total', { name: 'x', budget_total: -5 }],
    ['budget as a string', { name: 'x', budget_day: '5' }],
    ['negative rpm', { name: 'x', rpm: -1 }],
    ['fractional tpm', { name: 'x', tpm: 1.5 }],
    ['metadata an array', { name: 'x', metadata: ['a'] }],
    ['metadata a string', { name: 'x', metadata: '{"a":1}' }],
    ['metadata too large', { name: 'x', metadata: { blob: 'z'.repeat(2000) } }],
  ];
  for (const [what, body] of bad) {
    const r = await adm(gw, '/admin/keys', { method: 'POST', body });
    assert.equal(r.status, 400, `${what}: ${r.status} ${r.text}`);
    assertError(r, 400, { type: 'invalid_request_error' });
    assert.ok(!('secret' in r.json), `${what}: no secret`);
  }
  // the messages say what is wrong
  const msg = async (body) => (await adm(gw, '/admin/keys', { method: 'POST', body })).json.error.message;
  assert.match(await msg({ name: 'x', models: 'auto' }), /models/);
  assert.match(await msg({ name: 'x', budget_day: -1 }), /budget_day/);
  assert.match(await msg({ name: 'x', metadata: [] }), /metadata/);
  assert.match(await msg({ team: 'x' }), /name/);
  assert.equal((await listKeys(gw)).json.keys.length, before1, 'no key was created');
});

// `hybridgw keys create` refuses an empty --name and a --name / --team longer than the column
// (64 bytes). The API should refuse them with a 400 too.
test('an empty name is a 400 (as in the CLI)', {
  timeout: T(5000),
}, async () => {
  const r = await adm(gw, '/admin/keys', { method: 'POST', body: { name: '' } });
  if (r.json?.secret) secrets.add(r.json.secret);
  assertError(r, 400, { type: 'invalid_request_error', message: /name/ });
});

test('a name, team or models list longer than its column is a 400, not silently cut', {
  timeout: T(5000),
}, async () => {
  const models = Array.from({ length: 60 }, (_, i) => `model-${String(i).padStart(3, '0')}`); // 599 bytes joined
  const problems = [];
  for (const [what, body] of [
    ['name of 65 bytes', { name: 'n'.repeat(65) }],
    ['team of 65 bytes', { name: 'long-team', team: 't'.repeat(65) }],
    ['60 models', { name: 'long-models', models }],
  ]) {
    const r = await adm(gw, '/admin/keys', { method: 'POST', body });
    if (r.json?.secret) secrets.add(r.json.secret);
    if (r.status !== 400) {
      problems.push(`${what}: ${r.status} name=${r.json?.name?.length}B team=${r.json?.team?.length}B models=...${String(r.json?.models).slice(-12)}`);
    }
  }
  assert.deepEqual(problems, []);
});

test('optional fields of the wrong type are a 400, not ignored', {
  timeout: T(5000),
}, async () => {
  const problems = [];
  for (const [what, body] of [
    ['team a number', { name: 'typed-1', team: 5 }],
    ['force_tier a string', { name: 'typed-2', force_tier: 'yes' }],
    ['downgrade a number', { name: 'typed-3', downgrade: 1 }],
  ]) {
    const r = await adm(gw, '/admin/keys', { method: 'POST', body });
    if (r.json?.secret) secrets.add(r.json.secret);
    if (r.status !== 400) problems.push(`${what}: ${r.status}`);
  }
  assert.deepEqual(problems, []);
});

// A value cut at 64 bytes can end inside a UTF-8 character; the gateway must answer (400, or
// 201 with valid JSON) and live on. On a gateway of its own, so a crash costs no other test.
test('a name cut inside a UTF-8 character does not crash the gateway', {
  timeout: T(10000),
}, async () => {
  const g = await startGateway('gateway-admin-utf8', {});
  try {
    const name = `a${'\u00e9'.repeat(40)}`; // 81 bytes: byte 64 is inside an e-acute
    let r;
    try {
      r = await adm(g, '/admin/keys', { method: 'POST', body: { name } });
    } catch (e) {
      await Promise.race([g.proc.exited, new Promise((res) => setTimeout(res, T(1000)))]);
      assert.fail(`no answer (${e.cause?.code || e.message}); gateway exit ${JSON.stringify(g.proc.exit)}`);
    }
    if (r.json?.secret) secrets.add(r.json.secret);
    assert.ok([201, 400].includes(r.status), `${r.status} ${r.text}`);
    assert.ok(r.json, `JSON: ${r.text}`);
    const l = await listKeys(g);
    if (r.status === 201) {
      assert.ok(l.json.keys.some((k) => k.id === r.json.id), 'the key is listed');
      assert.equal((await adm(g, `/admin/keys/${r.json.id}`)).status, 200);
    }
    const problem = await stopAndCheck(g.proc);
    assert.equal(problem, '', problem);
  } finally {
    await g.stop({ signal: 'SIGKILL' });
  }
});

// ---- revoke and rotate --------------------------------------------------------------------------

test('revoke: the key gets 401 on the very next request (every connection, both dialects)', { timeout: T(10000) }, async () => {
  for (let i = 0; i < 4; i++) {
    const k = await createKey(gw, { name: `revoke-${i}`, team: 'team-r' });
    // warm connections to both workers with the key
    const warm = await Promise.all([0, 1, 2, 3].map(() => chatAs(gw, bearer(k.secret))));
    for (const w of warm) assert.equal(w.status, 200, w.text);
    const r = await adm(gw, `/admin/keys/${k.id}/revoke`, { method: 'POST', style: i % 2 ? 'x-api-key' : 'bearer' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.id, k.id);
    assert.equal(r.json.status, 'revoked');
    assert.ok(r.json.revoked_at > 0);
    assert.ok(!('secret' in r.json));
    // no wait, no retry
    const next = await chatAs(gw, bearer(k.secret));
    assertError(next, 401, { message: REVOKED_MSG });
    const burst = await Promise.all([0, 1, 2, 3].map(() => chatAs(gw, { 'x-api-key': k.secret })));
    for (const b of burst) assert.equal(b.status, 401, b.text);
    const m = await messagesAs(gw, { 'x-api-key': k.secret });
    assert.equal(m.status, 401, m.text);
    assert.equal(m.json?.type, 'error', m.text);
  }
  // revoking again is fine; the key shows as revoked; other keys are untouched
  const k0 = (await listKeys(gw)).json.keys.find((x) => x.name === 'revoke-0');
  const again = await adm(gw, `/admin/keys/${k0.id}/revoke`, { method: 'POST' });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.revoked_at, k0.revoked_at, 'the first revocation time stays');
  assert.equal((await adm(gw, `/admin/keys/${k0.id}`)).json.status, 'revoked');
  assert.equal((await chatAs(gw, bearer(alice.secret))).status, 200);
});

test('rotate: the new secret works and the old one is refused at once; revoked -> 409', { timeout: T(10000) }, async () => {
  const k = await createKey(gw, { name: 'rotor', team: 'team-rot', budget_total: 10 });
  assert.equal((await chatAs(gw, bearer(k.secret))).status, 200);
  const r = await adm(gw, `/admin/keys/${k.id}/rotate`, { method: 'POST' });
  assert.equal(r.status, 200, r.text);
  assert.match(r.json.secret, SECRET_RE);
  secrets.add(r.json.secret);
  assert.notEqual(r.json.secret, k.secret);
  assert.equal(r.json.id, k.id, 'rotation keeps the id');
  assert.equal(r.json.prefix, r.json.secret.slice(0, 12));
  assert.equal(r.json.team, 'team-rot', 'and the other fields');
  assert.equal(r.json.budget_total, 10);
  assert.equal(r.json.status, 'active');
  // no wait
  const old = await chatAs(gw, bearer(k.secret));
  assertError(old, 401);
  const neu = await chatAs(gw, bearer(r.json.secret));
  assert.equal(neu.status, 200, neu.text);
  assert.equal((await messagesAs(gw, { 'x-api-key': r.json.secret })).status, 200);
  assert.equal((await adm(gw, `/admin/keys/${k.id}`)).json.prefix, r.json.prefix);

  // a revoked key cannot be rotated back to life
  assert.equal((await adm(gw, `/admin/keys/${k.id}/revoke`, { method: 'POST' })).status, 200);
  const rr = await adm(gw, `/admin/keys/${k.id}/rotate`, { method: 'POST' });
  assertError(rr, 409);
  assert.ok(!('secret' in rr.json), rr.text);
  assert.equal((await chatAs(gw, bearer(r.json.secret))).status, 401);
});

test('unknown key ids: 404 on show, revoke and rotate', { timeout: T(5000) }, async () => {
  for (const id of ['vk_0000000000000000', 'nope', 'x'.repeat(200)]) {
    assertError(await adm(gw, `/admin/keys/${id}`), 404);
    assertError(await adm(gw, `/admin/keys/${id}/revoke`, { method: 'POST' }), 404);
    assertError(await adm(gw, `/admin/keys/${id}/rotate`, { method: 'POST' }), 404);
  }
  // a known id with an unknown action
  assertError(await adm(gw, `/admin/keys/${alice.id}/explode`, { method: 'POST' }), 404);
  assertError(await adm(gw, '/admin/keys/'), 404);
});

// ---- spend ---------------------------------------------------------------------------------------

test('GET /admin/spend?by=team: the team\'s requests, tokens and cost from the responses\' usage', { timeout: T(10000) }, async () => {
  const k = await createKey(gw, { name: 'spender', team: 'team-spend', budget_day: 100 });
  const want = { requests: 0, input: 0, output: 0, cost: 0 };
  for (let i = 0; i < 5; i++) {
    const n = 2 + 3 * i;
    let r;
    let u;
    if (i % 2 === 0) {
      r = await chatAs(gw, bearer(k.secret), chatBody(`spend ${i} [sim:output_tokens=${n}]`));
      assert.equal(r.status, 200, r.text);
      u = { input: r.json.usage.prompt_tokens, output: r.json.usage.completion_tokens };
    } else {
      r = await messagesAs(gw, { 'x-api-key': k.secret }, `spend ${i} [sim:output_tokens=${n}]`);
      assert.equal(r.status, 200, r.text);
      u = { input: r.json.usage.input_tokens, output: r.json.usage.output_tokens };
    }
    assert.equal(r.headers.get('x-hybridgw-backend'), 'local-a');
    assert.ok(Number.isInteger(u.input) && u.input > 0 && u.output === n, JSON.stringify(u));
    want.requests += 1;
    want.input += u.input;
    want.output += u.output;
    want.cost += (u.input * PRICE.input + u.output * PRICE.output) / 1e6;
  }
  // a refused request is not spend
  assert.equal((await chatAs(gw, bearer(k.secret), chatBody('hi', { model: 'nope-model' }))).status >= 400, true);

  // the ledger is written off the request path: wait for the rows
  const t0 = Math.floor(Date.now() / 1000);
  const rep = await waitFor(async () => {
    const r = await adm(gw, '/admin/spend?by=team&since=3600');
    assert.equal(r.status, 200, r.text);
    const row = r.json.rows.find((x) => x.group === 'team-spend');
    return row && row.requests >= want.requests ? r : null;
  }, { timeout: T(4000), what: 'the team-spend row' });
  assert.equal(rep.json.by, 'team');
  assert.ok(Math.abs(rep.json.since - (t0 - 3600)) <= 5, `since ${rep.json.since}, want about ${t0 - 3600}`);
  const row = rep.json.rows.find((x) => x.group === 'team-spend');
  assert.equal(row.requests, want.requests, JSON.stringify(row));
  assert.equal(row.input_tokens, want.input);
  assert.equal(row.output_tokens, want.output);
  assert.ok(Math.abs(row.cost_usd - want.cost) <= 1e-12 + 1e-9 * want.cost, `cost ${row.cost_usd}, want ${want.cost}`);
  assert.ok(want.cost > 0);
  assert.equal(typeof row.counterfactual_usd, 'number');
  assert.ok(Math.abs(row.saved_usd - (row.counterfactual_usd - row.cost_usd)) < 1e-9);
  assertNoSecrets(rep.text, 'GET /admin/spend');

  // by key: the key's name is the group
  const byKey = await adm(gw, '/admin/spend?by=key&since=3600');
  assert.equal(byKey.status, 200, byKey.text);
  const kr = byKey.json.rows.find((x) => x.group === 'spender');
  assert.ok(kr, byKey.text);
  assert.equal(kr.requests, want.requests);
  for (const by of ['model', 'tier', 'backend']) {
    const r = await adm(gw, `/admin/spend?by=${by}&since=3600`);
    assert.equal(r.status, 200, `${by}: ${r.text}`);
    assert.equal(r.json.by, by);
  }
  const be = (await adm(gw, '/admin/spend?by=backend&since=3600')).json.rows.find((x) => x.group === 'local-a');
  assert.ok(be && be.requests >= want.requests && be.cost_usd >= want.cost - 1e-12);
  // since=0: a valid (empty or tiny) window
  const none = await adm(gw, '/admin/spend?by=team&since=0');
  assert.equal(none.status, 200, none.text);
  // the default is by key over a day
  const def = await adm(gw, '/admin/spend');
  assert.equal(def.status, 200, def.text);
  assert.equal(def.json.by, 'key');
});

test('bad spend queries: 400 with a message', { timeout: T(5000) }, async () => {
  for (const q of ['by=colour', 'by=', 'by=TEAM', 'by=team&since=-1', 'by=team%00']) {
    const r = await adm(gw, `/admin/spend?${q}`);
    assertError(r, 400, { type: 'invalid_request_error', message: /by must be/ });
  }
});

test('spend: since that is not a whole number of seconds is a 400', {
  timeout: T(5000),
}, async () => {
  const problems = [];
  for (const q of ['by=team&since=abc', 'by=team&since=1h', 'by=team&since=9223372036854775807']) {
    const r = await adm(gw, `/admin/spend?${q}`);
    if (r.status !== 400) problems.push(`${q}: ${r.status} ${r.text.slice(0, 120)}`);
  }
  assert.deepEqual(problems, []);
});

// ---- methods --------------------------------------------------------------------------------------

test('wrong methods on /admin/keys: 405 with Allow: GET, POST', { timeout: T(5000) }, async () => {
  for (const method of ['PUT', 'DELETE', 'PATCH']) {
    const r = await adm(gw, '/admin/keys', { method });
    assertError(r, 405);
    assert.equal(r.headers.get('allow'), 'GET, POST');
  }
  // without the key it is still 401 first
  assertError(await adm(gw, '/admin/keys', { method: 'DELETE', key: null }), 401);
});

test('wrong methods on /admin/spend and /admin/keys/{id}[/action]: 405 with Allow', {
  timeout: T(5000),
}, async () => {
  const cases = [
    ['POST', '/admin/spend?by=team', 'GET'],
    ['DELETE', '/admin/spend', 'GET'],
    ['POST', `/admin/keys/${alice.id}`, 'GET, PATCH'],
    ['DELETE', `/admin/keys/${alice.id}`, 'GET, PATCH'],
    ['POST', '/admin/teams', 'GET'],
    ['DELETE', '/admin/teams/some-team', 'GET, PUT'],
    ['GET', `/admin/keys/${alice.id}/revoke`, 'POST'],
    ['GET', `/admin/keys/${alice.id}/rotate`, 'POST'],
  ];
  const problems = [];
  for (const [method, p, allow] of cases) {
    const r = await adm(gw, p, { method });
    if (r.status !== 405 || r.headers.get('allow') !== allow) {
      problems.push(`${method} ${p}: ${r.status} Allow=${r.headers.get('allow')}`);
    }
  }
  assert.deepEqual(problems, []);
  // and GET revoke did not revoke
  assert.equal((await adm(gw, `/admin/keys/${alice.id}`)).json.status, 'active');
});

test('PATCH a key and PUT a team: limits apply to the next request; typos and bad values are 400', {
  timeout: T(10000),
}, async () => {
  const k = await createKey(gw, { name: 'patched', team: 'admin-team' });
  // a typo is refused, on create too, and changes nothing
  assertError(await adm(gw, `/admin/keys/${k.id}`, { method: 'PATCH', body: { rmp: 2 } }), 400, { message: /unknown field "rmp"/ });
  assertError(await adm(gw, '/admin/keys', { method: 'POST', body: { name: 'typo', budget_totl: 1 } }), 400, { message: /unknown field/ });
  assertError(await adm(gw, `/admin/keys/${k.id}`, { method: 'PATCH', body: { rpm: -1 } }), 400, { message: /rpm/ });
  assertError(await adm(gw, `/admin/keys/${k.id}`, { method: 'PATCH', body: '[1]' }), 400);
  const p = await adm(gw, `/admin/keys/${k.id}`, { method: 'PATCH', body: { rpm: 2, metadata: { owner: 'ops' } } });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.json.rpm, 2);
  assert.equal(p.json.name, 'patched', 'fields left out keep their value');
  assert.equal(p.json.team, 'admin-team');
  assert.deepEqual(p.json.metadata, { owner: 'ops' });
  assert.ok(!('secret' in p.json));
  // the next requests see rpm 2 (the change re-read the keys at once)
  const st = [];
  for (let i = 0; i < 3; i++) st.push((await chatAs(gw, bearer(k.secret))).status);
  assert.deepEqual(st, [200, 200, 429]);
  // a team: 201 when new, 200 after; GET shows it; its limit binds the team's keys
  const k2 = await createKey(gw, { name: 'team-mate', team: 'admin-team' });
  assertError(await adm(gw, '/admin/teams/admin-team', { method: 'PUT', body: { concurrency: 1 } }), 400, { message: /unknown field "concurrency"/ });
  const t = await adm(gw, '/admin/teams/admin-team', { method: 'PUT', body: { tpm: 1 } });
  assert.equal(t.status, 201, t.text);
  assert.deepEqual(t.json, { name: 'admin-team', rpm: 0, tpm: 1, max_concurrent: 0, budget_day: 0, budget_month: 0, budget_total: 0 });
  const t2 = await adm(gw, '/admin/teams/admin-team', { method: 'PUT', body: { budget_total: 5 } });
  assert.equal(t2.status, 200, t2.text);
  assert.equal(t2.json.tpm, 1, 'fields left out keep their value');
  assert.equal(t2.json.budget_total, 5);
  const list = await adm(gw, '/admin/teams');
  assert.ok(list.json.teams.some((x) => x.name === 'admin-team' && x.tpm === 1), list.text);
  assertError(await adm(gw, '/admin/teams/nobody'), 404);
  const r = await chatAs(gw, bearer(k2.secret));
  assert.equal(r.status, 429, r.text);
  assert.match(r.json.error.message, /Request too large for team `admin-team`/);
  // a revoked key can't be changed
  await adm(gw, `/admin/keys/${k2.id}/revoke`, { method: 'POST' });
  assertError(await adm(gw, `/admin/keys/${k2.id}`, { method: 'PATCH', body: { rpm: 5 } }), 409);
  // the refused PUT of the 401 test created nothing
  assertError(await adm(gw, '/admin/teams/must-not-exist'), 404);
});

// ---- shutdown and secrets ----------------------------------------------------------------------

test('SIGTERM: exit 0; no secret and no admin key in any gateway stdout/stderr', { timeout: T(15000) }, async () => {
  assert.ok(secrets.size >= 8, `secrets collected: ${secrets.size}`);
  const problem = await stopAndCheck(gw.proc);
  assert.equal(problem, '', problem);
  assert.ok(gw.proc.stdout.length > 0, 'an access log was written');
  for (const g of gateways) {
    assertNoSecrets(g.proc.stdout, `${g.proc.name} stdout`);
    assertNoSecrets(g.proc.stderr, `${g.proc.name} stderr`);
  }
});
