// chat.test.mjs - the happy path through the official openai client:
// non-streaming and streaming chat, routing headers, the access log,
// /v1/models.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sim, Gateway, gatewayYaml, stopAndCheck, postChat, chatBody, http, AUTH, T,
} from './lib/harness.mjs';

let sim;
let gw;
let client;

before(async () => {
  sim = await Sim.start();
  gw = await Gateway.start(gatewayYaml({ simUrl: sim.url }));
  client = gw.client();
});

after(async () => {
  // normally already stopped by the last test; this is the safety net
  if (gw) await gw.stop({ signal: 'SIGKILL' });
  if (sim) await sim.stop({ signal: 'SIGKILL' });
});

test('non-streaming chat via the openai client, model auto', { timeout: T(10000) }, async () => {
  const { data, response, request_id } = await client.chat.completions
    .create({ model: 'auto', messages: [{ role: 'user', content: 'hello [sim:output_tokens=5]' }] })
    .withResponse();
  assert.equal(response.status, 200);
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.choices.length, 1);
  assert.equal(data.choices[0].message.role, 'assistant');
  assert.equal(typeof data.choices[0].message.content, 'string');
  assert.ok(data.choices[0].message.content.length > 0);
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.equal(data.usage.completion_tokens, 5);
  assert.ok(data.usage.prompt_tokens > 0);
  assert.equal(data.usage.total_tokens, data.usage.prompt_tokens + data.usage.completion_tokens);
  // routing headers
  assert.equal(response.headers.get('x-hybridgw-route'), 'local');
  assert.equal(response.headers.get('x-hybridgw-backend'), 'local-a');
  assert.ok(response.headers.get('x-hybridgw-reason'), 'x-hybridgw-reason is set');
  assert.match(response.headers.get('content-type'), /application\/json/);
  assert.ok(request_id, 'the SDK sees x-request-id');

  const e = await gw.logFor(request_id);
  assert.equal(e.status, 200);
  assert.equal(e.stream, false);
  assert.equal(e.route, 'local');
  assert.equal(e.backend, 'local-a');
  assert.equal(e.model, 'auto');
  assert.equal(e.key, 'test');
  assert.equal(e.prompt_tokens, data.usage.prompt_tokens);
  assert.equal(e.completion_tokens, 5);
  assert.equal(typeof e.latency_ms, 'number');
  assert.ok(e.latency_ms >= 0);
  assert.equal(e.error, undefined);
});

test('model "local" forces the local tier; "coder" and the backend name pin it', { timeout: T(10000) }, async () => {
  const seen = {};
  for (const model of ['local', 'coder', 'local-a']) {
    const { data, response } = await client.chat.completions
      .create({ model, messages: [{ role: 'user', content: 'hi [sim:output_tokens=2]' }] })
      .withResponse();
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.equal(response.headers.get('x-hybridgw-route'), 'local', model);
    assert.equal(response.headers.get('x-hybridgw-backend'), 'local-a', model);
    seen[model] = response.headers.get('x-hybridgw-reason');
    // the upstream always gets the backend's model name
    assert.equal(data.model, 'sim-model');
  }
  assert.match(seen.coder, /coder/, 'the reason names the pinned model');
  assert.notEqual(seen.local, seen.coder, 'forced tier and pinned model give different reasons');
});

test('x-request-id sent by the client is echoed and logged', { timeout: T(10000) }, async () => {
  const id = 'it-chat-echo-0001';
  const { response, request_id } = await client.chat.completions
    .create(
      { model: 'auto', messages: [{ role: 'user', content: 'ping [sim:output_tokens=1]' }] },
      { headers: { 'x-request-id': id } },
    )
    .withResponse();
  assert.equal(response.headers.get('x-request-id'), id);
  assert.equal(request_id, id);
  const e = await gw.logFor(id);
  assert.equal(e.status, 200);
});

test('gateway-minted request ids are unique', { timeout: T(10000) }, async () => {
  const ids = new Set();
  for (let i = 0; i < 5; i++) {
    const r = await postChat(gw, chatBody('x [sim:output_tokens=1]'));
    assert.equal(r.status, 200);
    const id = r.headers.get('x-request-id');
    assert.ok(id && id.length >= 8, `request id ${id}`);
    ids.add(id);
  }
  assert.equal(ids.size, 5);
});

test('streaming chat: chunks, [DONE], no usage-only chunk unless asked', { timeout: T(10000) }, async () => {
  const { data: stream, response } = await client.chat.completions
    .create({
      model: 'coder',
      stream: true,
      messages: [{ role: 'user', content: 'stream please [sim:output_tokens=6]' }],
    })
    .withResponse();
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(response.headers.get('x-hybridgw-backend'), 'local-a');
  const reqId = response.headers.get('x-request-id');
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 3, `got ${chunks.length} chunks`);
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.ok(c.choices.length > 0, `a chunk with choices: [] reached a client that did not ask for usage: ${JSON.stringify(c)}`);
    assert.ok(!c.usage, 'no usage in chunks without include_usage');
  }
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  const text = chunks.map((c) => c.choices[0].delta.content ?? '').join('');
  assert.ok(text.trim().length > 0);

  // usage still reaches the access log
  const e = await gw.logFor(reqId);
  assert.equal(e.status, 200);
  assert.equal(e.stream, true);
  assert.equal(e.model, 'coder');
  assert.equal(e.completion_tokens, 6, 'completion_tokens logged for a stream without include_usage');
  assert.ok(e.prompt_tokens > 0, 'prompt_tokens logged');
  assert.equal(typeof e.ttft_ms, 'number');
  assert.ok(e.ttft_ms <= e.latency_ms);
});

test('streaming chat with include_usage gets the usage chunk', { timeout: T(10000) }, async () => {
  const stream = await client.chat.completions.create({
    model: 'auto',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'count [sim:output_tokens=4]' }],
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const usage = chunks.filter((c) => c.usage);
  assert.equal(usage.length, 1, 'exactly one chunk with usage');
  assert.deepEqual(usage[0].choices, []);
  assert.equal(usage[0].usage.completion_tokens, 4);
  assert.equal(chunks.at(-1), usage[0], 'the usage chunk is the last one');
});

test('raw SSE: data lines only, ends with [DONE], connection ends cleanly', { timeout: T(10000) }, async () => {
  const r = await postChat(gw, chatBody('raw [sim:output_tokens=3]', { stream: true }));
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('cache-control'), 'no-cache');
  assert.doesNotMatch(r.text, /^event:/m, 'no event: lines on OpenAI streams');
  const lines = r.text.split('\n').filter((l) => l !== '');
  for (const l of lines) assert.match(l, /^data: /);
  const data = lines.map((l) => l.slice(6));
  assert.equal(data.at(-1), '[DONE]');
  for (const d of data.slice(0, -1)) JSON.parse(d);
});

test('chat.completions.stream() helper and finalChatCompletion()', { timeout: T(10000) }, async () => {
  const runner = client.chat.completions.stream({
    model: 'auto',
    messages: [{ role: 'user', content: 'helper [sim:output_tokens=7]' }],
  });
  let deltas = '';
  runner.on('content', (delta) => {
    deltas += delta;
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.role, 'assistant');
  assert.equal(final.choices[0].finish_reason, 'stop');
  assert.equal(final.choices[0].message.content, deltas);
  assert.ok(deltas.length > 0);
});

test('concurrent requests over both workers all succeed and are logged', { timeout: T(15000) }, async () => {
  const N = 8;
  const before = gw.accessLog().length;
  const results = await Promise.all(
    Array.from({ length: N }, (_, i) =>
      client.chat.completions
        .create({
          model: 'auto',
          stream: i % 2 === 0,
          messages: [{ role: 'user', content: `n${i} [sim:output_tokens=3]` }],
        })
        .withResponse()
        .then(async ({ data, response }) => {
          if (i % 2 === 0) {
            let n = 0;
            for await (const _c of data) n++;
            assert.ok(n > 0);
          } else {
            assert.equal(data.choices[0].finish_reason, 'stop');
          }
          return response.headers.get('x-request-id');
        })),
  );
  assert.equal(new Set(results).size, N);
  for (const id of results) {
    const e = await gw.logFor(id);
    assert.equal(e.status, 200);
  }
  assert.ok(gw.accessLog().length >= before + N);
});

test('GET /v1/models lists auto, local, frontier and the configured names', { timeout: T(10000) }, async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    assert.equal(typeof m.created, 'number');
    assert.equal(typeof m.owned_by, 'string');
    ids.push(m.id);
  }
  for (const want of ['auto', 'local', 'frontier', 'coder', 'local-a']) {
    assert.ok(ids.includes(want), `${want} in ${ids}`);
  }
  const one = await client.models.retrieve('coder');
  assert.equal(one.id, 'coder');
  assert.equal(one.object, 'model');
});

test('GET /v1/models needs a key too', { timeout: T(5000) }, async () => {
  const r = await http(`${gw.url}/v1/models`);
  assert.equal(r.status, 401);
  const ok = await http(`${gw.url}/v1/models`, { headers: AUTH });
  assert.equal(ok.status, 200);
});

test('every access-log line is JSON with the common fields', { timeout: T(5000) }, async () => {
  const log = gw.accessLog();
  assert.ok(log.length > 10, `${log.length} lines`);
  for (const e of log) {
    assert.equal(typeof e.request_id, 'string');
    assert.equal(typeof e.status, 'number');
    assert.equal(typeof e.latency_ms, 'number');
  }
  const chats = log.filter((e) => e.path === '/v1/chat/completions');
  assert.ok(chats.length > 10);
  for (const e of chats) {
    for (const f of ['model', 'route', 'backend', 'stream', 'key']) assert.ok(f in e, `${f} in ${JSON.stringify(e)}`);
  }
});

test('gateway and simulator exit cleanly on SIGTERM', { timeout: T(20000) }, async () => {
  const g = await stopAndCheck(gw.proc);
  const s = await stopAndCheck(sim.proc);
  assert.equal(g, '', g);
  assert.equal(s, '', s);
});
