import { CfnOutput, Stack, StackProps, Tags } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Construct } from 'constructs';
import { HybridgwConfig } from './config';

export interface NetworkStackProps extends StackProps {
  readonly config: HybridgwConfig;
}

/**
 * Layer 1: VPC across the configured AZs.
 * - public /24 subnets: ALBs and NAT gateways only, never a public IP on launch;
 * - private /20 subnets with egress: nodes and pods (VPC CNI gives every pod a VPC IP, so a /20
 *   = 4091 usable addresses per AZ leaves room for dense GPU and CPU nodes);
 * - subnet discovery tags for the AWS Load Balancer Controller and Karpenter;
 * - S3 gateway endpoint (model weights, ECR layers) and ECR/Logs/STS interface endpoints, so image
 *   pulls, IRSA token exchange and logs do not pay NAT data processing.
 */
export class NetworkStack extends Stack {
  public readonly vpc: ec2.Vpc;

  constructor(scope: Construct, id: string, props: NetworkStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const net = cfg.network;

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(net.vpcCidr),
      // Explicit AZ list: an account-less stack would otherwise only get 2 AZs.
      availabilityZones: cfg.availabilityZones,
      natGateways: net.natGateways,
      natGatewaySubnets: { subnetType: ec2.SubnetType.PUBLIC },
      enableDnsHostnames: true,
      enableDnsSupport: true,
      restrictDefaultSecurityGroup: true,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: net.publicSubnetMask, mapPublicIpOnLaunch: false },
        { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: net.privateSubnetMask },
      ],
    });

    const clusterTag = `kubernetes.io/cluster/${cfg.clusterName}`;
    for (const subnet of this.vpc.publicSubnets) {
      Tags.of(subnet).add('kubernetes.io/role/elb', '1');
      Tags.of(subnet).add(clusterTag, 'shared');
    }
    for (const subnet of this.vpc.privateSubnets) {
      Tags.of(subnet).add('kubernetes.io/role/internal-elb', '1');
      Tags.of(subnet).add(clusterTag, 'shared');
      // Karpenter's EC2NodeClass selects subnets (and nothing else here) by this tag.
      Tags.of(subnet).add('karpenter.sh/discovery', cfg.clusterName);
    }

    const privateSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
    this.vpc.addGatewayEndpoint('S3Endpoint', {
      service: ec2.GatewayVpcEndpointAwsService.S3,
      subnets: [privateSubnets],
    });

    if (net.interfaceEndpoints) {
      const endpoints: Record<string, ec2.InterfaceVpcEndpointAwsService> = {
        EcrApiEndpoint: ec2.InterfaceVpcEndpointAwsService.ECR,
        EcrDockerEndpoint: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
        LogsEndpoint: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
        StsEndpoint: ec2.InterfaceVpcEndpointAwsService.STS,
      };
      for (const [id, service] of Object.entries(endpoints)) {
        this.vpc.addInterfaceEndpoint(id, { service, subnets: privateSubnets, privateDnsEnabled: true });
      }
    }

    new CfnOutput(this, 'VpcId', { value: this.vpc.vpcId });
    new CfnOutput(this, 'PrivateSubnetIds', { value: this.vpc.privateSubnets.map((s) => s.subnetId).join(',') });
    new CfnOutput(this, 'PublicSubnetIds', { value: this.vpc.publicSubnets.map((s) => s.subnetId).join(',') });
  }
}
