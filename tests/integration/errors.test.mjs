// errors.test.mjs - every error a client can meet before a stream starts,
// checked through the openai client's typed errors and on the wire.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sim, Gateway, gatewayYaml, stopAndCheck, postChat, chatBody, http, OpenAI, T,
} from './lib/harness.mjs';

let sim;
let gw;
let client;

before(async () => {
  sim = await Sim.start();
  // a high fail_threshold: the injected upstream failures here must not
  // eject the only backend (lifecycle.test.mjs tests ejection)
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

/** Run fn, which must reject; return the error. */
async function rejects(fn) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  assert.fail('expected an error');
}

function assertErrorShape(body) {
  assert.ok(body && typeof body.error === 'object', `error object in ${JSON.stringify(body)}`);
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in body.error, `error.${k} present`);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
}

const hi = (extra = '') => [{ role: 'user', content: `hi ${extra}` }];

test('unknown model: 404 NotFoundError, code model_not_found, param model', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.chat.completions.create({ model: 'no-such-model', messages: hi() }));
  assert.ok(e instanceof OpenAI.NotFoundError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 404);
  assert.equal(e.code, 'model_not_found');
  assert.equal(e.param, 'model');
  assert.ok(e.requestID, 'x-request-id on the error response');
  const log = await gw.logFor(e.requestID);
  assert.equal(log.status, 404);
  assert.equal(log.error, 'model_not_found');
  assert.equal(log.model, 'no-such-model');
});

test('wrong key: 401 AuthenticationError, code invalid_api_key', { timeout: T(5000) }, async () => {
  const bad = gw.client({ apiKey: 'sk-wrong-key' });
  const e = await rejects(() => bad.chat.completions.create({ model: 'auto', messages: hi() }));
  assert.ok(e instanceof OpenAI.AuthenticationError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 401);
  assert.equal(e.code, 'invalid_api_key');
});

test('missing key: 401 invalid_api_key in the OpenAI error shape', { timeout: T(5000) }, async () => {
  const r = await http(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(chatBody('hi')),
  });
  assert.equal(r.status, 401);
  assert.match(r.headers.get('content-type'), /application\/json/);
  assertErrorShape(r.json);
  assert.equal(r.json.error.code, 'invalid_api_key');
});

test('x-api-key works as well as Authorization: Bearer', { timeout: T(5000) }, async () => {
  const ok = await http(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'sk-test' },
    body: JSON.stringify(chatBody('hi [sim:output_tokens=1]')),
  });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.object, 'chat.completion');
  const bad = await http(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'sk-nope' },
    body: JSON.stringify(chatBody('hi')),
  });
  assert.equal(bad.status, 401);
  assert.equal(bad.json.error.code, 'invalid_api_key');
});

test('error responses on the chat route carry x-request-id (401 included)', {
  timeout: T(5000),
}, async () => {
  const r = await http(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': 'it-err-401' },
    body: JSON.stringify(chatBody('hi')),
  });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('x-request-id'), 'it-err-401',
    'a 401 answer has no x-request-id: the SDK error has no requestID and the log line cannot be found');
});

test('invalid JSON: 400 invalid_json', { timeout: T(5000) }, async () => {
  const r = await postChat(gw, '{"model": "auto", "messages": [');
  assert.equal(r.status, 400);
  assertErrorShape(r.json);
  assert.equal(r.json.error.code, 'invalid_json');
  assert.equal(r.json.error.type, 'invalid_request_error');
});

test('missing messages: 400 BadRequestError, param messages', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.chat.completions.create({ model: 'auto' }));
  assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 400);
  assert.equal(e.param, 'messages');
  const empty = await rejects(() => client.chat.completions.create({ model: 'auto', messages: [] }));
  assert.ok(empty instanceof OpenAI.BadRequestError);
  assert.equal(empty.param, 'messages');
  const badRole = await rejects(() =>
    client.chat.completions.create({ model: 'auto', messages: [{ role: 'wizard', content: 'x' }] }));
  assert.ok(badRole instanceof OpenAI.BadRequestError);
  assert.equal(badRole.param, 'messages');
});

test('missing model: 400 param model', { timeout: T(5000) }, async () => {
  const r = await postChat(gw, { messages: hi() });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, 'model');
});

test('stream_options with stream false: 400 param stream_options', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.chat.completions.create({
    model: 'auto', messages: hi(), stream: false, stream_options: { include_usage: true },
  }));
  assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.param, 'stream_options');
});

test('upstream 500 becomes 502 upstream_error (InternalServerError)', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.chat.completions.create({
    model: 'auto', messages: hi('[sim:fault=status=500]'),
  }));
  assert.ok(e instanceof OpenAI.InternalServerError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 502);
  assert.equal(e.code, 'upstream_error');
  assert.equal(e.headers.get('x-hybridgw-backend'), 'local-a');
  assert.equal(e.headers.get('x-should-retry'), 'false');
  const log = await gw.logFor(e.requestID);
  assert.equal(log.status, 502);
  assert.equal(log.upstream_status, 500);
  assert.ok(log.error, 'the log line names the error');
});

test('upstream 500 in a stream request (before the first byte) is a 502 too', { timeout: T(5000) }, async () => {
  const e = await rejects(async () => {
    const s = await client.chat.completions.create({
      model: 'auto', stream: true, messages: hi('[sim:fault=status=500]'),
    });
    for await (const _c of s) { /* drain */ }
  });
  assert.ok(e instanceof OpenAI.InternalServerError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 502);
});

test('upstream 429 passes through with retry-after (RateLimitError)', { timeout: T(5000) }, async () => {
  const e = await rejects(() => client.chat.completions.create({
    model: 'auto', messages: hi('[sim:fault=status=429,retry_after=2]'),
  }));
  assert.ok(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 429);
  assert.equal(e.headers.get('retry-after'), '2');
  assertErrorShape({ error: e.error });
  const log = await gw.logFor(e.requestID);
  assert.equal(log.status, 429);
});

test('upstream 4xx keeps its status and the error shape', { timeout: T(5000) }, async () => {
  const r = await postChat(gw, chatBody('bad [sim:fault=status=400]'));
  assert.equal(r.status, 400, r.text);
  assertErrorShape(r.json);
  assert.equal(typeof r.json.error.code === 'string' || r.json.error.code === null, true,
    `code is a string or null (vLLM's integer code must be mapped): ${JSON.stringify(r.json.error.code)}`);
});

test('no upstream answer within first_byte: 504 upstream_timeout', { timeout: T(10000) }, async () => {
  const t0 = Date.now();
  const e = await rejects(() => client.chat.completions.create({
    model: 'auto', messages: hi('[sim:fault=stall@0]'),
  }));
  const took = Date.now() - t0;
  assert.ok(e instanceof OpenAI.InternalServerError, `${e.constructor.name}: ${e.message}`);
  assert.equal(e.status, 504);
  assert.equal(e.code, 'upstream_timeout');
  assert.ok(took >= 1800, `answered after ${took} ms, before first_byte (2s)`);
  assert.ok(took < T(5000), `answered after ${took} ms`);
  const log = await gw.logFor(e.requestID);
  assert.equal(log.status, 504);
});

test('unknown path: 404 in the error shape', { timeout: T(5000) }, async () => {
  const r = await http(`${gw.url}/v1/nothing-here`, { headers: { authorization: 'Bearer sk-test' } });
  assert.equal(r.status, 404);
  assertErrorShape(r.json);
  const r2 = await http(`${gw.url}/`, { method: 'POST', body: '{}' });
  assert.equal(r2.status, 404);
});

test('GET /v1/chat/completions: 405 with Allow: POST', { timeout: T(5000) }, async () => {
  const r = await http(`${gw.url}/v1/chat/completions`, { headers: { authorization: 'Bearer sk-test' } });
  assert.equal(r.status, 405);
  assert.equal(r.headers.get('allow'), 'POST');
  assertErrorShape(r.json);
});

test('the gateway still serves after all of that', { timeout: T(5000) }, async () => {
  const c = await client.chat.completions.create({ model: 'auto', messages: hi('[sim:output_tokens=2]') });
  assert.equal(c.choices[0].finish_reason, 'stop');
});

test('gateway and simulator exit cleanly on SIGTERM', { timeout: T(20000) }, async () => {
  const g = await stopAndCheck(gw.proc);
  const s = await stopAndCheck(sim.proc);
  assert.equal(g, '', g);
  assert.equal(s, '', s);
});
