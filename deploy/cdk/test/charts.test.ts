import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as YAML from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Service, ServiceAccount } from 'kubernetes-models/v1';
import { resolveConfig } from '../lib/config';
import { gatewayValues } from '../lib/gateway-stack';
import { vllmValues } from '../lib/models-stack';
import { CHARTS_DIR, REPO_ROOT, byKind, helm, one, renderChart, tempDir } from './helpers';

type Obj = Record<string, any>;

const BUILTIN: Record<string, { new(data: any): { validate(): void } }> = {
  'apps/v1/Deployment': Deployment,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/Ingress': Ingress,
};

/** CRDs: the fields we rely on, checked by hand (no OpenAPI schema offline). */
const CRD_CHECKS: Record<string, (o: Obj) => void> = {
  'monitoring.coreos.com/v1/ServiceMonitor': (o) => {
    assert.ok(o.spec.selector.matchLabels && Object.keys(o.spec.selector.matchLabels).length > 0, 'ServiceMonitor selector');
    assert.ok(Array.isArray(o.spec.endpoints) && o.spec.endpoints.length > 0);
    for (const e of o.spec.endpoints) {
      assert.equal(typeof e.port, 'string', 'endpoint port must be a named port');
      assert.equal(e.path, '/metrics');
      assert.match(e.interval, /^\d+(s|m)$/);
    }
    assert.deepEqual(o.spec.namespaceSelector.matchNames, [o.metadata.namespace]);
  },
  'keda.sh/v1alpha1/ScaledObject': (o) => {
    assert.equal(o.spec.scaleTargetRef.kind, 'Deployment');
    assert.ok(Number.isInteger(o.spec.minReplicaCount) && Number.isInteger(o.spec.maxReplicaCount));
    assert.ok(o.spec.minReplicaCount <= o.spec.maxReplicaCount);
    assert.ok(Array.isArray(o.spec.triggers) && o.spec.triggers.length > 0);
    for (const tr of o.spec.triggers) {
      for (const v of Object.values(tr.metadata)) assert.equal(typeof v, 'string', 'KEDA trigger metadata values must be strings');
    }
  },
};

/** Validates every rendered object: Kubernetes schemas for built-ins, field checks for CRDs. */
function validateAll(objs: Obj[]): void {
  assert.ok(objs.length > 0, 'nothing rendered');
  for (const o of objs) {
    const key = `${o.apiVersion}/${o.kind}`;
    assert.ok(o.metadata?.name, `${key} without a name`);
    assert.ok(o.metadata?.namespace, `${key} ${o.metadata.name} without a namespace`);
    if (BUILTIN[key]) {
      assert.doesNotThrow(() => new BUILTIN[key](o).validate(), `${key} ${o.metadata.name} fails the Kubernetes schema`);
    } else if (CRD_CHECKS[key]) {
      CRD_CHECKS[key](o);
    } else {
      assert.fail(`unexpected object ${key}: add a schema or a CRD check`);
    }
  }
}

function container(dep: Obj, name: string): Obj {
  const c = dep.spec.template.spec.containers.find((x: Obj) => x.name === name);
  assert.ok(c, `container ${name} missing`);
  return c;
}

/** helm template expected to fail; returns stderr. */
function renderFails(chart: string, values: Obj): string {
  const file = path.join(tempDir('bad-values'), 'values.json');
  fs.writeFileSync(file, JSON.stringify(values));
  const r = helm(['template', 'bad', path.join(CHARTS_DIR, chart), '-f', file]);
  assert.notEqual(r.status, 0, `helm template unexpectedly accepted ${JSON.stringify(values)}`);
  return r.stderr;
}

const cfg = resolveConfig();

describe('helm lint --strict', () => {
  for (const chart of ['hybridgw', 'vllm']) {
    it(`${chart} lints clean`, () => {
      const r = helm(['lint', '--strict', path.join(CHARTS_DIR, chart)]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    });
    it(`${chart} has a values.schema.json and no remote dependencies`, () => {
      assert.ok(fs.existsSync(path.join(CHARTS_DIR, chart, 'values.schema.json')));
      const meta = YAML.parse(fs.readFileSync(path.join(CHARTS_DIR, chart, 'Chart.yaml'), 'utf8'));
      assert.equal(meta.apiVersion, 'v2');
      assert.equal(meta.dependencies, undefined, 'no subcharts');
      assert.ok(!fs.existsSync(path.join(CHARTS_DIR, chart, 'charts')), 'no vendored subcharts');
    });
  }
});

describe('hybridgw chart', () => {
  const values = gatewayValues(cfg, '123456789012.dkr.ecr.us-east-1.amazonaws.com/hybridgw/hybridgw');
  const objs = renderChart('hybridgw', 'hybridgw', 'hybridgw', values);
  const dep = one(objs, 'Deployment');
  const c = container(dep, 'hybridgw');

  it('renders valid Kubernetes objects (as the Gateway stack configures it)', () => {
    validateAll(objs);
    const kinds = objs.map((o) => o.kind).sort();
    assert.deepEqual(kinds, ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'Ingress', 'PodDisruptionBudget', 'Service', 'ServiceAccount', 'ServiceMonitor']);
  });

  it('runs `hybridgw serve -c /etc/hybridgw/hybridgw.yaml` with the ConfigMap mounted there', () => {
    assert.deepEqual([...c.command, ...c.args], ['hybridgw', 'serve', '-c', '/etc/hybridgw/hybridgw.yaml']);
    const mount = c.volumeMounts.find((m: Obj) => m.mountPath === '/etc/hybridgw');
    const vol = dep.spec.template.spec.volumes.find((v: Obj) => v.name === mount.name);
    assert.equal(vol.configMap.name, one(objs, 'ConfigMap').metadata.name);
    assert.equal(mount.readOnly, true);
  });

  it('renders the gateway config file with listen ports, drain deadline and ${ENV} secrets', () => {
    const file = YAML.parse(one(objs, 'ConfigMap').data['hybridgw.yaml']);
    assert.equal(file.listen, '0.0.0.0:8080');
    assert.equal(file.admin_listen, '0.0.0.0:9090');
    assert.equal(file.limits.shutdown_timeout, '120s');
    assert.equal(file.shutdown_timeout, undefined);
    assert.equal(file.backends.gpt.api_key, '${OPENAI_API_KEY:-}');
    assert.equal(file.auth.keys[0].key, '${HYBRIDGW_DEV_KEY}');
    assert.deepEqual(file.backends['qwen-coder'].urls, ['http://vllm-qwen-coder.models.svc:8000']);
    assert.equal(file.ledger.database, '${HYBRIDGW_DATABASE_URL}', 'the PostgreSQL URL comes from the environment');
  });

  it('renders a config file the gateway itself accepts (hybridgw check-config, when built)', (t) => {
    const bin = path.join(REPO_ROOT, 'build', 'hybridgw');
    if (!fs.existsSync(bin)) {
      t.skip('build/hybridgw not built: run the C build first to enable this check');
      return;
    }
    const file = path.join(tempDir('gwcfg'), 'hybridgw.yaml');
    fs.writeFileSync(file, one(objs, 'ConfigMap').data['hybridgw.yaml']);
    const env = {
      PATH: process.env.PATH,
      HYBRIDGW_DEV_KEY: 'test-only',
      // What the ledger ExternalSecret template produces (see database.test.ts).
      HYBRIDGW_DATABASE_URL: 'postgres://hybridgw:p%40ss%3Aw%2Frd@ledger.example.internal:5432/hybridgw?sslmode=require',
    };
    const r = spawnSync(bin, ['check-config', file], { encoding: 'utf8', env });
    assert.equal(r.status, 0, `hybridgw check-config rejected the chart's config:\n${r.stdout}${r.stderr}`);
  });

  it('is hardened: non-root, read-only root FS, no capabilities, no privilege escalation', () => {
    const pod = dep.spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.ok(pod.securityContext.runAsUser > 0);
    assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.equal(pod.automountServiceAccountToken, false);
    for (const m of c.volumeMounts) {
      if (m.mountPath !== '/etc/hybridgw') assert.ok(pod.volumes.find((v: Obj) => v.name === m.name).emptyDir, `${m.mountPath} writable but not an emptyDir`);
    }
  });

  it('probes /healthz (liveness) and /readyz (readiness) on 8080, exposes 9090 for /metrics', () => {
    const ports = Object.fromEntries(c.ports.map((p: Obj) => [p.name, p.containerPort]));
    assert.deepEqual(ports, { http: 8080, admin: 9090 });
    assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'http' });
    assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'http' });
    const sm = one(objs, 'ServiceMonitor');
    assert.equal(sm.spec.endpoints[0].port, 'admin');
    const svcPorts = one(objs, 'Service').spec.ports.map((p: Obj) => [p.name, p.port]);
    assert.deepEqual(svcPorts, [['http', 8080], ['admin', 9090]]);
  });

  it('drains on SIGTERM: preStop sleep, then a grace period longer than shutdown_timeout', () => {
    const sleep = c.lifecycle.preStop.sleep.seconds;
    assert.ok(sleep >= 5);
    assert.equal(dep.spec.template.spec.terminationGracePeriodSeconds, sleep + 120 + 5);
    const ing = one(objs, 'Ingress');
    assert.equal(ing.metadata.annotations['alb.ingress.kubernetes.io/target-group-attributes'], 'deregistration_delay.timeout_seconds=120');
  });

  it('reads API keys from the existing Secret, never from literals', () => {
    const env = Object.fromEntries(c.env.map((e: Obj) => [e.name, e]));
    for (const k of ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'HYBRIDGW_DEV_KEY']) {
      assert.equal(env[k].value, undefined);
      assert.deepEqual({ name: env[k].valueFrom.secretKeyRef.name, key: env[k].valueFrom.secretKeyRef.key }, { name: 'hybridgw-api-keys', key: k });
    }
    assert.equal(env.HYBRIDGW_DEV_KEY.valueFrom.secretKeyRef.optional, false);
  });

  it('reads the ledger database URL from the ExternalSecret-made Secret hybridgw-ledger-db', () => {
    const env = c.env.find((e: Obj) => e.name === 'HYBRIDGW_DATABASE_URL');
    assert.ok(env, 'HYBRIDGW_DATABASE_URL not in the container env');
    assert.equal(env.value, undefined);
    assert.deepEqual(env.valueFrom.secretKeyRef, { name: 'hybridgw-ledger-db', key: 'HYBRIDGW_DATABASE_URL', optional: false });
  });

  it('rolls pods when the config changes (checksum annotation)', () => {
    const sum = dep.spec.template.metadata.annotations['checksum/config'];
    assert.match(sum, /^[0-9a-f]{64}$/);
    const changed = renderChart('hybridgw', 'hybridgw', 'hybridgw', { ...values, config: { ...(values.config as Obj), workers: 4 } });
    assert.notEqual(one(changed, 'Deployment').spec.template.metadata.annotations['checksum/config'], sum);
  });

  it('autoscales with an HPA and keeps a PodDisruptionBudget; HPA owns replicas', () => {
    const hpa = one(objs, 'HorizontalPodAutoscaler');
    assert.equal(hpa.spec.scaleTargetRef.name, dep.metadata.name);
    assert.equal(hpa.spec.minReplicas, 2);
    assert.equal(dep.spec.replicas, undefined);
    assert.equal(one(objs, 'PodDisruptionBudget').spec.minAvailable, 1);
  });

  it('exposes an ALB Ingress (HTTP without a certificate, HTTPS with one)', () => {
    const ing = one(objs, 'Ingress');
    const a = ing.metadata.annotations;
    assert.equal(ing.spec.ingressClassName, 'alb');
    assert.equal(a['alb.ingress.kubernetes.io/target-type'], 'ip');
    assert.equal(a['alb.ingress.kubernetes.io/healthcheck-path'], '/readyz');
    assert.equal(a['alb.ingress.kubernetes.io/listen-ports'], '[{"HTTP":80}]');
    assert.match(a['alb.ingress.kubernetes.io/load-balancer-attributes'], /idle_timeout\.timeout_seconds=300/);
    const tls = renderChart('hybridgw', 'hybridgw', 'hybridgw', {
      ...values, ingress: { ...(values.ingress as Obj), alb: { ...(values.ingress as Obj).alb, certificateArn: 'arn:aws:acm:us-east-1:123456789012:certificate/abc' } },
    });
    validateAll(tls);
    const ta = one(tls, 'Ingress').metadata.annotations;
    assert.equal(ta['alb.ingress.kubernetes.io/listen-ports'], '[{"HTTP":80},{"HTTPS":443}]');
    assert.equal(ta['alb.ingress.kubernetes.io/ssl-redirect'], '443');
    assert.equal(ta['alb.ingress.kubernetes.io/certificate-arn'], 'arn:aws:acm:us-east-1:123456789012:certificate/abc');
  });

  it('renders with its own defaults too (no Ingress; one replica, as the default ledger is SQLite)', () => {
    const d = renderChart('hybridgw', 'gw', 'default');
    validateAll(d);
    assert.equal(byKind(d, 'Ingress').length, 0);
    assert.equal(one(d, 'Deployment').spec.replicas, 1);
    assert.equal(byKind(d, 'HorizontalPodAutoscaler').length, 0);
    assert.equal(byKind(d, 'PodDisruptionBudget').length, 0, 'a PDB on one replica blocks node drains');
    assert.match(YAML.parse(one(d, 'ConfigMap').data['hybridgw.yaml']).ledger.database, /^sqlite:/);
  });
});

describe('hybridgw chart: SQLite ledger with several replicas is refused', () => {
  const pgUrl = { config: { ledger: { database: '${HYBRIDGW_DATABASE_URL}' } } };
  const refusals: Array<[string, Obj, RegExp]> = [
    ['replicaCount 2', { replicaCount: 2 }, /up to 2 gateway replicas can run \(replicaCount\)/],
    ['the HPA (maxReplicas 10)', { hpa: { enabled: true } }, /up to 10 gateway replicas can run \(hpa\.maxReplicas\)/],
    ['the HPA past 1 with replicaCount 1', { replicaCount: 1, hpa: { enabled: true, minReplicas: 1, maxReplicas: 3 } }, /up to 3/],
    ['a relative sqlite file', { replicaCount: 2, config: { ledger: { database: 'sqlite://ledger.db' } } }, /SQLite/],
  ];
  for (const [what, values, mentions] of refusals) {
    it(`fails helm template with ${what}`, () => {
      const stderr = renderFails('hybridgw', values);
      assert.match(stderr, /config\.ledger\.database is SQLite/, stderr);
      assert.match(stderr, /own budgets, rate limits/, stderr);
      assert.match(stderr, /allowSqliteWithReplicas: true/, stderr);
      assert.match(stderr, mentions, stderr);
    });
  }

  it('renders one SQLite replica, or an HPA capped at 1', () => {
    validateAll(renderChart('hybridgw', 'gw', 'default', { replicaCount: 1 }));
    const capped = renderChart('hybridgw', 'gw', 'default', { hpa: { enabled: true, minReplicas: 1, maxReplicas: 1 } });
    assert.equal(one(capped, 'HorizontalPodAutoscaler').spec.maxReplicas, 1);
  });

  it('renders several SQLite replicas with allowSqliteWithReplicas: true', () => {
    const d = renderChart('hybridgw', 'gw', 'default', { replicaCount: 3, allowSqliteWithReplicas: true });
    assert.equal(one(d, 'Deployment').spec.replicas, 3);
  });

  it('renders several replicas and the HPA with a PostgreSQL ledger from the environment', () => {
    const d = renderChart('hybridgw', 'gw', 'default', {
      ...pgUrl, replicaCount: 2, hpa: { enabled: true, minReplicas: 2, maxReplicas: 6 }, pdb: { enabled: true, minAvailable: 1 },
      secretEnv: [
        { name: 'HYBRIDGW_DEV_KEY', key: 'HYBRIDGW_DEV_KEY', optional: false },
        { name: 'HYBRIDGW_DATABASE_URL', key: 'HYBRIDGW_DATABASE_URL', secret: 'my-db-url', optional: false },
      ],
    });
    validateAll(d);
    assert.equal(one(d, 'HorizontalPodAutoscaler').spec.maxReplicas, 6);
    const env = Object.fromEntries(container(one(d, 'Deployment'), 'hybridgw').env.map((e: Obj) => [e.name, e.valueFrom.secretKeyRef.name]));
    assert.deepEqual(env, { HYBRIDGW_DEV_KEY: 'hybridgw-api-keys', HYBRIDGW_DATABASE_URL: 'my-db-url' });
  });
});

describe('vllm chart', () => {
  const model = cfg.models.list[0];
  const values = vllmValues(cfg, model, 'vllm', 'weights-bucket');
  const objs = renderChart('vllm', 'vllm-qwen-coder', 'models', values);
  const dep = one(objs, 'Deployment');
  const pod = dep.spec.template.spec;
  const c = container(dep, 'vllm');

  it('renders valid Kubernetes objects (as the Models stack configures it)', () => {
    validateAll(objs);
    assert.deepEqual(objs.map((o) => o.kind).sort(), ['Deployment', 'PodDisruptionBudget', 'ScaledObject', 'Service', 'ServiceMonitor']);
    assert.equal(dep.metadata.name, 'vllm-qwen-coder');
    assert.equal(one(objs, 'Service').metadata.name, 'vllm-qwen-coder', 'the gateway config points at this name');
  });

  it('lands on the GPU pool: toleration, node selector, nvidia.com/gpu request and limit', () => {
    assert.deepEqual(pod.tolerations, [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    assert.deepEqual(pod.nodeSelector, { 'hybridgw.io/pool': 'gpu' });
    assert.equal(c.resources.limits['nvidia.com/gpu'], 1);
    assert.equal(c.resources.requests['nvidia.com/gpu'], 1);
  });

  it('serves under --served-model-name with /dev/shm in memory and a model cache volume', () => {
    assert.ok(c.args.includes('--served-model-name=qwen-coder'));
    assert.equal(c.args[0], 'Qwen/Qwen2.5-Coder-7B-Instruct');
    assert.ok(c.args.includes('--tensor-parallel-size=1'));
    const vol = (mountPath: string) => pod.volumes.find((v: Obj) => v.name === c.volumeMounts.find((m: Obj) => m.mountPath === mountPath).name);
    assert.deepEqual(vol('/dev/shm').emptyDir, { medium: 'Memory', sizeLimit: '8Gi' });
    assert.deepEqual(vol('/models').emptyDir, { sizeLimit: '60Gi' });
  });

  it('probes /health on 8000: a long startup probe for weight loading, then readiness/liveness', () => {
    assert.equal(c.ports[0].containerPort, 8000);
    for (const p of [c.startupProbe, c.readinessProbe, c.livenessProbe]) assert.deepEqual(p.httpGet, { path: '/health', port: 'http' });
    assert.ok(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold >= 900, 'startup budget below 15 minutes');
  });

  it('runs non-root without privilege escalation or capabilities', () => {
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.equal(pod.automountServiceAccountToken, false, 'no AWS token unless weights come from S3');
  });

  it('scales with KEDA on vllm:num_requests_waiting for this model, slowly enough for cold starts', () => {
    const so = one(objs, 'ScaledObject');
    assert.equal(so.apiVersion, 'keda.sh/v1alpha1');
    assert.equal(so.spec.scaleTargetRef.name, dep.metadata.name);
    assert.equal(so.spec.minReplicaCount, 1);
    assert.equal(so.spec.maxReplicaCount, 4);
    const tr = so.spec.triggers[0];
    assert.equal(tr.type, 'prometheus');
    assert.equal(tr.metadata.query, 'sum(vllm:num_requests_waiting{model_name="qwen-coder"})');
    assert.equal(tr.metadata.threshold, '8');
    assert.equal(tr.metadata.serverAddress, 'http://kube-prometheus-stack-prometheus.monitoring.svc:9090');
    const b = so.spec.advanced.horizontalPodAutoscalerConfig.behavior;
    assert.ok(b.scaleUp.stabilizationWindowSeconds > 0, 'scale-up stabilization window');
    assert.deepEqual(b.scaleUp.policies, [{ type: 'Pods', value: 1, periodSeconds: 300 }]);
    assert.ok(b.scaleDown.stabilizationWindowSeconds >= 600);
    assert.equal(dep.spec.replicas, undefined, 'KEDA owns replicas');
  });

  it('scrapes /metrics and limits voluntary disruption', () => {
    assert.equal(one(objs, 'ServiceMonitor').spec.endpoints[0].port, 'http');
    assert.equal(one(objs, 'PodDisruptionBudget').spec.maxUnavailable, 1);
  });

  it('fetches weights from S3 into the cache volume when source is s3', () => {
    const s3 = renderChart('vllm', 'vllm-llama', 'models', {
      ...values,
      model: { ...(values.model as Obj), name: 'llama', servedModelName: 'llama', source: 's3', s3Uri: 's3://weights-bucket/llama/' },
      cache: { type: 'pvc', claimName: 'model-cache' },
    });
    validateAll(s3);
    const d = one(s3, 'Deployment');
    const init = d.spec.template.spec.initContainers[0];
    assert.deepEqual(init.args, ['s3://weights-bucket/llama/', '/models/weights/llama']);
    assert.equal(container(d, 'vllm').args[0], '/models/weights/llama');
    assert.equal(d.spec.template.spec.automountServiceAccountToken, true);
    assert.deepEqual(d.spec.template.spec.volumes.find((v: Obj) => v.name === 'model-cache').persistentVolumeClaim, { claimName: 'model-cache' });
    assert.match(one(s3, 'ScaledObject').spec.triggers[0].metadata.query, /model_name="llama"/);
  });

  it('renders with its own defaults too', () => {
    validateAll(renderChart('vllm', 'v', 'default'));
  });
});

describe('values.schema.json rejects bad values (helm template fails)', () => {
  const cases: Array<[string, string, Obj, RegExp]> = [
    ['vllm', 'an odd GPU count', { model: { name: 'm', id: 'x/y', servedModelName: 'm', source: 'huggingface', maxModelLen: 4096, gpus: 3 } }, /gpus/],
    ['vllm', 'an unknown weights source', { model: { name: 'm', id: 'x/y', servedModelName: 'm', source: 'ftp', maxModelLen: 4096, gpus: 1 } }, /source/],
    ['vllm', 'a string replica bound', { keda: { enabled: true, minReplicas: 1, maxReplicas: 'four', prometheusServerAddress: 'http://p:9090', waitingRequestsTarget: 8 } }, /maxReplicas/],
    ['vllm', 'the latest tag', { image: { repository: 'vllm/vllm-openai', tag: 'latest' } }, /tag/],
    ['vllm', 'a misspelled key', { replcias: 2 }, /replcias/],
    ['hybridgw', 'a literal API key in the config', { config: { backends: { claude: { tier: 'frontier', provider: 'anthropic', api_key: 'sk-ant-not-a-real-key' } } } }, /api_key/],
    ['hybridgw', 'a writable root filesystem', { securityContext: { readOnlyRootFilesystem: false, allowPrivilegeEscalation: false } }, /readOnlyRootFilesystem/],
    ['hybridgw', 'a privileged admin port', { ports: { http: 8080, admin: 90 } }, /admin/],
    ['hybridgw', 'a listen address set by hand', { config: { listen: '127.0.0.1:1' } }, /config/],
    ['hybridgw', 'a drain deadline set outside shutdownTimeoutSeconds', { config: { limits: { shutdown_timeout: '5s' } } }, /limits/],
    ['hybridgw', 'an unknown tier', { config: { backends: { x: { tier: 'medium', provider: 'vllm' } } } }, /tier/],
    ['hybridgw', 'a literal database password', { config: { ledger: { database: 'postgres://hybridgw:hunter2@db:5432/hybridgw' } } }, /database/],
    ['hybridgw', 'a database password parameter', { config: { ledger: { database: 'postgres://db:5432/hybridgw?user=u&password=hunter2' } } }, /database/],
    ['hybridgw', 'a non-boolean SQLite override', { allowSqliteWithReplicas: 'yes' }, /allowSqliteWithReplicas/],
  ];
  for (const [chart, what, values, mentions] of cases) {
    it(`${chart}: ${what}`, () => {
      const stderr = renderFails(chart, values);
      assert.match(stderr, /schema/i, stderr);
      assert.match(stderr, mentions, stderr);
    });
  }
  it('vllm: s3 source without a URI fails the template guard', () => {
    const stderr = renderFails('vllm', { model: { name: 'm', id: 'x/y', servedModelName: 'm', source: 's3', maxModelLen: 4096, gpus: 1 } });
    assert.match(stderr, /s3Uri is required/);
  });
});
