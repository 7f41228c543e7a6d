import { Aws, Duration, Stack } from 'aws-cdk-lib';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { GPU_TAINT, HybridgwConfig, POOL_LABEL } from './config';
import { thirdPartyChart } from './helm';

export interface KarpenterProps {
  readonly config: HybridgwConfig;
  readonly cluster: eks.ICluster;
  /** Where the controller pods go (never on nodes Karpenter manages). */
  readonly controllerNodeSelector: Record<string, string>;
}

/**
 * Karpenter v1: node IAM role + access entry, interruption queue, controller IRSA role with a
 * policy scoped to this cluster's tags, the chart, and two EC2NodeClass/NodePool pairs
 * (gpu: tainted like the GPU node group; cpu: spot-first general capacity).
 */
export class Karpenter extends Construct {
  public readonly nodeRole: iam.Role;
  public readonly queue: sqs.Queue;
  public readonly serviceAccount: eks.ServiceAccount;
  public readonly chart: eks.HelmChart;
  public readonly nodePools: eks.KubernetesManifest;

  constructor(scope: Construct, id: string, props: KarpenterProps) {
    super(scope, id);
    const { config: cfg, cluster } = props;
    const k = cfg.karpenter;
    const name = cfg.clusterName;
    const stack = Stack.of(this);

    this.nodeRole = new iam.Role(this, 'NodeRole', {
      roleName: `${name}-karpenter-node`,
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      managedPolicies: [
        'AmazonEKSWorkerNodePolicy',
        'AmazonEKS_CNI_Policy',
        'AmazonEC2ContainerRegistryReadOnly',
        'AmazonSSMManagedInstanceCore',
      ].map((p) => iam.ManagedPolicy.fromAwsManagedPolicyName(p)),
    });
    // Nodes launched by Karpenter join through an EC2_LINUX access entry (no access policies allowed).
    new eks.AccessEntry(this, 'NodeAccessEntry', {
      cluster,
      principal: this.nodeRole.roleArn,
      accessEntryType: eks.AccessEntryType.EC2_LINUX,
      accessPolicies: [],
    });

    this.queue = new sqs.Queue(this, 'InterruptionQueue', {
      queueName: `${name}-karpenter-interruptions`,
      retentionPeriod: Duration.minutes(5),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    const interruptionEvents: Record<string, events.EventPattern> = {
      ScheduledChangeRule: { source: ['aws.health'], detailType: ['AWS Health Event'] },
      SpotInterruptionRule: { source: ['aws.ec2'], detailType: ['EC2 Spot Instance Interruption Warning'] },
      RebalanceRule: { source: ['aws.ec2'], detailType: ['EC2 Instance Rebalance Recommendation'] },
      InstanceStateChangeRule: { source: ['aws.ec2'], detailType: ['EC2 Instance State-change Notification'] },
    };
    for (const [ruleId, eventPattern] of Object.entries(interruptionEvents)) {
      new events.Rule(this, ruleId, { eventPattern, targets: [new targets.SqsQueue(this.queue)] });
    }

    this.serviceAccount = new eks.ServiceAccount(this, 'ControllerServiceAccount', {
      cluster,
      name: 'karpenter',
      namespace: k.chart.namespace,
      identityType: eks.IdentityType.IRSA,
    });
    for (const st of controllerStatements(name, stack.region, this.nodeRole, this.queue, cluster)) {
      this.serviceAccount.addToPrincipalPolicy(st);
    }

    this.chart = thirdPartyChart(this, 'Chart', cluster, k.chart, {
      release: 'karpenter',
      createNamespace: false,
      values: {
        serviceAccount: { create: false, name: this.serviceAccount.serviceAccountName },
        settings: { clusterName: name, interruptionQueue: this.queue.queueName },
        replicas: 2,
        nodeSelector: props.controllerNodeSelector,
        controller: { resources: { requests: { cpu: '250m', memory: '512Mi' }, limits: { memory: '1Gi' } } },
      },
    });
    this.chart.node.addDependency(this.serviceAccount);

    this.nodePools = new eks.KubernetesManifest(this, 'NodePools', {
      cluster,
      overwrite: true,
      manifest: nodePoolManifests(cfg, this.nodeRole.roleName, cluster.clusterSecurityGroupId),
    });
    // The CRDs come with the chart.
    this.nodePools.node.addDependency(this.chart);
  }
}

/** The controller's IAM permissions, scoped to resources tagged for this cluster. */
function controllerStatements(clusterName: string, region: string, nodeRole: iam.IRole, queue: sqs.IQueue, cluster: eks.ICluster): iam.PolicyStatement[] {
  const ec2 = (res: string) => `arn:${Aws.PARTITION}:ec2:${region}:*:${res}`;
  const owned = { [`aws:RequestTag/kubernetes.io/cluster/${clusterName}`]: 'owned', 'aws:RequestTag/eks:eks-cluster-name': clusterName };
  const resOwned = { [`aws:ResourceTag/kubernetes.io/cluster/${clusterName}`]: 'owned' };
  const launchResources = ['fleet/*', 'instance/*', 'volume/*', 'network-interface/*', 'launch-template/*', 'spot-instances-request/*'].map(ec2);
  return [
    new iam.PolicyStatement({
      sid: 'LaunchFromSharedResources',
      actions: ['ec2:RunInstances', 'ec2:CreateFleet'],
      resources: [`arn:${Aws.PARTITION}:ec2:${region}::image/*`, `arn:${Aws.PARTITION}:ec2:${region}::snapshot/*`,
        ec2('security-group/*'), ec2('subnet/*'), ec2('capacity-reservation/*')],
    }),
    new iam.PolicyStatement({
      sid: 'LaunchFromOwnedLaunchTemplates',
      actions: ['ec2:RunInstances', 'ec2:CreateFleet'],
      resources: [ec2('launch-template/*')],
      conditions: { StringEquals: resOwned, StringLike: { 'aws:ResourceTag/karpenter.sh/nodepool': '*' } },
    }),
    new iam.PolicyStatement({
      sid: 'CreateOwnedInstancesAndTemplates',
      actions: ['ec2:RunInstances', 'ec2:CreateFleet', 'ec2:CreateLaunchTemplate'],
      resources: launchResources,
      conditions: { StringEquals: owned, StringLike: { 'aws:RequestTag/karpenter.sh/nodepool': '*' } },
    }),
    new iam.PolicyStatement({
      sid: 'TagAtCreation',
      actions: ['ec2:CreateTags'],
      resources: launchResources,
      conditions: {
        StringEquals: { ...owned, 'ec2:CreateAction': ['RunInstances', 'CreateFleet', 'CreateLaunchTemplate'] },
        StringLike: { 'aws:RequestTag/karpenter.sh/nodepool': '*' },
      },
    }),
    new iam.PolicyStatement({
      sid: 'TagOwnedInstances',
      actions: ['ec2:CreateTags'],
      resources: [ec2('instance/*')],
      conditions: {
        StringEquals: resOwned,
        StringLike: { 'aws:ResourceTag/karpenter.sh/nodepool': '*' },
        'ForAllValues:StringEquals': { 'aws:TagKeys': ['eks:eks-cluster-name', 'karpenter.sh/nodeclaim', 'Name'] },
      },
    }),
    new iam.PolicyStatement({
      sid: 'DeleteOwnedInstancesAndTemplates',
      actions: ['ec2:TerminateInstances', 'ec2:DeleteLaunchTemplate'],
      resources: [ec2('instance/*'), ec2('launch-template/*')],
      conditions: { StringEquals: resOwned, StringLike: { 'aws:ResourceTag/karpenter.sh/nodepool': '*' } },
    }),
    new iam.PolicyStatement({
      sid: 'RegionalReads',
      actions: ['ec2:DescribeAvailabilityZones', 'ec2:DescribeImages', 'ec2:DescribeInstances', 'ec2:DescribeInstanceTypeOfferings',
        'ec2:DescribeInstanceTypes', 'ec2:DescribeLaunchTemplates', 'ec2:DescribeSecurityGroups', 'ec2:DescribeSpotPriceHistory',
        'ec2:DescribeSubnets', 'ec2:DescribeCapacityReservations', 'ec2:DescribePlacementGroups'],
      resources: ['*'],
      conditions: { StringEquals: { 'aws:RequestedRegion': region } },
    }),
    new iam.PolicyStatement({
      sid: 'ReadAmiParameters',
      actions: ['ssm:GetParameter'],
      resources: [`arn:${Aws.PARTITION}:ssm:${region}::parameter/aws/service/*`],
    }),
    new iam.PolicyStatement({ sid: 'ReadPrices', actions: ['pricing:GetProducts'], resources: ['*'] }),
    new iam.PolicyStatement({
      sid: 'ConsumeInterruptionQueue',
      actions: ['sqs:DeleteMessage', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage'],
      resources: [queue.queueArn],
    }),
    new iam.PolicyStatement({
      sid: 'PassNodeRole',
      actions: ['iam:PassRole'],
      resources: [nodeRole.roleArn],
      conditions: { StringEquals: { 'iam:PassedToService': ['ec2.amazonaws.com'] } },
    }),
    new iam.PolicyStatement({
      sid: 'CreateOwnedInstanceProfiles',
      actions: ['iam:CreateInstanceProfile', 'iam:TagInstanceProfile'],
      resources: ['*'],
      conditions: {
        StringEquals: { ...owned, 'aws:RequestTag/topology.kubernetes.io/region': region },
        StringLike: { 'aws:RequestTag/karpenter.k8s.aws/ec2nodeclass': '*' },
      },
    }),
    new iam.PolicyStatement({
      sid: 'ManageOwnedInstanceProfiles',
      actions: ['iam:AddRoleToInstanceProfile', 'iam:RemoveRoleFromInstanceProfile', 'iam:DeleteInstanceProfile', 'iam:TagInstanceProfile'],
      resources: ['*'],
      conditions: {
        StringEquals: { ...resOwned, 'aws:ResourceTag/topology.kubernetes.io/region': region },
        StringLike: { 'aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass': '*' },
      },
    }),
    new iam.PolicyStatement({ sid: 'ReadInstanceProfiles', actions: ['iam:GetInstanceProfile', 'iam:ListInstanceProfiles'], resources: ['*'] }),
    new iam.PolicyStatement({ sid: 'DiscoverApiEndpoint', actions: ['eks:DescribeCluster'], resources: [cluster.clusterArn] }),
  ];
}

/** EC2NodeClass + NodePool objects for the GPU and CPU pools. Exported for tests. */
export function nodePoolManifests(cfg: HybridgwConfig, nodeRoleName: string, clusterSecurityGroupId: string): Record<string, unknown>[] {
  const k = cfg.karpenter;
  const zones = { key: 'topology.kubernetes.io/zone', operator: 'In', values: cfg.availabilityZones };
  const amd64 = { key: 'kubernetes.io/arch', operator: 'In', values: ['amd64'] };
  const nodeClass = (name: string, diskGiB: number) => ({
    apiVersion: 'karpenter.k8s.aws/v1',
    kind: 'EC2NodeClass',
    metadata: { name },
    spec: {
      role: nodeRoleName,
      amiSelectorTerms: [{ alias: k.amiAlias }],
      subnetSelectorTerms: [{ tags: { 'karpenter.sh/discovery': cfg.clusterName } }],
      securityGroupSelectorTerms: [{ id: clusterSecurityGroupId }],
      metadataOptions: { httpEndpoint: 'enabled', httpTokens: 'required', httpPutResponseHopLimit: 1 },
      blockDeviceMappings: [{
        deviceName: '/dev/xvda',
        ebs: { volumeSize: `${diskGiB}Gi`, volumeType: 'gp3', encrypted: true, deleteOnTermination: true },
      }],
      tags: { ...cfg.tags, 'karpenter.sh/discovery': cfg.clusterName },
    },
  });
  return [
    nodeClass('gpu', k.gpuNodeDiskGiB),
    nodeClass('cpu', 50),
    {
      apiVersion: 'karpenter.sh/v1',
      kind: 'NodePool',
      metadata: { name: 'gpu' },
      spec: {
        template: {
          metadata: { labels: { [POOL_LABEL]: 'gpu', 'nvidia.com/gpu.present': 'true' } },
          spec: {
            nodeClassRef: { group: 'karpenter.k8s.aws', kind: 'EC2NodeClass', name: 'gpu' },
            taints: [{ key: GPU_TAINT.key, value: GPU_TAINT.value, effect: GPU_TAINT.effect }],
            requirements: [
              { key: 'karpenter.k8s.aws/instance-family', operator: 'In', values: k.gpuInstanceFamilies },
              { key: 'karpenter.sh/capacity-type', operator: 'In', values: k.gpuCapacityTypes },
              amd64,
              zones,
            ],
            expireAfter: '720h',
          },
        },
        limits: { 'nvidia.com/gpu': String(k.gpuLimit) },
        // GPU nodes are expensive to keep idle and slow to bring back (image + weights):
        // remove only empty ones, after a pause that rides out short lulls.
        disruption: { consolidationPolicy: 'WhenEmpty', consolidateAfter: '10m' },
      },
    },
    {
      apiVersion: 'karpenter.sh/v1',
      kind: 'NodePool',
      metadata: { name: 'cpu' },
      spec: {
        template: {
          metadata: { labels: { [POOL_LABEL]: 'cpu' } },
          spec: {
            nodeClassRef: { group: 'karpenter.k8s.aws', kind: 'EC2NodeClass', name: 'cpu' },
            requirements: [
              { key: 'karpenter.k8s.aws/instance-category', operator: 'In', values: k.cpuInstanceCategories },
              { key: 'karpenter.k8s.aws/instance-generation', operator: 'Gt', values: ['5'] },
              { key: 'karpenter.sh/capacity-type', operator: 'In', values: k.cpuCapacityTypes },
              amd64,
              zones,
            ],
            expireAfter: '720h',
          },
        },
        limits: { cpu: String(k.cpuLimit) },
        disruption: { consolidationPolicy: 'WhenEmptyOrUnderutilized', consolidateAfter: '1m' },
      },
    },
  ];
}
