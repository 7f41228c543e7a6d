import { CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { HybridgwConfig } from './config';
import { ledgerSecretName } from './database-stack';
import { localChart, namespace } from './helm';
import { modelServiceUrl } from './models-stack';

export interface GatewayStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly cluster: eks.ICluster;
  /** Where the image is pulled from when gateway.image.repository is not set (Cluster stack). */
  readonly repository?: ecr.IRepository;
  /** The ledger database's Secrets Manager secret (Database stack); required when
   *  ledger.backend is 'postgres'. */
  readonly ledgerSecret?: secretsmanager.ISecret;
}

/** Name of the Kubernetes Secret External Secrets writes and the chart reads. */
export const API_KEYS_K8S_SECRET = 'hybridgw-api-keys';
/** Keys expected in the Secrets Manager JSON secret (and so in the Kubernetes Secret). */
export const API_KEY_NAMES = ['HYBRIDGW_DEV_KEY', 'ANTHROPIC_API_KEY', 'OPENAI_API_KEY'] as const;
/** Kubernetes Secret (written by External Secrets) holding only the ledger database URL. */
export const LEDGER_DB_K8S_SECRET = 'hybridgw-ledger-db';
/** Environment variable (and key of LEDGER_DB_K8S_SECRET) the gateway config interpolates. */
export const DATABASE_URL_ENV = 'HYBRIDGW_DATABASE_URL';

/**
 * External Secrets template (engine v2, Go text/template) that builds the libpq URL from the RDS
 * secret's JSON keys (username, password, host, port; written by RDS's secret attachment).
 * `urlquery` percent-encodes the password (the generated one has no space, so its `+` for a
 * space never applies); the database name is not secret and comes from lib/config.ts.
 */
export function databaseUrlTemplate(databaseName: string): string {
  return `postgres://{{ .username | urlquery }}:{{ .password | urlquery }}@{{ .host }}:{{ .port }}/${databaseName}?sslmode=require`;
}

/**
 * Layer 7: the gateway.
 * - Secrets Manager secret with the API keys. The stack creates it with a generated
 *   HYBRIDGW_DEV_KEY and placeholder vendor keys; operators put the real vendor keys in with
 *   `aws secretsmanager put-secret-value` (README). Key material never enters a template, a
 *   chart value or the kubectl Lambda's logs;
 * - External Secrets: a SecretStore (IRSA, read-only on that one secret) and an ExternalSecret
 *   that keeps the Kubernetes Secret `hybridgw-api-keys` in sync (refresh 1h);
 * - with ledger.backend 'postgres': a second SecretStore (its own IRSA service account, read-only
 *   on the RDS secret and nothing else) and an ExternalSecret whose template builds
 *   HYBRIDGW_DATABASE_URL into the Kubernetes Secret `hybridgw-ledger-db`; the gateway config
 *   says `ledger: { database: "${HYBRIDGW_DATABASE_URL}" }`. The password is only in Secrets
 *   Manager and in that Secret, never in a template, a chart value, an output or a log;
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

    let ledgerSync: eks.KubernetesManifest | undefined;
    if (cfg.ledger.backend === 'postgres') {
      if (!props.ledgerSecret) throw new Error("ledger.backend 'postgres' needs the Database stack's secret (ledgerSecret)");
      // A reader of its own: this store can read the database secret and nothing else.
      const dbSa = new eks.ServiceAccount(this, 'LedgerDbReaderServiceAccount', {
        cluster,
        name: 'hybridgw-ledger-db-reader',
        namespace: g.namespace,
        identityType: eks.IdentityType.IRSA,
      });
      dbSa.node.addDependency(nsManifest);
      props.ledgerSecret.grantRead(dbSa);
      ledgerSync = new eks.KubernetesManifest(this, 'LedgerDbUrlSync', {
        cluster,
        overwrite: true,
        manifest: [
          {
            apiVersion: 'external-secrets.io/v1',
            kind: 'SecretStore',
            metadata: { name: 'aws-secrets-manager-ledger-db', namespace: g.namespace },
            spec: {
              provider: {
                aws: {
                  service: 'SecretsManager',
                  region: this.region,
                  auth: { jwt: { serviceAccountRef: { name: dbSa.serviceAccountName } } },
                },
              },
            },
          },
          {
            apiVersion: 'external-secrets.io/v1',
            kind: 'ExternalSecret',
            metadata: { name: LEDGER_DB_K8S_SECRET, namespace: g.namespace },
            spec: {
              refreshInterval: '1h',
              secretStoreRef: { kind: 'SecretStore', name: 'aws-secrets-manager-ledger-db' },
              target: {
                name: LEDGER_DB_K8S_SECRET,
                creationPolicy: 'Owner',
                template: {
                  engineVersion: 'v2',
                  // Only the URL lands in the Kubernetes Secret, not the raw RDS fields.
                  mergePolicy: 'Replace',
                  type: 'Opaque',
                  data: { [DATABASE_URL_ENV]: databaseUrlTemplate(cfg.ledger.postgres.databaseName) },
                },
              },
              // The name is fixed by lib/config.ts; the ARN (an export) is only needed for IAM.
              dataFrom: [{ extract: { key: ledgerSecretName(cfg) } }],
            },
          },
        ],
      });
      ledgerSync.node.addDependency(dbSa);
    }

    this.release = localChart(this, 'Hybridgw', cluster, 'hybridgw', {
      release: 'hybridgw',
      namespace: g.namespace,
      values: gatewayValues(cfg, imageRepository),
    });
    this.release.node.addDependency(sync);
    if (ledgerSync) this.release.node.addDependency(ledgerSync);

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
    ledger: { database: ledgerDatabase(cfg) },
  };
}

/** `ledger.database` of the gateway config: the env reference for PostgreSQL (the URL with its
 *  password only exists in the pod's environment), the file URL for SQLite. */
export function ledgerDatabase(cfg: HybridgwConfig): string {
  return cfg.ledger.backend === 'postgres' ? `\${${DATABASE_URL_ENV}}` : cfg.ledger.sqliteUrl;
}

/** Container env from Secrets (chart value secretEnv): the API keys, plus the ledger URL. */
export function gatewaySecretEnv(cfg: HybridgwConfig): Array<Record<string, unknown>> {
  const env: Array<Record<string, unknown>> = API_KEY_NAMES.map((k) => ({ name: k, key: k, optional: k !== 'HYBRIDGW_DEV_KEY' }));
  if (cfg.ledger.backend === 'postgres') {
    env.push({ name: DATABASE_URL_ENV, key: DATABASE_URL_ENV, secret: LEDGER_DB_K8S_SECRET, optional: false });
  }
  return env;
}

/** Values for the hybridgw release; exported so tests render the chart with exactly these. */
export function gatewayValues(cfg: HybridgwConfig, imageRepository: string): Record<string, unknown> {
  const g = cfg.gateway;
  return {
    image: { repository: imageRepository, tag: g.image.tag },
    existingSecret: API_KEYS_K8S_SECRET,
    secretEnv: gatewaySecretEnv(cfg),
    shutdownTimeoutSeconds: g.shutdownTimeoutSeconds,
    config: gatewayConfig(cfg),
    replicaCount: g.replicas.min,
    hpa: { enabled: g.replicas.max > g.replicas.min, minReplicas: g.replicas.min, maxReplicas: g.replicas.max, targetCPUUtilizationPercentage: 70 },
    // A PDB with minAvailable 1 on a single replica would block every node drain.
    pdb: { enabled: g.replicas.min >= 2, minAvailable: 1 },
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
