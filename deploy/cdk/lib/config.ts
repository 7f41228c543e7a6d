/**
 * Every tunable value of the hybridgw platform lives in this module.
 *
 * Precedence (lowest to highest):
 *   1. DEFAULT_CONFIG below,
 *   2. the JSON object in CDK context key `hybridgw` (cdk.json or `-c hybridgw='{"natGateways":3}'`),
 *   3. overrides passed by code (tests).
 * Objects are deep-merged; arrays and scalars replace.
 *
 * Third-party chart pins: the versions below were the newest we could confirm when this was
 * written (2026-11). Nothing here is deployed by the offline tests, so re-check each pin with
 * `helm search repo <chart> --versions` (or `helm show chart oci://...`) before a first deploy.
 */

export interface ChartPin {
  /** Helm repository URL (https://... or oci://...). */
  readonly repository: string;
  /** Chart name inside the repository (empty for an oci:// URL that already names the chart). */
  readonly chart: string;
  /** Exact chart version. */
  readonly version: string;
  /** Namespace the release is installed into. */
  readonly namespace: string;
}

export interface NodeGroupConfig {
  readonly instanceTypes: string[];
  readonly minSize: number;
  readonly desiredSize: number;
  readonly maxSize: number;
  /** Root volume size in GiB. */
  readonly diskSizeGiB: number;
  readonly capacityType: 'ON_DEMAND' | 'SPOT';
}

export interface ModelConfig {
  /** Short name: Kubernetes object names (`vllm-<name>`) and the gateway backend name. */
  readonly name: string;
  /** Hugging Face model id, or the S3 prefix layout under `s3://<weightsBucket>/<s3Prefix>`. */
  readonly hfModelId: string;
  /** Extra name clients may use for this model (gateway `models:` entry); must differ from `name`. */
  readonly alias?: string;
  /** `--served-model-name`; also the `model_name` label on vLLM metrics (KEDA filters on it). */
  readonly servedModelName: string;
  /** Where the weights come from at pod start. */
  readonly source: 'huggingface' | 's3';
  /** Prefix inside the weights bucket when source is s3. */
  readonly s3Prefix?: string;
  readonly gpusPerReplica: number;
  readonly maxModelLen: number;
  readonly minReplicas: number;
  readonly maxReplicas: number;
  /** KEDA target: waiting requests per replica before a new replica is added. */
  readonly waitingRequestsTarget: number;
  /** Extra vLLM CLI args. */
  readonly extraArgs: string[];
  /** What one GPU-hour of this model costs (for the gateway's counterfactual-cost telemetry). */
  readonly gpuHourlyUsd: number;
  /** Context window the gateway should assume (usually = maxModelLen). */
  readonly contextWindow: number;
  /** Model cache volume: emptyDir on the node's disk, or a PVC the operator created. */
  readonly cache: { readonly type: 'emptyDir' | 'pvc'; readonly sizeGiB: number; readonly claimName?: string };
}

export interface LedgerPostgresConfig {
  /**
   * PostgreSQL version, 15 or 16: a major ("16": RDS picks its default minor and applies minor
   * upgrades in the maintenance window) or a full version ("16.8") to pin one.
   */
  readonly engineVersion: string;
  /** RDS instance class without the `db.` prefix. Graviton burstable by default; production
   *  with many replicas or high request rates: m7g.large (or larger) and multiAz. */
  readonly instanceType: string;
  /** gp3 storage; grows automatically up to maxAllocatedStorageGiB. */
  readonly allocatedStorageGiB: number;
  readonly maxAllocatedStorageGiB: number;
  /** A standby in a second AZ (doubles the instance and storage price). Production: true. */
  readonly multiAz: boolean;
  /** Automated backups (point-in-time recovery), 1..35 days. */
  readonly backupRetentionDays: number;
  /** RDS refuses to delete the instance (and so the stack) while this is on. */
  readonly deletionProtection: boolean;
  /** What a stack delete does with the instance: 'snapshot' (final snapshot, default),
   *  'retain' (keep it running), 'destroy' (gone, lab only). */
  readonly removalPolicy: 'snapshot' | 'retain' | 'destroy';
  readonly databaseName: string;
  /** Master user; its generated password lives only in Secrets Manager. */
  readonly username: string;
}

export interface HybridgwConfig {
  /** Prefix of every stack name: `<prefix>-Network`, `<prefix>-Cluster`, ... */
  readonly stackPrefix: string;
  readonly account?: string;
  readonly region: string;
  /**
   * Exactly the AZs to use. Explicit because a stack with a region but no account only gets
   * 2 AZs from `maxAzs: 3`, and because GPU instance types are not offered in every AZ
   * (check: `aws ec2 describe-instance-type-offerings --location-type availability-zone
   *  --filters Name=instance-type,Values=g6.xlarge`).
   */
  readonly availabilityZones: string[];
  readonly clusterName: string;
  readonly tags: Record<string, string>;

  readonly network: {
    readonly vpcCidr: string;
    /** /24 public subnets: load balancers and NAT only, no public IPs on launch. */
    readonly publicSubnetMask: number;
    /** /20 private subnets: pods take VPC IPs (VPC CNI), so size for density. */
    readonly privateSubnetMask: number;
    /**
     * NAT gateways. 1 (default) is cheapest but a single-AZ failure takes down egress (and so
     * frontier calls) for the whole cluster; production: one per AZ (= availabilityZones.length).
     */
    readonly natGateways: number;
    /** Interface endpoints cost ~$7.30/month per AZ each; they can be turned off for a lab. */
    readonly interfaceEndpoints: boolean;
  };

  readonly cluster: {
    /** e.g. "1.33". Must match the kubectl layer (see lib/cluster-stack.ts). */
    readonly kubernetesVersion: string;
    /** IAM principals (role ARNs) that get AmazonEKSClusterAdminPolicy through access entries. */
    readonly adminPrincipalArns: string[];
    /** CIDRs allowed to reach the public API endpoint. Empty = private endpoint only. */
    readonly publicEndpointCidrs: string[];
    readonly controlPlaneLogging: Array<'api' | 'audit' | 'authenticator' | 'controllerManager' | 'scheduler'>;
  };

  readonly nodeGroups: {
    readonly system: NodeGroupConfig;
    readonly gpu: NodeGroupConfig;
  };

  readonly karpenter: {
    readonly chart: ChartPin;
    /** EC2NodeClass AMI alias. Pin (e.g. al2023@v20261101) for production; @latest follows AWS. */
    readonly amiAlias: string;
    readonly gpuInstanceFamilies: string[];
    readonly gpuCapacityTypes: Array<'on-demand' | 'spot'>;
    /** NodePool limit on the sum of `nvidia.com/gpu` Karpenter may launch. */
    readonly gpuLimit: number;
    readonly cpuInstanceCategories: string[];
    readonly cpuCapacityTypes: Array<'on-demand' | 'spot'>;
    /** NodePool limit on vCPUs of CPU nodes. */
    readonly cpuLimit: number;
    readonly gpuNodeDiskGiB: number;
  };

  readonly addons: {
    readonly awsLoadBalancerController: ChartPin;
    readonly metricsServer: ChartPin;
    readonly keda: ChartPin;
    readonly nvidiaDevicePlugin: ChartPin;
    readonly externalSecrets: ChartPin;
    /** ServiceMonitor/PrometheusRule CRDs, installed before any chart that renders them. */
    readonly prometheusOperatorCrds: ChartPin;
  };

  readonly models: {
    readonly namespace: string;
    /** Bucket with model weights. Undefined: the stack creates one (retained on delete). */
    readonly weightsBucketName?: string;
    /** vLLM image (pin a tag; `latest` is never used). */
    readonly image: { readonly repository: string; readonly tag: string };
    /** Image used by the init container that copies weights from S3. */
    readonly s3SyncImage: { readonly repository: string; readonly tag: string };
    readonly list: ModelConfig[];
  };

  readonly gateway: {
    readonly namespace: string;
    /** repository undefined: the Cluster stack creates an ECR repository `<clusterName>/hybridgw`
     *  and the pods pull `<that repo>:<tag>`; push the image built from the root Dockerfile there. */
    readonly image: { readonly repository?: string; readonly tag: string };
    readonly replicas: { readonly min: number; readonly max: number };
    /** Secrets Manager secret holding ANTHROPIC_API_KEY, OPENAI_API_KEY, HYBRIDGW_DEV_KEY.
     *  Undefined: the stack creates `<clusterName>/hybridgw/api-keys` with placeholders. */
    readonly apiKeysSecretName?: string;
    readonly ingress: {
      readonly enabled: boolean;
      readonly internetFacing: boolean;
      /** ACM certificate for HTTPS on the ALB. Undefined: HTTP :80 only (lab use). */
      readonly certificateArn?: string;
      /** CIDRs allowed to reach the ALB. */
      readonly inboundCidrs: string[];
      /** ALB idle timeout; long enough for a slow stream between tokens. */
      readonly idleTimeoutSeconds: number;
    };
    /** Gateway drain budget on SIGTERM (config `shutdown_timeout`). */
    readonly shutdownTimeoutSeconds: number;
    /**
     * Frontier backends written into the gateway config (providers openai and anthropic; the
     * gateway translates between the OpenAI and Anthropic dialects). Turn one off if its key
     * is not in Secrets Manager.
     */
    readonly frontier: {
      readonly openai: { readonly enabled: boolean; readonly model: string };
      readonly anthropic: { readonly enabled: boolean; readonly model: string };
    };
  };

  /**
   * The gateway's spend store: virtual keys, budgets and open reservations, the rate-limit
   * counts replicas exchange, and the spend ledger (gateway config `ledger.database`).
   */
  readonly ledger: {
    /**
     * 'postgres' (default): an RDS PostgreSQL instance (the Database stack) shared by every
     * replica, so N replicas enforce one budget and one rate limit and the ledger outlives pods.
     * 'sqlite': a file on the pod's ephemeral disk, one per replica and lost with the pod; only
     * allowed with gateway.replicas.max 1 (the app refuses more at synth).
     */
    readonly backend: 'postgres' | 'sqlite';
    /** Used when backend is 'sqlite'. */
    readonly sqliteUrl: string;
    readonly postgres: LedgerPostgresConfig;
  };

  readonly observability: {
    readonly kubePrometheusStack: ChartPin;
    readonly dcgmExporter: ChartPin;
    readonly prometheusRetention: string;
    readonly prometheusStorageGiB: number;
    readonly langfuse: { readonly enabled: boolean; readonly chart: ChartPin; readonly existingSecret: string };
  };
}

export const DEFAULT_CONFIG: HybridgwConfig = {
  stackPrefix: 'Hybridgw',
  account: undefined,
  region: 'us-east-1',
  availabilityZones: ['us-east-1a', 'us-east-1b', 'us-east-1c'],
  clusterName: 'hybridgw',
  tags: { project: 'hybridgw', 'managed-by': 'aws-cdk' },

  network: {
    vpcCidr: '10.0.0.0/16',
    publicSubnetMask: 24,
    privateSubnetMask: 20,
    natGateways: 1,
    interfaceEndpoints: true,
  },

  cluster: {
    kubernetesVersion: '1.33',
    adminPrincipalArns: [],
    publicEndpointCidrs: ['0.0.0.0/0'],
    controlPlaneLogging: ['api', 'audit', 'authenticator'],
  },

  nodeGroups: {
    // Runs CoreDNS, controllers (Karpenter must not run on nodes it manages), Prometheus, gateway.
    system: { instanceTypes: ['m7i.large'], minSize: 2, desiredSize: 2, maxSize: 4, diskSizeGiB: 50, capacityType: 'ON_DEMAND' },
    // Baseline GPU capacity; Karpenter's GPU NodePool adds more under load.
    gpu: { instanceTypes: ['g6.xlarge'], minSize: 0, desiredSize: 1, maxSize: 2, diskSizeGiB: 200, capacityType: 'ON_DEMAND' },
  },

  karpenter: {
    chart: { repository: 'oci://public.ecr.aws/karpenter/karpenter', chart: '', version: '1.8.1', namespace: 'kube-system' },
    amiAlias: 'al2023@latest',
    gpuInstanceFamilies: ['g6', 'g6e', 'g5'],
    gpuCapacityTypes: ['on-demand'],
    gpuLimit: 8,
    cpuInstanceCategories: ['c', 'm', 'r'],
    cpuCapacityTypes: ['spot', 'on-demand'],
    cpuLimit: 64,
    gpuNodeDiskGiB: 200,
  },

  addons: {
    awsLoadBalancerController: { repository: 'https://aws.github.io/eks-charts', chart: 'aws-load-balancer-controller', version: '1.14.1', namespace: 'kube-system' },
    metricsServer: { repository: 'https://kubernetes-sigs.github.io/metrics-server/', chart: 'metrics-server', version: '3.13.0', namespace: 'kube-system' },
    keda: { repository: 'https://kedacore.github.io/charts', chart: 'keda', version: '2.17.0', namespace: 'keda' },
    nvidiaDevicePlugin: { repository: 'https://nvidia.github.io/k8s-device-plugin', chart: 'nvidia-device-plugin', version: '0.17.1', namespace: 'kube-system' },
    externalSecrets: { repository: 'https://charts.external-secrets.io', chart: 'external-secrets', version: '0.19.2', namespace: 'external-secrets' },
    prometheusOperatorCrds: { repository: 'https://prometheus-community.github.io/helm-charts', chart: 'prometheus-operator-crds', version: '25.0.0', namespace: 'monitoring' },
  },

  models: {
    namespace: 'models',
    weightsBucketName: undefined,
    image: { repository: 'vllm/vllm-openai', tag: 'v0.11.0' },
    s3SyncImage: { repository: 'amazon/aws-cli', tag: '2.31.0' },
    list: [
      {
        name: 'qwen-coder',
        hfModelId: 'Qwen/Qwen2.5-Coder-7B-Instruct',
        alias: 'coder',
        servedModelName: 'qwen-coder',
        source: 'huggingface',
        gpusPerReplica: 1,
        maxModelLen: 32768,
        minReplicas: 1,
        maxReplicas: 4,
        waitingRequestsTarget: 8,
        extraArgs: ['--gpu-memory-utilization=0.90', '--enable-prefix-caching'],
        gpuHourlyUsd: 0.805,
        contextWindow: 32768,
        cache: { type: 'emptyDir', sizeGiB: 60 },
      },
    ],
  },

  gateway: {
    namespace: 'hybridgw',
    image: { repository: undefined, tag: '0.1.0' },
    replicas: { min: 2, max: 10 },
    apiKeysSecretName: undefined,
    ingress: {
      enabled: true,
      internetFacing: true,
      certificateArn: undefined,
      inboundCidrs: ['0.0.0.0/0'],
      idleTimeoutSeconds: 300,
    },
    shutdownTimeoutSeconds: 120,
    frontier: {
      openai: { enabled: true, model: 'gpt-4.1' },
      anthropic: { enabled: true, model: 'claude-sonnet-4-5' },
    },
  },

  ledger: {
    backend: 'postgres',
    sqliteUrl: 'sqlite:///var/lib/hybridgw/ledger.db',
    postgres: {
      engineVersion: '16',
      instanceType: 't4g.small',
      allocatedStorageGiB: 20,
      maxAllocatedStorageGiB: 100,
      multiAz: false,
      backupRetentionDays: 7,
      deletionProtection: true,
      removalPolicy: 'snapshot',
      databaseName: 'hybridgw',
      username: 'hybridgw',
    },
  },

  observability: {
    kubePrometheusStack: { repository: 'https://prometheus-community.github.io/helm-charts', chart: 'kube-prometheus-stack', version: '79.10.0', namespace: 'monitoring' },
    dcgmExporter: { repository: 'https://nvidia.github.io/dcgm-exporter/helm-charts', chart: 'dcgm-exporter', version: '4.8.3', namespace: 'monitoring' },
    prometheusRetention: '15d',
    prometheusStorageGiB: 50,
    langfuse: {
      enabled: false,
      chart: { repository: 'https://langfuse.github.io/langfuse-k8s', chart: 'langfuse', version: '1.5.0', namespace: 'langfuse' },
      existingSecret: 'langfuse-secrets',
    },
  },
};

/** Labels and taints shared by node groups, Karpenter NodePools and the charts' scheduling rules. */
export const POOL_LABEL = 'hybridgw.io/pool';
export const GPU_TAINT = { key: 'nvidia.com/gpu', value: 'true', effect: 'NoSchedule' } as const;

type DeepPartial<T> = T extends Array<infer _U> ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;
export type ConfigOverrides = DeepPartial<HybridgwConfig>;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepMerge<T>(base: T, override: unknown): T {
  if (override === undefined) return base;
  if (!isPlainObject(base) || !isPlainObject(override)) return override as T;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(override)) {
    out[k] = k in out ? deepMerge(out[k], v) : v;
  }
  return out as T;
}

/** Merge overrides onto the defaults and check the values that would break a deploy late. */
export function resolveConfig(...overrides: Array<ConfigOverrides | undefined>): HybridgwConfig {
  let cfg: HybridgwConfig = DEFAULT_CONFIG;
  for (const o of overrides) cfg = deepMerge(cfg, o);
  validateConfig(cfg);
  return cfg;
}

export function validateConfig(cfg: HybridgwConfig): void {
  const errors: string[] = [];
  const azs = cfg.availabilityZones;
  if (azs.length < 2) errors.push('availabilityZones: EKS needs at least 2 AZs (3 recommended)');
  if (new Set(azs).size !== azs.length) errors.push('availabilityZones: duplicates');
  for (const az of azs) if (!az.startsWith(cfg.region)) errors.push(`availabilityZones: ${az} is not in ${cfg.region}`);
  const nat = cfg.network.natGateways;
  if (!Number.isInteger(nat) || nat < 1 || nat > azs.length) {
    errors.push(`network.natGateways: ${nat} must be an integer in 1..${azs.length} (private subnets need egress)`);
  }
  if (!/^1\.\d+$/.test(cfg.cluster.kubernetesVersion)) errors.push('cluster.kubernetesVersion: expected "1.NN"');
  if (!/^[a-z][a-z0-9-]{0,99}$/.test(cfg.clusterName)) errors.push('clusterName: lowercase letters, digits, dashes');
  const names = new Set<string>();
  for (const m of cfg.models.list) {
    if (!/^[a-z][a-z0-9-]{0,40}$/.test(m.name)) errors.push(`models: bad name ${m.name}`);
    if (names.has(m.name)) errors.push(`models: duplicate ${m.name}`);
    names.add(m.name);
    if (m.alias !== undefined && (m.alias === m.name || names.has(m.alias))) errors.push(`models.${m.name}: alias must differ from every model name`);
    if (m.source === 's3' && !m.s3Prefix) errors.push(`models.${m.name}: source s3 needs s3Prefix`);
    if (m.minReplicas > m.maxReplicas) errors.push(`models.${m.name}: minReplicas > maxReplicas`);
  }
  for (const [name, ng] of Object.entries(cfg.nodeGroups)) {
    if (!(ng.minSize <= ng.desiredSize && ng.desiredSize <= ng.maxSize)) errors.push(`nodeGroups.${name}: need min <= desired <= max`);
  }
  const rep = cfg.gateway.replicas;
  if (!(Number.isInteger(rep.min) && rep.min >= 1 && rep.min <= rep.max)) errors.push('gateway.replicas: need 1 <= min <= max');
  const ledger = cfg.ledger;
  if (ledger.backend === 'sqlite') {
    if (!/^sqlite:/.test(ledger.sqliteUrl)) errors.push(`ledger.sqliteUrl: ${ledger.sqliteUrl} is not a sqlite: URL`);
    if (rep.max > 1) {
      errors.push(`ledger.backend 'sqlite' with gateway.replicas.max ${rep.max}: SQLite is per pod (on ephemeral storage), so each `
        + 'replica would enforce its own budgets and rate limits and the ledger would die with the pod. '
        + "Use ledger.backend 'postgres' (RDS, the default) or gateway.replicas { min: 1, max: 1 }");
    }
  } else if (ledger.backend === 'postgres') {
    const pg = ledger.postgres;
    if (!/^(15|16)(\.\d+)?$/.test(pg.engineVersion)) errors.push(`ledger.postgres.engineVersion: ${pg.engineVersion} (expected 15, 16 or a full 15.x/16.x version)`);
    if (!/^[a-z][a-z0-9-]*\.[a-z0-9]+$/.test(pg.instanceType)) errors.push(`ledger.postgres.instanceType: ${pg.instanceType} (expected e.g. t4g.small, without db.)`);
    if (!(Number.isInteger(pg.allocatedStorageGiB) && pg.allocatedStorageGiB >= 20)) errors.push('ledger.postgres.allocatedStorageGiB: at least 20 (gp3)');
    if (!(pg.maxAllocatedStorageGiB >= pg.allocatedStorageGiB)) errors.push('ledger.postgres.maxAllocatedStorageGiB: must be >= allocatedStorageGiB');
    if (!(Number.isInteger(pg.backupRetentionDays) && pg.backupRetentionDays >= 1 && pg.backupRetentionDays <= 35)) {
      errors.push('ledger.postgres.backupRetentionDays: 1..35 (0 would turn backups off)');
    }
    if (!['snapshot', 'retain', 'destroy'].includes(pg.removalPolicy)) errors.push(`ledger.postgres.removalPolicy: ${pg.removalPolicy}`);
    for (const k of ['databaseName', 'username'] as const) {
      if (!/^[a-z][a-z0-9_]{0,62}$/.test(pg[k]) || ['postgres', 'rdsadmin'].includes(pg[k])) errors.push(`ledger.postgres.${k}: ${pg[k]} (lowercase identifier, not postgres/rdsadmin)`);
    }
  } else {
    errors.push(`ledger.backend: ${String(ledger.backend)} (expected postgres or sqlite)`);
  }
  if (errors.length) throw new Error(`invalid hybridgw config:\n  ${errors.join('\n  ')}`);
}
