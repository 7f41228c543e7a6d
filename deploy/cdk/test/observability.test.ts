// Offline checks of deploy/observability: Grafana dashboards, Prometheus rules and the metric
// names they use (against deploy/observability/metric-lists). promtool (Debian's prometheus
// package, scripts/install-deps) validates every rule file, the PromQL of every dashboard query,
// and the behaviour of the alerts (promtool test rules); those tests skip when it is missing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as YAML from 'yaml';
import { OBSERVABILITY_DIR } from '../lib/helm';
import { REPO_ROOT, tempDir } from './helpers';

const DASH_DIR = path.join(OBSERVABILITY_DIR, 'dashboards');
const RULES_DIR = path.join(OBSERVABILITY_DIR, 'rules');
const LISTS_DIR = path.join(OBSERVABILITY_DIR, 'metric-lists');
/** The shared reference lists, next to the repo on developer machines and in CI (optional). */
const SHARED_LISTS_DIR = path.join(REPO_ROOT, '..', 'shared', 'data', 'metrics');

// ---- promtool --------------------------------------------------------------------------------

function findPromtool(): string | null {
  for (const p of [process.env.PROMTOOL, '/usr/bin/promtool', 'promtool']) {
    if (!p) continue;
    const r = spawnSync(p, ['--version'], { encoding: 'utf8' });
    if (!r.error && r.status === 0) return p;
  }
  return null;
}
const PROMTOOL = findPromtool();
const NO_PROMTOOL = 'promtool not found (apt-get install prometheus, or scripts/install-deps; or set PROMTOOL)';

function promtool(args: string[], cwd?: string): { status: number; out: string } {
  const r = spawnSync(PROMTOOL!, args, { encoding: 'utf8', cwd, timeout: 60_000 });
  return { status: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

// ---- metric lists ----------------------------------------------------------------------------

type MetricType = 'counter' | 'gauge' | 'histogram' | 'removed' | 'untyped';
interface Family { readonly name: string; readonly type: MetricType; readonly labels: string[] | null; readonly pending: boolean }

/** A list file: `type name [labels] [pending]` or a bare `name`; `#` comments. */
function readList(file: string): Family[] {
  const out: Family[] = [];
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const f = line.split(/\s+/);
    if (f.length === 1) {
      out.push({ name: f[0], type: 'untyped', labels: null, pending: false });
      continue;
    }
    const type = f[0] as MetricType;
    assert.ok(['counter', 'gauge', 'histogram', 'removed'].includes(type), `${path.basename(file)}: bad type in "${raw}"`);
    const labels = f[2] === undefined || f[2] === '*' ? null : f[2] === '-' ? [] : f[2].split(',');
    out.push({ name: f[1], type, labels, pending: f[3] === 'pending' });
  }
  return out;
}

const LISTS = {
  hybridgw: readList(path.join(LISTS_DIR, 'hybridgw.txt')),
  vllm: readList(path.join(LISTS_DIR, 'vllm.txt')),
  dcgm: readList(path.join(LISTS_DIR, 'dcgm.txt')),
};

/** Labels every scraped series may carry (target labels from the ServiceMonitor / kube SD). */
const TARGET_LABELS = ['job', 'instance', 'namespace', 'pod', 'service', 'container', 'endpoint', 'node', 'cluster'];
/** Sample labels of the families whose list doesn't name them per metric (from the list headers). */
const VLLM_LABELS = ['model_name', 'engine', 'finished_reason'];
const DCGM_LABELS = ['gpu', 'UUID', 'device', 'modelName', 'Hostname', 'pod', 'namespace', 'container'];
/** Prometheus' own series that rules may use. */
const BUILTIN: Record<string, string[]> = { up: [] };

interface Known { readonly ok: boolean; readonly why?: string; readonly labels: string[] | null }

/** Is name (as used in PromQL) a scraped series of a listed family? Returns its labels. */
function lookup(name: string, recorded: Set<string>): Known {
  if (recorded.has(name)) return { ok: true, labels: null };
  if (name in BUILTIN) return { ok: true, labels: BUILTIN[name] };
  const [list, extra] = name.startsWith('hybridgw_') ? [LISTS.hybridgw, null]
    : name.startsWith('vllm:') ? [LISTS.vllm, VLLM_LABELS]
      : name.startsWith('DCGM_') ? [LISTS.dcgm, DCGM_LABELS]
        : [null, null];
  if (!list) return { ok: false, why: 'no metric list for this prefix (hybridgw_, vllm:, DCGM_)', labels: null };
  for (const f of list) {
    const withLe = (l: string[] | null) => (l ? [...l, 'le'] : null);
    if (f.type === 'histogram') {
      if (name === `${f.name}_bucket`) return { ok: true, labels: withLe(f.labels ?? extra) };
      if (name === `${f.name}_sum` || name === `${f.name}_count`) return { ok: true, labels: f.labels ?? extra };
      if (name === f.name) return { ok: false, why: 'a histogram: use _bucket, _sum or _count', labels: null };
    } else if (name === f.name) {
      if (f.type === 'removed') return { ok: false, why: 'removed/deprecated in current vLLM', labels: null };
      return { ok: true, labels: f.labels ?? extra };
    }
  }
  return { ok: false, why: `not in metric-lists/${name.startsWith('hybridgw_') ? 'hybridgw' : name.startsWith('vllm:') ? 'vllm' : 'dcgm'}.txt`, labels: null };
}

// ---- PromQL identifiers ----------------------------------------------------------------------

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'inf', 'nan', 'atan2', 'start', 'end']);

export interface PromqlRefs {
  /** metric names, in order of appearance (deduplicated) */
  readonly metrics: string[];
  /** label names in each selector's matchers: [metric or '', label] */
  readonly matchers: Array<[string, string]>;
  /** label names in by/without/on/ignoring/group_left/group_right clauses */
  readonly grouping: string[];
  /** labels that label_replace/label_join create */
  readonly created: string[];
}

/**
 * Metric names, matcher labels and grouping labels of a PromQL expression (Grafana variables
 * allowed). Strips string literals, range/subquery brackets, offsets, grouping clauses and
 * numbers; what is left of [a-zA-Z_:][a-zA-Z0-9_:]* that is not followed by "(" (a function or
 * aggregation) and not a keyword is a metric name.
 */
export function promqlRefs(expr: string): PromqlRefs {
  const created: string[] = [];
  // label_replace(v, "dst", ...) / label_join(v, "dst", ...): remember dst before strings go.
  for (const m of expr.matchAll(/label_(?:replace|join)\s*\([^"']*?,\s*["']([^"']+)["']/g)) created.push(m[1]);
  let s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\boffset\s+-?[\w$]+/g, ' ')
    .replace(/@\s*(?:start\(\)|end\(\)|[\d.]+)/g, ' ');
  const grouping: string[] = [];
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_m, _k, list: string) => {
    grouping.push(...list.split(',').map((x) => x.trim()).filter(Boolean));
    return ' ';
  });
  const matchers: Array<[string, string]> = [];
  s = s.replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g, (_m, metric: string | undefined, body: string) => {
    for (const lm of body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) matchers.push([metric ?? '', lm[1]]);
    return ` ${metric ?? ''} `;
  });
  s = s
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/(^|[^a-zA-Z0-9_:.])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)/g, '$1 ');
  const metrics: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const tok = m[0];
    const after = s.slice(m.index! + tok.length);
    if (/^\s*\(/.test(after)) continue; // function or aggregation
    if (KEYWORDS.has(tok.toLowerCase())) continue;
    if (!metrics.includes(tok)) metrics.push(tok);
  }
  return { metrics, matchers, grouping, created };
}

// ---- dashboards and rules, loaded once ----------------------------------------------------------

interface Query { readonly where: string; readonly expr: string; readonly legend?: string; readonly dashboard?: string }

const dashboardFiles = fs.readdirSync(DASH_DIR).filter((f) => f.endsWith('.json')).sort();
const ruleFiles = fs.readdirSync(RULES_DIR).filter((f) => /\.ya?ml$/.test(f)).sort();

function dashboard(f: string): Record<string, any> {
  return JSON.parse(fs.readFileSync(path.join(DASH_DIR, f), 'utf8'));
}

/** Every panel, rows' nested panels included. */
function allPanels(d: Record<string, any>): Array<Record<string, any>> {
  const out: Array<Record<string, any>> = [];
  for (const p of d.panels ?? []) {
    out.push(p);
    for (const q of p.panels ?? []) out.push(q);
  }
  return out;
}

/** The query of a templating variable with its Grafana wrapper function unwrapped. */
function variableExpr(q: string): { expr: string; label?: string } | null {
  let m = /^\s*label_values\(\s*(.+)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*$/.exec(q);
  if (m) return { expr: m[1], label: m[2] };
  m = /^\s*label_values\(\s*([a-zA-Z_]\w*)\s*\)\s*$/.exec(q);
  if (m) return null; // all values of a label: no metric
  m = /^\s*(?:query_result|metrics)\(\s*(.+)\s*\)\s*$/.exec(q);
  if (m) return { expr: m[1] };
  return { expr: q };
}

function dashboardQueries(): Query[] {
  const out: Query[] = [];
  for (const f of dashboardFiles) {
    const d = dashboard(f);
    for (const v of d.templating?.list ?? []) {
      if (v.type !== 'query') continue;
      const q = typeof v.query === 'string' ? v.query : v.query?.query;
      const ve = variableExpr(q ?? '');
      if (ve) out.push({ where: `${f} variable ${v.name}`, expr: ve.expr, legend: ve.label ? `{{${ve.label}}}` : undefined, dashboard: f });
    }
    for (const p of allPanels(d)) {
      for (const t of p.targets ?? []) {
        if (typeof t.expr === 'string' && t.expr.trim()) {
          out.push({ where: `${f} panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr, legend: t.legendFormat, dashboard: f });
        }
      }
    }
  }
  return out;
}

interface Rule { readonly file: string; readonly group: string; readonly rule: Record<string, any> }

function loadRules(): Rule[] {
  const out: Rule[] = [];
  for (const f of ruleFiles) {
    for (const doc of YAML.parseAllDocuments(fs.readFileSync(path.join(RULES_DIR, f), 'utf8'))) {
      assert.equal(doc.errors.length, 0, `${f}: ${doc.errors[0]?.message}`);
      const obj = doc.toJS() as Record<string, any> | null;
      if (!obj) continue;
      const spec = obj.kind === 'PrometheusRule' ? obj.spec : obj;
      for (const g of spec.groups ?? []) for (const r of g.rules ?? []) out.push({ file: f, group: g.name, rule: r });
    }
  }
  return out;
}

const RULES = loadRules();
const RECORDED = new Set(RULES.filter((r) => r.rule.record).map((r) => String(r.rule.record)));
const QUERIES: Query[] = [
  ...dashboardQueries(),
  ...RULES.map((r) => ({ where: `${r.file} ${r.rule.alert ?? r.rule.record}`, expr: String(r.rule.expr) })),
];

/** Grafana's built-in and the dashboards' own variables replaced by values PromQL accepts. */
function grafanaToPromql(expr: string): string {
  return expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}/g, '5m')
    .replace(/\$__range|\$\{__range\}/g, '1h')
    .replace(/\$\{?(\w+)\}?/g, '.*');
}

// ---- tests -----------------------------------------------------------------------------------

describe('observability: PromQL name extraction', () => {
  it('finds metrics, not functions, keywords, labels, strings, durations or numbers', () => {
    const r = promqlRefs('histogram_quantile(0.99, sum by (le, tier) (rate(hybridgw_request_duration_seconds_bucket{route=~"chat|x", tier!="none"}[5m] offset 1h))) > 1e3');
    assert.deepEqual(r.metrics, ['hybridgw_request_duration_seconds_bucket']);
    assert.deepEqual(r.grouping, ['le', 'tier']);
    assert.deepEqual(r.matchers, [['hybridgw_request_duration_seconds_bucket', 'route'], ['hybridgw_request_duration_seconds_bucket', 'tier']]);
    const v = promqlRefs('sum(rate(vllm:prefix_cache_hits_total{model_name=~"$model_name"}[$__rate_interval])) / ignoring(x) group_left sum(vllm:prefix_cache_queries_total) and on() up == bool 0');
    assert.deepEqual(v.metrics, ['vllm:prefix_cache_hits_total', 'vllm:prefix_cache_queries_total', 'up']);
    assert.deepEqual(promqlRefs('DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > 0.98').metrics, ['DCGM_FI_DEV_FB_USED', 'DCGM_FI_DEV_FB_FREE']);
    assert.deepEqual(promqlRefs('label_replace(foo, "class", "${1}xx", "status", "(.)..")').created, ['class']);
    assert.deepEqual(promqlRefs('sum without (instance) (a) * on (b) group_right (c) d').metrics, ['a', 'd']);
  });

  it('maps histogram series and counters to their families and rejects unknown or removed names', () => {
    const none = new Set<string>();
    assert.ok(lookup('hybridgw_time_to_first_token_seconds_bucket', none).ok);
    assert.ok(lookup('hybridgw_request_duration_seconds_count', none).ok);
    assert.ok(!lookup('hybridgw_request_duration_seconds', none).ok, 'a bare histogram name is not a series');
    assert.ok(lookup('vllm:prompt_tokens_total', none).ok);
    assert.ok(!lookup('vllm:prompt_tokens', none).ok, 'counters are scraped with _total');
    assert.ok(!lookup('vllm:gpu_cache_usage_perc', none).ok, 'removed names are rejected');
    assert.ok(lookup('DCGM_FI_DEV_XID_ERRORS', none).ok);
    assert.ok(!lookup('DCGM_FI_DEV_NOPE', none).ok);
    assert.ok(!lookup('node_cpu_seconds_total', none).ok);
    assert.deepEqual(lookup('hybridgw_requests_total', none).labels, ['route', 'tier', 'backend', 'status']);
  });
});

describe('observability: metric lists', () => {
  it('hybridgw.txt lists the families in the gateway source, with their types', () => {
    const names = LISTS.hybridgw.map((f) => f.name);
    assert.equal(new Set(names).size, names.length, 'duplicate names');
    for (const f of LISTS.hybridgw) assert.match(f.name, /^hybridgw_[a-z0-9_]+$/);
    const api = path.join(REPO_ROOT, 'src', 'api', 'api.c');
    const src = fs.readFileSync(api, 'utf8');
    const inSource = [...src.matchAll(/"(hybridgw_[a-z0-9_]+)[ {"]/g)].map((m) => m[1]);
    for (const n of new Set(inSource)) assert.ok(names.includes(n), `${n} (src/api/api.c) missing from metric-lists/hybridgw.txt`);
    for (const f of LISTS.hybridgw.filter((x) => !x.pending)) {
      assert.ok(inSource.includes(f.name), `${f.name} is listed (not pending) but not in src/api/api.c`);
    }
  });

  for (const name of ['vllm.txt', 'dcgm.txt']) {
    it(`${name} is the shared reference list, unchanged (when the shared folder is present)`, (t) => {
      const shared = path.join(SHARED_LISTS_DIR, name);
      const copy = fs.readFileSync(path.join(LISTS_DIR, name), 'utf8');
      assert.ok(copy.length > 0);
      if (!fs.existsSync(shared)) {
        t.skip(`${shared} not present`);
        return;
      }
      assert.equal(copy, fs.readFileSync(shared, 'utf8'), `metric-lists/${name} differs from ${shared}: copy it again`);
    });
  }
});

describe('observability: dashboards', () => {
  it('has the gateway, vLLM and GPU dashboards with distinct uids', () => {
    for (const f of ['hybridgw-gateway.json', 'vllm.json', 'gpu.json']) assert.ok(dashboardFiles.includes(f), `missing dashboards/${f}`);
    const uids = dashboardFiles.map((f) => dashboard(f).uid);
    assert.equal(new Set(uids).size, uids.length, `duplicate uids: ${uids}`);
  });

  for (const f of dashboardFiles) {
    describe(f, () => {
      const d = dashboard(f);
      const panels = allPanels(d);
      const vars = (d.templating?.list ?? []) as Array<Record<string, any>>;

      it('is an exported dashboard model: id null, uid, title, schemaVersion 36+, lean', () => {
        assert.equal(d.id, null);
        assert.match(d.uid, /^[a-zA-Z0-9_-]{1,40}$/);
        assert.ok(typeof d.title === 'string' && d.title.length > 0);
        assert.ok(d.schemaVersion >= 36 && d.schemaVersion <= 41, `schemaVersion ${d.schemaVersion}`);
        assert.ok(fs.statSync(path.join(DASH_DIR, f)).size < 256 * 1024, 'keep dashboards lean (ConfigMap and CloudFormation limits)');
        assert.equal(JSON.stringify(d).includes('snapshot'), false, 'no embedded snapshots');
      });

      it('picks its Prometheus through a "datasource" variable', () => {
        const ds = vars.find((v) => v.name === 'datasource');
        assert.ok(ds, 'no datasource variable');
        assert.equal(ds!.type, 'datasource');
        assert.equal(ds!.query, 'prometheus');
        for (const v of vars.filter((x) => x.type === 'query')) {
          assert.equal(v.datasource?.uid, '${datasource}', `variable ${v.name}`);
        }
      });

      it('has unique panel ids, and every panel a datasource and a query', () => {
        const ids = panels.map((p) => p.id);
        assert.ok(ids.every((i) => Number.isInteger(i)), 'panel without an integer id');
        assert.equal(new Set(ids).size, ids.length, `duplicate panel ids in ${ids}`);
        const data = panels.filter((p) => p.type !== 'row');
        assert.ok(data.length >= 5, 'too few panels');
        for (const p of data) {
          const what = `panel ${p.id} "${p.title}"`;
          assert.ok(p.title, `${what}: no title`);
          assert.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.h > 0, `${what}: no gridPos`);
          const pds = p.datasource;
          assert.ok(pds && (pds.uid === '${datasource}' || pds.type === 'prometheus'), `${what}: datasource ${JSON.stringify(pds)}`);
          assert.ok(Array.isArray(p.targets) && p.targets.length > 0, `${what}: no targets`);
          for (const t of p.targets) {
            assert.ok(typeof t.expr === 'string' && t.expr.trim().length > 0, `${what} ${t.refId}: empty expr`);
            assert.ok(t.refId, `${what}: target without refId`);
            if (t.datasource) assert.equal(t.datasource.uid, '${datasource}', `${what} ${t.refId}: target datasource`);
          }
          const refIds = p.targets.map((t: Record<string, any>) => t.refId);
          assert.equal(new Set(refIds).size, refIds.length, `${what}: duplicate refIds`);
        }
      });

      it('uses only the template variables it defines', () => {
        const defined = new Set(vars.map((v) => v.name));
        for (const q of QUERIES.filter((x) => x.dashboard === f)) {
          for (const m of q.expr.matchAll(/\$\{?(\w+)\}?/g)) {
            if (m[1].startsWith('__')) continue;
            assert.ok(defined.has(m[1]), `${q.where}: $${m[1]} is not a variable of ${f}`);
          }
        }
      });
    });
  }

  it('covers every hybridgw family (gateway), the required vLLM and DCGM names', () => {
    const used = (f: string) => new Set(QUERIES.filter((q) => q.dashboard === f).flatMap((q) => promqlRefs(q.expr).metrics));
    const family = (n: string) => n.replace(/_(bucket|sum|count)$/, '');
    const gw = new Set([...used('hybridgw-gateway.json')].map(family));
    for (const f of LISTS.hybridgw) assert.ok(gw.has(f.name), `hybridgw-gateway.json does not show ${f.name}`);
    const vllm = new Set([...used('vllm.json')].map(family));
    for (const n of ['vllm:num_requests_waiting', 'vllm:num_requests_running', 'vllm:kv_cache_usage_perc', 'vllm:time_to_first_token_seconds',
      'vllm:inter_token_latency_seconds', 'vllm:prompt_tokens_total', 'vllm:generation_tokens_total', 'vllm:num_preemptions_total',
      'vllm:prefix_cache_hits_total', 'vllm:prefix_cache_queries_total']) assert.ok(vllm.has(n), `vllm.json does not show ${n}`);
    const gpu = used('gpu.json');
    for (const n of ['DCGM_FI_DEV_GPU_UTIL', 'DCGM_FI_DEV_FB_USED', 'DCGM_FI_DEV_FB_FREE', 'DCGM_FI_DEV_GPU_TEMP', 'DCGM_FI_DEV_POWER_USAGE',
      'DCGM_FI_DEV_SM_CLOCK', 'DCGM_FI_DEV_XID_ERRORS']) assert.ok(gpu.has(n), `gpu.json does not show ${n}`);
  });
});

describe('observability: rules', () => {
  it('every alert has a severity, a summary, a description and a for:', () => {
    const alerts = RULES.filter((r) => r.rule.alert);
    assert.ok(alerts.length >= 10);
    const names = alerts.map((r) => r.rule.alert);
    assert.equal(new Set(names).size, names.length, 'duplicate alert names');
    for (const { file, rule } of alerts) {
      const what = `${file} ${rule.alert}`;
      assert.match(rule.alert, /^[A-Z][A-Za-z0-9]+$/, what);
      assert.ok(['critical', 'warning', 'info'].includes(rule.labels?.severity), `${what}: severity ${rule.labels?.severity}`);
      assert.ok(rule.annotations?.summary, `${what}: no summary`);
      assert.ok(rule.annotations?.description, `${what}: no description`);
      assert.match(String(rule.for ?? ''), /^\d+[smh]$/, `${what}: for: ${rule.for}`);
    }
  });

  it('alerts on what the runbook needs', () => {
    const byMetric = (m: string) => RULES.filter((r) => r.rule.alert && promqlRefs(String(r.rule.expr)).metrics.some((x) => x.startsWith(m)));
    for (const m of ['hybridgw_requests_total', 'hybridgw_request_duration_seconds_bucket', 'hybridgw_time_to_first_token_seconds_bucket',
      'hybridgw_route_decisions_total', 'hybridgw_fallbacks_total', 'hybridgw_circuit_state', 'hybridgw_backend_up', 'hybridgw_trace_spans_total',
      'hybridgw_config_reloads_total', 'vllm:num_requests_waiting', 'vllm:kv_cache_usage_perc', 'DCGM_FI_DEV_FB_USED', 'DCGM_FI_DEV_XID_ERRORS']) {
      assert.ok(byMetric(m).length > 0, `no alert on ${m}`);
    }
    const circuit = RULES.find((r) => r.rule.alert === 'HybridgwCircuitOpen');
    assert.equal(circuit?.rule.for, '2m');
    assert.match(String(circuit?.rule.expr), /hybridgw_circuit_state\s*==\s*1/);
    // the spend-burn alert works on hybridgw_cost_usd_total; per-key and per-team
    // budget alerts need budget metrics the gateway does not export yet
    const burn = RULES.find((r) => r.rule.alert === 'HybridgwSpendBurnHigh');
    assert.ok(burn, 'a spend-burn alert');
    assert.deepEqual(promqlRefs(String(burn?.rule.expr)).metrics, ['hybridgw_cost_usd_total']);
  });

  for (const f of ruleFiles) {
    it(`promtool check rules ${f}`, (t) => {
      if (!PROMTOOL) {
        t.skip(NO_PROMTOOL);
        return;
      }
      const r = promtool(['check', 'rules', path.join(RULES_DIR, f)]);
      assert.equal(r.status, 0, r.out);
    });
  }
});

describe('observability: metric names and labels', () => {
  it('every metric a dashboard or rule uses is listed (hybridgw.txt, vllm.txt, dcgm.txt)', () => {
    const problems: string[] = [];
    let n = 0;
    for (const q of QUERIES) {
      for (const m of promqlRefs(q.expr).metrics) {
        n++;
        const k = lookup(m, RECORDED);
        if (!k.ok) problems.push(`${q.where}: ${m}: ${k.why}`);
      }
    }
    assert.ok(n > 50, `only ${n} metric uses found: is the extraction broken?`);
    assert.deepEqual(problems, []);
  });

  it('every label a query matches, groups by or shows in a legend exists on its metrics', () => {
    const problems: string[] = [];
    for (const q of QUERIES) {
      const r = promqlRefs(q.expr);
      const known = r.metrics.map((m) => lookup(m, RECORDED));
      if (known.some((k) => !k.ok || k.labels === null)) continue; // unknown labels: not checkable
      const all = new Set([...TARGET_LABELS, ...r.created, ...known.flatMap((k) => k.labels!)]);
      for (const [metric, label] of r.matchers) {
        const k = metric ? lookup(metric, RECORDED) : null;
        const allowed = k?.labels ? new Set([...TARGET_LABELS, ...k.labels]) : all;
        if (label !== '__name__' && !allowed.has(label)) problems.push(`${q.where}: ${metric}{${label}}: no such label`);
      }
      for (const label of r.grouping) if (!all.has(label)) problems.push(`${q.where}: by/on (${label}): no such label`);
      for (const m of (q.legend ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
        if (!all.has(m[1])) problems.push(`${q.where}: legend {{${m[1]}}}: no such label`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it('every dashboard query is valid PromQL (promtool check rules on them as recording rules)', (t) => {
    if (!PROMTOOL) {
      t.skip(NO_PROMTOOL);
      return;
    }
    const qs = QUERIES.filter((q) => q.dashboard);
    const file = path.join(tempDir('dashboard-promql'), 'dashboards.rules.yaml');
    fs.writeFileSync(file, YAML.stringify({
      groups: [{ name: 'dashboard-queries', rules: qs.map((q, i) => ({ record: `dashboard_query:${i}`, expr: grafanaToPromql(q.expr) })) }],
    }));
    const r = promtool(['check', 'rules', file]);
    if (r.status !== 0) {
      const idx = [...r.out.matchAll(/group "dashboard-queries", rule (\d+)/g)].map((m) => Number(m[1]) - 1);
      assert.fail(`${r.out}\n${idx.map((i) => `${qs[i]?.where}: ${qs[i]?.expr}`).join('\n')}`);
    }
  });
});

// ---- alert behaviour: promtool test rules ------------------------------------------------------

/** Unit tests of the alerts (promtool's format); series values per 1m step. */
const RULE_TESTS = {
  evaluation_interval: '1m',
  tests: [
    {
      name: 'gateway: 5xx share, circuit, backend health, spill, fallbacks',
      interval: '1m',
      input_series: [
        // 60 ok + 10 failed requests a minute: 14% 5xx
        { series: 'hybridgw_requests_total{route="chat_completions",tier="local",backend="local-a",status="200"}', values: '0+60x40' },
        { series: 'hybridgw_requests_total{route="chat_completions",tier="local",backend="local-a",status="502"}', values: '0+10x40' },
        // open from minute 5 on
        { series: 'hybridgw_circuit_state{backend="local-a",url="http://a:8000",instance="gw-0"}', values: '0 0 0 0 0 1 1 1 1 1 1 1' },
        // one URL of two down: warning only after 5m; the backend keeps a healthy URL
        { series: 'hybridgw_backend_up{backend="local-a",url="http://a:8000"}', values: '1 1 0 0 0 0 0 0 0 0 0 0' },
        { series: 'hybridgw_backend_up{backend="local-a",url="http://b:8000"}', values: '1x12' },
        // half the decisions spill
        { series: 'hybridgw_route_decisions_total{stage="spill",label="none",tier="frontier"}', values: '0+30x40' },
        { series: 'hybridgw_route_decisions_total{stage="classifier",label="code",tier="local"}', values: '0+30x40' },
        { series: 'hybridgw_fallbacks_total{from="local-a",to="frontier-b",reason="connect"}', values: '0+1x40' },
        // 1 USD a minute on the frontier: 1,440 USD a day projected
        { series: 'hybridgw_cost_usd_total{tier="frontier",backend="claude"}', values: '0+1x100' },
      ],
      alert_rule_test: [
        { eval_time: '4m', alertname: 'HybridgwHighErrorRate', exp_alerts: [] },
        { eval_time: '10m', alertname: 'HybridgwSpendBurnHigh', exp_alerts: [] },
        { eval_time: '80m', alertname: 'HybridgwSpendBurnHigh', exp_alerts: [{ exp_labels: { severity: 'warning' } }] },
        { eval_time: '12m', alertname: 'HybridgwHighErrorRate', exp_alerts: [{ exp_labels: { severity: 'critical' } }] },
        { eval_time: '6m', alertname: 'HybridgwCircuitOpen', exp_alerts: [] },
        { eval_time: '8m', alertname: 'HybridgwCircuitOpen', exp_alerts: [{ exp_labels: { severity: 'warning', backend: 'local-a', url: 'http://a:8000', instance: 'gw-0' } }] },
        { eval_time: '9m', alertname: 'HybridgwBackendUrlDown', exp_alerts: [{ exp_labels: { severity: 'warning', backend: 'local-a', url: 'http://a:8000' } }] },
        { eval_time: '9m', alertname: 'HybridgwBackendDown', exp_alerts: [] },
        { eval_time: '35m', alertname: 'HybridgwHighSpillRate', exp_alerts: [{ exp_labels: { severity: 'warning' } }] },
        // 1 fallback per 70 requests: 1.4%, under 10%
        { eval_time: '35m', alertname: 'HybridgwHighFallbackRate', exp_alerts: [] },
      ],
    },
    {
      name: 'gateway: healthy traffic raises nothing',
      interval: '1m',
      input_series: [
        { series: 'hybridgw_requests_total{route="chat_completions",tier="local",backend="local-a",status="200"}', values: '0+100x40' },
        { series: 'hybridgw_requests_total{route="chat_completions",tier="local",backend="local-a",status="500"}', values: '0+1x40' },
        { series: 'hybridgw_route_decisions_total{stage="spill",label="none",tier="frontier"}', values: '0+1x40' },
        { series: 'hybridgw_route_decisions_total{stage="classifier",label="code",tier="local"}', values: '0+99x40' },
        { series: 'hybridgw_backend_up{backend="local-a",url="http://a:8000"}', values: '1x40' },
        { series: 'hybridgw_circuit_state{backend="local-a",url="http://a:8000"}', values: '0x40' },
        { series: 'hybridgw_trace_spans_total{result="exported"}', values: '0+100x40' },
        { series: 'hybridgw_trace_spans_total{result="dropped"}', values: '0x40' },
        { series: 'hybridgw_config_reloads_total{result="ok"}', values: '0 1 1 1 1 1 1 1 1 1 1' },
      ],
      alert_rule_test: ['HybridgwHighErrorRate', 'HybridgwHighSpillRate', 'HybridgwBackendDown', 'HybridgwCircuitOpen', 'HybridgwTraceSpansDropped', 'HybridgwConfigReloadFailed']
        .map((alertname) => ({ eval_time: '35m', alertname, exp_alerts: [] })),
    },
    {
      name: 'gateway: a whole backend down, dropped spans, a failed reload, slow first tokens',
      interval: '1m',
      input_series: [
        { series: 'hybridgw_backend_up{backend="frontier-b",url="https://api"}', values: '1 0 0 0 0 0' },
        { series: 'hybridgw_trace_spans_total{result="dropped"}', values: '0+5x20' },
        { series: 'hybridgw_config_reloads_total{result="error",instance="gw-0"}', values: '0 0 1 1 1 1' },
        // every first token in the (5, 10] bucket
        { series: 'hybridgw_time_to_first_token_seconds_bucket{tier="local",backend="local-a",le="5"}', values: '0x20' },
        { series: 'hybridgw_time_to_first_token_seconds_bucket{tier="local",backend="local-a",le="10"}', values: '0+10x20' },
        { series: 'hybridgw_time_to_first_token_seconds_bucket{tier="local",backend="local-a",le="+Inf"}', values: '0+10x20' },
      ],
      alert_rule_test: [
        { eval_time: '4m', alertname: 'HybridgwBackendDown', exp_alerts: [{ exp_labels: { severity: 'critical', backend: 'frontier-b' } }] },
        { eval_time: '16m', alertname: 'HybridgwTraceSpansDropped', exp_alerts: [{ exp_labels: { severity: 'warning', result: 'dropped' } }] },
        { eval_time: '4m', alertname: 'HybridgwConfigReloadFailed', exp_alerts: [{ exp_labels: { severity: 'warning', result: 'error', instance: 'gw-0' } }] },
        { eval_time: '17m', alertname: 'HybridgwHighTTFT', exp_alerts: [{ exp_labels: { severity: 'warning', tier: 'local' } }] },
      ],
    },
    {
      name: 'vLLM and GPU',
      interval: '1m',
      input_series: [
        { series: 'vllm:num_requests_waiting{model_name="qwen-coder",instance="v0"}', values: '0+5x30' },
        { series: 'vllm:kv_cache_usage_perc{model_name="qwen-coder",instance="v0"}', values: '0.97x30' },
        { series: 'vllm:kv_cache_usage_perc{model_name="qwen-coder",instance="v1"}', values: '0.5x30' },
        { series: 'DCGM_FI_DEV_FB_USED{gpu="0",Hostname="g1"}', values: '79000x30' },
        { series: 'DCGM_FI_DEV_FB_FREE{gpu="0",Hostname="g1"}', values: '1000x30' },
        { series: 'DCGM_FI_DEV_FB_USED{gpu="1",Hostname="g1"}', values: '72000x30' },
        { series: 'DCGM_FI_DEV_FB_FREE{gpu="1",Hostname="g1"}', values: '8000x30' },
        { series: 'DCGM_FI_DEV_XID_ERRORS{gpu="1",Hostname="g1"}', values: '0 0 0 79 79 79 79' },
      ],
      alert_rule_test: [
        { eval_time: '25m', alertname: 'VllmQueueGrowing', exp_alerts: [{ exp_labels: { severity: 'warning', model_name: 'qwen-coder' } }] },
        { eval_time: '25m', alertname: 'VllmQueueBacklog', exp_alerts: [{ exp_labels: { severity: 'warning', model_name: 'qwen-coder' } }] },
        { eval_time: '12m', alertname: 'VllmKVCacheNearFull', exp_alerts: [{ exp_labels: { severity: 'warning', model_name: 'qwen-coder', instance: 'v0' } }] },
        { eval_time: '12m', alertname: 'GpuMemoryNearFull', exp_alerts: [{ exp_labels: { severity: 'warning', gpu: '0', Hostname: 'g1' } }] },
        { eval_time: '5m', alertname: 'GpuXidError', exp_alerts: [{ exp_labels: { severity: 'critical', gpu: '1', Hostname: 'g1' } }] },
      ],
    },
  ],
};

describe('observability: alert behaviour (promtool test rules)', () => {
  it('alerts fire on the failures they describe and stay quiet on healthy traffic', (t) => {
    if (!PROMTOOL) {
      t.skip(NO_PROMTOOL);
      return;
    }
    const dir = tempDir('rule-tests');
    // promtool compares the annotations of fired alerts too; the tests pin labels only, so they
    // run against copies of the rule files without annotations.
    const ruleCopies = ruleFiles.map((f) => {
      const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(RULES_DIR, f), 'utf8')).map((d) => d.toJS());
      const groups = docs.flatMap((o: any) => (o?.kind === 'PrometheusRule' ? o.spec.groups : o?.groups ?? []));
      for (const g of groups) for (const r of g.rules) delete r.annotations;
      const out = path.join(dir, f);
      fs.writeFileSync(out, YAML.stringify({ groups }));
      return out;
    });
    const test = { rule_files: ruleCopies, ...RULE_TESTS };
    const file = path.join(dir, 'alerts.test.yaml');
    fs.writeFileSync(file, YAML.stringify(test));
    const r = promtool(['test', 'rules', file], dir);
    assert.equal(r.status, 0, r.out);
  });
});
