// harness.mjs - start and stop hybridgw / hybridgw-sim for the integration
// tests, and small helpers for talking to them.
//
// Every process listens on 127.0.0.1 port 0; the port is read from its
// stderr. Every process started here is registered and killed when the test
// file's process exits, however it exits, so a failing test never leaves a
// server behind. Every wait in here has a timeout.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';

const here = path.dirname(fileURLToPath(import.meta.url));

export const BUILD = process.env.HYBRIDGW_BUILD || path.resolve(here, '../../../build');
export const SANITIZED = process.env.HYBRIDGW_SANITIZED === '1';
export const GATEWAY_BIN = path.join(BUILD, 'hybridgw');
export const SIM_BIN = path.join(BUILD, 'hybridgw-sim');

/** Scale a time budget for sanitized builds (several times slower). */
export function T(ms) {
  return SANITIZED ? ms * 4 : ms;
}

export const SANITIZER_RE = /ERROR: (?:Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;

// ---- process registry: nothing outlives the test file ----

const live = new Set();
const tempDirs = [];

function killAll() {
  for (const p of live) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  live.clear();
}

process.on('exit', () => {
  killAll();
  const keep = process.exitCode && process.exitCode !== 0;
  for (const d of tempDirs) {
    if (keep) {
      process.stderr.write(`integration: kept ${d} (test failures)\n`);
    } else {
      try {
        fs.rmSync(d, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
    }
  }
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + os.constants.signals[sig]);
  });
}

/** A fresh temporary directory, removed when the test file ends well. */
export function tempDir(prefix = 'hybridgw-it-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

/** Poll fn until it returns a truthy value; throw after timeout ms. */
export async function waitFor(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}` +
        (last ? ` (last error: ${last.message})` : ''));
    }
    await sleep(interval);
  }
}

/** Reject after ms with a message unless promise settles first. */
export function withTimeout(promise, ms, what = 'operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---- processes ----

export class Proc {
  constructor(name, bin, args, { env = {}, logDir } = {}) {
    this.name = name;
    this.stdout = '';
    this.stderr = '';
    this.exit = null; // { code, signal } once exited
    this.child = spawn(bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    live.add(this);
    this.logDir = logDir;
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d) => {
      this.stdout += d;
    });
    this.child.stderr.on('data', (d) => {
      this.stderr += d;
    });
    this.exited = new Promise((resolve) => {
      // 'close' fires after the pipes are drained, so stdout/stderr are whole
      this.child.on('close', (code, signal) => {
        live.delete(this);
        this.exit = { code, signal };
        if (this.logDir) {
          try {
            fs.writeFileSync(path.join(this.logDir, `${this.name}.stdout`), this.stdout);
            fs.writeFileSync(path.join(this.logDir, `${this.name}.stderr`), this.stderr);
          } catch {
            /* the dir may be gone */
          }
        }
        resolve(this.exit);
      });
      this.child.on('error', (e) => {
        this.stderr += `\nspawn error: ${e.message}\n`;
      });
    });
  }

  get pid() {
    return this.child.pid;
  }

  get running() {
    return this.exit === null;
  }

  /** Wait for a stderr line matching re; resolves with the match. */
  async waitStderr(re, timeout = T(10000)) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const m = this.stderr.match(re);
      if (m) return m;
      if (!this.running) {
        throw new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before printing ${re}:\n${this.stderr}`);
      }
      if (Date.now() >= deadline) {
        throw new Error(`${this.name}: no ${re} on stderr within ${timeout} ms:\n${this.stderr}`);
      }
      await sleep(20);
    }
  }

  signal(sig) {
    if (this.running) this.child.kill(sig);
  }

  /** Wait for the exit without signalling; SIGKILL after timeout. */
  async wait(timeout = T(15000)) {
    if (!this.running) return { ...this.exit, killed: false };
    let timer;
    const r = await Promise.race([
      this.exited,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), timeout);
      }),
    ]);
    clearTimeout(timer);
    if (r) return { ...r, killed: false };
    this.child.kill('SIGKILL');
    return { ...(await this.exited), killed: true };
  }

  /** Send sig and wait for the exit; SIGKILL after timeout. */
  async stop({ signal = 'SIGTERM', timeout = T(15000) } = {}) {
    if (!this.running) return { ...this.exit, killed: false };
    this.child.kill(signal);
    let timer;
    const r = await Promise.race([
      this.exited,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), timeout);
      }),
    ]);
    clearTimeout(timer);
    if (r) return { ...r, killed: false };
    this.child.kill('SIGKILL');
    const r2 = await this.exited;
    return { ...r2, killed: true };
  }

  /** Sanitizer reports found on stderr (empty when clean). */
  sanitizerReports() {
    const out = [];
    for (const line of this.stderr.split('\n')) if (SANITIZER_RE.test(line)) out.push(line);
    return out;
  }

  tail(n = 30) {
    return this.stderr.split('\n').slice(-n).join('\n');
  }
}

/** Stop proc (SIGTERM) and describe what was wrong with its exit, or ''. */
export async function stopAndCheck(proc, opts) {
  const r = await proc.stop(opts);
  const problems = [];
  if (r.killed) problems.push('did not exit after SIGTERM (killed)');
  else if (r.code !== 0) problems.push(`exit code ${r.code} signal ${r.signal}`);
  const rep = proc.sanitizerReports();
  if (rep.length) problems.push(`sanitizer: ${rep.slice(0, 5).join(' | ')}`);
  return problems.length ? `${proc.name}: ${problems.join('; ')}\n--- stderr tail ---\n${proc.tail()}` : '';
}

// ---- the simulator ----

export class Sim {
  static async start({ args = [], name = 'sim', logDir, port = 0 } = {}) {
    const s = new Sim();
    s.proc = new Proc(name, SIM_BIN, ['--listen', `127.0.0.1:${port}`, '--seed', '1', ...args], { logDir });
    const m = await s.proc.waitStderr(/hybridgw-sim listening on http:\/\/127\.0\.0\.1:(\d+)/);
    s.port = Number(m[1]);
    s.url = `http://127.0.0.1:${s.port}`;
    return s;
  }

  async stats() {
    const r = await fetch(`${this.url}/sim/stats`, { signal: AbortSignal.timeout(T(3000)) });
    if (r.status !== 200) throw new Error(`sim stats: ${r.status}`);
    return r.json();
  }

  async config(obj) {
    const r = await fetch(`${this.url}/sim/config`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(obj),
      signal: AbortSignal.timeout(T(3000)),
    });
    if (r.status !== 200) throw new Error(`sim config: ${r.status} ${await r.text()}`);
    return r.json();
  }

  stop(opts) {
    return this.proc.stop(opts);
  }
}

// ---- the gateway ----

/**
 * YAML for a gateway in front of one simulator. Options:
 *   simUrl       the local backend's URL (required)
 *   admin        add admin_listen: 127.0.0.1:0
 *   models       extra `models:` entries as { alias: backend }
 *   apiKey       the backend's upstream api_key
 *   limits       YAML flow mapping text for limits
 *   timeouts     YAML flow mapping text for the backend's timeouts
 *   extra        appended verbatim
 */
export function gatewayYaml({
  simUrl,
  admin = false,
  models = { coder: 'local-a' },
  apiKey,
  limits = '{ max_body_bytes: 64KiB, header_timeout: 2s, body_timeout: 2s, idle_timeout: 5s, shutdown_timeout: 10s }',
  timeouts = '{ connect: 1s, first_byte: 2s, stream_idle: 1s, request: 30s }',
  health = '{ path: /health, interval: 1s, fail_threshold: 3 }',
  // retries and the circuit breaker have their own tests (resilience);
  // elsewhere one failure is one observation, as these tests expect
  retry = '{ attempts: 0 }',
  circuit = '{ failures: 1000 }',
  workers = 2,
  extra = '',
}) {
  const lines = [
    'listen: "127.0.0.1:0"',
    admin ? 'admin_listen: "127.0.0.1:0"' : null,
    `workers: ${workers}`,
    'access_log: stdout',
    `limits: ${limits}`,
    'auth: { keys: [ { name: test, key: "sk-test" } ] }',
    'backends:',
    '  local-a:',
    '    tier: local',
    '    provider: vllm',
    `    url: "${simUrl}"`,
    '    model: sim-model',
    apiKey ? `    api_key: "${apiKey}"` : null,
    `    timeouts: ${timeouts}`,
    `    health: ${health}`,
    `    retry: ${retry}`,
    `    circuit: ${circuit}`,
    'models:',
    ...Object.entries(models).map(([k, v]) => `  ${k}: { backend: ${v} }`),
    'router: { default_tier: local }',
    extra,
  ];
  return lines.filter((l) => l !== null).join('\n') + '\n';
}

/**
 * YAML for a gateway in front of several backends (local-a / frontier-b
 * style setups for retries, fallback, circuit breaking and translation).
 * Options:
 *   backends   [{ name, tier (local), provider (vllm), url | urls (list),
 *                 model (sim-model), apiKey, retry, circuit, timeouts,
 *                 health, extra (YAML lines, indented 4) }]
 *              Per-backend defaults: retry { attempts: 0 }, circuit
 *              { failures: 1000 }, health off with a high fail_threshold,
 *              so one failure is one observation unless a test asks.
 *   models     extra `models:` entries as { alias: backend }
 *   router     { default_tier (local), fallback (YAML flow text or null
 *              for the built-in default), deadline (duration text) }
 *   admin, limits, workers, extra   as for gatewayYaml()
 */
export function gatewayYamlMulti({
  backends,
  admin = false,
  models = {},
  router = {},
  limits = '{ max_body_bytes: 64KiB, header_timeout: 2s, body_timeout: 2s, idle_timeout: 5s, shutdown_timeout: 10s }',
  workers = 2,
  extra = '',
}) {
  if (!Array.isArray(backends) || backends.length === 0) throw new Error('gatewayYamlMulti: backends needed');
  const lines = [
    'listen: "127.0.0.1:0"',
    admin ? 'admin_listen: "127.0.0.1:0"' : null,
    `workers: ${workers}`,
    'access_log: stdout',
    `limits: ${limits}`,
    'auth: { keys: [ { name: test, key: "sk-test" } ] }',
    'backends:',
  ];
  for (const b of backends) {
    const urls = b.urls || [b.url];
    if (!b.name || !urls[0]) throw new Error('gatewayYamlMulti: a backend needs name and url(s)');
    lines.push(
      `  ${b.name}:`,
      `    tier: ${b.tier || 'local'}`,
      `    provider: ${b.provider || 'vllm'}`,
      urls.length === 1 && !b.urls ? `    url: "${urls[0]}"` : `    urls: [${urls.map((u) => `"${u}"`).join(', ')}]`,
      `    model: ${b.model || 'sim-model'}`,
      b.apiKey ? `    api_key: "${b.apiKey}"` : null,
      `    timeouts: ${b.timeouts || '{ connect: 1s, first_byte: 2s, stream_idle: 1s, request: 30s }'}`,
      `    health: ${b.health || '{ path: /health, interval: 0s, fail_threshold: 1000 }'}`,
      `    retry: ${b.retry || '{ attempts: 0 }'}`,
      `    circuit: ${b.circuit || '{ failures: 1000 }'}`,
      b.extra || null,
    );
  }
  const m = Object.entries(models);
  if (m.length) {
    lines.push('models:', ...m.map(([k, v]) => `  ${k}: { backend: ${v} }`));
  }
  const r = [`default_tier: ${router.default_tier || 'local'}`];
  if (router.fallback) r.push(`fallback: ${router.fallback}`);
  if (router.deadline) r.push(`deadline: ${router.deadline}`);
  lines.push(`router: { ${r.join(', ')} }`, extra);
  return lines.filter((l) => l !== null).join('\n') + '\n';
}

/** The value of the first sample line of text matching re, or undefined. */
export function metricSample(text, re) {
  const line = text.split('\n').find((l) => !l.startsWith('#') && re.test(l));
  return line === undefined ? undefined : Number(line.trim().split(/\s+/).at(-1));
}

export class Gateway {
  /**
   * Start `hybridgw serve -c <dir>/gateway.yaml` with yaml (a string);
   * resolves once it prints its listening line(s).
   */
  static async start(yaml, { name = 'gateway', env = {}, dir } = {}) {
    const g = new Gateway();
    g.dir = dir || tempDir();
    g.configPath = path.join(g.dir, 'gateway.yaml');
    fs.writeFileSync(g.configPath, yaml);
    g.proc = new Proc(name, GATEWAY_BIN, ['serve', '-c', g.configPath], { env, logDir: g.dir });
    const m = await g.proc.waitStderr(/(?<!admin )listening on http:\/\/127\.0\.0\.1:(\d+)/);
    g.port = Number(m[1]);
    g.url = `http://127.0.0.1:${g.port}`;
    g.baseURL = `${g.url}/v1`;
    // the admin line is printed right after the main one, when configured
    await sleep(20);
    const a = g.proc.stderr.match(/admin listening on http:\/\/127\.0\.0\.1:(\d+)/);
    g.adminPort = a ? Number(a[1]) : null;
    g.adminUrl = a ? `http://127.0.0.1:${g.adminPort}` : g.url;
    return g;
  }

  client(opts = {}) {
    return new OpenAI({
      apiKey: 'sk-test',
      baseURL: this.baseURL,
      maxRetries: 0,
      timeout: T(15000),
      ...opts,
    });
  }

  /** Access-log lines so far, parsed (lines that aren't JSON throw). */
  accessLog() {
    return this.proc.stdout
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          throw new Error(`access log line is not JSON: ${l}`);
        }
      });
  }

  /** Wait for an access-log entry matching pred; resolves with it. */
  waitLog(pred, { timeout = T(3000), what = 'an access-log line' } = {}) {
    return waitFor(() => this.accessLog().find(pred), { timeout, what });
  }

  /** The access-log entry of one request id. */
  logFor(requestId, opts) {
    return this.waitLog((e) => e.request_id === requestId, {
      what: `the access-log line of ${requestId}`,
      ...opts,
    });
  }

  /** The /metrics text (from the admin listener when there is one). */
  async metrics() {
    const r = await fetch(`${this.adminUrl}/metrics`, { signal: AbortSignal.timeout(T(5000)) });
    if (r.status !== 200) throw new Error(`metrics: ${r.status}`);
    return r.text();
  }

  writeConfig(yaml) {
    fs.writeFileSync(this.configPath, yaml);
  }

  stop(opts) {
    return this.proc.stop(opts);
  }
}

// ---- HTTP helpers ----

export const AUTH = { authorization: 'Bearer sk-test' };

/** fetch with a timeout; returns { status, headers, text, json }. */
export async function http(url, { method = 'GET', headers = {}, body, timeout = T(10000) } = {}) {
  const r = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeout) });
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, text, json };
}

/** POST a chat body (object or string) with the test key. */
export function postChat(gw, body, { headers = {}, timeout } = {}) {
  return http(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...AUTH, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    timeout,
  });
}

/** POST an Anthropic Messages body (object or string) with the test key. */
export function postMessages(gw, body, { headers = {}, timeout, path: p = '/v1/messages' } = {}) {
  return http(`${gw.url}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'sk-test', 'anthropic-version': '2023-06-01', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    timeout,
  });
}

/** A loopback port nothing listens on (bound to port 0, then closed). */
export async function closedPort() {
  const srv = net.createServer();
  await withTimeout(new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  }), T(2000), 'listen');
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** A one-message chat request body. */
export function chatBody(content, extra = {}) {
  return { model: 'auto', messages: [{ role: 'user', content }], ...extra };
}

/** The data: payloads of an SSE body, in order. */
export function sseData(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const data = block
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, ''));
    if (data.length) out.push(data.join('\n'));
  }
  return out;
}

/**
 * The events of an SSE body, in order: [{ event (name or null), data }]
 * (comment-only blocks are skipped).
 */
export function sseEvents(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let event = null;
    const data = [];
    for (const l of block.split(/\r?\n/)) {
      if (l.startsWith('event:')) event = l.slice(6).replace(/^ /, '');
      else if (l.startsWith('data:')) data.push(l.slice(5).replace(/^ /, ''));
    }
    if (event !== null || data.length) out.push({ event, data: data.join('\n') });
  }
  return out;
}

// ---- raw HTTP/1.1 over a socket ----

/**
 * Parse as many complete HTTP/1.1 responses from buf as there are.
 * Returns { responses: [{status, reason, headers (lower-case), body}], rest }.
 * A response without Content-Length or chunked coding is complete only
 * when `eof` is set.
 */
export function parseResponses(buf, eof = false) {
  const responses = [];
  let off = 0;
  for (;;) {
    const headEnd = buf.indexOf('\r\n\r\n', off);
    if (headEnd < 0) break;
    const head = buf.subarray(off, headEnd).toString('latin1').split('\r\n');
    const m = head[0].match(/^HTTP\/1\.[01] (\d{3}) ?(.*)$/);
    if (!m) throw new Error(`bad status line: ${JSON.stringify(head[0])}`);
    const headers = {};
    for (const l of head.slice(1)) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).trim().toLowerCase();
      const v = l.slice(i + 1).trim();
      headers[k] = headers[k] !== undefined ? `${headers[k]}, ${v}` : v;
    }
    let p = headEnd + 4;
    let body;
    if ((headers['transfer-encoding'] || '').toLowerCase().includes('chunked')) {
      const parts = [];
      let done = false;
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le < 0) break;
        const size = parseInt(buf.subarray(p, le).toString('latin1'), 16);
        if (Number.isNaN(size)) throw new Error('bad chunk size');
        if (size === 0) {
          // last chunk: skip trailers up to the empty line
          if (buf.length >= le + 4 && buf[le + 2] === 13 && buf[le + 3] === 10) {
            p = le + 4;
          } else {
            const te = buf.indexOf('\r\n\r\n', le + 2);
            if (te < 0) break;
            p = te + 4;
          }
          done = true;
          break;
        }
        if (buf.length < le + 2 + size + 2) break;
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      if (!done) break;
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (buf.length < p + n) break;
      body = buf.subarray(p, p + n);
      p += n;
    } else if (Number(m[1]) === 204 || Number(m[1]) === 304 || (Number(m[1]) >= 100 && Number(m[1]) < 200)) {
      body = Buffer.alloc(0);
    } else {
      if (!eof) break;
      body = buf.subarray(p);
      p = buf.length;
    }
    responses.push({ status: Number(m[1]), reason: m[2], headers, body: body.toString('utf8') });
    off = p;
  }
  return { responses, rest: buf.subarray(off) };
}

/**
 * Open a socket to port, and return helpers: send(data), waitResponses(n),
 * waitClose(), close(). Every wait has a timeout.
 */
export async function rawConnect(port, { timeout = T(5000) } = {}) {
  const sock = net.connect({ host: '127.0.0.1', port });
  await withTimeout(
    new Promise((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    }),
    timeout,
    'connect',
  );
  let buf = Buffer.alloc(0);
  let closed = false;
  let error = null;
  const closedP = new Promise((resolve) => sock.once('close', () => {
    closed = true;
    resolve();
  }));
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
  });
  sock.on('error', (e) => {
    error = e;
  });
  return {
    sock,
    get buffer() {
      return buf;
    },
    get closed() {
      return closed;
    },
    get error() {
      return error;
    },
    send(data) {
      return new Promise((resolve, reject) => sock.write(data, (e) => (e ? reject(e) : resolve())));
    },
    async waitResponses(n, t = timeout) {
      return waitFor(() => {
        const { responses } = parseResponses(buf, closed);
        if (responses.length >= n) return responses;
        if (closed) throw new Error(`connection closed after ${responses.length} of ${n} responses: ${buf.toString()}`);
        return null;
      }, { timeout: t, interval: 10, what: `${n} responses` });
    },
    waitClose(t = timeout) {
      return withTimeout(closedP, t, 'connection close');
    },
    close() {
      sock.destroy();
    },
  };
}

/** True when a TCP connection to port is refused (or reset at once). */
export async function connectionRefused(port, timeout = T(2000)) {
  return withTimeout(
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(false);
      });
      s.once('error', (e) => resolve(e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET'));
    }),
    timeout,
    'connect probe',
  );
}

export { OpenAI, sleep };
