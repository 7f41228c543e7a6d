// tracing.test.mjs - OpenTelemetry traces end to end: the gateway exports
// one SERVER span per request and one CLIENT span per upstream attempt to an
// OTLP/HTTP JSON receiver, keeps the client's trace (traceparent), and sends
// the trace context upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import nodeHttp from 'node:http';

import {
  T, Sim, Gateway, gatewayYaml, postChat, chatBody, stopAndCheck, waitFor, AUTH, http,
} from './lib/harness.mjs';
import { OtlpReceiver } from './lib/otlp_receiver.mjs';

let rx, sim, gw, upstream, seen = [];

// A minimal OpenAI-compatible upstream that records the trace headers it
// receives (the simulator does not expose request headers).
function startRecordingUpstream() {
  return new Promise((resolve) => {
    const srv = nodeHttp.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        if (req.url === '/health') { res.writeHead(200); res.end(); return; }
        seen.push({ traceparent: req.headers.traceparent, tracestate: req.headers.tracestate });
        const out = JSON.stringify({
          id: 'chatcmpl-rec', object: 'chat.completion', created: 1, model: 'rec-model',
          choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop', logprobs: null }],
          usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 },
        });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
        res.end(out);
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

before(async () => {
  rx = await OtlpReceiver.start();
  sim = await Sim.start({ name: 'sim-trace' });
  upstream = await startRecordingUpstream();
  const recUrl = `http://127.0.0.1:${upstream.address().port}`;
  const base = gatewayYaml({ simUrl: sim.url, admin: true, models: { coder: 'local-a', rec: 'rec-b' } });
  const rec = `  rec-b: { tier: local, provider: vllm, url: "${recUrl}", model: rec-model, ` +
    'health: { interval: 0s }, price: { per_mtok: { input: 1, output: 2 } } }\n';
  const yaml = base.replace('\nmodels:\n', `\n${rec}models:\n`) +
    `telemetry:\n  otlp: { endpoint: "${rx.url}", headers: { x-test-auth: "secret-token" }, ` +
    'interval: 100ms, batch: 8 }\n  service_name: hybridgw-it\n  environment: test\n';
  gw = await Gateway.start(yaml,
  { name: 'gateway-trace' });
});

after(async () => {
  if (gw) assert.equal(await stopAndCheck(gw.proc), '');
  if (sim) assert.equal(await stopAndCheck(sim.proc), '');
  if (upstream) upstream.close();
  if (rx) await rx.stop();
});

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

test('a request with traceparent: a SERVER span in the client trace, a CLIENT span per attempt, context sent upstream', { timeout: T(15000) }, async () => {
  const r = await postChat(gw, chatBody('hello trace', { model: 'rec' }), {
    headers: { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'vendor=x' },
  });
  assert.equal(r.status, 200, r.text);
  const id = r.headers.get('x-request-id');
  await waitFor(() => rx.spans().some((s) => s.attrs['hybridgw.request_id'] === id), {
    timeout: T(5000), what: 'the request span',
  });
  const spans = rx.spans().filter((s) => s.traceId === TRACE);
  const root = spans.find((s) => s.attrs['hybridgw.request_id'] === id);
  // the root's parent is the client's span, which the receiver never sees
  for (const s of spans) rx.validate(s === root ? { ...s, parentSpanId: '' } : s);
  assert.equal(root.kind, 2);
  assert.equal(root.parentSpanId, PARENT);
  assert.equal(root.name, 'chat rec');
  assert.equal(root.attrs['gen_ai.operation.name'], 'chat');
  assert.equal(root.attrs['gen_ai.provider.name'], 'vllm');
  assert.equal(root.attrs['gen_ai.request.model'], 'rec');
  assert.equal(root.attrs['gen_ai.response.model'], 'rec-model');
  assert.equal(Number(root.attrs['gen_ai.usage.input_tokens']), 7);
  assert.equal(Number(root.attrs['gen_ai.usage.output_tokens']), 3);
  assert.equal(root.attrs['hybridgw.tier'], 'local');
  assert.equal(root.attrs['hybridgw.backend'], 'rec-b');
  assert.equal(root.attrs['langfuse.observation.type'], 'generation');
  assert.deepEqual(JSON.parse(root.attrs['langfuse.observation.usage_details']),
    { input: 7, input_cached_tokens: 0, input_cache_creation: 0, output: 3 });
  // per_mtok input 1, output 2: 7*1 + 3*2 = 13 per million
  assert.ok(Math.abs(root.attrs['hybridgw.cost_usd'] - 13e-6) < 1e-12);
  assert.equal(root.resource['service.name'], 'hybridgw-it');
  assert.equal(root.resource['deployment.environment.name'], 'test');
  const child = spans.find((s) => s.parentSpanId === root.spanId);
  assert.ok(child, 'an attempt span under the request span');
  assert.equal(child.kind, 3);
  assert.equal(child.attrs['server.address'], '127.0.0.1');
  assert.equal(Number(child.attrs['http.response.status_code']), 200);
  // the upstream saw our attempt span as its parent, in the same trace
  const got = seen.at(-1);
  assert.equal(got.traceparent, `00-${TRACE}-${child.spanId}-01`);
  assert.equal(got.tracestate, 'vendor=x');
  // the exporter sent the configured header, and the gateway never logged it
  assert.equal(rx.requests.at(-1).headers['x-test-auth'], 'secret-token');
  assert.ok(!gw.proc.stdout.includes('secret-token') && !gw.proc.stderr.includes('secret-token'));
});

test('a request without traceparent starts a new trace; a failed attempt is an ERROR span', { timeout: T(15000) }, async () => {
  const r = await postChat(gw, chatBody('boom [sim:fault=status=500]', { model: 'coder' }));
  assert.equal(r.status, 502);
  const id = r.headers.get('x-request-id');
  await waitFor(() => rx.spans().some((s) => s.attrs['hybridgw.request_id'] === id), {
    timeout: T(5000), what: 'the failed request span',
  });
  const root = rx.spans().find((s) => s.attrs['hybridgw.request_id'] === id);
  rx.validate(root);
  assert.equal(root.parentSpanId || '', '');
  assert.notEqual(root.traceId, TRACE);
  assert.equal(root.status.code, 2);
  assert.equal(Number(root.attrs['http.response.status_code']), 502);
  assert.ok(root.attrs['error.type']);
  const child = rx.spans().find((s) => s.parentSpanId === root.spanId);
  assert.equal(child.status.code, 2);
  assert.equal(child.attrs['hybridgw.outcome'], 'status_500');
});

test('the exported span count is on /metrics', { timeout: T(10000) }, async () => {
  await waitFor(async () => {
    const m = await http(`${gw.adminUrl}/metrics`);
    const line = m.text.split('\n').find((l) => l.startsWith('hybridgw_trace_spans_total{result="exported"}'));
    return line && Number(line.split(' ')[1]) >= 4;
  }, { timeout: T(5000), what: 'exported spans counted' });
});
