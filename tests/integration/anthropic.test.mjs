// anthropic.test.mjs - the Anthropic dialect (/v1/messages and
// /v1/messages/count_tokens) through the official @anthropic-ai/sdk, to an
// Anthropic backend (pass-through) and to a vLLM backend (translated), and
// the event stream as it is on the wire.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import {
  Sim, Gateway, gatewayYamlMulti, stopAndCheck, postMessages, http, sseEvents, T,
} from './lib/harness.mjs';

let simLocal; // vLLM stand-in (OpenAI dialect upstream)
let simFront; // Anthropic stand-in
let gw;
let client;

before(async () => {
  simLocal = await Sim.start({ name: 'sim-local' });
  simFront = await Sim.start({ name: 'sim-frontier' });
  gw = await Gateway.start(gatewayYamlMulti({
    admin: true,
    backends: [
      { name: 'local-a', tier: 'local', provider: 'vllm', url: simLocal.url },
      { name: 'frontier-b', tier: 'frontier', provider: 'anthropic', url: simFront.url, model: 'claude-sim' },
    ],
    models: { claude: 'frontier-b', coder: 'local-a' },
  }), { name: 'gateway-anthropic' });
  client = anthropic();
});

after(async () => {
  for (const p of [gw?.proc, simLocal?.proc, simFront?.proc]) if (p) await p.stop({ signal: 'SIGKILL' });
});

function anthropic(opts = {}) {
  return new Anthropic({ apiKey: 'sk-test', baseURL: gw.url, maxRetries: 0, timeout: T(15000), ...opts });
}

// Both ways to the upstream: pass-through and translated.
const TARGETS = [
  { model: 'frontier-b', backend: 'frontier-b', provider: 'anthropic', translated: false, route: 'messages' },
  { model: 'local-a', backend: 'local-a', provider: 'vllm', translated: true, route: 'chat_completions' },
];
const simOf = (t) => (t.backend === 'frontier-b' ? simFront : simLocal);
const otherSim = (t) => (t.backend === 'frontier-b' ? simLocal : simFront);

/** Requests each sim has seen on the generation routes. */
async function counts() {
  const [a, b] = await Promise.all([simLocal.stats(), simFront.stats()]);
  return {
    local: a.requests.chat_completions + a.requests.messages,
    frontier: b.requests.chat_completions + b.requests.messages,
    localSt: a,
    frontierSt: b,
  };
}
const countOf = (c, sim) => (sim === simFront ? c.frontier : c.local);

async function rejects(fn) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  assert.fail('expected an error');
}

const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

for (const t of TARGETS) {
  const label = `${t.backend} (${t.translated ? 'translated from vllm' : 'pass-through'})`;

  test(`messages.create, non-streaming -> ${label}`, { timeout: T(8000) }, async () => {
    const c0 = await counts();
    const { data: m, response } = await client.messages
      .create({ model: t.model, max_tokens: 64, messages: [{ role: 'user', content: 'Say hello [sim:output_tokens=4]' }] })
      .withResponse();
    assert.equal(m.type, 'message');
    assert.equal(m.role, 'assistant');
    assert.match(m.id, /^msg_/);
    assert.equal(m.content.length, 1);
    assert.equal(m.content[0].type, 'text');
    assert.ok(m.content[0].text.trim().length > 0, 'some text');
    assert.equal(m.content[0].text.trim().split(/\s+/).length, 4, `4 tokens (words): ${m.content[0].text}`);
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.usage.output_tokens, 4);
    assert.ok(m.usage.input_tokens > 0, 'input tokens reported');
    assert.equal(response.headers.get('x-hybridgw-backend'), t.backend);
    const rid = response.headers.get('request-id');
    assert.ok(rid, 'request-id header (the SDK reads it)');
    assert.equal(rid, response.headers.get('x-request-id'));
    const c1 = await counts();
    assert.equal(countOf(c1, simOf(t)) - countOf(c0, simOf(t)), 1, 'one upstream request');
    assert.equal(countOf(c1, otherSim(t)), countOf(c0, otherSim(t)), 'the other backend untouched');
    const st = simOf(t) === simFront ? c1.frontierSt : c1.localSt;
    const st0 = simOf(t) === simFront ? c0.frontierSt : c0.localSt;
    assert.equal(st.requests[t.route] - st0.requests[t.route], 1, `upstream route ${t.route}`);
    const log = await gw.logFor(rid);
    assert.equal(log.status, 200);
    assert.equal(log.dialect, 'anthropic');
    assert.equal(log.path, '/v1/messages');
    assert.equal(log.provider, t.provider);
    assert.equal(log.backend, t.backend);
    assert.equal(Boolean(log.translated), t.translated);
    assert.equal(log.completion_tokens, 4);
  });

  test(`messages.create, stream: true -> ${label}`, { timeout: T(8000) }, async () => {
    const stream = await client.messages.create({
      model: t.model, max_tokens: 64, stream: true,
      messages: [{ role: 'user', content: 'Count [sim:output_tokens=5]' }],
    });
    const types = [];
    let text = '';
    let delta;
    let start;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'message_start') start = ev.message;
      if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
      if (ev.type === 'message_delta') delta = ev;
    }
    assert.equal(types[0], 'message_start');
    assert.equal(types.at(-1), 'message_stop');
    assert.equal(types.at(-2), 'message_delta');
    assert.equal(types.filter((x) => x === 'message_start').length, 1);
    assert.equal(types.filter((x) => x === 'content_block_start').length, 1);
    assert.equal(types.filter((x) => x === 'content_block_stop').length, 1);
    assert.ok(types.filter((x) => x === 'content_block_delta').length >= 1);
    assert.equal(start.role, 'assistant');
    assert.equal(start.stop_reason, null);
    assert.deepEqual(start.content, []);
    assert.equal(text.trim().split(/\s+/).length, 5, `5 tokens: ${JSON.stringify(text)}`);
    assert.equal(delta.delta.stop_reason, 'end_turn');
    assert.equal(delta.usage.output_tokens, 5);
  });

  test(`messages.stream() + finalMessage() -> ${label}`, { timeout: T(8000) }, async () => {
    const s = client.messages.stream({
      model: t.model, max_tokens: 64, messages: [{ role: 'user', content: 'Stream it [sim:output_tokens=6]' }],
    });
    let seen = '';
    s.on('text', (d) => {
      seen += d;
    });
    const m = await s.finalMessage();
    assert.equal(m.role, 'assistant');
    assert.equal(m.content.length, 1);
    assert.equal(m.content[0].type, 'text');
    assert.equal(m.content[0].text, seen, 'the final message is the text streamed');
    assert.equal(m.content[0].text.trim().split(/\s+/).length, 6);
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.usage.output_tokens, 6);
    assert.ok(m.usage.input_tokens > 0, `input tokens after message_delta: ${JSON.stringify(m.usage)}`);
  });

  test(`tool use round trip with messages.stream() -> ${label}`, { timeout: T(10000) }, async () => {
    const user = { role: 'user', content: 'What is the weather in Paris? sim:tool_call' };
    const s = client.messages.stream({ model: t.model, max_tokens: 128, tools: [WEATHER_TOOL], messages: [user] });
    const jsonDeltas = [];
    s.on('inputJson', (d) => jsonDeltas.push(d));
    const first = await s.finalMessage();
    assert.equal(first.stop_reason, 'tool_use');
    const uses = first.content.filter((b) => b.type === 'tool_use');
    assert.equal(uses.length, 1, JSON.stringify(first.content));
    const use = uses[0];
    assert.equal(use.name, 'get_weather');
    assert.ok(typeof use.id === 'string' && use.id.length > 0, 'tool_use id');
    assert.equal(typeof use.input, 'object');
    assert.equal(typeof use.input.city, 'string', `input ${JSON.stringify(use.input)}`);
    assert.ok(jsonDeltas.length >= 1, 'input_json_delta events streamed');

    // the result goes back; the model answers in text
    const second = await client.messages.create({
      model: t.model, max_tokens: 128, tools: [WEATHER_TOOL],
      messages: [
        user,
        { role: 'assistant', content: first.content },
        // text after the results (allowed, PROTOCOLS 2.2); it also makes the
        // translated request's last user message this one, not the first
        // (the simulator looks for sim:tool_call in the last user message)
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: use.id, content: 'Sunny, 21 C' },
            { type: 'text', text: 'Thanks. Now answer in one sentence.' },
          ],
        },
      ],
    });
    assert.equal(second.stop_reason, 'end_turn');
    assert.equal(second.content.filter((b) => b.type === 'tool_use').length, 0);
    const text = second.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
    assert.ok(text.length > 0, 'an answer in text');
    // the tool result costs input tokens: more than the first turn
    assert.ok(second.usage.input_tokens > first.usage.input_tokens,
      `second turn input ${second.usage.input_tokens} > first ${first.usage.input_tokens}`);
  });

  test(`the event stream on the wire -> ${label}`, { timeout: T(8000) }, async () => {
    for (const [what, body] of [
      ['text', { messages: [{ role: 'user', content: 'wire [sim:output_tokens=3]' }] }],
      ['tool', { tools: [WEATHER_TOOL], messages: [{ role: 'user', content: 'wire sim:tool_call' }] }],
    ]) {
      const r = await postMessages(gw, { model: t.model, max_tokens: 64, stream: true, ...body });
      assert.equal(r.status, 200, r.text);
      assert.match(r.headers.get('content-type'), /^text\/event-stream/);
      const evs = sseEvents(r.text);
      for (const e of evs) {
        assert.ok(e.event, `every event has an event: line (${what}): ${JSON.stringify(e)}`);
        const j = JSON.parse(e.data);
        assert.equal(j.type, e.event, `data.type repeats the event name (${what})`);
      }
      const names = evs.map((e) => e.event).filter((n) => n !== 'ping');
      // message_start, (content_block_start, delta+, stop)+, message_delta, message_stop
      const seq = names.join(' ');
      assert.match(seq, /^message_start( content_block_start( content_block_delta)+ content_block_stop)+ message_delta message_stop$/,
        `${what}: ${seq}`);
      const data = evs.map((e) => JSON.parse(e.data));
      const ms = data.find((d) => d.type === 'message_start').message;
      assert.equal(ms.type, 'message');
      assert.equal(ms.stop_reason, null);
      assert.ok(ms.usage && typeof ms.usage.input_tokens === 'number', 'usage in message_start');
      // block indexes count from 0 in order; deltas match their block
      let idx = -1;
      for (const d of data) {
        if (d.type === 'content_block_start') assert.equal(d.index, ++idx);
        if (d.type === 'content_block_delta' || d.type === 'content_block_stop') assert.equal(d.index, idx);
      }
      const md = data.find((d) => d.type === 'message_delta');
      assert.equal(md.delta.stop_reason, what === 'tool' ? 'tool_use' : 'end_turn');
      assert.equal(typeof md.usage.output_tokens, 'number');
      if (what === 'text') assert.equal(md.usage.output_tokens, 3);
      if (what === 'tool') {
        const cbs = data.find((d) => d.type === 'content_block_start' && d.content_block.type === 'tool_use');
        assert.ok(cbs, 'a tool_use block');
        assert.equal(cbs.content_block.name, 'get_weather');
        assert.deepEqual(cbs.content_block.input, {});
        const json = data.filter((d) => d.type === 'content_block_delta' && d.index === cbs.index)
          .map((d) => {
            assert.equal(d.delta.type, 'input_json_delta');
            return d.delta.partial_json;
          }).join('');
        assert.equal(typeof JSON.parse(json).city, 'string', `accumulated input ${json}`);
      }
      // nothing after message_stop
      assert.equal(evs.at(-1).event, 'message_stop');
    }
  });

  test(`usage: cache reads from sim:cache in the system prompt -> ${label}`, { timeout: T(8000) }, async () => {
    const system = 'You are terse. sim:cache';
    const m = await client.messages.create({
      model: t.model, max_tokens: 64, system, messages: [{ role: 'user', content: 'hi [sim:output_tokens=2]' }],
    });
    assert.ok(m.usage.cache_read_input_tokens > 0, `cache reads: ${JSON.stringify(m.usage)}`);
    assert.ok(m.usage.input_tokens > 0, 'uncached input tokens');
    assert.equal(m.usage.output_tokens, 2);
    // the same prompt without the cache hint: input_tokens there is the total
    const plain = await client.messages.create({
      model: t.model, max_tokens: 64, system: 'You are terse. sim_cache',
      messages: [{ role: 'user', content: 'hi [sim:output_tokens=2]' }],
    });
    assert.ok(!plain.usage.cache_read_input_tokens, 'no cache reads without the hint');
    assert.equal(m.usage.input_tokens + m.usage.cache_read_input_tokens, plain.usage.input_tokens,
      'input_tokens excludes the cache reads (PROTOCOLS 2.3)');

    const s = client.messages.stream({
      model: t.model, max_tokens: 64, system, messages: [{ role: 'user', content: 'hi [sim:output_tokens=2]' }],
    });
    const fm = await s.finalMessage();
    assert.equal(fm.usage.cache_read_input_tokens, m.usage.cache_read_input_tokens, `streamed ${JSON.stringify(fm.usage)}`);
    assert.equal(fm.usage.input_tokens, m.usage.input_tokens);
    assert.equal(fm.usage.output_tokens, 2);
    const { response } = await s.withResponse();
    const log = await gw.logFor(response.headers.get('request-id'));
    assert.equal(log.cached_tokens, m.usage.cache_read_input_tokens);
    assert.equal(log.prompt_tokens, plain.usage.input_tokens, 'the log counts the whole prompt');
    assert.equal(log.completion_tokens, 2);
  });

  test(`mid-stream upstream error surfaces as an SDK error -> ${label}`, { timeout: T(8000) }, async () => {
    const stream = await client.messages.create({
      model: t.model, max_tokens: 64, stream: true,
      messages: [{ role: 'user', content: 'fail later [sim:output_tokens=8] [sim:fault=error@3]' }],
    });
    const types = [];
    const e = await rejects(async () => {
      for await (const ev of stream) types.push(ev.type);
    });
    assert.ok(e instanceof Anthropic.APIError, `${e.constructor.name}: ${e.message}`);
    assert.equal(types[0], 'message_start', 'the stream had begun');
    assert.ok(!types.includes('message_stop'), 'no message_stop after an error');
  });
}

test('errors are typed: 401 AuthenticationError for a bad key', { timeout: T(5000) }, async () => {
  const e = await rejects(() => anthropic({ apiKey: 'sk-wrong' }).messages.create({
    model: 'frontier-b', max_tokens: 8, messages: [{ role: 'user', content: 'x' }],
  }));
  assert.ok(e instanceof Anthropic.AuthenticationError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 401);
  assert.equal(e.error.type, 'error');
  assert.equal(e.error.error.type, 'authentication_error');
});

test('a 401 carries the request-id header like every other answer on /v1/messages', {
  timeout: T(5000),
}, async () => {
  const e = await rejects(() => anthropic({ apiKey: 'sk-wrong' }).messages.create({
    model: 'frontier-b', max_tokens: 8, messages: [{ role: 'user', content: 'x' }],
  }));
  assert.equal(e.status, 401);
  assert.ok(e.requestID, 'AuthenticationError.requestID (from request-id)');
});

test('Authorization: Bearer works as well as x-api-key', { timeout: T(5000) }, async () => {
  const bearer = new Anthropic({ apiKey: null, authToken: 'sk-test', baseURL: gw.url, maxRetries: 0, timeout: T(5000) });
  const m = await bearer.messages.create({ model: 'frontier-b', max_tokens: 8, messages: [{ role: 'user', content: 'x [sim:output_tokens=1]' }] });
  assert.equal(m.usage.output_tokens, 1);
  const bad = new Anthropic({ apiKey: null, authToken: 'sk-nope', baseURL: gw.url, maxRetries: 0, timeout: T(5000) });
  const e = await rejects(() => bad.messages.create({ model: 'frontier-b', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }));
  assert.ok(e instanceof Anthropic.AuthenticationError, e.message);
});

test('errors are typed: 400 BadRequestError for a missing max_tokens', { timeout: T(5000) }, async () => {
  const c0 = await counts();
  const e = await rejects(() => client.messages.create({ model: 'frontier-b', messages: [{ role: 'user', content: 'x' }] }));
  assert.ok(e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 400);
  assert.equal(e.error.error.type, 'invalid_request_error');
  assert.match(e.error.error.message, /max_tokens/);
  assert.ok(e.requestID, 'request-id on the error');
  const c1 = await counts();
  assert.equal(c1.frontier, c0.frontier, 'not sent upstream');
});

test('errors are typed: 404 NotFoundError for an unknown model', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.messages.create({ model: 'claude-nope', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }));
  assert.ok(e instanceof Anthropic.NotFoundError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 404);
  assert.equal(e.error.error.type, 'not_found_error');
  assert.match(e.error.error.message, /claude-nope/);
});

for (const t of TARGETS) {
  test(`errors are typed: upstream faults -> ${t.backend}`, { timeout: T(8000) }, async () => {
    const ask = (fault) => client.messages.create({
      model: t.model, max_tokens: 8, messages: [{ role: 'user', content: `x [sim:fault=${fault}]` }],
    });
    const rl = await rejects(() => ask('status=429,retry_after=7'));
    assert.ok(rl instanceof Anthropic.RateLimitError, `${rl.constructor.name}: ${rl.message}`);
    assert.equal(rl.status, 429);
    assert.equal(rl.error.error.type, 'rate_limit_error');
    assert.equal(rl.headers.get('retry-after'), '7', 'the upstream retry-after reaches the client');

    const ise = await rejects(() => ask('status=500'));
    assert.ok(ise instanceof Anthropic.InternalServerError, `${ise.constructor.name}: ${ise.message}`);
    assert.ok(ise.status >= 500);
    assert.equal(ise.error.type, 'error');
    assert.equal(ise.error.error.type, 'api_error');

    const ov = await rejects(() => ask(t.provider === 'anthropic' ? 'status=529' : 'status=503'));
    assert.ok(ov instanceof Anthropic.APIError, `${ov.constructor.name}: ${ov.message}`);
    assert.ok(ov.status === 503 || ov.status === 529, `overloaded status ${ov.status}`);
    assert.equal(ov.error.error.type, 'overloaded_error');

    const br = await rejects(() => ask('status=400'));
    assert.ok(br instanceof Anthropic.BadRequestError, `${br.constructor.name}: ${br.message}`);
    assert.equal(br.error.error.type, 'invalid_request_error');
  });
}

test('count_tokens: forwarded to the Anthropic backend, estimated for vllm', { timeout: T(8000) }, async () => {
  const body = {
    system: 'You count tokens.',
    messages: [{ role: 'user', content: 'How many tokens are in this sentence, roughly speaking?' }],
  };
  const direct = await http(`${simFront.url}/v1/messages/count_tokens`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'claude-sim', ...body }),
  });
  assert.equal(direct.status, 200);
  const s0 = await simFront.stats();
  const { data: up, response: r1 } = await client.messages.countTokens({ model: 'frontier-b', ...body }).withResponse();
  assert.equal(r1.headers.get('x-hybridgw-token-count'), 'upstream');
  assert.equal(up.input_tokens, direct.json.input_tokens, 'the upstream count');
  const s1 = await simFront.stats();
  assert.equal(s1.requests.count_tokens - s0.requests.count_tokens, 1, 'one count_tokens upstream');

  const l0 = await simLocal.stats();
  const { data: est, response: r2 } = await client.messages.countTokens({ model: 'local-a', ...body }).withResponse();
  assert.equal(r2.headers.get('x-hybridgw-token-count'), 'estimated');
  assert.ok(Number.isInteger(est.input_tokens) && est.input_tokens > 0, JSON.stringify(est));
  // a sane estimate: within a factor of 3 of the simulator's count
  assert.ok(est.input_tokens >= direct.json.input_tokens / 3 && est.input_tokens <= direct.json.input_tokens * 3,
    `estimate ${est.input_tokens} vs ${direct.json.input_tokens}`);
  const l1 = await simLocal.stats();
  const gen = (st) => st.requests.chat_completions + st.requests.messages + st.requests.count_tokens;
  assert.equal(gen(l1), gen(l0), 'nothing sent to the vllm backend');
  const log = await gw.logFor(r2.headers.get('request-id'));
  assert.equal(log.path, '/v1/messages/count_tokens');
  assert.equal(log.estimated, true);

  // count_tokens errors are in the Anthropic shape too
  const bad = await postMessages(gw, { messages: [] }, { path: '/v1/messages/count_tokens' });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.type, 'error');
  assert.equal(bad.json.error.type, 'invalid_request_error');
});

test('gateway and simulators exit cleanly on SIGTERM', { timeout: T(20000) }, async () => {
  const g = await stopAndCheck(gw.proc);
  const a = await stopAndCheck(simLocal.proc);
  const b = await stopAndCheck(simFront.proc);
  assert.equal(g, '', g);
  assert.equal(a, '', a);
  assert.equal(b, '', b);
});
