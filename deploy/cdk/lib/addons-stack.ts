import * as fs from 'fs';
import * as path from 'path';
import { CfnJson, CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { HybridgwConfig, POOL_LABEL } from './config';
import { thirdPartyChart } from './helm';
import { Karpenter } from './karpenter';

export interface AddonsStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly cluster: eks.ICluster;
  readonly vpc: ec2.IVpc;
}

/** Our own policy document for the AWS Load Balancer Controller (see lib/policies/README.md). */
export const ALB_CONTROLLER_POLICY_FILE = path.join(__dirname, 'policies', 'aws-load-balancer-controller.json');

export function loadAlbControllerPolicy(): iam.PolicyDocument {
  // Compiled code runs from dist/lib; the JSON stays in lib/policies.
  const candidates = [ALB_CONTROLLER_POLICY_FILE, path.join(__dirname, '..', '..', 'lib', 'policies', 'aws-load-balancer-controller.json')];
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) throw new Error(`missing ${ALB_CONTROLLER_POLICY_FILE}`);
  return iam.PolicyDocument.fromJson(JSON.parse(fs.readFileSync(file, 'utf8')));
}

/**
 * Layer 4: cluster add-ons.
 * - AWS Load Balancer Controller (IRSA, our policy) for the gateway's ALB Ingress;
 * - Karpenter (GPU + CPU NodePools);
 * - metrics-server (HPA on CPU/memory), KEDA (vLLM autoscaling on queue depth);
 * - prometheus-operator CRDs (ServiceMonitor/PrometheusRule used by our charts before the
 *   Observability stack installs Prometheus itself);
 * - External Secrets Operator (syncs the gateway's API keys from Secrets Manager);
 * - the EBS CSI driver (EKS add-on, IRSA) so Prometheus can keep its data on a gp3 volume.
 */
export class AddonsStack extends Stack {
  public readonly albController: eks.HelmChart;
  public readonly karpenter: Karpenter;
  public readonly keda: eks.HelmChart;
  public readonly metricsServer: eks.HelmChart;
  public readonly externalSecrets: eks.HelmChart;
  public readonly prometheusCrds: eks.HelmChart;
  public readonly ebsCsiDriver: eks.CfnAddon;

  constructor(scope: Construct, id: string, props: AddonsStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const { cluster } = props;
    const a = cfg.addons;
    const system = { [POOL_LABEL]: 'system' };

    // --- AWS Load Balancer Controller -------------------------------------------------------
    const albSa = new eks.ServiceAccount(this, 'AlbControllerServiceAccount', {
      cluster,
      name: 'aws-load-balancer-controller',
      namespace: a.awsLoadBalancerController.namespace,
      identityType: eks.IdentityType.IRSA,
    });
    new iam.Policy(this, 'AlbControllerPolicy', {
      policyName: `${cfg.clusterName}-aws-load-balancer-controller`,
      document: loadAlbControllerPolicy(),
      roles: [albSa.role],
    });
    this.albController = thirdPartyChart(this, 'AlbController', cluster, a.awsLoadBalancerController, {
      release: 'aws-load-balancer-controller',
      createNamespace: false,
      values: {
        clusterName: cfg.clusterName,
        region: this.region,
        vpcId: props.vpc.vpcId,
        replicaCount: 2,
        serviceAccount: { create: false, name: albSa.serviceAccountName },
        nodeSelector: system,
      },
    });
    this.albController.node.addDependency(albSa);

    // --- Karpenter --------------------------------------------------------------------------
    this.karpenter = new Karpenter(this, 'Karpenter', { config: cfg, cluster, controllerNodeSelector: system });

    // --- metrics-server, KEDA ---------------------------------------------------------------
    this.metricsServer = thirdPartyChart(this, 'MetricsServer', cluster, a.metricsServer, {
      release: 'metrics-server',
      createNamespace: false,
      values: { replicas: 2, nodeSelector: system },
    });
    this.keda = thirdPartyChart(this, 'Keda', cluster, a.keda, {
      release: 'keda',
      values: { nodeSelector: system },
    });

    // --- prometheus-operator CRDs -----------------------------------------------------------
    this.prometheusCrds = thirdPartyChart(this, 'PrometheusOperatorCrds', cluster, a.prometheusOperatorCrds, {
      release: 'prometheus-operator-crds',
    });

    // --- External Secrets Operator ----------------------------------------------------------
    this.externalSecrets = thirdPartyChart(this, 'ExternalSecrets', cluster, a.externalSecrets, {
      release: 'external-secrets',
      values: {
        installCRDs: true,
        nodeSelector: system,
        webhook: { nodeSelector: system },
        certController: { nodeSelector: system },
      },
    });

    // --- EBS CSI driver (EKS managed add-on; it creates its own service account) --------------
    const ebsCsiRole = irsaRole(this, 'EbsCsiDriverRole', cluster, 'kube-system', 'ebs-csi-controller-sa');
    ebsCsiRole.addManagedPolicy(iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonEBSCSIDriverPolicy'));
    this.ebsCsiDriver = new eks.CfnAddon(this, 'EbsCsiDriver', {
      clusterName: cluster.clusterName,
      addonName: 'aws-ebs-csi-driver',
      serviceAccountRoleArn: ebsCsiRole.roleArn,
      resolveConflicts: 'OVERWRITE',
    });

    new CfnOutput(this, 'KarpenterNodeRoleName', { value: this.karpenter.nodeRole.roleName });
    new CfnOutput(this, 'KarpenterInterruptionQueue', { value: this.karpenter.queue.queueName });
  }
}

/** An IAM role that exactly one Kubernetes service account can assume through IRSA. */
export function irsaRole(scope: Construct, id: string, cluster: eks.ICluster, ns: string, serviceAccount: string): iam.Role {
  const provider = cluster.openIdConnectProvider;
  const issuer = provider.openIdConnectProviderIssuer;
  const conditions = new CfnJson(scope, `${id}Conditions`, {
    value: {
      [`${issuer}:sub`]: `system:serviceaccount:${ns}:${serviceAccount}`,
      [`${issuer}:aud`]: 'sts.amazonaws.com',
    },
  });
  return new iam.Role(scope, id, {
    assumedBy: new iam.OpenIdConnectPrincipal(provider).withConditions({ StringEquals: conditions }),
    description: `IRSA role for ${ns}/${serviceAccount}`,
  });
}
