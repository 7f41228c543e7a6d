// frontier.test.mjs - the OpenAI dialect (/v1/chat/completions, openai
// client) in front of an Anthropic backend: request, response, stream,
// tool calls, usage and errors all translated.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sim, Gateway, gatewayYamlMulti, stopAndCheck, postChat, http, sseData, sseEvents, OpenAI, T,
} from './lib/harness.mjs';

let simLocal;
let simFront; // the Anthropic stand-in
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
      // the same upstream with a small default max_tokens
      {
        name: 'frontier-short', tier: 'frontier', provider: 'anthropic', url: simFront.url, model: 'claude-sim',
        extra: '    default_max_tokens: 6',
      },
    ],
    models: { smart: 'frontier-b' },
  }), { name: 'gateway-frontier' });
  client = gw.client();
});

after(async () => {
  for (const p of [gw?.proc, simLocal?.proc, simFront?.proc]) if (p) await p.stop({ signal: 'SIGKILL' });
});

async function rejects(fn) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  assert.fail('expected an error');
}

const MODEL = 'frontier-b'; // pinned: errors are not hidden by a fallback
const user = (content) => [{ role: 'user', content }];
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

async function simCounts() {
  const [a, b] = await Promise.all([simLocal.stats(), simFront.stats()]);
  return { local: a.requests, front: b.requests };
}

test('plain completion, translated to and from the Anthropic backend', { timeout: T(8000) }, async () => {
  const c0 = await simCounts();
  const { data: c, response } = await client.chat.completions
    .create({ model: MODEL, messages: [{ role: 'system', content: 'Be brief.' }, ...user('Hello [sim:output_tokens=4]')] })
    .withResponse();
  assert.equal(c.object, 'chat.completion');
  assert.ok(c.id, 'id');
  assert.ok(Number.isInteger(c.created), 'created');
  assert.equal(c.choices.length, 1);
  const ch = c.choices[0];
  assert.equal(ch.index, 0);
  assert.equal(ch.message.role, 'assistant');
  assert.equal(typeof ch.message.content, 'string');
  assert.equal(ch.message.content.trim().split(/\s+/).length, 4, ch.message.content);
  assert.equal(ch.finish_reason, 'stop');
  assert.equal(c.usage.completion_tokens, 4);
  assert.ok(c.usage.prompt_tokens > 0);
  assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
  assert.equal(response.headers.get('x-hybridgw-backend'), 'frontier-b');
  const c1 = await simCounts();
  assert.equal(c1.front.messages - c0.front.messages, 1, 'sent to /v1/messages upstream');
  assert.equal(c1.front.chat_completions, c0.front.chat_completions, 'not to chat completions');
  assert.equal(c1.local.chat_completions, c0.local.chat_completions, 'local untouched');
  const log = await gw.logFor(response.headers.get('x-request-id'));
  assert.equal(log.status, 200);
  assert.equal(log.dialect, 'openai');
  assert.equal(log.provider, 'anthropic');
  assert.equal(log.translated, true);
  assert.equal(log.upstream_model, 'claude-sim');
  assert.equal(log.completion_tokens, 4);

  // the tier name and a models: alias reach it too
  for (const model of ['frontier', 'smart']) {
    const { response: r } = await client.chat.completions.create({ model, messages: user('hi [sim:output_tokens=1]') }).withResponse();
    assert.equal(r.headers.get('x-hybridgw-backend'), 'frontier-b', model);
  }
});

test('streamed completion: OpenAI chunks, no event: lines, [DONE] at the end', { timeout: T(8000) }, async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, stream: true, messages: user('Stream [sim:output_tokens=5]'),
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, 'one id for the whole stream');
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.choices.length, 1, 'no usage-only chunk unless asked');
    assert.ok(!c.usage, 'no usage unless asked');
  }
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const fins = chunks.map((c) => c.choices[0].finish_reason).filter((f) => f);
  assert.deepEqual(fins, ['stop']);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  const text = chunks.map((c) => c.choices[0].delta.content || '').join('');
  assert.equal(text.trim().split(/\s+/).length, 5, text);

  const r = await postChat(gw, { model: MODEL, stream: true, messages: user('wire [sim:output_tokens=2]') });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  assert.ok(!/^event:/m.test(r.text), 'no event: lines on an OpenAI stream');
  const data = sseData(r.text);
  assert.equal(data.at(-1), '[DONE]');
  assert.equal(data.filter((d) => d === '[DONE]').length, 1);
  for (const d of data.slice(0, -1)) JSON.parse(d);
});

test('chat.completions.stream() + finalChatCompletion()', { timeout: T(8000) }, async () => {
  const s = client.chat.completions.stream({ model: MODEL, messages: user('helper [sim:output_tokens=6]') });
  let seen = '';
  s.on('content', (d) => {
    seen += d;
  });
  const fc = await s.finalChatCompletion();
  assert.equal(fc.choices[0].message.role, 'assistant');
  assert.equal(fc.choices[0].message.content, seen);
  assert.equal(fc.choices[0].message.content.trim().split(/\s+/).length, 6);
  assert.equal(fc.choices[0].finish_reason, 'stop');
});

test('tool use round trip: tool_calls fragments, then a role:"tool" result, then the answer', { timeout: T(10000) }, async () => {
  const q = user('What is the weather in Paris? sim:tool_call');

  // on the wire: the first fragment of the call has index, id, type, name
  const r = await postChat(gw, { model: MODEL, stream: true, tools: [WEATHER], messages: q });
  assert.equal(r.status, 200, r.text);
  const chunks = sseData(r.text).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
  const frags = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls || []);
  assert.ok(frags.length >= 2, `fragments: ${JSON.stringify(frags)}`);
  assert.equal(frags[0].index, 0);
  assert.ok(frags[0].id, 'id on the first fragment');
  assert.equal(frags[0].type, 'function');
  assert.equal(frags[0].function.name, 'get_weather');
  assert.equal(typeof frags[0].function.arguments, 'string');
  for (const f of frags.slice(1)) {
    assert.equal(f.index, 0);
    assert.ok(!('id' in f) && !('type' in f) && !(f.function && 'name' in f.function),
      `later fragments carry only index and arguments: ${JSON.stringify(f)}`);
  }
  const args = JSON.parse(frags.map((f) => f.function.arguments || '').join(''));
  assert.equal(typeof args.city, 'string');
  assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason).at(-1).choices[0].finish_reason, 'tool_calls');

  // the stream helper assembles the call (it throws on a missing type/name)
  const fc = await client.chat.completions.stream({ model: MODEL, tools: [WEATHER], messages: q }).finalChatCompletion();
  const msg = fc.choices[0].message;
  assert.equal(fc.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 1);
  const call = msg.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.equal(typeof JSON.parse(call.function.arguments).city, 'string');

  // non-streamed: same shape, content null
  const nc = await client.chat.completions.create({ model: MODEL, tools: [WEATHER], messages: q });
  assert.equal(nc.choices[0].finish_reason, 'tool_calls');
  assert.equal(nc.choices[0].message.content, null);
  assert.equal(nc.choices[0].message.tool_calls[0].function.name, 'get_weather');

  // the result goes back as role:"tool"; the model answers
  const answer = await client.chat.completions.create({
    model: MODEL,
    tools: [WEATHER],
    messages: [
      ...q,
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: 'Sunny, 21 C' },
    ],
  });
  assert.equal(answer.choices[0].finish_reason, 'stop');
  assert.ok(!answer.choices[0].message.tool_calls?.length, 'no new tool call');
  assert.ok(answer.choices[0].message.content.length > 0, 'an answer');
  assert.ok(answer.usage.prompt_tokens > nc.usage.prompt_tokens, 'the tool result was sent upstream');
});

test('usage: include_usage adds one usage-only chunk; prompt_tokens includes cached', { timeout: T(8000) }, async () => {
  const messages = [{ role: 'system', content: 'Cached preamble. sim:cache' }, ...user('hi [sim:output_tokens=3]')];
  // what the Anthropic upstream itself reports for this prompt
  const direct = await http(`${simFront.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'k', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-sim', max_tokens: 64, system: 'Cached preamble. sim:cache', messages: user('hi [sim:output_tokens=3]') }),
  });
  assert.equal(direct.status, 200);
  const du = direct.json.usage;
  assert.ok(du.cache_read_input_tokens > 0, 'the simulator reports cache reads');

  const stream = await client.chat.completions.create({
    model: MODEL, stream: true, stream_options: { include_usage: true }, messages,
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const usageChunks = chunks.filter((c) => c.usage);
  assert.equal(usageChunks.length, 1, 'one chunk with usage');
  const last = chunks.at(-1);
  assert.equal(last, usageChunks[0], 'the usage chunk is last');
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 3);
  assert.equal(last.usage.prompt_tokens, du.input_tokens + du.cache_read_input_tokens + (du.cache_creation_input_tokens || 0),
    'prompt_tokens = input + cache reads + cache writes');
  assert.equal(last.usage.prompt_tokens_details?.cached_tokens, du.cache_read_input_tokens);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + 3);

  const nc = await client.chat.completions.create({ model: MODEL, messages });
  assert.equal(nc.usage.prompt_tokens, last.usage.prompt_tokens, 'the same numbers without streaming');
  assert.equal(nc.usage.prompt_tokens_details?.cached_tokens, du.cache_read_input_tokens);

  // without include_usage: no usage anywhere, no empty-choices chunk
  const r = await postChat(gw, { model: MODEL, stream: true, messages });
  const data = sseData(r.text).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
  assert.ok(data.length > 0);
  for (const d of data) {
    assert.ok(!d.usage, `no usage: ${JSON.stringify(d)}`);
    assert.equal(d.choices.length, 1);
  }
  const log = await gw.logFor(r.headers.get('x-request-id'));
  assert.equal(log.prompt_tokens, last.usage.prompt_tokens, 'the gateway still counts the usage');
  assert.equal(log.cached_tokens, du.cache_read_input_tokens);
});

test('max_tokens cut-off: finish_reason length (whole and streamed), default_max_tokens injected', { timeout: T(8000) }, async () => {
  const c = await client.chat.completions.create({ model: MODEL, max_tokens: 3, messages: user('long answer please') });
  assert.equal(c.choices[0].finish_reason, 'length');
  assert.equal(c.usage.completion_tokens, 3);
  const c2 = await client.chat.completions.create({ model: MODEL, max_completion_tokens: 2, messages: user('long answer please') });
  assert.equal(c2.choices[0].finish_reason, 'length');
  assert.equal(c2.usage.completion_tokens, 2);
  const s = client.chat.completions.stream({ model: MODEL, max_tokens: 3, messages: user('long answer please') });
  const fc = await s.finalChatCompletion();
  assert.equal(fc.choices[0].finish_reason, 'length');
  // Anthropic needs max_tokens: the backend's default_max_tokens (6) is sent
  const d = await client.chat.completions.create({ model: 'frontier-short', messages: user('long answer please') });
  assert.equal(d.choices[0].finish_reason, 'length');
  assert.equal(d.usage.completion_tokens, 6);
  const big = await client.chat.completions.create({ model: MODEL, messages: user('long answer please') });
  assert.equal(big.choices[0].finish_reason, 'stop', 'default 4096 does not cut the 16-token answer');
});

test('errors: 529 overloaded -> 503 InternalServerError', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.chat.completions.create({ model: MODEL, messages: user('x [sim:fault=status=529]') }));
  assert.ok(e instanceof OpenAI.InternalServerError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 503);
  assert.match(e.message, /overloaded/i);
  assert.ok(e.error && typeof e.error.message === 'string', 'OpenAI error shape');
  const r = await postChat(gw, { model: MODEL, messages: user('x [sim:fault=status=529]') });
  assert.equal(r.status, 503);
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in r.json.error, `error.${k}`);
});

test('errors: 429 -> RateLimitError with retry-after', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.chat.completions.create({ model: MODEL, messages: user('x [sim:fault=status=429,retry_after=9]') }));
  assert.ok(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 429);
  assert.equal(e.headers.get('retry-after'), '9');
  assert.equal(e.code, 'rate_limit_exceeded');
});

test('errors: other upstream statuses keep their class (500 -> 5xx, 400 -> BadRequestError)', { timeout: T(5000) }, async () => {
  const e5 = await rejects(() => client.chat.completions.create({ model: MODEL, messages: user('x [sim:fault=status=500]') }));
  assert.ok(e5 instanceof OpenAI.InternalServerError, `${e5.constructor.name}: ${e5.message}`);
  assert.ok(e5.status >= 500);
  const e4 = await rejects(() => client.chat.completions.create({ model: MODEL, messages: user('x [sim:fault=status=400]') }));
  assert.ok(e4 instanceof OpenAI.BadRequestError, `${e4.constructor.name}: ${e4.message}`);
  assert.equal(e4.status, 400);
});

test('errors: a mid-stream Anthropic error event becomes an OpenAI error chunk', { timeout: T(5000) }, async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, stream: true, messages: user('x [sim:output_tokens=8] [sim:fault=error@3]'),
  });
  const got = [];
  const e = await rejects(async () => {
    for await (const c of stream) got.push(c);
  });
  assert.ok(e instanceof OpenAI.APIError, `${e.constructor.name}: ${e.message}`);
  assert.ok(got.length >= 1, 'the stream had begun');
  const r = await postChat(gw, { model: MODEL, stream: true, messages: user('x [sim:output_tokens=8] [sim:fault=error@3]') });
  assert.ok(!sseEvents(r.text).some((ev) => ev.event), 'still no event: lines');
  const last = JSON.parse(sseData(r.text).filter((d) => d !== '[DONE]').at(-1));
  assert.ok(last.error && last.error.message, `error chunk last: ${JSON.stringify(last)}`);
});

test('gateway and simulators exit cleanly on SIGTERM', { timeout: T(20000) }, async () => {
  const g = await stopAndCheck(gw.proc);
  const a = await stopAndCheck(simLocal.proc);
  const b = await stopAndCheck(simFront.proc);
  assert.equal(g, '', g);
  assert.equal(a, '', a);
  assert.equal(b, '', b);
});
