// streaming.test.mjs - streams under stress: events relayed as they arrive,
// upstream stalls, disconnects and garbage mid-stream, and a client that
// goes away.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sim, Gateway, gatewayYaml, stopAndCheck, postChat, chatBody, sseData, waitFor, OpenAI, T,
} from './lib/harness.mjs';

let sim;
let gw;
let client;

before(async () => {
  sim = await Sim.start();
  gw = await Gateway.start(gatewayYaml({
    simUrl: sim.url,
    health: '{ path: /health, interval: 1s, fail_threshold: 1000 }',
  }));
  client = gw.client();
});

after(async () => {
  if (gw) await gw.stop({ signal: 'SIGKILL' });
  if (sim) await sim.stop({ signal: 'SIGKILL' });
});

const msg = (content) => [{ role: 'user', content }];

/** Iterate an SDK stream; returns { chunks, error, ms }. */
async function consume(stream) {
  const t0 = Date.now();
  const chunks = [];
  let error = null;
  try {
    for await (const c of stream) chunks.push(c);
  } catch (e) {
    error = e;
  }
  return { chunks, error, ms: Date.now() - t0 };
}

test('events are relayed as they arrive, not buffered', { timeout: T(10000) }, async () => {
  // 6 tokens at 10 tokens/s: about 0.5 s between the first and the last
  const stream = await client.chat.completions.create({
    model: 'auto', stream: true, messages: msg('pace [sim:output_tokens=6] [sim:tokens_per_sec=10]'),
  });
  const times = [];
  for await (const c of stream) if (c.choices[0]?.delta?.content) times.push(Date.now());
  assert.ok(times.length >= 5, `${times.length} content chunks`);
  const spread = times.at(-1) - times[0];
  assert.ok(spread >= 300, `content chunks arrived within ${spread} ms of each other: the stream was buffered`);
});

test('ttft is measured and logged', { timeout: T(10000) }, async () => {
  const { data: stream, response } = await client.chat.completions.create({
    model: 'auto', stream: true, messages: msg('slow start [sim:ttft_ms=400] [sim:output_tokens=2]'),
  }).withResponse();
  const r = await consume(stream);
  assert.equal(r.error, null);
  const e = await gw.logFor(response.headers.get('x-request-id'));
  assert.equal(e.status, 200);
  assert.ok(e.ttft_ms >= 350, `ttft_ms ${e.ttft_ms}`);
  assert.ok(e.latency_ms >= e.ttft_ms);
});

test('upstream stall mid-stream: APIError while iterating, after stream_idle', { timeout: T(10000) }, async () => {
  const { data: stream, response } = await client.chat.completions.create({
    model: 'auto', stream: true, messages: msg('stall [sim:fault=stall@3] [sim:output_tokens=10]'),
  }).withResponse();
  const r = await consume(stream);
  assert.ok(r.error instanceof OpenAI.APIError, `expected APIError, got ${r.error && r.error.constructor.name}: ${r.error && r.error.message}`);
  assert.ok(r.chunks.length >= 1 && r.chunks.length <= 3, `${r.chunks.length} chunks before the error`);
  assert.ok(r.ms >= 700, `error after ${r.ms} ms, before stream_idle (1s)`);
  assert.ok(r.ms < T(4000), `error after ${r.ms} ms`);
  assert.equal(r.error.code, 'upstream_stalled');
  const e = await gw.logFor(response.headers.get('x-request-id'));
  assert.equal(e.stream, true);
  assert.ok(e.error, 'the log line names the error');
});

test('upstream stall on the wire: an error event, then a clean end of the body', { timeout: T(10000) }, async () => {
  const r = await postChat(gw, chatBody('stall [sim:fault=stall@2] [sim:output_tokens=10]', { stream: true }));
  // r.text resolved: the chunked body was terminated properly (no reset)
  assert.equal(r.status, 200);
  const data = sseData(r.text);
  const errIdx = data.findIndex((d) => d.startsWith('{') && JSON.parse(d).error);
  assert.ok(errIdx >= 0, `an error event in ${r.text}`);
  const err = JSON.parse(data[errIdx]).error;
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in err, `error.${k}`);
  // nothing but (optionally) [DONE] after the error event
  assert.ok(data.slice(errIdx + 1).every((d) => d === '[DONE]'), `after the error: ${data.slice(errIdx + 1)}`);
});

test('upstream disconnect mid-stream: APIError while iterating', { timeout: T(10000) }, async () => {
  const t0 = Date.now();
  const stream = await client.chat.completions.create({
    model: 'auto', stream: true, messages: msg('cut [sim:fault=disconnect@3] [sim:output_tokens=10]'),
  });
  const r = await consume(stream);
  assert.ok(r.error instanceof OpenAI.APIError, `expected APIError, got ${r.error && r.error.constructor.name}: ${r.error && r.error.message}`);
  assert.ok(r.chunks.length >= 1, 'some chunks came first');
  assert.ok(Date.now() - t0 < T(3000), 'no wait for a timeout');
  assert.equal(r.error.code, 'upstream_error');
});

test('upstream disconnect on the wire: error event and a clean end', { timeout: T(10000) }, async () => {
  const r = await postChat(gw, chatBody('cut [sim:fault=disconnect@2] [sim:output_tokens=10]', { stream: true }));
  assert.equal(r.status, 200);
  const data = sseData(r.text);
  assert.ok(data.some((d) => d.startsWith('{') && JSON.parse(d).error), `an error event in ${r.text}`);
});

test('malformed upstream event: the client gets an error, not a hang', { timeout: T(10000) }, async () => {
  const t0 = Date.now();
  const quiet = gw.client({ logLevel: 'off' });
  const stream = await quiet.chat.completions.create({
    model: 'auto', stream: true, messages: msg('junk [sim:fault=malformed@2] [sim:output_tokens=10]'),
  });
  const r = await consume(stream);
  assert.ok(r.error, 'iteration failed');
  assert.ok(Date.now() - t0 < T(3000));
});

test('stream helper: finalChatCompletion() rejects with APIError on a mid-stream failure', { timeout: T(10000) }, async () => {
  const runner = client.chat.completions.stream({
    model: 'auto', messages: msg('helper [sim:fault=disconnect@3] [sim:output_tokens=10]'),
  });
  runner.on('error', () => {}); // the rejection below is what we check
  let err;
  try {
    await runner.finalChatCompletion();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof OpenAI.APIError, `got ${err && err.constructor.name}: ${err && err.message}`);
});

test('client abort mid-stream cancels the upstream request', { timeout: T(10000) }, async () => {
  const before = (await sim.stats()).cancelled;
  const ac = new AbortController();
  const { data: stream, response } = await client.chat.completions.create({
    model: 'auto', stream: true, messages: msg('long [sim:output_tokens=400] [sim:tokens_per_sec=20]'),
  }, { signal: ac.signal }).withResponse();
  const reqId = response.headers.get('x-request-id');
  let n = 0;
  let err = null;
  try {
    for await (const _c of stream) {
      if (++n === 3) ac.abort();
    }
  } catch (e) {
    err = e;
  }
  assert.ok(n >= 3, `${n} chunks`);
  assert.ok(n < 50, 'the stream stopped after the abort');
  assert.ok(err === null || err instanceof OpenAI.APIUserAbortError || err.name === 'AbortError',
    `abort surfaced as ${err && err.constructor.name}`);
  const t0 = Date.now();
  const st = await waitFor(async () => {
    const s = await sim.stats();
    return s.cancelled > before ? s : null;
  }, { timeout: T(1500), what: 'the simulator to see the request cancelled' });
  assert.ok(st.cancelled > before);
  assert.ok(Date.now() - t0 < T(1500));
  const e = await gw.logFor(reqId);
  assert.equal(e.error, 'client_closed');
});

test('client abort while waiting for the first byte cancels upstream too', { timeout: T(10000) }, async () => {
  const before = (await sim.stats()).cancelled;
  const ac = new AbortController();
  const p = client.chat.completions.create({
    model: 'auto', messages: msg('wait [sim:ttft_ms=1500] [sim:output_tokens=3]'),
  }, { signal: ac.signal, headers: { 'x-request-id': 'it-abort-early' } });
  setTimeout(() => ac.abort(), 300);
  await assert.rejects(p, (e) => e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError');
  await waitFor(async () => (await sim.stats()).cancelled > before, {
    timeout: T(1200), what: 'the simulator to see the request cancelled',
  });
  const e = await gw.logFor('it-abort-early');
  assert.equal(e.status, 499);
  assert.equal(e.error, 'client_closed');
});

test('a slow client does not break the stream (backpressure)', { timeout: T(15000) }, async () => {
  // a long answer read slowly: everything arrives, in order, with [DONE]
  const r = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
    body: JSON.stringify(chatBody('big [sim:output_tokens=3000]', { stream: true, max_tokens: 3000 })),
    signal: AbortSignal.timeout(T(12000)),
  });
  assert.equal(r.status, 200);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let text = '';
  let reads = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
    if (++reads % 4 === 0 && reads < 40) await new Promise((res) => setTimeout(res, 25));
  }
  const data = sseData(text);
  assert.equal(data.at(-1), '[DONE]');
  const content = data.slice(0, -1).map((d) => JSON.parse(d)).filter((c) => c.choices[0]?.delta?.content);
  assert.ok(content.length >= 2900, `${content.length} content chunks of 3000`);
});

test('the gateway still serves after all of that', { timeout: T(5000) }, async () => {
  const c = await client.chat.completions.create({ model: 'auto', messages: msg('ok [sim:output_tokens=2]') });
  assert.equal(c.choices[0].finish_reason, 'stop');
  const st = await sim.stats();
  assert.equal(st.active, 0, `the simulator still has ${st.active} active requests`);
});

test('gateway and simulator exit cleanly on SIGTERM', { timeout: T(20000) }, async () => {
  const g = await stopAndCheck(gw.proc);
  const s = await stopAndCheck(sim.proc);
  assert.equal(g, '', g);
  assert.equal(s, '', s);
});
