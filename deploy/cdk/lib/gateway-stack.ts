import { CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { HybridgwConfig } from './config';
import { localChart, namespace } from './helm';
import { modelServiceUrl } from './models-stack';

export interface GatewayStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly cluster: eks.ICluster;
  /** Where the image is pulled from when gateway.image.repository is not set (Cluster stack). */
  readonly repository?: ecr.IRepository;
}

/** Name of the Kubernetes Secret External Secrets writes and the chart reads. */
export const API_KEYS_K8S_SECRET = 'hybridgw-api-keys';
/** Keys expected in the Secrets Manager JSON secret (and so in the Kubernetes Secret). */
export const API_KEY_NAMES = ['HYBRIDGW_DEV_KEY', 'ANTHROPIC_API_KEY', 'OPENAI_API_KEY'] as const;

/**
 * Layer 6: the gateway.
 * - Secrets Manager secret with the API keys. The stack creates it with a generated
 *   HYBRIDGW_DEV_KEY and placeholder vendor keys; operators put the real vendor keys in with
 *   `aws secretsmanager put-secret-value` (README). Key material never enters a template, a
 *   chart value or the kubectl Lambda's logs;
 * - External Secrets: a SecretStore (IRSA, read-only on that one secret) and an ExternalSecret
 *   that keeps the Kubernetes Secret `hybridgw-api-keys` in sync (refresh 1h);
 * - deploy/charts/hybridgw with the gateway config generated from lib/config.ts, exposed by an
 *   ALB Ingress.
 */
export class GatewayStack extends Stack {
  public readonly apiKeys: secretsmanager.ISecret;
  public readonly release: eks.HelmChart;

  constructor(scope: Construct, id: string, props: GatewayStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const g = cfg.gateway;
    const { cluster } = props;

    const imageRepository = g.image.repository ?? props.repository?.repositoryUri;
    if (!imageRepository) throw new Error('gateway.image.repository is unset and no ECR repository was passed');

    this.apiKeys = g.apiKeysSecretName
      ? secretsmanager.Secret.fromSecretNameV2(this, 'ApiKeys', g.apiKeysSecretName)
      : new secretsmanager.Secret(this, 'ApiKeys', {
        secretName: `${cfg.clusterName}/hybridgw/api-keys`,
        description: 'hybridgw API keys (JSON: HYBRIDGW_DEV_KEY, ANTHROPIC_API_KEY, OPENAI_API_KEY)',
        generateSecretString: {
          // Placeholders, not keys: replace them after the first deploy (see deploy/README.md).
          secretStringTemplate: JSON.stringify({ ANTHROPIC_API_KEY: 'REPLACE_ME', OPENAI_API_KEY: 'REPLACE_ME' }),
          generateStringKey: 'HYBRIDGW_DEV_KEY',
          excludePunctuation: true,
          passwordLength: 40,
        },
      });

    const nsManifest = namespace(this, 'Namespace', cluster, g.namespace, {
      // ALB target health gates pod readiness during rollouts.
      'elbv2.k8s.aws/pod-readiness-gate-inject': 'enabled',
    });

    const esoSa = new eks.ServiceAccount(this, 'SecretsReaderServiceAccount', {
      cluster,
      name: 'hybridgw-secrets-reader',
      namespace: g.namespace,
      identityType: eks.IdentityType.IRSA,
    });
    esoSa.node.addDependency(nsManifest);
    this.apiKeys.grantRead(esoSa);

    const sync = new eks.KubernetesManifest(this, 'ApiKeysSync', {
      cluster,
      overwrite: true,
      manifest: [
        {
          apiVersion: 'external-secrets.io/v1',
          kind: 'SecretStore',
          metadata: { name: 'aws-secrets-manager', namespace: g.namespace },
          spec: {
            provider: {
              aws: {
                service: 'SecretsManager',
                region: this.region,
                auth: { jwt: { serviceAccountRef: { name: esoSa.serviceAccountName } } },
              },
            },
          },
        },
        {
          apiVersion: 'external-secrets.io/v1',
          kind: 'ExternalSecret',
          metadata: { name: API_KEYS_K8S_SECRET, namespace: g.namespace },
          spec: {
            refreshInterval: '1h',
            secretStoreRef: { kind: 'SecretStore', name: 'aws-secrets-manager' },
            target: { name: API_KEYS_K8S_SECRET, creationPolicy: 'Owner' },
            dataFrom: [{ extract: { key: this.apiKeys.secretName } }],
          },
        },
      ],
    });
    sync.node.addDependency(esoSa);

    this.release = localChart(this, 'Hybridgw', cluster, 'hybridgw', {
      release: 'hybridgw',
      namespace: g.namespace,
      values: gatewayValues(cfg, imageRepository),
    });
    this.release.node.addDependency(sync);

    new CfnOutput(this, 'ApiKeysSecretName', { value: this.apiKeys.secretName });
    new CfnOutput(this, 'IngressLookup', {
      value: `kubectl -n ${g.namespace} get ingress hybridgw -o jsonpath='{.status.loadBalancer.ingress[0].hostname}'`,
    });
  }
}

/**
 * The gateway's config file (format: config/hybridgw.example.yaml), generated from the platform
 * config. listen, admin_listen and limits.shutdown_timeout are added by the chart.
 */
export function gatewayConfig(cfg: HybridgwConfig): Record<string, unknown> {
  const backends: Record<string, unknown> = {};
  const models: Record<string, unknown> = {};
  for (const m of cfg.models.list) {
    backends[m.name] = {
      tier: 'local',
      provider: 'vllm',
      urls: [modelServiceUrl(cfg, m)],
      model: m.servedModelName,
      context_window: m.contextWindow,
      price: { gpu_hourly_usd: m.gpuHourlyUsd * m.gpusPerReplica, replicas: m.minReplicas },
    };
    // Backend names are already valid client model names; an alias adds a second one.
    if (m.alias) models[m.alias] = { backend: m.name };
  }
  const f = cfg.gateway.frontier;
  if (f.openai.enabled) {
    backends.gpt = {
      tier: 'frontier',
      provider: 'openai',
      url: 'https://api.openai.com/v1',
      api_key: '${OPENAI_API_KEY:-}',
      model: f.openai.model,
      health: { interval: 0 },
      price: { per_mtok: { input: 2.0, output: 8.0, cache_read: 0.5 } },
    };
  }
  if (f.anthropic.enabled) {
    backends.claude = {
      tier: 'frontier',
      provider: 'anthropic',
      url: 'https://api.anthropic.com',
      api_key: '${ANTHROPIC_API_KEY:-}',
      model: f.anthropic.model,
      health: { interval: 0 },
      price: { per_mtok: { input: 3.0, output: 15.0, cache_read: 0.3, cache_write: 3.75 } },
    };
  }
  return {
    workers: 'auto',
    log_level: 'info',
    access_log: 'stdout',
    limits: { max_body_bytes: '8MiB', max_header_bytes: '32KiB', header_timeout: '10s', idle_timeout: '75s' },
    auth: { keys: [{ name: 'dev', key: '${HYBRIDGW_DEV_KEY}' }] },
    backends,
    models,
    router: {
      default_tier: 'local',
      classifier: 'builtin',
      min_confidence: 0.55,
      routes: {
        code: 'local', summarization: 'local', extraction: 'local', classification: 'local',
        rewrite: 'local', chat: 'local', creative: 'local',
        reasoning: 'frontier', planning: 'frontier', judgment: 'frontier',
      },
      spill: { waiting_above: 8, kv_cache_above: 0.9, back_below: 4 },
      fallback: { local: ['frontier'], frontier: ['local'] },
    },
    ledger: { database: 'sqlite:///var/lib/hybridgw/ledger.db' },
  };
}

/** Values for the hybridgw release; exported so tests render the chart with exactly these. */
export function gatewayValues(cfg: HybridgwConfig, imageRepository: string): Record<string, unknown> {
  const g = cfg.gateway;
  return {
    image: { repository: imageRepository, tag: g.image.tag },
    existingSecret: API_KEYS_K8S_SECRET,
    shutdownTimeoutSeconds: g.shutdownTimeoutSeconds,
    config: gatewayConfig(cfg),
    hpa: { enabled: true, minReplicas: g.replicas.min, maxReplicas: g.replicas.max, targetCPUUtilizationPercentage: 70 },
    ingress: {
      enabled: g.ingress.enabled,
      className: 'alb',
      alb: {
        scheme: g.ingress.internetFacing ? 'internet-facing' : 'internal',
        certificateArn: g.ingress.certificateArn ?? '',
        inboundCidrs: g.ingress.inboundCidrs,
        idleTimeoutSeconds: g.ingress.idleTimeoutSeconds,
      },
    },
  };
}
