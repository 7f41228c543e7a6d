import { KubectlV33Layer } from '@aws-cdk/lambda-layer-kubectl-v33';
import { CfnOutput, Duration, RemovalPolicy, Size, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { HybridgwConfig } from './config';

export interface ClusterStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly vpc: ec2.IVpc;
}

/**
 * The kubectl layer must be within one minor version of the cluster (kubectl skew policy).
 * We ship @aws-cdk/lambda-layer-kubectl-v33; moving the cluster to 1.34 or 1.35 means adding the
 * matching @aws-cdk/lambda-layer-kubectl-vNN package and listing it here.
 */
const KUBECTL_LAYER_MINORS: Record<string, number> = { '1.32': 33, '1.33': 33, '1.34': 33 };

/**
 * Layer 2: the EKS control plane in the private subnets.
 * - native AWS::EKS::Cluster (aws-eks-v2), authentication mode API: access entries only;
 * - secrets envelope-encrypted with a customer-managed KMS key (rotation on);
 * - control-plane logs to CloudWatch;
 * - IAM OIDC provider for IRSA (used by the add-on, model and gateway service accounts);
 * - a kubectl/helm Lambda (in the private subnets) that later stacks use to apply charts;
 * - the ECR repository for the gateway image (unless gateway.image.repository is set), here so
 *   the image can be pushed before the Gateway stack deploys pods that pull it.
 */
export class ClusterStack extends Stack {
  public readonly cluster: eks.Cluster;
  public readonly secretsKey: kms.Key;
  public readonly gatewayRepository?: ecr.Repository;

  constructor(scope: Construct, id: string, props: ClusterStackProps) {
    super(scope, id, props);
    const cfg = props.config;

    if (!(cfg.cluster.kubernetesVersion in KUBECTL_LAYER_MINORS)) {
      throw new Error(`cluster.kubernetesVersion ${cfg.cluster.kubernetesVersion}: no kubectl layer within skew; see cluster-stack.ts`);
    }

    this.secretsKey = new kms.Key(this, 'SecretsKey', {
      alias: `alias/${cfg.clusterName}-eks-secrets`,
      description: `Envelope encryption of Kubernetes Secrets in EKS cluster ${cfg.clusterName}`,
      enableKeyRotation: true,
      // Losing the key makes every Secret in etcd unreadable; keep it past a stack delete.
      removalPolicy: RemovalPolicy.RETAIN,
      pendingWindow: Duration.days(30),
    });

    const privateSubnets = props.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS });
    const endpointAccess = cfg.cluster.publicEndpointCidrs.length === 0
      ? eks.EndpointAccess.PRIVATE
      : eks.EndpointAccess.PUBLIC_AND_PRIVATE.onlyFrom(...cfg.cluster.publicEndpointCidrs);

    this.cluster = new eks.Cluster(this, 'Cluster', {
      clusterName: cfg.clusterName,
      version: eks.KubernetesVersion.of(cfg.cluster.kubernetesVersion),
      vpc: props.vpc,
      vpcSubnets: [{ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }],
      endpointAccess,
      // Capacity is added by the NodeGroups stack and by Karpenter, never by the cluster itself.
      defaultCapacityType: eks.DefaultCapacityType.NODEGROUP,
      defaultCapacity: 0,
      secretsEncryptionKey: this.secretsKey,
      clusterLogging: cfg.cluster.controlPlaneLogging.map((t) => t as eks.ClusterLoggingTypes),
      tags: cfg.tags,
      kubectlProviderOptions: {
        kubectlLayer: new KubectlV33Layer(this, 'KubectlLayer'),
        memory: Size.gibibytes(2),
        privateSubnets: privateSubnets.subnets,
      },
    });

    // aws-eks-v2 writes EncryptionConfig[].Resources (["secrets"]), which the CloudFormation
    // schema marks deprecated but EKS still requires for envelope encryption of Secrets.
    Validations.of(this.cluster).acknowledge({
      id: 'CloudFormation-Validate::W9009',
      reason: 'EncryptionConfig.Resources is set by aws-eks-v2 and required by EKS secrets encryption',
    });

    // Create the IAM OIDC provider here (not lazily from a later stack) so IRSA roles in later
    // stacks only reference this stack's exports.
    const oidc = this.cluster.openIdConnectProvider;

    cfg.cluster.adminPrincipalArns.forEach((arn, i) => {
      this.cluster.grantAccess(`Admin${i}`, arn, [
        eks.AccessPolicy.fromAccessPolicyName('AmazonEKSClusterAdminPolicy', { accessScopeType: eks.AccessScopeType.CLUSTER }),
      ]);
    });

    if (!cfg.gateway.image.repository) {
      this.gatewayRepository = new ecr.Repository(this, 'GatewayRepository', {
        repositoryName: `${cfg.clusterName}/hybridgw`,
        imageScanOnPush: true,
        imageTagMutability: ecr.TagMutability.IMMUTABLE,
        encryption: ecr.RepositoryEncryption.AES_256,
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: [{ description: 'keep the last 30 images', maxImageCount: 30 }],
      });
      new CfnOutput(this, 'GatewayRepositoryUri', { value: this.gatewayRepository.repositoryUri });
    }

    new CfnOutput(this, 'ClusterName', { value: this.cluster.clusterName });
    new CfnOutput(this, 'ClusterEndpoint', { value: this.cluster.clusterEndpoint });
    new CfnOutput(this, 'OidcProviderArn', { value: oidc.openIdConnectProviderArn });
    new CfnOutput(this, 'UpdateKubeconfig', {
      value: `aws eks update-kubeconfig --region ${this.region} --name ${cfg.clusterName}`,
    });
  }
}
