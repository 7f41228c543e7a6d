import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { fastApp, flatten, helmCharts, resourcesOf, template } from './helpers';

const ADMIN = 'arn:aws:iam::123456789012:role/platform-admins';

describe('Cluster stack', () => {
  const built = fastApp({ overrides: { cluster: { adminPrincipalArns: [ADMIN] } } });
  const t = template(built.cluster);
  const cluster = resourcesOf(t, 'AWS::EKS::Cluster')[0][1].Properties;

  it('is a native EKS cluster on the configured Kubernetes version', () => {
    t.resourceCountIs('AWS::EKS::Cluster', 1);
    assert.equal(cluster.Name, 'hybridgw');
    assert.equal(cluster.Version, '1.33');
  });

  it('places the control plane ENIs in the private subnets only', () => {
    const ids = cluster.ResourcesVpcConfig.SubnetIds.map((s: unknown) => flatten(s));
    assert.equal(ids.length, 3);
    for (const id of ids) assert.match(id, /private/i);
    assert.equal(cluster.ResourcesVpcConfig.EndpointPrivateAccess, true);
  });

  it('encrypts Secrets with a customer-managed KMS key that rotates', () => {
    t.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    assert.equal(cluster.EncryptionConfig.length, 1);
    assert.deepEqual(cluster.EncryptionConfig[0].Resources, ['secrets']);
    assert.ok(cluster.EncryptionConfig[0].Provider.KeyArn['Fn::GetAtt'][0].startsWith('SecretsKey'));
  });

  it('ships control-plane logs', () => {
    const types = cluster.Logging.ClusterLogging.EnabledTypes.map((x: { Type: string }) => x.Type).sort();
    assert.deepEqual(types, ['api', 'audit', 'authenticator']);
  });

  it('uses access entries (API auth mode) and grants configured admins cluster-admin', () => {
    assert.equal(cluster.AccessConfig.AuthenticationMode, 'API');
    const admin = resourcesOf(t, 'AWS::EKS::AccessEntry').map(([, r]) => r.Properties).filter((p) => p.PrincipalArn === ADMIN);
    assert.equal(admin.length, 1, 'one access entry for the configured admin');
    assert.equal(admin[0].AccessPolicies.length, 1);
    assert.match(flatten(admin[0].AccessPolicies[0].PolicyArn), /:eks::aws:cluster-access-policy\/AmazonEKSClusterAdminPolicy$/);
    assert.deepEqual(admin[0].AccessPolicies[0].AccessScope, { Type: 'cluster' });
  });

  it('creates the IAM OIDC provider for IRSA (native resource)', () => {
    t.resourceCountIs('AWS::IAM::OIDCProvider', 1);
  });

  it('has a kubectl/helm handler with the v33 kubectl layer', () => {
    const layers = resourcesOf(t, 'AWS::Lambda::LayerVersion').map(([, r]) => r.Properties.Description ?? '');
    assert.ok(layers.some((d: string) => /kubectl/i.test(d) || /helm/i.test(d)), `layers: ${layers}`);
  });

  it('refuses a Kubernetes version without a kubectl layer in skew', () => {
    assert.throws(() => fastApp({ overrides: { cluster: { kubernetesVersion: '1.36' } } }), /kubectl layer/);
  });

  it('can make the API endpoint private only', () => {
    const t2 = template(fastApp({ overrides: { cluster: { publicEndpointCidrs: [] } } }).cluster);
    t2.hasResourceProperties('AWS::EKS::Cluster', {
      ResourcesVpcConfig: Match.objectLike({ EndpointPublicAccess: false, EndpointPrivateAccess: true }),
    });
  });
});

describe('NodeGroups stack', () => {
  const built = fastApp();
  const t = template(built.nodeGroups);
  const groups = resourcesOf(t, 'AWS::EKS::Nodegroup').map(([, r]) => r.Properties);
  const system = groups.find((g) => g.NodegroupName === 'hybridgw-system');
  const gpu = groups.find((g) => g.NodegroupName === 'hybridgw-gpu');

  it('has a CPU system pool and a GPU pool', () => {
    assert.equal(groups.length, 2);
    assert.ok(system && gpu);
  });

  it('system pool: AL2023 standard, labelled, untainted, at least 2 nodes', () => {
    assert.equal(system!.AmiType, 'AL2023_x86_64_STANDARD');
    assert.deepEqual(system!.Labels, { 'hybridgw.io/pool': 'system' });
    assert.equal(system!.Taints, undefined);
    assert.ok(system!.ScalingConfig.MinSize >= 2);
  });

  it('GPU pool: AL2023 NVIDIA AMI, GPU instance type, label and NoSchedule taint', () => {
    assert.equal(gpu!.AmiType, 'AL2023_x86_64_NVIDIA');
    assert.deepEqual(gpu!.InstanceTypes, ['g6.xlarge']);
    assert.equal(gpu!.Labels['hybridgw.io/pool'], 'gpu');
    assert.deepEqual(gpu!.Taints, [{ Key: 'nvidia.com/gpu', Value: 'true', Effect: 'NO_SCHEDULE' }]);
    assert.ok(gpu!.DiskSize >= 100, 'vLLM images and weights need a large root volume');
  });

  it('puts both pools in the private subnets', () => {
    for (const g of groups) {
      assert.equal(g.Subnets.length, 3);
      for (const s of g.Subnets) assert.match(flatten(s), /private/i);
    }
  });

  it('installs the NVIDIA device plugin only onto GPU nodes, tolerating the GPU taint', () => {
    const dp = helmCharts(t).find((c) => c.props.Chart === 'nvidia-device-plugin');
    assert.ok(dp, 'device plugin chart missing');
    assert.equal(dp!.props.Repository, 'https://nvidia.github.io/k8s-device-plugin');
    assert.match(dp!.props.Version, /^\d+\.\d+\.\d+$/);
    assert.deepEqual(dp!.values.tolerations, [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    const term = dp!.values.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0];
    assert.deepEqual(term.matchExpressions[0], { key: 'hybridgw.io/pool', operator: 'In', values: ['gpu'] });
  });
});
