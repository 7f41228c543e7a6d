import * as fs from 'fs';
import * as path from 'path';
import { Stack, StackProps } from 'aws-cdk-lib';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import { Construct } from 'constructs';
import * as YAML from 'yaml';
import { HybridgwConfig, POOL_LABEL } from './config';
import { OBSERVABILITY_DIR, thirdPartyChart } from './helm';
import { GPU_NODE_AFFINITY, GPU_TOLERATIONS } from './nodegroups-stack';

export interface ObservabilityStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly cluster: eks.ICluster;
  /** Defaults to deploy/observability (tests point it at a temp dir). */
  readonly observabilityDir?: string;
}

/** Label the Grafana sidecar watches for dashboard ConfigMaps. */
export const DASHBOARD_LABEL = 'grafana_dashboard';

export interface LoadedDashboard { readonly file: string; readonly name: string; readonly json: string }
export interface LoadedRuleFile { readonly file: string; readonly name: string; readonly specs: Array<Record<string, unknown>> }

/** Kubernetes object name from a file name: lowercase, [a-z0-9-], max 63. */
export function objectName(prefix: string, file: string): string {
  const base = path.basename(file).replace(/\.(json|ya?ml)$/i, '').toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  return `${prefix}-${base}`.slice(0, 63).replace(/-+$/, '');
}

/** Every deploy/observability/dashboards/*.json, parsed (to fail synth on broken JSON). */
export function loadDashboards(dir: string): LoadedDashboard[] {
  const d = path.join(dir, 'dashboards');
  if (!fs.existsSync(d)) return [];
  return fs.readdirSync(d).filter((f) => f.endsWith('.json')).sort().map((f) => {
    const text = fs.readFileSync(path.join(d, f), 'utf8');
    try {
      JSON.parse(text);
    } catch (e) {
      throw new Error(`observability/dashboards/${f}: not valid JSON: ${(e as Error).message}`);
    }
    return { file: f, name: objectName('hybridgw-dashboard', f), json: text };
  });
}

/**
 * Every deploy/observability/rules/*.yaml (or .yml). A file may hold a Prometheus rule file
 * (`groups: [...]`) or a whole PrometheusRule object; several YAML documents are allowed.
 */
export function loadRuleFiles(dir: string): LoadedRuleFile[] {
  const d = path.join(dir, 'rules');
  if (!fs.existsSync(d)) return [];
  return fs.readdirSync(d).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => {
    const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(d, f), 'utf8'));
    const specs: Array<Record<string, unknown>> = [];
    for (const doc of docs) {
      if (doc.errors.length) throw new Error(`observability/rules/${f}: ${doc.errors[0].message}`);
      const obj = doc.toJS() as Record<string, unknown> | null;
      if (obj === null || obj === undefined) continue;
      const spec = obj.kind === 'PrometheusRule' ? (obj.spec as Record<string, unknown>) : obj;
      if (!spec || !Array.isArray(spec.groups)) {
        throw new Error(`observability/rules/${f}: expected a rule file with 'groups:' or a PrometheusRule`);
      }
      specs.push({ groups: spec.groups });
    }
    return { file: f, name: objectName('hybridgw-rules', f), specs };
  });
}

/**
 * Layer 8: observability.
 * - kube-prometheus-stack (Prometheus, Alertmanager, Grafana, node-exporter, kube-state-metrics),
 *   selecting every ServiceMonitor/PrometheusRule in the cluster (CRDs come from the AddOns stack);
 * - DCGM exporter on the GPU nodes (GPU utilisation, memory, power, XIDs);
 * - one ConfigMap per dashboard in deploy/observability/dashboards, picked up by Grafana's sidecar,
 *   and one PrometheusRule per file in deploy/observability/rules;
 * - optional Langfuse (observability.langfuse.enabled).
 */
export class ObservabilityStack extends Stack {
  public readonly kubePrometheusStack: eks.HelmChart;
  public readonly dcgmExporter: eks.HelmChart;
  public readonly langfuse?: eks.HelmChart;

  constructor(scope: Construct, id: string, props: ObservabilityStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const o = cfg.observability;
    const { cluster } = props;
    const ns = o.kubePrometheusStack.namespace;
    const system = { [POOL_LABEL]: 'system' };
    const dir = props.observabilityDir ?? OBSERVABILITY_DIR;

    const gp3 = new eks.KubernetesManifest(this, 'Gp3StorageClass', {
      cluster,
      overwrite: true,
      manifest: [{
        apiVersion: 'storage.k8s.io/v1',
        kind: 'StorageClass',
        metadata: { name: 'gp3' },
        provisioner: 'ebs.csi.aws.com',
        parameters: { type: 'gp3', encrypted: 'true' },
        volumeBindingMode: 'WaitForFirstConsumer',
        allowVolumeExpansion: true,
        reclaimPolicy: 'Delete',
      }],
    });

    this.kubePrometheusStack = thirdPartyChart(this, 'KubePrometheusStack', cluster, o.kubePrometheusStack, {
      release: 'kube-prometheus-stack',
      values: {
        crds: { enabled: false },
        prometheus: {
          prometheusSpec: {
            serviceMonitorSelectorNilUsesHelmValues: false,
            podMonitorSelectorNilUsesHelmValues: false,
            ruleSelectorNilUsesHelmValues: false,
            retention: o.prometheusRetention,
            nodeSelector: system,
            storageSpec: {
              volumeClaimTemplate: {
                spec: {
                  storageClassName: 'gp3',
                  accessModes: ['ReadWriteOnce'],
                  resources: { requests: { storage: `${o.prometheusStorageGiB}Gi` } },
                },
              },
            },
          },
        },
        alertmanager: { alertmanagerSpec: { nodeSelector: system } },
        prometheusOperator: { nodeSelector: system },
        'kube-state-metrics': { nodeSelector: system },
        // node-exporter must run on every node, GPU nodes included.
        'prometheus-node-exporter': { tolerations: [{ operator: 'Exists' }] },
        grafana: {
          // null removes the chart's well-known default; Grafana then generates a random one.
          adminPassword: null,
          nodeSelector: system,
          sidecar: { dashboards: { enabled: true, label: DASHBOARD_LABEL, labelValue: '1', searchNamespace: 'ALL' } },
        },
      },
    });
    this.kubePrometheusStack.node.addDependency(gp3);

    this.dcgmExporter = thirdPartyChart(this, 'DcgmExporter', cluster, o.dcgmExporter, {
      release: 'dcgm-exporter',
      createNamespace: false,
      values: {
        tolerations: GPU_TOLERATIONS,
        affinity: GPU_NODE_AFFINITY,
        serviceMonitor: { enabled: true, interval: '15s' },
      },
    });
    this.dcgmExporter.node.addDependency(this.kubePrometheusStack);

    for (const d of loadDashboards(dir)) {
      const m = new eks.KubernetesManifest(this, `Dashboard-${d.name}`, {
        cluster,
        overwrite: true,
        manifest: [{
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: d.name, namespace: ns, labels: { [DASHBOARD_LABEL]: '1', 'app.kubernetes.io/part-of': 'hybridgw' } },
          data: { [d.file]: d.json },
        }],
      });
      m.node.addDependency(this.kubePrometheusStack);
    }

    for (const r of loadRuleFiles(dir)) {
      const m = new eks.KubernetesManifest(this, `Rules-${r.name}`, {
        cluster,
        overwrite: true,
        manifest: r.specs.map((spec, i) => ({
          apiVersion: 'monitoring.coreos.com/v1',
          kind: 'PrometheusRule',
          metadata: {
            name: r.specs.length > 1 ? `${r.name}-${i}` : r.name,
            namespace: ns,
            labels: { release: 'kube-prometheus-stack', 'app.kubernetes.io/part-of': 'hybridgw' },
          },
          spec,
        })),
      });
      m.node.addDependency(this.kubePrometheusStack);
    }

    if (o.langfuse.enabled) {
      const secret = o.langfuse.existingSecret;
      // Langfuse needs its own secrets (salt, NextAuth, encryption key, database passwords);
      // create `secret` in the langfuse namespace before enabling (deploy/README.md).
      this.langfuse = thirdPartyChart(this, 'Langfuse', cluster, o.langfuse.chart, {
        release: 'langfuse',
        timeout: undefined,
        values: {
          langfuse: {
            salt: { secretKeyRef: { name: secret, key: 'salt' } },
            encryptionKey: { secretKeyRef: { name: secret, key: 'encryption-key' } },
            nextauth: { secret: { secretKeyRef: { name: secret, key: 'nextauth-secret' } } },
            nodeSelector: system,
          },
          postgresql: { auth: { existingSecret: secret, secretKeys: { userPasswordKey: 'postgres-password', adminPasswordKey: 'postgres-password' } } },
          clickhouse: { auth: { existingSecret: secret, existingSecretKey: 'clickhouse-password' } },
          redis: { auth: { existingSecret: secret, existingSecretPasswordKey: 'redis-password' } },
        },
      });
      this.langfuse.node.addDependency(this.kubePrometheusStack);
    }
  }
}
