// otlp_receiver.mjs - a test OTLP/HTTP JSON trace receiver for the
// integration tests (PROTOCOLS.md 5.3).
//
// Listens on 127.0.0.1 port 0 with plain node:http and records every request:
// its headers (lowercased names, as node gives them) and its parsed JSON body
// (gzip bodies are inflated). Answers 200 `{}` unless told otherwise with
// respond(status). It never checks authentication; tests assert on the
// recorded headers instead. Every wait has a timeout.
//
//   const rx = await OtlpReceiver.start();
//   // configure the gateway with telemetry.otlp.endpoint: rx.url
//   const spans = await rx.waitForSpans(1, 5000);
//   for (const s of spans) rx.validate(s);
//   await rx.stop();
//
// spans() flattens resourceSpans -> scopeSpans -> spans; each span comes back
// as it was sent, plus `resource` (resource attributes as a plain object,
// e.g. {'service.name': 'hybridgw'}), `scope` and `attrs` (its attributes as a
// plain object of decoded values: intValue -> Number, or BigInt beyond 2^53;
// doubleValue -> Number; arrayValue -> Array).
import http from 'node:http';
import zlib from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const INT64 = /^-?(0|[1-9][0-9]*)$/;

/** Decode one OTLP AnyValue into a plain JS value (throws on an unknown shape). */
export function anyValue(v) {
  if (v === null || typeof v !== 'object') throw new Error(`AnyValue is not an object: ${JSON.stringify(v)}`);
  const keys = Object.keys(v);
  if (keys.length !== 1) throw new Error(`AnyValue must have exactly one field: ${JSON.stringify(v)}`);
  const k = keys[0];
  const x = v[k];
  switch (k) {
    case 'stringValue':
      if (typeof x !== 'string') throw new Error(`stringValue is not a string: ${JSON.stringify(v)}`);
      return x;
    case 'boolValue':
      if (typeof x !== 'boolean') throw new Error(`boolValue is not a boolean: ${JSON.stringify(v)}`);
      return x;
    case 'intValue': {
      if (typeof x !== 'string' || !INT64.test(x)) throw new Error(`intValue is not a decimal string: ${JSON.stringify(v)}`);
      const n = Number(x);
      return Number.isSafeInteger(n) ? n : BigInt(x);
    }
    case 'doubleValue':
      if (typeof x === 'number') return x;
      if (x === 'NaN') return NaN;
      if (x === 'Infinity') return Infinity;
      if (x === '-Infinity') return -Infinity;
      throw new Error(`doubleValue is not a number: ${JSON.stringify(v)}`);
    case 'arrayValue':
      if (!x || !Array.isArray(x.values)) throw new Error(`arrayValue without values[]: ${JSON.stringify(v)}`);
      return x.values.map(anyValue);
    case 'kvlistValue':
      if (!x || !Array.isArray(x.values)) throw new Error(`kvlistValue without values[]: ${JSON.stringify(v)}`);
      return attrsToObject(x.values);
    case 'bytesValue':
      if (typeof x !== 'string') throw new Error(`bytesValue is not base64: ${JSON.stringify(v)}`);
      return Buffer.from(x, 'base64');
    default:
      throw new Error(`unknown AnyValue field ${k}`);
  }
}

/** [{key, value}] -> {key: decoded value}; throws on a malformed entry. */
export function attrsToObject(list) {
  if (list === undefined) return {};
  if (!Array.isArray(list)) throw new Error(`attributes is not an array: ${JSON.stringify(list)}`);
  const out = {};
  for (const a of list) {
    if (!a || typeof a.key !== 'string' || a.key === '') throw new Error(`attribute without a key: ${JSON.stringify(a)}`);
    if (Object.prototype.hasOwnProperty.call(out, a.key)) throw new Error(`duplicate attribute ${a.key}`);
    out[a.key] = anyValue(a.value);
  }
  return out;
}

export class OtlpReceiver {
  /** @type {{headers: object, body: any, path: string}[]} */
  requests = [];
  url = '';
  #server;
  #status = 200;
  #waiters = new Set();

  /** Start listening on 127.0.0.1, port 0. */
  static async start() {
    const rx = new OtlpReceiver();
    rx.#server = http.createServer((req, res) => rx.#handle(req, res));
    rx.#server.keepAliveTimeout = 1000;
    await new Promise((resolve, reject) => {
      rx.#server.once('error', reject);
      rx.#server.listen(0, '127.0.0.1', resolve);
    });
    rx.url = `http://127.0.0.1:${rx.#server.address().port}/v1/traces`;
    return rx;
  }

  /** Answer later requests with this HTTP status (body `{}`). */
  respond(status) {
    this.#status = status;
  }

  #handle(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let raw = Buffer.concat(chunks);
      let body;
      try {
        if ((req.headers['content-encoding'] || '').toLowerCase() === 'gzip') raw = zlib.gunzipSync(raw);
        body = JSON.parse(raw.toString('utf8'));
      } catch (e) {
        body = { parseError: String(e), raw: raw.toString('utf8') };
      }
      this.requests.push({ headers: req.headers, body, path: req.url, method: req.method });
      for (const w of this.#waiters) w();
      res.writeHead(this.#status, { 'content-type': 'application/json' });
      res.end('{}');
    });
  }

  /** Every span received so far, flattened, with resource/scope/attrs added. */
  spans() {
    const out = [];
    for (const r of this.requests) {
      for (const rs of r.body?.resourceSpans ?? []) {
        const resource = attrsToObject(rs.resource?.attributes ?? []);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            let attrs;
            try {
              attrs = attrsToObject(s.attributes ?? []);
            } catch {
              attrs = undefined; // validate() reports it
            }
            out.push({ ...s, resource, scope: ss.scope, attrs });
          }
        }
      }
    }
    return out;
  }

  /** Resolve with spans() once at least n spans arrived; reject after timeoutMs. */
  async waitForSpans(n, timeoutMs = 10000) {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = this.spans();
      if (s.length >= n) return s;
      const left = until - Date.now();
      if (left <= 0) throw new Error(`OtlpReceiver: ${s.length} spans after ${timeoutMs} ms, wanted ${n}`);
      let wake;
      const woken = new Promise((resolve) => (wake = resolve));
      this.#waiters.add(wake);
      await Promise.race([woken, sleep(Math.min(left, 250))]);
      this.#waiters.delete(wake);
    }
  }

  /**
   * Throw an Error naming the first structural problem of span s (one entry
   * of spans()): ids as lowercase hex of the right length and not all zero,
   * name a string, kind/status.code integers in range, times as decimal
   * strings with end >= start, attribute values well-formed, and a set
   * parentSpanId naming a span of the same trace received so far.
   */
  validate(s) {
    const where = `span ${JSON.stringify(s?.name)} (${s?.spanId})`;
    const bad = (msg) => {
      throw new Error(`${where}: ${msg}`);
    };
    if (typeof s.traceId !== 'string' || !HEX32.test(s.traceId) || /^0+$/.test(s.traceId))
      bad(`traceId ${JSON.stringify(s.traceId)} is not 32 lowercase hex digits (non-zero)`);
    if (typeof s.spanId !== 'string' || !HEX16.test(s.spanId) || /^0+$/.test(s.spanId))
      bad(`spanId ${JSON.stringify(s.spanId)} is not 16 lowercase hex digits (non-zero)`);
    if (s.parentSpanId !== undefined && s.parentSpanId !== '') {
      if (typeof s.parentSpanId !== 'string' || !HEX16.test(s.parentSpanId))
        bad(`parentSpanId ${JSON.stringify(s.parentSpanId)} is not 16 lowercase hex digits`);
      const parent = this.spans().find((p) => p.traceId === s.traceId && p.spanId === s.parentSpanId);
      if (!parent) bad(`parentSpanId ${s.parentSpanId} is not a span of trace ${s.traceId} received so far`);
    }
    if (typeof s.name !== 'string') bad('name is not a string');
    if (!Number.isInteger(s.kind) || s.kind < 0 || s.kind > 5) bad(`kind ${JSON.stringify(s.kind)} is not an integer 0..5`);
    for (const f of ['startTimeUnixNano', 'endTimeUnixNano']) {
      if (typeof s[f] !== 'string' || !DECIMAL.test(s[f])) bad(`${f} ${JSON.stringify(s[f])} is not a decimal string`);
    }
    if (BigInt(s.endTimeUnixNano) < BigInt(s.startTimeUnixNano)) bad('endTimeUnixNano < startTimeUnixNano');
    if (s.status !== undefined) {
      const c = s.status.code;
      if (c !== undefined && (!Number.isInteger(c) || c < 0 || c > 2)) bad(`status.code ${JSON.stringify(c)} is not 0, 1 or 2`);
      if (s.status.message !== undefined && typeof s.status.message !== 'string') bad('status.message is not a string');
    }
    try {
      attrsToObject(s.attributes ?? []);
    } catch (e) {
      bad(e.message);
    }
    if (!s.resource || typeof s.resource['service.name'] !== 'string') bad('resource has no service.name');
    return true;
  }

  /** Close the server (and any kept-alive connections). */
  async stop() {
    if (!this.#server) return;
    const srv = this.#server;
    this.#server = undefined;
    srv.closeAllConnections?.();
    await new Promise((resolve) => srv.close(() => resolve()));
  }
}
