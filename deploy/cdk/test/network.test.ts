import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { DEFAULT_CONFIG, resolveConfig } from '../lib/config';
import { fastApp, resourcesOf, template } from './helpers';

const CLUSTER = DEFAULT_CONFIG.clusterName;

function tagMap(tags: Array<{ Key: string; Value: unknown }>): Record<string, unknown> {
  return Object.fromEntries(tags.map((t) => [t.Key, t.Value]));
}

function cidrPrefix(cidr: string): number {
  return Number(cidr.split('/')[1]);
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

describe('Network stack (defaults: 1 NAT)', () => {
  const built = fastApp();
  const t = template(built.network);
  const subnets = resourcesOf(t, 'AWS::EC2::Subnet').map(([, r]) => r.Properties);
  const publics = subnets.filter((s) => tagMap(s.Tags)['aws-cdk:subnet-type'] === 'Public');
  const privates = subnets.filter((s) => tagMap(s.Tags)['aws-cdk:subnet-type'] === 'Private');

  it('creates a 10.0.0.0/16 VPC with DNS support', () => {
    t.resourceCountIs('AWS::EC2::VPC', 1);
    t.hasResourceProperties('AWS::EC2::VPC', { CidrBlock: '10.0.0.0/16', EnableDnsHostnames: true, EnableDnsSupport: true });
  });

  it('spans exactly the 3 configured AZs, even without an account in the environment', () => {
    assert.equal(built.network.account.startsWith('${Token'), true, 'test premise: env-agnostic account');
    const azs = new Set(subnets.map((s) => s.AvailabilityZone));
    assert.deepEqual([...azs].sort(), ['us-east-1a', 'us-east-1b', 'us-east-1c']);
  });

  it('has 6 subnets: 3 public /24 and 3 private /20, no overlap', () => {
    assert.equal(subnets.length, 6);
    assert.equal(publics.length, 3);
    assert.equal(privates.length, 3);
    for (const s of publics) assert.equal(cidrPrefix(s.CidrBlock), 24, s.CidrBlock);
    for (const s of privates) assert.equal(cidrPrefix(s.CidrBlock), 20, s.CidrBlock);
    const ranges = subnets.map((s) => {
      const [ip, p] = s.CidrBlock.split('/');
      const start = ipToInt(ip);
      return [start, start + 2 ** (32 - Number(p))] as const;
    }).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i][0] >= ranges[i - 1][1], 'subnets overlap');
    for (const [lo, hi] of ranges) assert.ok(lo >= ipToInt('10.0.0.0') && hi <= ipToInt('10.1.0.0'), 'subnet outside VPC');
  });

  it('never maps public IPs on launch, in any subnet', () => {
    for (const s of subnets) assert.equal(s.MapPublicIpOnLaunch, false, `${s.CidrBlock} maps public IPs`);
  });

  it('tags public subnets for internet-facing ELBs and private ones for internal ELBs and Karpenter', () => {
    for (const s of publics) {
      const tags = tagMap(s.Tags);
      assert.equal(tags['kubernetes.io/role/elb'], '1');
      assert.equal(tags[`kubernetes.io/cluster/${CLUSTER}`], 'shared');
      assert.equal(tags['karpenter.sh/discovery'], undefined, 'Karpenter must not launch nodes in public subnets');
      assert.equal(tags['kubernetes.io/role/internal-elb'], undefined);
    }
    for (const s of privates) {
      const tags = tagMap(s.Tags);
      assert.equal(tags['kubernetes.io/role/internal-elb'], '1');
      assert.equal(tags[`kubernetes.io/cluster/${CLUSTER}`], 'shared');
      assert.equal(tags['karpenter.sh/discovery'], CLUSTER);
      assert.equal(tags['kubernetes.io/role/elb'], undefined);
    }
  });

  it('has one NAT gateway by default, and every private route table egresses through NAT', () => {
    t.resourceCountIs('AWS::EC2::NatGateway', 1);
    t.resourceCountIs('AWS::EC2::EIP', 1);
    const natRoutes = resourcesOf(t, 'AWS::EC2::Route').filter(([, r]) => r.Properties.NatGatewayId);
    assert.equal(natRoutes.length, 3);
  });

  it('has an S3 gateway endpoint and ECR API, ECR Docker, Logs and STS interface endpoints in the private subnets', () => {
    const eps = resourcesOf(t, 'AWS::EC2::VPCEndpoint').map(([, r]) => r.Properties);
    assert.equal(eps.length, 5);
    const service = (e: Record<string, any>) => JSON.stringify(e.ServiceName);
    const gateway = eps.filter((e) => e.VpcEndpointType === 'Gateway');
    assert.equal(gateway.length, 1);
    assert.match(service(gateway[0]), /s3/);
    assert.equal(gateway[0].RouteTableIds.length, 3, 'S3 endpoint on the 3 private route tables');
    const iface = eps.filter((e) => e.VpcEndpointType === 'Interface');
    const names = iface.map((e) => service(e).replace(/.*\.([a-z.]+)"\]?\]?\}?$/, '$1'));
    for (const wanted of ['ecr.api', 'ecr.dkr', 'logs', 'sts']) {
      assert.ok(iface.some((e) => service(e).includes(`.${wanted}`)), `missing ${wanted} endpoint (have ${names})`);
    }
    const privateIds = new Set(resourcesOf(t, 'AWS::EC2::Subnet')
      .filter(([, r]) => tagMap(r.Properties.Tags)['aws-cdk:subnet-type'] === 'Private').map(([id]) => id));
    for (const e of iface) {
      assert.equal(e.PrivateDnsEnabled, true);
      assert.equal(e.SubnetIds.length, 3);
      for (const s of e.SubnetIds) assert.ok(privateIds.has(s.Ref), 'interface endpoint outside private subnets');
    }
  });

  it('exports the VPC for the later stacks', () => {
    t.hasOutput('*', { Export: { Name: Match.stringLikeRegexp('Hybridgw-Network') } });
  });
});

describe('Network stack with natGateways: 3 (production)', () => {
  const t = template(fastApp({ overrides: { network: { natGateways: 3 } } }).network);
  it('has one NAT gateway per AZ, each private route table on its own', () => {
    t.resourceCountIs('AWS::EC2::NatGateway', 3);
    const natIds = new Set(resourcesOf(t, 'AWS::EC2::Route').filter(([, r]) => r.Properties.NatGatewayId)
      .map(([, r]) => r.Properties.NatGatewayId.Ref));
    assert.equal(natIds.size, 3);
  });
});

describe('Network config validation', () => {
  it('rejects a NAT count outside 1..AZs', () => {
    assert.throws(() => resolveConfig({ network: { natGateways: 0 } }), /natGateways/);
    assert.throws(() => resolveConfig({ network: { natGateways: 4 } }), /natGateways/);
  });
  it('rejects AZs from another region', () => {
    assert.throws(() => resolveConfig({ availabilityZones: ['us-west-2a', 'us-east-1b', 'us-east-1c'] }), /not in us-east-1/);
  });
  it('can switch interface endpoints off for a lab', () => {
    const t = template(fastApp({ overrides: { network: { interfaceEndpoints: false } } }).network);
    t.resourceCountIs('AWS::EC2::VPCEndpoint', 1);
  });
  it('keeps the explicit AZs when the environment has an account', () => {
    const t = template(fastApp({ overrides: { account: '123456789012' } }).network);
    const azs = new Set(resourcesOf(t, 'AWS::EC2::Subnet').map(([, r]) => r.Properties.AvailabilityZone));
    assert.deepEqual([...azs].sort(), ['us-east-1a', 'us-east-1b', 'us-east-1c']);
  });
  it('uses other AZs when configured (GPU capacity differs by AZ)', () => {
    const t = template(fastApp({ overrides: { availabilityZones: ['us-east-1b', 'us-east-1c', 'us-east-1d'] } }).network);
    const azs = new Set(resourcesOf(t, 'AWS::EC2::Subnet').map(([, r]) => r.Properties.AvailabilityZone));
    assert.deepEqual([...azs].sort(), ['us-east-1b', 'us-east-1c', 'us-east-1d']);
  });
});
