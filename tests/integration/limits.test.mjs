// limits.test.mjs - rate limits of virtual keys and teams, end to end.
//
// A key or team may have rpm (requests per sliding minute), tpm (tokens per
// minute: the prompt estimate plus max_tokens at admission, corrected to the
// real usage when the request ends) and a number of concurrent requests.
// Over a limit the client gets 429 in its dialect with retry-after,
// retry-after-ms and x-ratelimit-* headers (plus anthropic-ratelimit-* on
// /v1/messages); every admitted response carries the headers too.
//
// SQLite (one gateway): a burst against rpm admits exactly the limit; the
// tokens limit counts real usage; a request larger than tpm is refused for
// good (x-should-retry: false); concurrency; a team limit spans its keys;
// the official OpenAI SDK sees a RateLimitError; counters.
// PostgreSQL (skipped without /usr/lib/postgresql/*/bin/initdb): two
// gateways share one key's limits through the database: requests spread
// over both stay within the limit plus what one sync interval lets through,
// and requests running on one gateway count against concurrency on the other.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  Sim, Gateway, gatewayYamlMulti, chatBody, http, metricSample, tempDir, sleep, OpenAI,
  GATEWAY_BIN, T,
} from './lib/harness.mjs';
import { Postgres, pgSkipReason } from './lib/postgres.mjs';

const CHARS_PER_TOKEN = 3; // the backend's default
const SYNC_MS = 200;

let sim;
const gateways = [];
const pgs = [];

function cliOk(db, args) {
  const env = { ...process.env };
  delete env.HYBRIDGW_DATABASE_URL;
  return execFileSync(GATEWAY_BIN, [...args, '--db', db], {
    encoding: 'utf8', env, timeout: T(15000), stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** keys create --json with limits { rpm, tpm, concurrency } and a team. */
function createKey(db, name, { rpm, tpm, concurrency, team } = {}) {
  const args = ['keys', 'create', '--name', name, '--json'];
  if (rpm) args.push('--rpm', String(rpm));
  if (tpm) args.push('--tpm', String(tpm));
  if (concurrency) args.push('--concurrency', String(concurrency));
  if (team) args.push('--team', team);
  return JSON.parse(cliOk(db, args));
}

const bearer = (s) => ({ authorization: `Bearer ${s}` });

function chat(g, secret, { content = 'limits test', maxTokens = 8, timeout } = {}) {
  return http(`${g.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(secret) },
    body: JSON.stringify(chatBody(content, { model: 'coder', max_tokens: maxTokens })),
    timeout,
  });
}

function messages(g, secret, { content = 'limits test', maxTokens = 8 } = {}) {
  return http(`${g.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': secret },
    body: JSON.stringify({ model: 'coder', max_tokens: maxTokens, messages: [{ role: 'user', content }] }),
  });
}

/** The tokens a request is charged at admission: prompt estimate + max_tokens. */
const charge = (content, maxTokens) => Math.ceil(content.length / CHARS_PER_TOKEN) + 16 + maxTokens;

function assert429(r, type, re) {
  assert.equal(r.status, 429, `status ${r.status}: ${r.text}`);
  assert.equal(r.json?.error?.type, type, r.text);
  assert.equal(r.json.error.code, 'rate_limit_exceeded', r.text);
  if (re) assert.match(r.json.error.message, re);
}

/** retry-after in whole seconds and retry-after-ms agree, and say "soon". */
function assertRetryAfter(r, maxMs = 60000) {
  const s = Number(r.headers.get('retry-after'));
  const ms = Number(r.headers.get('retry-after-ms'));
  assert.ok(Number.isInteger(s) && s >= 1 && s <= Math.ceil(maxMs / 1000), `retry-after ${s}`);
  assert.ok(ms > 0 && ms <= maxMs, `retry-after-ms ${ms}`);
  assert.equal(s, Math.ceil(ms / 1000), 'retry-after is retry-after-ms rounded up');
  assert.equal(r.headers.get('x-should-retry'), 'true');
}

async function limited(g, scope, limit) {
  const re = new RegExp(`^hybridgw_rate_limited_total\\{scope="${scope}",limit="${limit}"\\}`);
  return metricSample(await g.metrics(), re) ?? 0;
}

function yamlFor(dbUrl, sync = '500ms') {
  return gatewayYamlMulti({
    admin: true,
    backends: [{
      name: 'local-a', tier: 'local', url: sim.url,
      extra: '    default_max_tokens: 12\n    price: { per_mtok: { input: 1000, output: 1000 } }',
    }],
    models: { coder: 'local-a' },
    router: { default_tier: 'local' },
    extra: `ledger: { database: "${dbUrl}", limits_sync: ${sync} }`,
  });
}

async function startGateway(dbUrl, name, sync) {
  const g = await Gateway.start(yamlFor(dbUrl, sync), { name });
  gateways.push(g);
  return g;
}

before(async () => {
  sim = await Sim.start({ name: 'sim-limits' });
});

after(async () => {
  for (const g of gateways) await g.stop({ signal: 'SIGKILL' });
  if (sim) await sim.stop({ signal: 'SIGKILL' });
  for (const pg of pgs) await pg.stop();
});

// ==== SQLite ====================================================================================

describe('rate limits with SQLite', () => {
  let db;
  let gw;
  const k = {};
  const TOK_PROMPT = 'tokens limit [sim:output_tokens=4]';
  const TOK_MAX = 40;
  let used; // real prompt + completion tokens of TOK_PROMPT
  let firstFreeCost = 0; // what the unlimited key's first request cost

  before(async () => {
    db = `sqlite://${path.join(tempDir('hybridgw-limits-'), 'ledger.db')}`;
    k.rpm = createKey(db, 'rpm-5', { rpm: 5 });
    k.conc = createKey(db, 'conc-2', { concurrency: 2 });
    cliOk(db, ['keys', 'team-set', 'team-r', '--rpm', '3']);
    k.teamA = createKey(db, 'team-r-1', { team: 'team-r', rpm: 100 });
    k.teamB = createKey(db, 'team-r-2', { team: 'team-r' });
    k.free = createKey(db, 'unlimited', {});
    gw = await startGateway(db, 'gateway-limits');
    // what TOK_PROMPT really uses, measured with the static key (no limits)
    const p = await http(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
      body: JSON.stringify(chatBody(TOK_PROMPT, { model: 'coder', max_tokens: TOK_MAX })),
    });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.headers.get('x-ratelimit-limit-requests'), null, 'static keys have no limits');
    used = p.json.usage.prompt_tokens + p.json.usage.completion_tokens;
    assert.ok(used > 0 && used < charge(TOK_PROMPT, TOK_MAX), `used ${used}`);
    // three requests fit one after another (each leaves `used` in the window), the fourth does not
    k.tpm = createKey(db, 'tpm', { tpm: 2 * used + charge(TOK_PROMPT, TOK_MAX) });
    await sleep(T(2500)); // keys are re-read every second (a probe would spend tokens)
  });

  test('a burst of 12 against rpm 5: exactly 5 admitted, 7 get 429 with retry-after and x-ratelimit-*', { timeout: T(15000) }, async () => {
    const before = await limited(gw, 'key', 'requests');
    const rs = await Promise.all(Array.from({ length: 12 }, () => chat(gw, k.rpm.secret)));
    const ok = rs.filter((r) => r.status === 200);
    const no = rs.filter((r) => r.status !== 200);
    assert.equal(ok.length, 5, rs.map((r) => r.status).join(','));
    for (const r of no) {
      assert429(r, 'requests', /requests per minute: limit 5, used 5/);
      assertRetryAfter(r);
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), '5');
      assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
      assert.match(r.headers.get('x-ratelimit-reset-requests'), /^(\d+(\.\d+)?s|1m0s|\d+ms)$/);
      assert.equal(r.headers.get('x-ratelimit-limit-tokens'), null, 'no tpm on this key');
    }
    // each admitted response says what was left after it: 4, 3, 2, 1, 0
    const rem = ok.map((r) => Number(r.headers.get('x-ratelimit-remaining-requests'))).sort();
    assert.deepEqual(rem, [0, 1, 2, 3, 4]);
    assert.equal(await limited(gw, 'key', 'requests'), before + 7);
    // the Anthropic dialect: rate_limit_error and its own headers
    const m = await messages(gw, k.rpm.secret);
    assert.equal(m.status, 429, m.text);
    assert.equal(m.json?.type, 'error', m.text);
    assert.equal(m.json.error?.type, 'rate_limit_error', m.text);
    assert.match(m.json.error.message, /requests per minute/);
    assert.ok(Number(m.headers.get('retry-after')) >= 1);
    assert.equal(m.headers.get('anthropic-ratelimit-requests-limit'), '5');
    assert.equal(m.headers.get('anthropic-ratelimit-requests-remaining'), '0');
    const reset = Date.parse(m.headers.get('anthropic-ratelimit-requests-reset'));
    assert.ok(reset > Date.now() - 2000 && reset <= Date.now() + 62000, m.headers.get('anthropic-ratelimit-requests-reset'));
    // other keys are not affected
    const free = await chat(gw, k.free.secret);
    assert.equal(free.status, 200);
    firstFreeCost = (free.json.usage.prompt_tokens + free.json.usage.completion_tokens) * 1000 / 1e6;
  });

  test('the OpenAI SDK sees a RateLimitError carrying the headers', { timeout: T(10000) }, async () => {
    const client = new OpenAI({ apiKey: k.rpm.secret, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    await assert.rejects(
      client.chat.completions.create({ model: 'coder', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] }),
      (e) => {
        assert.equal(e.status, 429);
        assert.equal(e.constructor.name, 'RateLimitError');
        assert.equal(e.code, 'rate_limit_exceeded');
        assert.ok(Number(e.headers.get ? e.headers.get('retry-after') : e.headers['retry-after']) >= 1);
        return true;
      },
    );
  });

  test('tokens per minute count real usage; a request larger than tpm is refused for good', { timeout: T(15000) }, async () => {
    const limit = 2 * used + charge(TOK_PROMPT, TOK_MAX);
    for (let i = 0; i < 3; i++) {
      const r = await chat(gw, k.tpm.secret, { content: TOK_PROMPT, maxTokens: TOK_MAX });
      assert.equal(r.status, 200, `request ${i + 1}: ${r.text}`);
      assert.equal(r.headers.get('x-ratelimit-limit-tokens'), String(limit));
      // admitted with its full charge; what is left counts the earlier ones at their real usage
      assert.equal(Number(r.headers.get('x-ratelimit-remaining-tokens')), limit - i * used - charge(TOK_PROMPT, TOK_MAX));
    }
    const no = await chat(gw, k.tpm.secret, { content: TOK_PROMPT, maxTokens: TOK_MAX });
    assert429(no, 'tokens', new RegExp(`tokens per minute: limit ${limit}, used ${3 * used}, requested ${charge(TOK_PROMPT, TOK_MAX)}`));
    assertRetryAfter(no);
    // a smaller request still fits what is left
    const small = await chat(gw, k.tpm.secret, { content: 'x', maxTokens: 1 });
    assert.ok(charge('x', 1) <= limit - 3 * used, 'the small one fits');
    assert.equal(small.status, 200, small.text);
    // more than the whole limit: waiting won't help, SDKs must not retry
    const big = await chat(gw, k.tpm.secret, { content: 'x', maxTokens: limit });
    assert429(big, 'tokens', /Request too large .* tokens per minute: limit/);
    assert.equal(big.headers.get('x-should-retry'), 'false');
    assert.equal(big.headers.get('retry-after'), null);
    assert.equal(await limited(gw, 'key', 'too_large'), 1);
  });

  test('concurrency 2: of 5 slow requests at once 2 run, 3 get 429; afterwards there is room again', { timeout: T(15000) }, async () => {
    const slow = 'concurrency [sim:ttft_ms=700]';
    const rs = await Promise.all(Array.from({ length: 5 }, () => chat(gw, k.conc.secret, { content: slow })));
    const statuses = rs.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 429, 429, 429]);
    for (const r of rs.filter((x) => x.status === 429)) {
      assert429(r, 'requests', /Too many concurrent requests for this API key: limit 2/);
      assertRetryAfter(r, 1000);
    }
    const again = await Promise.all([chat(gw, k.conc.secret), chat(gw, k.conc.secret)]);
    assert.deepEqual(again.map((r) => r.status), [200, 200]);
    assert.equal(await limited(gw, 'key', 'concurrent'), 3);
  });

  test('a key without budgets or limits: no headers, no reservation, its spend is still booked', { timeout: T(10000) }, async () => {
    let cost = 0;
    for (let i = 0; i < 3; i++) {
      const r = await chat(gw, k.free.secret, { content: `spend booking ${i}` });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), null);
      cost += (r.json.usage.prompt_tokens + r.json.usage.completion_tokens) * 1000 / 1e6;
    }
    // (the burst test's request on this key came before: count it from the list)
    const spent = () => JSON.parse(cliOk(db, ['keys', 'list', '--json'])).find((x) => x.id === k.free.id).spend_usd.total;
    const deadline = Date.now() + T(5000);
    while (Math.abs(spent() - (cost + firstFreeCost)) > 1e-8 && Date.now() < deadline) await sleep(50);
    assert.ok(Math.abs(spent() - (cost + firstFreeCost)) <= 1e-8, `spent ${spent()}, answered ${cost + firstFreeCost}`);
  });

  test('a team limit spans its keys; the message names the team', { timeout: T(10000) }, async () => {
    assert.equal((await chat(gw, k.teamA.secret)).status, 200);
    const r2 = await chat(gw, k.teamA.secret);
    assert.equal(r2.status, 200);
    // the key allows 100, its team 3: the headers show the tighter one
    assert.equal(r2.headers.get('x-ratelimit-limit-requests'), '3');
    assert.equal(r2.headers.get('x-ratelimit-remaining-requests'), '1');
    assert.equal((await chat(gw, k.teamB.secret)).status, 200);
    const no = await chat(gw, k.teamB.secret);
    assert429(no, 'requests', /team `team-r` on requests per minute: limit 3/);
    assert429(await chat(gw, k.teamA.secret), 'requests', /team `team-r`/);
    assert.equal(await limited(gw, 'team', 'requests'), 2);
    const text = await gw.metrics();
    assert.ok(metricSample(text, /^hybridgw_rate_limit_subjects /) >= 4, 'keys and the team are counted');
  });
});

// ==== PostgreSQL ================================================================================

const PG_SKIP = pgSkipReason();

describe('rate limits with PostgreSQL (two gateways, one database)', { skip: PG_SKIP || false }, () => {
  let pg;
  let g1;
  let g2;
  const k = {};

  before(async () => {
    pg = await Postgres.start();
    pgs.push(pg);
    k.rpm = createKey(pg.url, 'shared-rpm', { rpm: 10 });
    k.conc = createKey(pg.url, 'shared-conc', { concurrency: 2 });
    g1 = await startGateway(pg.url, 'gateway-limits-pg-1', `${SYNC_MS}ms`);
    g2 = await startGateway(pg.url, 'gateway-limits-pg-2', `${SYNC_MS}ms`);
  });

  test('rpm 10 over two gateways: one limit, passed by at most what one sync interval lets through', { timeout: T(20000) }, async (t) => {
    // 30 requests, alternating gateways, one every 100 ms: each gateway alone
    // would admit 10 (20 together); sharing counts every 200 ms lets the
    // other gateway through for about two intervals when the limit is reached
    // (10-11 here on an idle machine); the bound allows a second of delay in
    // the exchange on a loaded one (5 requests to the other gateway)
    const rs = [];
    for (let i = 0; i < 30; i++) {
      rs.push(chat(i % 2 ? g2 : g1, k.rpm.secret));
      await sleep(100);
    }
    const done = await Promise.all(rs);
    const ok = done.filter((r) => r.status === 200).length;
    for (const r of done) if (r.status !== 200) assert429(r, 'requests');
    const per = [0, 1].map((j) => done.filter((r, i) => i % 2 === j && r.status === 200).length);
    t.diagnostic(`admitted ${ok} of 30 (${per} per gateway) against rpm 10, sync every ${SYNC_MS} ms`);
    assert.ok(ok >= 10, `at least the limit is admitted: ${ok}`);
    assert.ok(ok <= 15, `at most the limit plus a second's worth on the other gateway: ${ok}`);
    assert.ok(per[0] > 0 && per[1] > 0, 'both gateways admitted some');
    const text = await g1.metrics();
    assert.ok(metricSample(text, /^hybridgw_rate_limit_syncs_total\{result="ok"\}/) > 0);
    assert.equal(metricSample(text, /^hybridgw_rate_limit_syncs_total\{result="error"\}/), 0);
  });

  test('requests running on one gateway count against concurrency on the other', { timeout: T(20000) }, async () => {
    const slow = 'concurrency [sim:ttft_ms=1500]';
    const t0 = Date.now();
    const running = [chat(g1, k.conc.secret, { content: slow }), chat(g1, k.conc.secret, { content: slow })];
    // g2 learns of them within a sync or two; ask until it refuses (while they still run)
    let no;
    while (Date.now() - t0 < 1300) {
      await sleep(100);
      const r = await chat(g2, k.conc.secret);
      if (r.status === 429) {
        no = r;
        break;
      }
      assert.equal(r.status, 200, r.text);
    }
    assert.ok(no, 'g2 refused a third concurrent request while g1 ran two');
    assert429(no, 'requests', /Too many concurrent requests .* limit 2/);
    assert.deepEqual((await Promise.all(running)).map((r) => r.status), [200, 200]);
    await sleep(3 * SYNC_MS + 200);
    assert.equal((await chat(g2, k.conc.secret)).status, 200);
  });
});
