import { CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import { Construct } from 'constructs';
import { GPU_TAINT, HybridgwConfig, NodeGroupConfig, POOL_LABEL } from './config';
import { thirdPartyChart } from './helm';

export interface NodeGroupsStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly cluster: eks.ICluster;
}

/** Tolerations and affinity every GPU DaemonSet (device plugin, DCGM exporter) needs. */
export const GPU_TOLERATIONS = [
  { key: GPU_TAINT.key, operator: 'Exists', effect: GPU_TAINT.effect },
];
export const GPU_NODE_AFFINITY = {
  nodeAffinity: {
    requiredDuringSchedulingIgnoredDuringExecution: {
      nodeSelectorTerms: [{ matchExpressions: [{ key: POOL_LABEL, operator: 'In', values: ['gpu'] }] }],
    },
  },
};

/**
 * Layer 3: managed node groups.
 * - system: CPU, on-demand, runs controllers (Karpenter never runs on nodes it manages),
 *   CoreDNS, Prometheus and the gateway;
 * - gpu: AL2023 NVIDIA AMI (driver + container toolkit baked in), tainted
 *   nvidia.com/gpu=true:NoSchedule so only GPU workloads land there;
 * - NVIDIA device plugin, which advertises `nvidia.com/gpu` on those nodes (the AMI does not).
 */
export class NodeGroupsStack extends Stack {
  public readonly systemNodeGroup: eks.Nodegroup;
  public readonly gpuNodeGroup: eks.Nodegroup;
  public readonly devicePlugin: eks.HelmChart;

  constructor(scope: Construct, id: string, props: NodeGroupsStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const { cluster } = props;
    const subnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };

    const common = (ng: NodeGroupConfig) => ({
      cluster,
      subnets,
      instanceTypes: ng.instanceTypes.map((t) => new ec2.InstanceType(t)),
      minSize: ng.minSize,
      desiredSize: ng.desiredSize,
      maxSize: ng.maxSize,
      diskSize: ng.diskSizeGiB,
      capacityType: ng.capacityType === 'SPOT' ? eks.CapacityType.SPOT : eks.CapacityType.ON_DEMAND,
      enableNodeAutoRepair: true,
      maxUnavailable: 1,
      tags: cfg.tags,
    });

    this.systemNodeGroup = new eks.Nodegroup(this, 'SystemNodeGroup', {
      ...common(cfg.nodeGroups.system),
      nodegroupName: `${cfg.clusterName}-system`,
      amiType: eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
      labels: { [POOL_LABEL]: 'system' },
    });

    this.gpuNodeGroup = new eks.Nodegroup(this, 'GpuNodeGroup', {
      ...common(cfg.nodeGroups.gpu),
      nodegroupName: `${cfg.clusterName}-gpu`,
      amiType: eks.NodegroupAmiType.AL2023_X86_64_NVIDIA,
      labels: { [POOL_LABEL]: 'gpu', 'nvidia.com/gpu.present': 'true' },
      taints: [{ key: GPU_TAINT.key, value: GPU_TAINT.value, effect: eks.TaintEffect.NO_SCHEDULE }],
    });

    this.devicePlugin = thirdPartyChart(this, 'NvidiaDevicePlugin', cluster, cfg.addons.nvidiaDevicePlugin, {
      release: 'nvidia-device-plugin',
      values: {
        tolerations: GPU_TOLERATIONS,
        affinity: GPU_NODE_AFFINITY,
        priorityClassName: 'system-node-critical',
      },
    });
    // The chart is harmless without GPU nodes, but install it after the node groups exist so the
    // release does not time out waiting for a schedulable node.
    this.devicePlugin.node.addDependency(this.systemNodeGroup);

    new CfnOutput(this, 'SystemNodeGroupName', { value: this.systemNodeGroup.nodegroupName });
    new CfnOutput(this, 'GpuNodeGroupName', { value: this.gpuNodeGroup.nodegroupName });
  }
}
