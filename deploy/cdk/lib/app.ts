import * as fs from 'fs';
import * as path from 'path';
import { App, Environment, Stack, Tags } from 'aws-cdk-lib';
import { AddonsStack } from './addons-stack';
import { ClusterStack } from './cluster-stack';
import { ConfigOverrides, HybridgwConfig, resolveConfig } from './config';
import { DatabaseStack } from './database-stack';
import { GatewayStack } from './gateway-stack';
import { DEPLOY_DIR } from './helm';
import { ModelsStack } from './models-stack';
import { NetworkStack } from './network-stack';
import { NodeGroupsStack } from './nodegroups-stack';
import { ObservabilityStack } from './observability-stack';

export interface BuildOptions {
  /** Config overrides on top of DEFAULT_CONFIG and the `hybridgw` context value. */
  readonly overrides?: ConfigOverrides;
  /** Cloud assembly directory (default: CDK's choice, cdk.out under the CLI). */
  readonly outdir?: string;
  /** Skip copying assets (the 120 MB kubectl layer, charts) for fast assertion tests. */
  readonly skipAssetStaging?: boolean;
  /** Replaces deploy/observability (tests). */
  readonly observabilityDir?: string;
  /** Extra context (tests). */
  readonly context?: Record<string, unknown>;
  /** CDK's built-in CloudFormation schema/rule validation at synth (default on; ~10 s). */
  readonly cfnValidation?: boolean;
}

export interface HybridgwApp {
  readonly app: App;
  readonly config: HybridgwConfig;
  readonly network: NetworkStack;
  readonly cluster: ClusterStack;
  readonly nodeGroups: NodeGroupsStack;
  readonly addons: AddonsStack;
  readonly models: ModelsStack;
  /** The ledger's PostgreSQL; undefined when ledger.backend is 'sqlite'. */
  readonly database?: DatabaseStack;
  readonly gateway: GatewayStack;
  readonly observability: ObservabilityStack;
  /** In deploy order. */
  readonly stacks: Stack[];
}

/** Feature flags from cdk.json, so tests build the same app the CLI does. */
function cdkJsonContext(): Record<string, unknown> {
  const file = path.join(DEPLOY_DIR, 'cdk', 'cdk.json');
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { context?: Record<string, unknown> };
  return json.context ?? {};
}

export function buildApp(opts: BuildOptions = {}): HybridgwApp {
  const context: Record<string, unknown> = { ...cdkJsonContext(), ...(opts.context ?? {}) };
  if (opts.skipAssetStaging) context['aws:cdk:disable-asset-staging'] = true;
  const app = new App({ outdir: opts.outdir, context, builtinCloudFormationValidation: opts.cfnValidation ?? true });

  const fromContext = app.node.tryGetContext('hybridgw');
  const ctxOverrides = typeof fromContext === 'string' ? JSON.parse(fromContext) : fromContext;
  const config = resolveConfig(ctxOverrides, opts.overrides);

  const env: Environment = {
    account: config.account ?? process.env.CDK_DEFAULT_ACCOUNT,
    region: config.region,
  };
  const name = (layer: string) => `${config.stackPrefix}-${layer}`;
  const common = { env, config, terminationProtection: false };

  const network = new NetworkStack(app, name('Network'), {
    ...common, description: 'hybridgw layer 1: VPC, subnets, NAT, VPC endpoints',
  });
  const cluster = new ClusterStack(app, name('Cluster'), {
    ...common, vpc: network.vpc, description: 'hybridgw layer 2: EKS control plane, KMS, OIDC, access entries, gateway ECR repository',
  });
  const nodeGroups = new NodeGroupsStack(app, name('NodeGroups'), {
    ...common, cluster: cluster.cluster, description: 'hybridgw layer 3: system and GPU node groups, NVIDIA device plugin',
  });
  const addons = new AddonsStack(app, name('Addons'), {
    ...common, cluster: cluster.cluster, vpc: network.vpc,
    description: 'hybridgw layer 4: load balancer controller, Karpenter, metrics-server, KEDA, CRDs, External Secrets, EBS CSI',
  });
  const models = new ModelsStack(app, name('Models'), {
    ...common, cluster: cluster.cluster, description: 'hybridgw layer 5: vLLM model servers',
  });
  const database = config.ledger.backend === 'postgres'
    ? new DatabaseStack(app, name('Database'), {
      ...common, vpc: network.vpc, cluster: cluster.cluster,
      description: 'hybridgw layer 6: RDS PostgreSQL for the gateway ledger (keys, budgets, rate limits, spend)',
    })
    : undefined;
  const gateway = new GatewayStack(app, name('Gateway'), {
    ...common, cluster: cluster.cluster, repository: cluster.gatewayRepository, ledgerSecret: database?.secret,
    description: 'hybridgw layer 7: the gateway, its API keys, its ledger database URL and ALB',
  });
  const observability = new ObservabilityStack(app, name('Observability'), {
    ...common, cluster: cluster.cluster, observabilityDir: opts.observabilityDir,
    description: 'hybridgw layer 8: Prometheus, Grafana, DCGM exporter, dashboards, rules',
  });

  // Each layer deploys after the previous one (and is destroyed before it).
  const stacks: Stack[] = [network, cluster, nodeGroups, addons, models, ...(database ? [database] : []), gateway, observability];
  for (let i = 1; i < stacks.length; i++) stacks[i].addStackDependency(stacks[i - 1]);
  for (const [k, v] of Object.entries(config.tags)) Tags.of(app).add(k, v);

  return { app, config, network, cluster, nodeGroups, addons, models, database, gateway, observability, stacks };
}
