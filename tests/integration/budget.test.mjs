// budget.test.mjs - virtual-key budgets on the request path, end to end.
//
// Before a request goes upstream the gateway reserves the most it can cost
// (prompt chars / chars_per_token + 16 tokens at the input price, max_tokens
// or the backend's default_max_tokens at the output price, the worst of the
// request's candidate backends); at the end it settles to the real cost, or
// releases on failure. With a fixed per_mtok price and a fixed max_tokens the
// reservation and the real cost are computed here exactly, so the tests can
// say which request is the first one refused.
//
// SQLite: N requests fit and the (N+1)th gets 402 insufficient_quota /
// budget_exceeded (Anthropic billing_error on /v1/messages); the candidates'
// worst price is reserved; team budgets span keys; --downgrade sends an
// over-budget request to the local tier; the counters; streams are reserved
// (visible in `keys list` while they run) and settled like plain requests;
// spent totals after SIGTERM and across a restart.
// PostgreSQL (skipped without /usr/lib/postgresql/*/bin/initdb): two gateways
// on one database enforce one budget under 40 concurrent requests; with the
// database stopped a budgeted key gets 503 budget_unavailable (fail closed)
// while static keys work, and budgets work again once it is back.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  Sim, Gateway, gatewayYamlMulti, stopAndCheck, chatBody, http, sseData, sseEvents, waitFor, metricSample,
  tempDir, GATEWAY_BIN, T,
} from './lib/harness.mjs';
import { Postgres, pgSkipReason } from './lib/postgres.mjs';

// USD per million tokens: 1000 makes a token a tenth of a cent, a request a few cents
const PRICE = { 'local-a': { input: 1000, output: 1000 }, 'frontier-b': { input: 2000, output: 2000 } };
const CHARS_PER_TOKEN = 3; // the backends' default
const DEFAULT_MAX_TOKENS = 12; // local-a's default_max_tokens (requests without max_tokens)
const MAX_TOKENS = 20;
const OUT_TOKENS = 5;
// every budgeted request below has this prompt (so the same reservation and cost)
const PROMPT = `budget test [sim:output_tokens=${OUT_TOKENS}]`;
const REFRESH_WAIT = T(3000); // keys are re-read every second

let sim;
const gateways = [];
const pgs = [];

// ---- the command line --------------------------------------------------------------------

/** `hybridgw args... --db db` synchronously; { code, stdout, stderr }. */
function cli(db, args) {
  const env = { ...process.env };
  delete env.HYBRIDGW_DATABASE_URL;
  try {
    const stdout = execFileSync(GATEWAY_BIN, [...args, '--db', db], {
      encoding: 'utf8', env, timeout: T(15000), stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    if (e.status === null || e.status === undefined) throw e;
    return { code: e.status, stdout: e.stdout || '', stderr: e.stderr || '' };
  }
}

function cliOk(db, args) {
  const r = cli(db, args);
  assert.equal(r.code, 0, `hybridgw ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

const usd = (x) => x.toFixed(9);

/** keys create --json with budgets { total, day, month }, team, downgrade. */
function createKey(db, name, { total, day, month, team, downgrade = false } = {}) {
  const args = ['keys', 'create', '--name', name, '--json'];
  if (total !== undefined) args.push('--budget-total', usd(total));
  if (day !== undefined) args.push('--budget-day', usd(day));
  if (month !== undefined) args.push('--budget-month', usd(month));
  if (team) args.push('--team', team);
  if (downgrade) args.push('--downgrade');
  return JSON.parse(cliOk(db, args));
}

/** { day, month, total } spent (plus reserved) of key id, from keys list --json. */
function keySpend(db, id) {
  const k = JSON.parse(cliOk(db, ['keys', 'list', '--json'])).find((x) => x.id === id);
  assert.ok(k, `key ${id} in keys list`);
  return k.spend_usd;
}

function teamSpend(db, team) {
  const t = JSON.parse(cliOk(db, ['keys', 'teams', '--json'])).find((x) => x.name === team);
  assert.ok(t, `team ${team} in keys teams`);
  return t.spend_usd;
}

function spendRow(db, by, group) {
  const r = JSON.parse(cliOk(db, ['spend', '--by', by, '--since', 'all', '--json']));
  return r.rows.find((x) => x.group === group);
}

// ---- money -------------------------------------------------------------------------------------

/** The reservation of a request with this prompt and max tokens on a backend. */
function reservation(prompt, maxTokens, backend) {
  const inTok = Math.ceil(prompt.length / CHARS_PER_TOKEN) + 16;
  return (inTok * PRICE[backend].input + maxTokens * PRICE[backend].output) / 1e6;
}

/** The real cost of a usage object on a backend. */
function costOf(usage, backend) {
  const inp = usage.prompt_tokens ?? usage.input_tokens;
  const out = usage.completion_tokens ?? usage.output_tokens;
  assert.ok(Number.isInteger(inp) && Number.isInteger(out), `usage ${JSON.stringify(usage)}`);
  return (inp * PRICE[backend].input + out * PRICE[backend].output) / 1e6;
}

/** Equal up to the store's nano-dollar rounding (a few nano-dollars per request). */
const near = (a, b, n = 1) => Math.abs(a - b) <= 2e-9 * Math.max(n, 1) + 1e-12;

// ---- HTTP ------------------------------------------------------------------------------------

const bearer = (s) => ({ authorization: `Bearer ${s}` });

function chat(g, secret, { model = 'coder', content = PROMPT, extra = { max_tokens: MAX_TOKENS }, timeout } = {}) {
  return http(`${g.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(secret) },
    body: JSON.stringify(chatBody(content, { model, ...extra })),
    timeout,
  });
}

function messages(g, secret, { model = 'coder', content = PROMPT, maxTokens = MAX_TOKENS, stream = false } = {}) {
  return http(`${g.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': secret },
    body: JSON.stringify({ model, max_tokens: maxTokens, stream, messages: [{ role: 'user', content }] }),
  });
}

function assert402(r, reason) {
  assert.equal(r.status, 402, `status ${r.status}: ${r.text}`);
  assert.equal(r.json?.error?.type, 'insufficient_quota', r.text);
  assert.equal(r.json.error.code, 'budget_exceeded', r.text);
  if (reason) assert.match(r.json.error.message, reason);
}

/** The budget decision counters of a gateway: { reject, downgrade, error, stream_cut }. */
async function decisions(g) {
  const text = await g.metrics();
  const out = {};
  for (const a of ['reject', 'downgrade', 'error', 'stream_cut']) {
    out[a] = metricSample(text, new RegExp(`^hybridgw_budget_decisions_total\\{action="${a}"\\}`)) ?? 0;
  }
  return out;
}

// ---- gateways --------------------------------------------------------------------------------

function yamlFor(dbUrl) {
  return gatewayYamlMulti({
    admin: true,
    backends: Object.entries(PRICE).map(([name, p]) => ({
      name,
      tier: name.startsWith('local') ? 'local' : 'frontier',
      url: sim.url,
      extra: [
        `    price: { per_mtok: { input: ${p.input}, output: ${p.output} } }`,
        `    default_max_tokens: ${DEFAULT_MAX_TOKENS}`,
      ].join('\n'),
    })),
    models: { coder: 'local-a' },
    router: { default_tier: 'local', fallback: '{ local: [frontier-b] }' },
    extra: `ledger: { database: "${dbUrl}" }`,
  });
}

async function startGateway(dbUrl, name) {
  const g = await Gateway.start(yamlFor(dbUrl), { name });
  gateways.push(g);
  assert.ok(g.adminPort, 'the admin listener is up');
  return g;
}

before(async () => {
  sim = await Sim.start({ name: 'sim-budget' });
});

after(async () => {
  for (const g of gateways) await g.stop({ signal: 'SIGKILL' });
  if (sim) await sim.stop({ signal: 'SIGKILL' });
  for (const pg of pgs) await pg.stop();
});

// ==== SQLite ====================================================================================

describe('budgets with SQLite', () => {
  let dir;
  let db;
  let gw;
  let c; // the real cost of PROMPT on local-a (measured with the static key)
  let r; // its reservation on local-a alone (model coder)
  let cTiny = 0; // the cost of the exact key's fifth (max_tokens 1) request
  const k = {};

  before(async () => {
    dir = tempDir('hybridgw-budget-');
    db = `sqlite://${path.join(dir, 'ledger.db')}`;
    // the static key has no budget: it measures what PROMPT really costs
    const probeDb = `sqlite://${path.join(dir, 'probe.db')}`;
    const probe = await startGateway(probeDb, 'gateway-budget-probe');
    const p = await http(`${probe.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
      body: JSON.stringify(chatBody(PROMPT, { model: 'coder', max_tokens: MAX_TOKENS })),
    });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.usage.completion_tokens, OUT_TOKENS);
    c = costOf(p.json.usage, 'local-a');
    r = reservation(PROMPT, MAX_TOKENS, 'local-a');
    assert.ok(c > 0 && c < r, `the real cost ${c} is below the reservation ${r} (usage ${JSON.stringify(p.json.usage)})`);
    assert.equal(await stopAndCheck(probe.proc), '');

    // N = 4 requests fit: (N-1)c + r <= B < Nc + r, with half a request's margin either side
    k.exact = createKey(db, 'exact', { total: 3 * c + r + c / 2 });
    // the day budget binds first, the total is large
    k.daily = createKey(db, 'daily', { day: c + r + c / 2, month: 100, total: 100 });
    // fits model coder (local-a only) but not model auto (frontier-b is a candidate)
    k.worst = createKey(db, 'worst', { total: r + c / 2 });
    // a team budget for two keys (each without its own): 3 requests between them
    cliOk(db, ['keys', 'team-set', 'team-b', '--budget-total', usd(2 * c + r + c / 2)]);
    k.teamA = createKey(db, 'team-b-1', { team: 'team-b' });
    k.teamB = createKey(db, 'team-b-2', { team: 'team-b' });
    // over budget from the first request: local tier instead of a 402
    k.down = createKey(db, 'downgrader', { total: c / 2, downgrade: true });
    k.stream = createKey(db, 'streamer', { total: 100 });
    // without max_tokens: DEFAULT_MAX_TOKENS is reserved; one streamed request fits
    k.nearStream = createKey(db, 'near-stream', { total: reservation(PROMPT, DEFAULT_MAX_TOKENS, 'local-a') + c / 2 });
    k.release = createKey(db, 'releaser', { total: 100 });
    k.cut = createKey(db, 'cutter', { total: 100 });
    gw = await startGateway(db, 'gateway-budget');
    await gw.proc.waitStderr(/keys: 10 virtual keys from the sqlite database/);
  });

  test('N requests fit, the (N+1)th gets 402 budget_exceeded; Anthropic shape on /v1/messages', { timeout: T(10000) }, async () => {
    const d0 = await decisions(gw);
    for (let i = 0; i < 4; i++) {
      const x = await chat(gw, k.exact.secret);
      assert.equal(x.status, 200, `request ${i + 1} of 4: ${x.text}`);
      assert.equal(x.headers.get('x-hybridgw-backend'), 'local-a');
      assert.ok(near(costOf(x.json.usage, 'local-a'), c), 'every request costs the same');
    }
    const no = await chat(gw, k.exact.secret);
    assert402(no, /total budget/);
    assert.ok(no.json.error.message.length < 300, no.json.error.message);
    // the Anthropic dialect: billing_error in its error shape
    const m = await messages(gw, k.exact.secret);
    assert.equal(m.status, 402, m.text);
    assert.equal(m.json?.type, 'error', m.text);
    assert.equal(m.json.error?.type, 'billing_error', m.text);
    assert.match(m.json.error.message, /budget/);
    // what is left (B - 4c = r - c/2) still fits a request reserving less: max_tokens 1
    const rTiny = reservation(PROMPT, 1, 'local-a');
    assert.ok(rTiny < r - c / 2, 'the test needs a smaller reservation to fit');
    const tiny = await chat(gw, k.exact.secret, { extra: { max_tokens: 1 } });
    assert.equal(tiny.status, 200, `a smaller reservation fits what is left: ${tiny.text}`);
    assert.equal(tiny.json.usage.completion_tokens, 1);
    cTiny = costOf(tiny.json.usage, 'local-a');
    // and then nothing fits, not even that
    assert.ok(3 * c + r + c / 2 - 4 * c - cTiny < rTiny);
    assert402(await chat(gw, k.exact.secret, { extra: { max_tokens: 1 } }));
    const d1 = await decisions(gw);
    assert.equal(d1.reject - d0.reject, 3, 'three rejections counted');
    const exactSpent = 4 * c + cTiny;
    assert.equal(d1.downgrade - d0.downgrade, 0);
    assert.equal(d1.error - d0.error, 0);
    // settled: spent is exactly 4 real costs (settling is asynchronous, but quick)
    const s = await waitFor(() => {
      const x = keySpend(db, k.exact.id);
      return near(x.total, exactSpent, 5) ? x : null;
    }, { timeout: T(3000), what: `spent total 4 x ${c} + ${cTiny}` }).catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(keySpend(db, k.exact.id))}`);
    });
    assert.ok(near(s.day, exactSpent, 5) && near(s.month, exactSpent, 5), JSON.stringify(s));
  });

  test('a daily budget binds before the total; the message says which', { timeout: T(8000) }, async () => {
    assert.equal((await chat(gw, k.daily.secret)).status, 200);
    assert.equal((await chat(gw, k.daily.secret)).status, 200);
    assert402(await chat(gw, k.daily.secret), /daily budget/);
  });

  test('the reservation is the worst of the candidates: auto (frontier fallback) does not fit where coder does', { timeout: T(8000) }, async () => {
    const rAuto = Math.max(r, reservation(PROMPT, MAX_TOKENS, 'frontier-b'));
    assert.ok(rAuto > r + c / 2, 'the test needs the frontier reservation to be larger');
    // auto would run on local-a, but frontier-b is a fallback candidate: its price is reserved
    assert402(await chat(gw, k.worst.secret, { model: 'auto' }));
    assert.ok(near(keySpend(db, k.worst.id).total, 0), 'a refused request reserves nothing');
    const ok = await chat(gw, k.worst.secret, { model: 'coder' });
    assert.equal(ok.status, 200, ok.text);
    assert402(await chat(gw, k.worst.secret, { model: 'coder' }));
  });

  test('a team budget spans its keys', { timeout: T(8000) }, async () => {
    assert.equal((await chat(gw, k.teamA.secret)).status, 200);
    assert.equal((await chat(gw, k.teamB.secret)).status, 200);
    assert.equal((await chat(gw, k.teamA.secret)).status, 200);
    assert402(await chat(gw, k.teamB.secret), /team team-b/);
    assert402(await chat(gw, k.teamA.secret), /team team-b/);
    await waitFor(() => near(teamSpend(db, 'team-b').total, 3 * c, 3), {
      timeout: T(3000), what: 'team-b spent 3 requests',
    });
    assert.ok(near(keySpend(db, k.teamA.id).total, 2 * c, 2));
    assert.ok(near(keySpend(db, k.teamB.id).total, c));
  });

  test('--downgrade: over budget goes to the local tier with "; budget:downgrade", not 402', { timeout: T(8000) }, async () => {
    const d0 = await decisions(gw);
    for (const model of ['frontier-b', 'coder', 'auto']) {
      const x = await chat(gw, k.down.secret, { model });
      assert.equal(x.status, 200, `${model}: ${x.text}`);
      assert.equal(x.headers.get('x-hybridgw-backend'), 'local-a', `${model} is sent local`);
      assert.match(x.headers.get('x-hybridgw-reason') || '', /; budget:downgrade$/, `${model}: reason`);
    }
    const m = await messages(gw, k.down.secret, { model: 'frontier-b' });
    assert.equal(m.status, 200, m.text);
    assert.equal(m.headers.get('x-hybridgw-backend'), 'local-a');
    const d1 = await decisions(gw);
    assert.equal(d1.downgrade - d0.downgrade, 4);
    assert.equal(d1.reject - d0.reject, 0);
    // a downgraded request has no reservation: nothing is held or settled against the key
    await new Promise((res) => setTimeout(res, 300));
    assert.ok(near(keySpend(db, k.down.id).total, 0), JSON.stringify(keySpend(db, k.down.id)));
  });

  test('a stream is reserved while it runs (keys list shows it) and settled to its real cost', { timeout: T(15000) }, async () => {
    const before1 = keySpend(db, k.stream.id).total;
    assert.ok(near(before1, 0));
    // 10 tokens at 10/s: about a second of streaming to look at the reservation
    const content = 'stream budget [sim:output_tokens=10] [sim:tokens_per_sec=10]';
    const rs = reservation(content, MAX_TOKENS, 'local-a');
    const p = chat(gw, k.stream.secret, {
      content, extra: { max_tokens: MAX_TOKENS, stream: true, stream_options: { include_usage: true } },
    });
    const held = await waitFor(() => {
      const x = keySpend(db, k.stream.id).total;
      return x > 0 ? x : null;
    }, { timeout: T(3000), interval: 20, what: 'the stream\'s reservation in keys list' });
    assert.ok(near(held, rs), `while streaming, spent+reserved is the reservation ${rs}: ${held}`);
    const res = await p;
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type') || '', /text\/event-stream/);
    const chunks = sseData(res.text);
    assert.equal(chunks.at(-1), '[DONE]');
    const usage = chunks.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d)).find((x) => x.usage)?.usage;
    assert.ok(usage, `a usage chunk: ${res.text}`);
    assert.equal(usage.completion_tokens, 10);
    const cs = costOf(usage, 'local-a');
    assert.ok(cs <= rs, `a stream with max_tokens costs at most its reservation: ${cs} <= ${rs}`);
    await waitFor(() => near(keySpend(db, k.stream.id).total, cs), {
      timeout: T(3000), what: `the stream settled to ${cs}`,
    }).catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(keySpend(db, k.stream.id))}`);
    });
    // an Anthropic stream, the same
    const m = await messages(gw, k.stream.secret, { stream: true });
    assert.equal(m.status, 200, m.text);
    const ev = sseEvents(m.text);
    const start = JSON.parse(ev.find((e) => e.event === 'message_start').data);
    const delta = JSON.parse(ev.find((e) => e.event === 'message_delta').data);
    // a translated stream reports the input tokens in message_delta (message_start has 0)
    const inputTokens = Math.max(start.message.usage.input_tokens, delta.usage.input_tokens ?? 0);
    const cm = costOf({ input_tokens: inputTokens, output_tokens: delta.usage.output_tokens }, 'local-a');
    assert.ok(near(cm, c), `the Anthropic stream costs what the plain request does: ${cm} vs ${c}`);
    await waitFor(() => near(keySpend(db, k.stream.id).total, cs + cm, 2), {
      timeout: T(3000), what: 'the Anthropic stream settled',
    });
  });

  test('a stream near its budget: the default max_tokens is reserved; the next request gets 402', { timeout: T(10000) }, async () => {
    const d0 = await decisions(gw);
    const res = await chat(gw, k.nearStream.secret, {
      extra: { stream: true, stream_options: { include_usage: true } }, // no max_tokens
    });
    assert.equal(res.status, 200, res.text);
    const usage = sseData(res.text).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d)).find((x) => x.usage)?.usage;
    assert.ok(usage, res.text);
    const cs = costOf(usage, 'local-a');
    assert.ok(near(cs, c), 'the stream costs what the plain request does');
    await waitFor(() => near(keySpend(db, k.nearStream.id).total, cs), { timeout: T(3000), what: 'settled' });
    // c/2 + (reservation - cost) left: less than another reservation
    assert402(await chat(gw, k.nearStream.secret, { extra: { stream: true } }));
    const d1 = await decisions(gw);
    assert.equal(d1.reject - d0.reject, 1);
    assert.equal(d1.stream_cut - d0.stream_cut, 0, 'a stream within its reservation is not cut');
  });

  /** Open reservations in the SQLite file (sqlite3), or null without sqlite3. */
  function openReservations() {
    const file = db.slice('sqlite://'.length);
    try {
      const out = execFileSync('sqlite3', ['-readonly', file, 'SELECT count(*) FROM reservations'], {
        encoding: 'utf8', timeout: T(5000), stdio: ['ignore', 'pipe', 'pipe'],
      });
      return Number(out.trim());
    } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
  }

  test('a failed request releases its reservation; an aborted stream settles what it cost', { timeout: T(10000) }, async () => {
    // the upstream fails (500, no retries): 502, and nothing is charged
    const f = await chat(gw, k.release.secret, { content: `${PROMPT} [sim:fault=status=500]` });
    assert.equal(f.status, 502, f.text);
    await waitFor(() => openReservations() === 0 || openReservations() === null, { timeout: T(3000), what: 'no open reservation' });
    await new Promise((res) => setTimeout(res, 200));
    assert.ok(near(keySpend(db, k.release.id).total, 0), `released: ${JSON.stringify(keySpend(db, k.release.id))}`);
    // the client goes away mid-stream: settled at what was streamed, not held
    const content = 'abort me [sim:output_tokens=20] [sim:tokens_per_sec=10]';
    const rs = reservation(content, 30, 'local-a');
    await assert.rejects(chat(gw, k.release.secret, {
      content, extra: { max_tokens: 30, stream: true }, timeout: 600,
    }), /abort|timeout/i);
    const spent = await waitFor(() => {
      const x = keySpend(db, k.release.id).total;
      return x > 0 && openReservations() !== 1 ? x : null;
    }, { timeout: T(3000), what: 'the aborted stream to be settled' });
    assert.ok(spent < rs, `an aborted stream settles below its reservation: ${spent} < ${rs}`);
    await new Promise((res) => setTimeout(res, 300));
    assert.ok(near(keySpend(db, k.release.id).total, spent), 'and stays there (no reservation left open)');
    const open = openReservations();
    if (open !== null) assert.equal(open, 0, 'no reservation left open in the database');
  });

  test('a stream without max_tokens is held upstream to the default_max_tokens its reservation assumed', { timeout: T(10000) }, async () => {
    // The gateway sends max_tokens = default_max_tokens upstream for budgeted requests without
    // one, so the stream ends normally at that length. (The meter that cuts a stream with a
    // budget_exceeded event is for upstreams that ignore max_tokens; the simulator honours it.)
    const content = 'cut me [sim:output_tokens=60]';
    const rs = reservation(content, DEFAULT_MAX_TOKENS, 'local-a');
    const before = keySpend(db, k.cut.id).total;
    const res = await chat(gw, k.cut.secret, { content, extra: { stream: true, stream_options: { include_usage: true } } });
    assert.equal(res.status, 200, res.text);
    const events = sseData(res.text);
    assert.equal(events.at(-1), '[DONE]', 'the stream ends normally');
    const chunks = events.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
    const content_tokens = chunks.filter((x) => x.choices?.[0]?.delta?.content).length;
    assert.ok(content_tokens <= DEFAULT_MAX_TOKENS, `held to ${DEFAULT_MAX_TOKENS}, got ${content_tokens}`);
    assert.ok(chunks.some((x) => x.choices?.[0]?.finish_reason === 'length'), 'finish_reason length');
    await waitFor(() => keySpend(db, k.cut.id).total > before, { timeout: T(3000), what: 'the stream settled' });
    assert.ok(keySpend(db, k.cut.id).total - before <= rs + 1e-9, 'charged at most its reservation');
  });

  // BUG (todo until fixed): the stream meter compares output events alone with the whole
  // reservation (which also holds the prompt's input cost), so a cut stream settles above
  // what was reserved; its prompt's input cost is the overrun.
  test('a cut stream settles at most its reservation', {
    timeout: T(10000),
  }, async () => {
    const content = 'cut me again [sim:output_tokens=60]';
    const rs = reservation(content, DEFAULT_MAX_TOKENS, 'local-a');
    const before1 = keySpend(db, k.cut.id).total;
    const res = await chat(gw, k.cut.secret, { content, extra: { stream: true } });
    assert.equal(res.status, 200);
    await waitFor(() => keySpend(db, k.cut.id).total > before1, { timeout: T(3000), what: 'settled' });
    const charged = keySpend(db, k.cut.id).total - before1;
    assert.ok(charged <= rs + 1e-9, `charged ${charged} <= reserved ${rs}`);
  });

  // BUG (todo until fixed): without max_tokens the reservation assumes default_max_tokens, but
  // the upstream request is not capped, so a plain (non-streamed) answer can cost any amount
  // more than its reservation; N such requests in flight overrun the budget by N times that.
  test('a plain request without max_tokens costs at most its reservation', {
    timeout: T(10000),
  }, async () => {
    const content = 'long plain [sim:output_tokens=60]';
    const rs = reservation(content, DEFAULT_MAX_TOKENS, 'local-a');
    const before1 = keySpend(db, k.cut.id).total;
    const res = await chat(gw, k.cut.secret, { content, extra: {} });
    assert.equal(res.status, 200, res.text);
    await waitFor(() => keySpend(db, k.cut.id).total > before1, { timeout: T(3000), what: 'settled' });
    const charged = keySpend(db, k.cut.id).total - before1;
    assert.ok(charged <= rs + 1e-9, `charged ${charged} (usage ${JSON.stringify(res.json.usage)}) <= reserved ${rs}`);
  });

  test('SIGTERM: spent totals and the ledger agree with what was answered', { timeout: T(20000) }, async () => {
    const problem = await stopAndCheck(gw.proc);
    assert.equal(problem, '', problem);
    assert.ok(near(keySpend(db, k.exact.id).total, 4 * c + cTiny, 5));
    assert.ok(near(keySpend(db, k.daily.id).total, 2 * c, 2));
    assert.ok(near(keySpend(db, k.worst.id).total, c));
    assert.ok(near(teamSpend(db, 'team-b').total, 3 * c, 3));
    // the ledger has the answered requests only (402s are not billable)
    const row = spendRow(db, 'key', 'exact');
    assert.ok(row, 'exact has a ledger row');
    assert.equal(row.requests, 5);
    assert.ok(near(row.cost_usd, 4 * c + cTiny, 5), `ledger cost ${row.cost_usd} vs ${4 * c + cTiny}`);
    assert.equal(spendRow(db, 'key', 'downgrader')?.requests, 4, 'downgraded requests are in the ledger');
    // no reservation is left open: spent + reserved == the ledger's cost for every key
    for (const name of ['exact', 'daily', 'worst', 'team-b-1', 'team-b-2', 'streamer', 'near-stream', 'releaser', 'cutter']) {
      const id = Object.values(k).find((x) => x.name === name).id;
      const spent = keySpend(db, id).total;
      const ledger = spendRow(db, 'key', name)?.cost_usd ?? 0;
      assert.ok(near(spent, ledger, 4), `${name}: spent+reserved ${spent} == ledger ${ledger}`);
    }
  });

  test('restart on the same database keeps the spent totals: a key at its budget still gets 402', { timeout: T(20000) }, async () => {
    const g = await startGateway(db, 'gateway-budget-restart');
    assert402(await chat(g, k.exact.secret), /total budget/);
    assert402(await chat(g, k.teamA.secret), /team team-b/);
    assert.equal((await chat(g, k.stream.secret)).status, 200, 'a key with room left still works');
    const x = await chat(g, k.down.secret);
    assert.equal(x.status, 200);
    assert.match(x.headers.get('x-hybridgw-reason') || '', /budget:downgrade/);
    assert.equal(await stopAndCheck(g.proc), '');
    assert.ok(near(keySpend(db, k.exact.id).total, 4 * c + cTiny, 5), 'unchanged by the refused request');
  });
});

// ==== PostgreSQL ================================================================================

const PG_SKIP = pgSkipReason();
// about ten of the race's requests (each reserves 0.134 USD and costs 0.117 USD)
const BUDGET_SHARED = 1.4;
if (PG_SKIP) process.stderr.write(`budget.test: SKIP the PostgreSQL tests: ${PG_SKIP}\n`);

describe('budgets with PostgreSQL (two gateways, one database)', { skip: PG_SKIP || false }, () => {
  let pg;
  let g1;
  let g2;
  let c; // the real cost of PROMPT on local-a
  let r;
  const k = {};

  before(async () => {
    pg = await Postgres.start();
    pgs.push(pg);
    r = reservation(PROMPT, MAX_TOKENS, 'local-a');
    g1 = await startGateway(pg.url, 'gateway-pg-1');
    g2 = await startGateway(pg.url, 'gateway-pg-2');
    const p = await http(`${g1.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
      body: JSON.stringify(chatBody(PROMPT, { model: 'coder', max_tokens: MAX_TOKENS })),
    });
    assert.equal(p.status, 200, p.text);
    c = costOf(p.json.usage, 'local-a');
    assert.ok(c > 0 && c < r);
    // keys created while the gateways run: picked up within a refresh
    k.shared = createKey(pg.url, 'shared', { total: BUDGET_SHARED });
    k.outage = createKey(pg.url, 'outage', { total: 100 });
    for (const g of [g1, g2]) {
      await waitFor(async () => (await chat(g, k.outage.secret)).status === 200, {
        timeout: REFRESH_WAIT, what: `${g.proc.name} to know the new keys`,
      });
    }
  });

  test('40 concurrent requests over two gateways: one budget, never overspent', { timeout: T(30000) }, async (t) => {
    const B = BUDGET_SHARED;
    const N = 40;
    // output dominates the cost, so the real cost is close to the reservation and the bounds are tight
    const content = 'budget race [sim:output_tokens=100] [sim:ttft_ms=20]';
    const rr = reservation(content, 100, 'local-a');
    const results = await Promise.all(Array.from({ length: N }, (_, i) => chat(i % 2 ? g2 : g1, k.shared.secret, {
      content, extra: { max_tokens: 100 }, timeout: T(20000),
    })));
    const byStatus = {};
    for (const x of results) byStatus[x.status] = (byStatus[x.status] || 0) + 1;
    const ok = results.filter((x) => x.status === 200);
    for (const x of results) if (x.status !== 200) assert402(x);
    assert.equal(ok.length + (byStatus[402] || 0), N, `only 200 and 402: ${JSON.stringify(byStatus)}`);
    const costs = ok.map((x) => costOf(x.json.usage, 'local-a'));
    const cc = costs[0];
    for (const x of costs) assert.ok(near(x, cc), 'every answered request costs the same');
    assert.ok(cc <= rr);
    // bounds: every admitted request saw spent+reserved+rr <= B, and spent+reserved >= (admitted before) x cc;
    // a refusal means spent+reserved+rr > B with at most (admitted) x rr held
    const most = Math.floor((B - rr) / cc + 1e-9) + 1;
    const least = Math.ceil(B / rr - 1 - 1e-9);
    assert.ok(ok.length >= least && ok.length <= most,
      `200s: ${ok.length}, expected between ${least} and ${most} (${JSON.stringify(byStatus)})`);
    // both gateways admitted and refused some (the split is even, the race is real)
    const okByGw = [0, 1].map((j) => results.filter((x, i) => i % 2 === j && x.status === 200).length);
    assert.ok(okByGw[0] > 0 && okByGw[1] > 0, `200s per gateway: ${okByGw}`);
    // settled to the real cost: spent == 200s x cost, within the budget
    const spent = await waitFor(() => {
      const s = keySpend(pg.url, k.shared.id).total;
      return near(s, ok.length * cc, ok.length) ? s : null;
    }, { timeout: T(5000), what: `spent to settle at ${ok.length} x ${cc}` }).catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(keySpend(pg.url, k.shared.id))}`);
    });
    t.diagnostic(`budget ${B}, reservation ${rr}, cost ${cc}: ${ok.length} x 200 (${okByGw} per gateway), `
      + `${N - ok.length} x 402, allowed ${least}..${most}, spent ${spent}`);
    assert.ok(spent <= B + 1e-9, `spent ${spent} <= budget ${B}`);
    assert.ok(spent <= B + rr, 'the brief\'s bound: not over by more than one reservation');
    const d = [await decisions(g1), await decisions(g2)];
    assert.equal(d[0].reject + d[1].reject, N - ok.length, `rejections counted: ${JSON.stringify(d)}`);
  });

  test('database down: a budgeted key gets 503 budget_unavailable (fail closed), static keys work; back when it is', { timeout: T(40000) }, async (t) => {
    const d0 = await decisions(g1);
    await pg.stopServer('immediate');
    const times = [];
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      const x = await chat(g1, k.outage.secret, { timeout: T(15000) });
      times.push(Date.now() - t0);
      assert.equal(x.status, 503, `with the database down: ${x.status} ${x.text}`);
      assert.equal(x.json?.error?.code, 'budget_unavailable', x.text);
      assert.equal(x.json.error.type, 'server_error');
    }
    assert.ok(Math.max(...times) < T(5000), `answered within 5 s each: ${times} ms`);
    t.diagnostic(`503 budget_unavailable after ${times.join(', ')} ms`);
    const ms = await messages(g2, k.outage.secret);
    assert.equal(ms.status, 503, ms.text);
    assert.equal(ms.json?.type, 'error', ms.text);
    const d1 = await decisions(g1);
    assert.equal(d1.error - d0.error, 3, `error decisions: ${JSON.stringify(d1)}`);
    // the gateway stays up; a static key (no budget) still works; health and metrics answer
    const st = await http(`${g1.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
      body: JSON.stringify(chatBody('static while the database is down', { model: 'coder', max_tokens: 5 })),
    });
    assert.equal(st.status, 200, st.text);
    assert.ok(g1.proc.running && g2.proc.running);
    // the database password is in no log line about the outage
    for (const g of [g1, g2]) {
      assert.ok(!g.proc.stderr.includes(pg.password), `${g.proc.name} stderr shows the database password`);
      assert.ok(!g.proc.stdout.includes(pg.password), `${g.proc.name} stdout shows the database password`);
    }
    // back: the same port, the same data; the connection is re-established
    await pg.startServer();
    for (const g of [g1, g2]) {
      await waitFor(async () => (await chat(g, k.outage.secret)).status === 200, {
        timeout: T(15000), interval: 200, what: `${g.proc.name}: budgets to work again after the database is back`,
      });
    }
  });

  // BUG (todo until fixed): settling is fire and forget; when the database is down at the
  // moment a request ends, the settle is logged and dropped, so the reservation stays open
  // (held against the budget) until expiry (900 s) and is then released: the request's real
  // cost is never charged to the budget, although the ledger writer retries its record.
  test('a request that ends while the database is down is settled once it is back', {
    timeout: T(20000),
  }, async () => {
    const before1 = keySpend(pg.url, k.outage.id).total;
    const content = 'settle later [sim:output_tokens=10] [sim:tokens_per_sec=10]';
    const p = chat(g1, k.outage.secret, { content, extra: { max_tokens: 30, stream: true, stream_options: { include_usage: true } } });
    await waitFor(() => keySpend(pg.url, k.outage.id).total > before1 + 1e-9, { timeout: T(3000), what: 'the reservation' });
    try {
      await pg.stopServer('immediate');
      const res = await p;
      assert.equal(res.status, 200);
    } finally {
      if (!pg.running) await pg.startServer();
    }
    const usage = sseData((await p).text).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d)).find((x) => x.usage)?.usage;
    assert.ok(usage);
    const cost = costOf(usage, 'local-a');
    await waitFor(() => near(keySpend(pg.url, k.outage.id).total, before1 + cost, 2), {
      timeout: T(5000), what: `spent to grow by the real cost ${cost}, not hold the reservation`,
    }).catch((e) => {
      throw new Error(`${e.message}: spent+reserved ${keySpend(pg.url, k.outage.id).total}, before ${before1}`);
    });
  });

  test('both gateways stop cleanly on SIGTERM; spend and keys list agree', { timeout: T(30000) }, async () => {
    for (const g of [g1, g2]) {
      const problem = await stopAndCheck(g.proc, { timeout: T(20000) });
      assert.equal(problem, '', problem);
    }
    const row = spendRow(pg.url, 'key', 'shared');
    assert.ok(row, 'shared has ledger rows');
    assert.ok(near(keySpend(pg.url, k.shared.id).total, row.cost_usd, row.requests),
      `keys list ${keySpend(pg.url, k.shared.id).total} vs spend ${row.cost_usd}`);
  });
});
