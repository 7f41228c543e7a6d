// wire.test.mjs - HTTP/1.1 on the wire: keep-alive, pipelining, chunked
// bodies, size caps, and clients that are slow on purpose (slowloris).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  Sim, Gateway, gatewayYaml, stopAndCheck, rawConnect, parseResponses, http as fetchHttp, chatBody, waitFor, T,
} from './lib/harness.mjs';

let sim;
let gw;

before(async () => {
  sim = await Sim.start();
  gw = await Gateway.start(gatewayYaml({
    simUrl: sim.url,
    limits: '{ max_body_bytes: 64KiB, max_header_bytes: 8KiB, header_timeout: 2s, body_timeout: 2s, idle_timeout: 1500ms, shutdown_timeout: 10s }',
  }));
});

after(async () => {
  if (gw) await gw.stop({ signal: 'SIGKILL' });
  if (sim) await sim.stop({ signal: 'SIGKILL' });
});

function chatRequest(body, { id, extraHeaders = '', close = false } = {}) {
  const b = typeof body === 'string' ? body : JSON.stringify(body);
  return 'POST /v1/chat/completions HTTP/1.1\r\n' +
    'Host: 127.0.0.1\r\n' +
    'Authorization: Bearer sk-test\r\n' +
    'Content-Type: application/json\r\n' +
    (id ? `x-request-id: ${id}\r\n` : '') +
    (close ? 'Connection: close\r\n' : '') +
    extraHeaders +
    `Content-Length: ${Buffer.byteLength(b)}\r\n\r\n` + b;
}

/** One request through an agent; resolves with { status, reused, body, localPort }. */
function agentPost(agent, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({
      host: '127.0.0.1', port: gw.port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test', 'content-length': Buffer.byteLength(data) },
      timeout: T(5000),
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, reused: req.reusedSocket, body: text, localPort: req.socket.localPort }));
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(data);
  });
}

test('keep-alive: a second request reuses the socket', { timeout: T(10000) }, async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const a = await agentPost(agent, chatBody('one [sim:output_tokens=2]'));
    const b = await agentPost(agent, chatBody('two [sim:output_tokens=2]', { stream: true }));
    const c = await agentPost(agent, chatBody('three [sim:output_tokens=2]'));
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(c.status, 200);
    assert.equal(a.reused, false);
    assert.equal(b.reused, true, 'second request on the same socket');
    assert.equal(c.reused, true, 'a request after a stream reuses the socket too');
    assert.equal(a.localPort, c.localPort);
    assert.match(b.body, /data: \[DONE\]/);
  } finally {
    agent.destroy();
  }
});

test('pipelining: two requests in one write, two answers in order', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send(
      chatRequest(chatBody('first [sim:output_tokens=3] [sim:ttft_ms=150]'), { id: 'pipe-1' }) +
      chatRequest(chatBody('second [sim:output_tokens=2]'), { id: 'pipe-2' }) +
      'GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\nx-request-id: pipe-3\r\n\r\n',
    );
    const rs = await conn.waitResponses(3);
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
    assert.equal(rs[0].headers['x-request-id'], 'pipe-1');
    assert.equal(rs[1].headers['x-request-id'], 'pipe-2');
    assert.equal(JSON.parse(rs[0].body).object, 'chat.completion');
    assert.equal(JSON.parse(rs[1].body).object, 'chat.completion');
    assert.equal(JSON.parse(rs[2].body).object, 'list');
    assert.equal(conn.closed, false, 'the connection stays open');
  } finally {
    conn.close();
  }
});

test('Connection: close is honoured', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send(chatRequest(chatBody('bye [sim:output_tokens=1]'), { close: true }));
    const [r] = await conn.waitResponses(1);
    assert.equal(r.status, 200);
    assert.match(r.headers.connection || '', /close/i);
    await conn.waitClose(T(2000));
  } finally {
    conn.close();
  }
});

test('HTTP/1.0 without keep-alive: answer, then close', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('GET /healthz HTTP/1.0\r\n\r\n');
    await conn.waitClose(T(2000));
    const { responses } = parseResponses(conn.buffer, true);
    assert.equal(responses.length, 1);
    assert.equal(responses[0].status, 200);
  } finally {
    conn.close();
  }
});

test('chunked request body is accepted', { timeout: T(10000) }, async () => {
  const body = JSON.stringify(chatBody('chunked [sim:output_tokens=2]'));
  const half = Math.floor(body.length / 2);
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n' +
      'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n' +
      `${half.toString(16)}\r\n${body.slice(0, half)}\r\n`);
    await new Promise((r) => setTimeout(r, 50));
    await conn.send(`${(body.length - half).toString(16)}\r\n${body.slice(half)}\r\n0\r\n\r\n`);
    const [r] = await conn.waitResponses(1);
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).object, 'chat.completion');
  } finally {
    conn.close();
  }
});

test('413 when Content-Length is over max_body_bytes, without reading the body', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n' +
      'Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n');
    const [r] = await conn.waitResponses(1, T(2000));
    assert.equal(r.status, 413);
    assert.equal(JSON.parse(r.body).error.type, 'request_too_large');
  } finally {
    conn.close();
  }
});

test('413 for a body over max_body_bytes that is sent (fetch)', { timeout: T(10000) }, async () => {
  const big = 'x'.repeat(70 * 1024);
  let r;
  try {
    r = await fetchHttp(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
      body: JSON.stringify(chatBody(big)),
    });
  } catch (e) {
    assert.fail(`the client got no 413 answer but ${e.cause ? e.cause.code || e.cause.message : e.message}`);
  }
  assert.equal(r.status, 413);
});

test('413 for a chunked body that grows over max_body_bytes', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n' +
      'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
    const piece = 'y'.repeat(16 * 1024);
    for (let i = 0; i < 6 && !conn.closed; i++) {
      try {
        await conn.send(`${piece.length.toString(16)}\r\n${piece}\r\n`);
      } catch {
        break; // the server may close once it has answered
      }
    }
    const [r] = await conn.waitResponses(1, T(3000));
    assert.equal(r.status, 413);
  } finally {
    conn.close();
  }
});

test('431 for request headers over max_header_bytes', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'z'.repeat(10 * 1024)}\r\n\r\n`).catch(() => {});
    const [r] = await conn.waitResponses(1, T(3000));
    assert.equal(r.status, 431);
  } finally {
    conn.close();
  }
});

test('malformed request line: 400 and close', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('THIS IS NOT HTTP\r\n\r\n');
    const [r] = await conn.waitResponses(1, T(3000));
    assert.equal(r.status, 400);
    await conn.waitClose(T(2000));
  } finally {
    conn.close();
  }
});

test('Expect: 100-continue gets a 100 before the body is sent', { timeout: T(10000) }, async () => {
  const body = JSON.stringify(chatBody('expect [sim:output_tokens=1]'));
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n' +
      `Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`);
    const [cont] = await conn.waitResponses(1, T(1000));
    assert.equal(cont.status, 100);
    await conn.send(body);
    const rs = await conn.waitResponses(2);
    assert.equal(rs[1].status, 200);
  } finally {
    conn.close();
  }
});

test('an error answered before the body was read leaves the connection usable', { timeout: T(10000) }, async () => {
  const body = JSON.stringify(chatBody('{"GET /v1/models HTTP/1.1": 1}'));
  const conn = await rawConnect(gw.port);
  try {
    // 401 at the head; the body must be skipped, not parsed as a request
    await conn.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n' +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    await conn.send(`${body}GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: after-401\r\n\r\n`);
    const rs = await conn.waitResponses(2).catch((e) => {
      const { responses } = parseResponses(conn.buffer, true);
      // closing after the error is acceptable only when announced
      if (responses.length === 1 && /close/i.test(responses[0].headers.connection || '')) return responses;
      throw e;
    });
    assert.equal(rs[0].status, 401);
    if (rs.length > 1) assert.equal(rs[1].status, 200);
  } finally {
    conn.close();
  }
});

test('request smuggling guards: two Content-Lengths, or Content-Length with chunked, get 400 and a close', { timeout: T(10000) }, async () => {
  for (const head of ['Content-Length: 5\r\nContent-Length: 6\r\n', 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n']) {
    const conn = await rawConnect(gw.port);
    try {
      await conn.send(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n${head}\r\n0\r\n\r\n`);
      const [r] = await conn.waitResponses(1);
      assert.equal(r.status, 400, head);
      await conn.waitClose(T(2000));
    } finally {
      conn.close();
    }
  }
});

test('HEAD /healthz: headers only, no body (the next response on the connection stays parseable)', {
  timeout: T(10000),
}, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => (conn.buffer.toString('latin1').match(/HTTP\/1\.1 \d{3}/g) || []).length >= 2,
      { timeout: T(2000), what: 'two responses' });
    const text = conn.buffer.toString('latin1');
    const headEnd = text.indexOf('\r\n\r\n');
    assert.ok(headEnd > 0, text);
    assert.match(text.slice(0, headEnd), /^HTTP\/1\.1 200/);
    const after = text.slice(headEnd + 4);
    assert.ok(after.startsWith('HTTP/1.1 200'),
      `after the HEAD response's headers came ${JSON.stringify(after.slice(0, 40))} instead of the next response`);
  } finally {
    conn.close();
  }
});

test('slowloris: a header sent slowly gets 408 and a close after header_timeout', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  const t0 = Date.now();
  try {
    await conn.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n');
    // one more header line every 300 ms: never finishing, always active
    for (let i = 0; i < 20 && !conn.closed; i++) {
      await new Promise((r) => setTimeout(r, 300));
      if (conn.closed || conn.buffer.length) break;
      await conn.send(`X-Drip-${i}: a\r\n`).catch(() => {});
    }
    await conn.waitClose(T(4000));
    const took = Date.now() - t0;
    const { responses } = parseResponses(conn.buffer, true);
    assert.equal(responses.length, 1, `one answer: ${conn.buffer.toString()}`);
    assert.equal(responses[0].status, 408);
    assert.ok(took >= 1800, `closed after ${took} ms, before header_timeout (2s)`);
    assert.ok(took < T(3500), `closed after ${took} ms; header_timeout is 2s`);
  } finally {
    conn.close();
  }
});

test('body sent too slowly: 408 after body_timeout', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  const t0 = Date.now();
  try {
    await conn.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n' +
      'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":');
    const [r] = await conn.waitResponses(1, T(4000));
    const took = Date.now() - t0;
    assert.equal(r.status, 408);
    assert.ok(took >= 1800 && took < T(3500), `408 after ${took} ms; body_timeout is 2s`);
  } finally {
    conn.close();
  }
});

test('an idle keep-alive connection is closed after idle_timeout', { timeout: T(10000) }, async () => {
  const conn = await rawConnect(gw.port);
  try {
    await conn.send('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await conn.waitResponses(1);
    const t0 = Date.now();
    await conn.waitClose(T(4000));
    const took = Date.now() - t0;
    assert.ok(took >= 1200 && took < T(3000), `closed ${took} ms after the answer; idle_timeout is 1.5s`);
  } finally {
    conn.close();
  }
});

test('gateway and simulator exit cleanly on SIGTERM', { timeout: T(20000) }, async () => {
  const g = await stopAndCheck(gw.proc);
  const s = await stopAndCheck(sim.proc);
  assert.equal(g, '', g);
  assert.equal(s, '', s);
});
