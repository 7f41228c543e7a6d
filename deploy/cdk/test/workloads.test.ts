import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as YAML from 'yaml';
import { OBSERVABILITY_DIR } from '../lib/helm';
import { loadDashboards, loadRuleFiles } from '../lib/observability-stack';
import { fastApp, flatten, helmCharts, manifests, resourcesOf, tempDir, template } from './helpers';

describe('Models stack', () => {
  const t = template(fastApp().models);
  const charts = helmCharts(t);

  it('deploys one vllm release per model from the local chart asset (no chart repository)', () => {
    assert.equal(charts.length, 1);
    const c = charts[0];
    assert.equal(c.props.Release, 'vllm-qwen-coder');
    assert.equal(c.props.Namespace, 'models');
    assert.equal(c.props.Repository, undefined);
    assert.equal(c.props.Chart, undefined);
    assert.match(flatten(c.props.ChartAssetURL), /^s3:\/\//);
    assert.equal(c.values.model.servedModelName, 'qwen-coder');
    assert.equal(c.values.keda.enabled, true);
    assert.match(c.values.keda.prometheusServerAddress, /^http:\/\/kube-prometheus-stack-prometheus\.monitoring\.svc:9090$/);
    assert.deepEqual(c.values.serviceAccount, { create: false, name: 'vllm' });
  });

  it('gives the vllm service account read access to the weights bucket (IRSA)', () => {
    t.resourceCountIs('AWS::S3::Bucket', 1);
    const statements = resourcesOf(t, 'AWS::IAM::Policy').flatMap(([, r]) => r.Properties.PolicyDocument.Statement);
    const read = statements.find((s) => [s.Action].flat().includes('s3:GetObject*'));
    assert.ok(read, 'no S3 read grant');
    assert.ok(![s3Actions(read)].flat().some((a: string) => /Put|Delete/.test(a)), 'weights access must be read-only');
  });

  it('builds an s3:// source for models stored in the bucket', () => {
    const t2 = template(fastApp({
      overrides: {
        models: {
          weightsBucketName: 'my-weights',
          list: [{
            name: 'llama', hfModelId: 'meta-llama/Llama-3.1-8B-Instruct', servedModelName: 'llama', source: 's3', s3Prefix: 'llama-3.1-8b/',
            gpusPerReplica: 1, maxModelLen: 16384, minReplicas: 1, maxReplicas: 2, waitingRequestsTarget: 4, extraArgs: [],
            gpuHourlyUsd: 0.805, contextWindow: 16384, cache: { type: 'emptyDir', sizeGiB: 40 },
          }],
        },
      },
    }).models);
    t2.resourceCountIs('AWS::S3::Bucket', 0);
    const c = helmCharts(t2)[0];
    assert.equal(c.values.model.source, 's3');
    assert.equal(c.values.model.s3Uri, 's3://my-weights/llama-3.1-8b/');
  });
});

function s3Actions(st: Record<string, any>): string[] {
  return [st.Action].flat();
}

describe('Gateway stack', () => {
  const built = fastApp();
  const t = template(built.gateway);
  const c = helmCharts(t)[0];

  it('deploys the hybridgw chart from its asset, with an ALB Ingress', () => {
    assert.equal(helmCharts(t).length, 1);
    assert.equal(c.props.Release, 'hybridgw');
    assert.match(flatten(c.props.ChartAssetURL), /^s3:\/\//);
    assert.equal(c.values.ingress.enabled, true);
    assert.equal(c.values.ingress.className, 'alb');
    assert.equal(c.values.ingress.alb.scheme, 'internet-facing');
  });

  it('generates the gateway config from the platform config, secrets only as ${ENV}', () => {
    const cfg = c.values.config;
    assert.deepEqual(cfg.backends['qwen-coder'].urls, ['http://vllm-qwen-coder.models.svc:8000']);
    assert.equal(cfg.backends['qwen-coder'].tier, 'local');
    assert.equal(cfg.backends.gpt.api_key, '${OPENAI_API_KEY:-}');
    assert.equal(cfg.backends.claude.provider, 'anthropic', 'the anthropic frontier is on by default');
    assert.equal(cfg.backends.claude.api_key, '${ANTHROPIC_API_KEY:-}');
    assert.equal(cfg.auth.keys[0].key, '${HYBRIDGW_DEV_KEY}');
    assert.equal(c.values.existingSecret, 'hybridgw-api-keys');
    const raw = JSON.stringify(t.toJSON());
    assert.doesNotMatch(raw, /sk-ant-|sk-proj-|sk-[A-Za-z0-9]{20,}/, 'no key material in the template');
  });

  it('keeps API keys in Secrets Manager, synced by External Secrets through IRSA', () => {
    t.resourceCountIs('AWS::SecretsManager::Secret', 1);
    t.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: { GenerateStringKey: 'HYBRIDGW_DEV_KEY' },
    });
    const objs = manifests(t);
    const store = objs.find((o) => o.kind === 'SecretStore');
    const ext = objs.find((o) => o.kind === 'ExternalSecret');
    assert.ok(store && ext);
    assert.equal(store!.apiVersion, 'external-secrets.io/v1');
    assert.equal(store!.spec.provider.aws.service, 'SecretsManager');
    assert.equal(store!.spec.provider.aws.auth.jwt.serviceAccountRef.name, 'hybridgw-secrets-reader');
    assert.equal(ext!.spec.target.name, 'hybridgw-api-keys');
    assert.equal(ext!.spec.secretStoreRef.name, store!.metadata.name);
    const ns = objs.find((o) => o.kind === 'Namespace');
    assert.equal(ns!.metadata.labels['elbv2.k8s.aws/pod-readiness-gate-inject'], 'enabled');
  });

  it('leaves the Anthropic backend out when disabled', () => {
    const c3 = helmCharts(template(fastApp({ overrides: { gateway: { frontier: { anthropic: { enabled: false } } } } }).gateway))[0];
    assert.equal(c3.values.config.backends.claude, undefined);
  });

  it('pulls the image from the immutable, scanned ECR repository of the Cluster stack', () => {
    template(built.cluster).hasResourceProperties('AWS::ECR::Repository', {
      RepositoryName: 'hybridgw/hybridgw',
      ImageTagMutability: 'IMMUTABLE',
      ImageScanningConfiguration: { ScanOnPush: true },
    });
    t.resourceCountIs('AWS::ECR::Repository', 0);
    assert.match(flatten(c.values.image.repository), /IMPORT_.*GatewayRepository/);
    const own = helmCharts(template(fastApp({ overrides: { gateway: { image: { repository: 'registry.example.com/hybridgw' } } } }).gateway))[0];
    assert.equal(own.values.image.repository, 'registry.example.com/hybridgw');
  });

  it('renders HTTPS listener settings when a certificate is configured', () => {
    const arn = 'arn:aws:acm:us-east-1:123456789012:certificate/abc';
    const c2 = helmCharts(template(fastApp({ overrides: { gateway: { ingress: { certificateArn: arn } } } }).gateway))[0];
    assert.equal(c2.values.ingress.alb.certificateArn, arn);
  });
});

describe('Observability stack', () => {
  it('installs kube-prometheus-stack (CRDs from Addons) and the DCGM exporter on GPU nodes', () => {
    const t = template(fastApp().observability);
    const charts = helmCharts(t);
    const kps = charts.find((x) => x.props.Chart === 'kube-prometheus-stack');
    const dcgm = charts.find((x) => x.props.Chart === 'dcgm-exporter');
    assert.ok(kps && dcgm);
    assert.equal(kps!.values.crds.enabled, false);
    assert.equal(kps!.values.prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues, false);
    assert.equal(kps!.values.prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues, false);
    assert.equal(kps!.values.grafana.sidecar.dashboards.label, 'grafana_dashboard');
    assert.equal(kps!.values.grafana.adminPassword, null, 'no well-known Grafana password');
    assert.deepEqual(dcgm!.values.tolerations, [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    assert.equal(dcgm!.values.serviceMonitor.enabled, true);
    assert.equal(charts.find((x) => x.props.Chart === 'langfuse'), undefined, 'Langfuse is off by default');
  });

  it('installs Langfuse when the flag is on', () => {
    const t = template(fastApp({ overrides: { observability: { langfuse: { enabled: true } } } }).observability);
    const lf = helmCharts(t).find((x) => x.props.Chart === 'langfuse');
    assert.ok(lf);
    assert.equal(lf!.values.langfuse.salt.secretKeyRef.name, 'langfuse-secrets');
  });

  it('loads every dashboard and rule file from a directory into the template', () => {
    const dir = tempDir('obs');
    fs.mkdirSync(path.join(dir, 'dashboards'));
    fs.mkdirSync(path.join(dir, 'rules'));
    fs.writeFileSync(path.join(dir, 'dashboards', 'Gateway Overview.json'), JSON.stringify({ uid: 'gw-overview', title: 'Gateway', panels: [] }));
    fs.writeFileSync(path.join(dir, 'dashboards', 'vllm.json'), JSON.stringify({ uid: 'vllm', title: 'vLLM', panels: [] }));
    fs.writeFileSync(path.join(dir, 'dashboards', 'README.md'), '# not a dashboard');
    fs.writeFileSync(path.join(dir, 'rules', 'gateway.yaml'), 'groups:\n  - name: hybridgw.gateway\n    rules:\n      - alert: HybridgwDown\n        expr: up{job="hybridgw"} == 0\n');
    fs.writeFileSync(path.join(dir, 'rules', 'vllm.yaml'), [
      'apiVersion: monitoring.coreos.com/v1', 'kind: PrometheusRule', 'metadata: { name: x }',
      'spec:', '  groups:', '    - name: vllm.queue', '      rules:', '        - record: vllm:waiting:sum', '          expr: sum(vllm:num_requests_waiting)', '',
    ].join('\n'));
    const t = template(fastApp({ observabilityDir: dir }).observability);
    const objs = manifests(t);
    const cms = objs.filter((o) => o.kind === 'ConfigMap');
    assert.deepEqual(cms.map((o) => o.metadata.name).sort(), ['hybridgw-dashboard-gateway-overview', 'hybridgw-dashboard-vllm']);
    for (const cm of cms) assert.equal(cm.metadata.labels.grafana_dashboard, '1');
    const rules = objs.filter((o) => o.kind === 'PrometheusRule');
    assert.deepEqual(rules.map((o) => o.spec.groups[0].name).sort(), ['hybridgw.gateway', 'vllm.queue']);
  });

  it('fails synth on a broken dashboard instead of shipping it', () => {
    const dir = tempDir('obs-bad');
    fs.mkdirSync(path.join(dir, 'dashboards'));
    fs.writeFileSync(path.join(dir, 'dashboards', 'broken.json'), '{ "title": ');
    assert.throws(() => loadDashboards(dir), /broken\.json: not valid JSON/);
  });

  it('ships every file present in deploy/observability/ (the contract with the dashboards/alerts issue)', () => {
    const t = template(fastApp().observability);
    const raw = JSON.stringify(t.toJSON());
    const objs = manifests(t);
    const dashboards = fs.readdirSync(path.join(OBSERVABILITY_DIR, 'dashboards')).filter((f) => f.endsWith('.json'));
    const rules = fs.readdirSync(path.join(OBSERVABILITY_DIR, 'rules')).filter((f) => /\.ya?ml$/.test(f));
    assert.equal(loadDashboards(OBSERVABILITY_DIR).length, dashboards.length);
    assert.equal(loadRuleFiles(OBSERVABILITY_DIR).length, rules.length);
    for (const f of dashboards) {
      const cm = objs.find((o) => o.kind === 'ConfigMap' && o.data && f in o.data);
      assert.ok(cm, `dashboard ${f} not in the template`);
      assert.deepEqual(JSON.parse(cm!.data[f]), JSON.parse(fs.readFileSync(path.join(OBSERVABILITY_DIR, 'dashboards', f), 'utf8')));
    }
    for (const f of rules) {
      const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(OBSERVABILITY_DIR, 'rules', f), 'utf8')).map((d) => d.toJS()).filter(Boolean);
      for (const doc of docs) {
        const groups = (doc.kind === 'PrometheusRule' ? doc.spec.groups : doc.groups) as Array<{ name: string }>;
        for (const g of groups) assert.ok(raw.includes(JSON.stringify(g.name).slice(1, -1)), `rule group ${g.name} from ${f} not in the template`);
      }
    }
  });
});
