import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { ALB_CONTROLLER_POLICY_FILE } from '../lib/addons-stack';
import { fastApp, flatten, helmCharts, manifests, resourcesOf, template } from './helpers';

/** IAM roles whose trust policy is an IRSA web-identity trust for namespace:serviceaccount. */
function irsaSubjects(t: ReturnType<typeof template>): string[] {
  const subjects: string[] = [];
  for (const [, r] of resourcesOf(t, 'AWS::IAM::Role')) {
    for (const st of r.Properties.AssumeRolePolicyDocument.Statement) {
      if (st.Action !== 'sts:AssumeRoleWithWebIdentity') continue;
      subjects.push(flatten(st.Condition?.StringEquals ?? {}));
    }
  }
  // CfnJson conditions are custom resources; their values hold the subject.
  for (const [, r] of resourcesOf(t, 'Custom::AWSCDKCfnJson')) subjects.push(flatten(r.Properties.Value));
  return subjects;
}

function policyStatements(t: ReturnType<typeof template>): Array<Record<string, any>> {
  return resourcesOf(t, 'AWS::IAM::Policy').flatMap(([, r]) => r.Properties.PolicyDocument.Statement);
}

describe('Addons stack', () => {
  const built = fastApp();
  const t = template(built.addons);
  const charts = helmCharts(t);
  const chart = (name: string) => {
    const c = charts.find((x) => x.props.Chart === name);
    assert.ok(c, `chart ${name} missing (have ${charts.map((x) => x.props.Chart)})`);
    return c!;
  };

  it('pins every third-party chart to an exact version', () => {
    assert.ok(charts.length >= 6);
    for (const c of charts) {
      assert.match(c.props.Version, /^\d+\.\d+\.\d+$/, `${c.props.Chart} not pinned`);
      assert.match(c.props.Repository, /^(https|oci):\/\//);
    }
  });

  it('installs the AWS Load Balancer Controller with an IRSA service account and our policy', () => {
    const alb = chart('aws-load-balancer-controller');
    assert.equal(alb.props.Repository, 'https://aws.github.io/eks-charts');
    assert.equal(alb.props.Namespace, 'kube-system');
    assert.deepEqual(alb.values.serviceAccount, { create: false, name: 'aws-load-balancer-controller' });
    assert.equal(alb.values.clusterName, 'hybridgw');
    assert.match(alb.values.vpcId, /IMPORT_|REF_/);
    assert.ok(irsaSubjects(t).some((s) => s.includes('system:serviceaccount:kube-system:aws-load-balancer-controller')));
    const sa = manifests(t).find((m) => m.kind === 'ServiceAccount' && m.metadata.name === 'aws-load-balancer-controller');
    assert.ok(sa?.metadata.annotations['eks.amazonaws.com/role-arn'], 'SA not annotated with its role');
  });

  it('attaches exactly the repository policy document to the controller role', () => {
    const ours = JSON.parse(fs.readFileSync(ALB_CONTROLLER_POLICY_FILE.replace(`${path.sep}dist${path.sep}`, path.sep), 'utf8'));
    const policy = resourcesOf(t, 'AWS::IAM::Policy').find(([, r]) => r.Properties.PolicyName === 'hybridgw-aws-load-balancer-controller');
    assert.ok(policy, 'ALB controller policy missing');
    const sids = policy![1].Properties.PolicyDocument.Statement.map((s: { Sid: string }) => s.Sid).sort();
    assert.deepEqual(sids, ours.Statement.map((s: { Sid: string }) => s.Sid).sort());
    // Mutating calls are tag-scoped to what a controller created.
    const modify = ours.Statement.find((s: { Sid: string }) => s.Sid === 'ModifyOwnedLoadBalancersAndTargetGroups');
    assert.deepEqual(modify.Condition, { Null: { 'aws:ResourceTag/elbv2.k8s.aws/cluster': 'false' } });
  });

  it('installs Karpenter with IRSA, interruption queue and scoped permissions', () => {
    const k = chart('karpenter');
    assert.equal(k.props.Repository, 'oci://public.ecr.aws/karpenter/karpenter');
    assert.equal(k.values.settings.clusterName, 'hybridgw');
    assert.match(k.values.settings.interruptionQueue, /GETATT_|karpenter-interruptions/);
    assert.deepEqual(k.values.nodeSelector, { 'hybridgw.io/pool': 'system' });
    assert.ok(irsaSubjects(t).some((s) => s.includes('system:serviceaccount:kube-system:karpenter')));
    t.resourceCountIs('AWS::SQS::Queue', 1);
    t.resourceCountIs('AWS::Events::Rule', 4);
    const sts = policyStatements(t);
    const passRole = sts.find((s) => s.Sid === 'PassNodeRole');
    assert.ok(passRole, 'iam:PassRole statement missing');
    assert.notEqual(passRole!.Resource, '*', 'PassRole must be limited to the node role');
    const terminate = sts.find((s) => s.Sid === 'DeleteOwnedInstancesAndTemplates');
    assert.ok(terminate?.Condition?.StringEquals?.['aws:ResourceTag/kubernetes.io/cluster/hybridgw'] === 'owned');
    t.hasResourceProperties('AWS::EKS::AccessEntry', { Type: 'EC2_LINUX' });
  });

  it('defines GPU and CPU NodePools with EC2NodeClasses', () => {
    const objs = manifests(t);
    const pools = objs.filter((o) => o.kind === 'NodePool');
    const classes = objs.filter((o) => o.kind === 'EC2NodeClass');
    assert.deepEqual(pools.map((p) => p.metadata.name).sort(), ['cpu', 'gpu']);
    assert.deepEqual(classes.map((p) => p.metadata.name).sort(), ['cpu', 'gpu']);
    for (const o of [...pools, ...classes]) assert.match(o.apiVersion, /^karpenter\.(sh|k8s\.aws)\/v1$/);
    const gpu = pools.find((p) => p.metadata.name === 'gpu')!;
    assert.deepEqual(gpu.spec.template.spec.taints, [{ key: 'nvidia.com/gpu', value: 'true', effect: 'NoSchedule' }]);
    assert.equal(gpu.spec.template.metadata.labels['hybridgw.io/pool'], 'gpu');
    assert.equal(gpu.spec.template.spec.nodeClassRef.name, 'gpu');
    assert.ok(gpu.spec.limits['nvidia.com/gpu']);
    const fam = gpu.spec.template.spec.requirements.find((r: { key: string }) => r.key === 'karpenter.k8s.aws/instance-family');
    assert.ok(fam.values.every((f: string) => /^g\d/.test(f)), 'GPU pool must only allow GPU families');
    const zones = gpu.spec.template.spec.requirements.find((r: { key: string }) => r.key === 'topology.kubernetes.io/zone');
    assert.deepEqual(zones.values, ['us-east-1a', 'us-east-1b', 'us-east-1c']);
    const cpu = pools.find((p) => p.metadata.name === 'cpu')!;
    assert.equal(cpu.spec.template.spec.taints, undefined);
    for (const c of classes) {
      assert.deepEqual(c.spec.subnetSelectorTerms, [{ tags: { 'karpenter.sh/discovery': 'hybridgw' } }]);
      assert.equal(c.spec.metadataOptions.httpTokens, 'required');
      assert.equal(c.spec.blockDeviceMappings[0].ebs.encrypted, true);
      assert.ok(c.spec.role, 'node role missing');
    }
  });

  it('installs metrics-server, KEDA, prometheus-operator CRDs and External Secrets', () => {
    assert.equal(chart('metrics-server').props.Namespace, 'kube-system');
    assert.equal(chart('keda').props.Namespace, 'keda');
    assert.equal(chart('prometheus-operator-crds').props.Repository, 'https://prometheus-community.github.io/helm-charts');
    assert.equal(chart('external-secrets').values.installCRDs, true);
  });

  it('installs the EBS CSI driver add-on with an IRSA role', () => {
    t.hasResourceProperties('AWS::EKS::Addon', { AddonName: 'aws-ebs-csi-driver' });
    assert.ok(irsaSubjects(t).some((s) => s.includes('system:serviceaccount:kube-system:ebs-csi-controller-sa')));
  });
});
