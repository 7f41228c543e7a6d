import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as YAML from 'yaml';
import { resolveConfig } from '../lib/config';
import { databaseUrlTemplate, gatewayValues } from '../lib/gateway-stack';
import { CHARTS_DIR, fastApp, flatten, helm, helmCharts, manifests, resourcesOf, tempDir, template } from './helpers';

type Obj = Record<string, any>;

/**
 * Renders an External Secrets v2 template with helm, which runs the same engine (Go
 * text/template + sprig; `urlquery` is a text/template builtin). ESO puts the secret's keys at
 * the top level (`.password`), helm under `.Values`, hence the `with`.
 */
function renderEsoTemplate(tpl: string, data: Record<string, string>): string {
  const dir = tempDir('eso-tpl');
  fs.mkdirSync(path.join(dir, 'templates'));
  fs.writeFileSync(path.join(dir, 'Chart.yaml'), 'apiVersion: v2\nname: eso-template-check\nversion: 0.1.0\n');
  fs.writeFileSync(path.join(dir, 'templates', '_t.tpl'), `{{- define "t" }}{{ with .Values }}${tpl}{{ end }}{{ end }}\n`);
  fs.writeFileSync(path.join(dir, 'templates', 'out.yaml'), 'rendered: {{ include "t" . | b64enc | quote }}\n');
  const values = path.join(dir, 'values.json');
  fs.writeFileSync(values, JSON.stringify(data));
  const r = helm(['template', 'x', dir, '-f', values]);
  assert.equal(r.status, 0, r.stderr);
  return Buffer.from(YAML.parse(r.stdout).rendered, 'base64').toString('utf8');
}

describe('Database stack (ledger on RDS PostgreSQL)', () => {
  const built = fastApp();
  const t = template(built.database!);
  const db = resourcesOf(t, 'AWS::RDS::DBInstance');
  const inst = db[0][1] as { Properties: Obj; DeletionPolicy?: string; UpdateReplacePolicy?: string };
  const p = inst.Properties;

  it('exists by default, between Models and Gateway in deploy order', () => {
    assert.ok(built.database);
    const names = built.stacks.map((s) => s.stackName);
    assert.deepEqual(names.slice(4, 7), ['Hybridgw-Models', 'Hybridgw-Database', 'Hybridgw-Gateway']);
    assert.equal(db.length, 1);
  });

  it('is PostgreSQL 16 on a small Graviton class, encrypted, private, backed up and protected', () => {
    assert.equal(p.Engine, 'postgres');
    assert.equal(p.EngineVersion, '16');
    assert.equal(p.DBInstanceClass, 'db.t4g.small');
    assert.equal(p.StorageEncrypted, true);
    assert.equal(p.PubliclyAccessible, false);
    assert.equal(p.StorageType, 'gp3');
    assert.equal(p.BackupRetentionPeriod, 7);
    assert.equal(p.DeletionProtection, true);
    assert.equal(inst.DeletionPolicy, 'Snapshot');
    assert.equal(inst.UpdateReplacePolicy, 'Snapshot');
    assert.equal(p.DBName, 'hybridgw');
    assert.equal(String(p.Port), '5432');
  });

  it('forces TLS in its parameter group', () => {
    const [[pgId, pg]] = resourcesOf(t, 'AWS::RDS::DBParameterGroup');
    assert.equal(pg.Properties.Family, 'postgres16');
    assert.equal(pg.Properties.Parameters['rds.force_ssl'], '1');
    assert.deepEqual(p.DBParameterGroupName, { Ref: pgId });
  });

  it('lives in the private subnets of the Network stack only', () => {
    const [[sgId, group]] = resourcesOf(t, 'AWS::RDS::DBSubnetGroup');
    assert.deepEqual(p.DBSubnetGroupName, { Ref: sgId });
    const ids = group.Properties.SubnetIds.map((s: unknown) => flatten(s));
    assert.equal(ids.length, 3);
    for (const id of ids) {
      assert.match(id, /Hybridgw_Network.*private/i);
      assert.doesNotMatch(id, /public/i);
    }
  });

  it('admits 5432 from the EKS cluster security group and nothing else', () => {
    const groups = resourcesOf(t, 'AWS::EC2::SecurityGroup');
    assert.equal(groups.length, 1);
    const [sgId, sg] = groups[0];
    assert.deepEqual(p.VPCSecurityGroups, [{ 'Fn::GetAtt': [sgId, 'GroupId'] }]);
    // Rules may be inline or separate resources: collect both.
    const ingress: Obj[] = [
      ...(sg.Properties.SecurityGroupIngress ?? []),
      ...resourcesOf(t, 'AWS::EC2::SecurityGroupIngress').map(([, r]) => r.Properties),
    ];
    assert.equal(ingress.length, 1, JSON.stringify(ingress));
    const rule = ingress[0];
    assert.equal(rule.IpProtocol, 'tcp');
    assert.equal(rule.FromPort, 5432);
    assert.equal(rule.ToPort, 5432);
    assert.equal(rule.CidrIp, undefined);
    assert.equal(rule.CidrIpv6, undefined);
    assert.match(flatten(rule.SourceSecurityGroupId), /^IMPORT_.*Hybridgw_Cluster.*ClusterSecurityGroupId/);
    // No real egress (CDK's "disallow all" placeholder only).
    for (const e of sg.Properties.SecurityGroupEgress ?? []) assert.equal(e.CidrIp, '255.255.255.255/32');
    t.resourceCountIs('AWS::EC2::SecurityGroupEgress', 0);
  });

  it('generates the master credentials into Secrets Manager; the instance only gets a dynamic reference', () => {
    const secrets = resourcesOf(t, 'AWS::SecretsManager::Secret');
    assert.equal(secrets.length, 1);
    const [secretId, secret] = secrets[0];
    assert.equal(secret.Properties.Name, 'hybridgw/hybridgw/ledger-db');
    assert.equal(secret.Properties.SecretString, undefined, 'no literal secret value');
    const gen = secret.Properties.GenerateSecretString;
    assert.equal(gen.GenerateStringKey, 'password');
    assert.deepEqual(JSON.parse(gen.SecretStringTemplate), { username: 'hybridgw' });
    // The URL template relies on this: urlquery would write a space as '+'.
    assert.ok(gen.ExcludeCharacters.includes(' '));
    assert.equal(p.MasterUsername, 'hybridgw');
    assert.equal(flatten(p.MasterUserPassword), `{{resolve:secretsmanager:REF_${secretId}:SecretString:password::}}`);
    // RDS writes host/port/engine into the secret (the ExternalSecret template reads them).
    t.hasResourceProperties('AWS::SecretsManager::SecretTargetAttachment', { TargetType: 'AWS::RDS::DBInstance', TargetId: { Ref: db[0][0] } });
    assert.equal((secret as Obj).DeletionPolicy, 'Retain', 'the snapshot needs its password');
    for (const o of Object.values(t.toJSON().Outputs ?? {}) as Obj[]) assert.doesNotMatch(JSON.stringify(o.Value), /resolve:secretsmanager|SecretString/);
  });

  it('follows lib/config.ts: version, class, Multi-AZ, backups, deletion protection, removal policy', () => {
    const t2 = template(fastApp({
      overrides: {
        ledger: {
          postgres: {
            engineVersion: '15', instanceType: 'm7g.large', multiAz: true, backupRetentionDays: 14,
            deletionProtection: false, removalPolicy: 'destroy',
          },
        },
      },
    }).database!);
    const [, r] = resourcesOf(t2, 'AWS::RDS::DBInstance')[0] as [string, Obj];
    assert.equal(r.Properties.EngineVersion, '15');
    assert.equal(r.Properties.DBInstanceClass, 'db.m7g.large');
    assert.equal(r.Properties.MultiAZ, true);
    assert.equal(r.Properties.BackupRetentionPeriod, 14);
    assert.equal(r.Properties.DeletionProtection, false);
    assert.equal(r.DeletionPolicy, 'Delete');
    assert.equal((resourcesOf(t2, 'AWS::SecretsManager::Secret')[0][1] as Obj).DeletionPolicy, 'Delete');
    assert.equal(resourcesOf(t2, 'AWS::RDS::DBParameterGroup')[0][1].Properties.Family, 'postgres15');
  });

  it('rejects database settings that would fail late or turn backups off', () => {
    assert.throws(() => resolveConfig({ ledger: { postgres: { engineVersion: '14' } } }), /ledger\.postgres\.engineVersion/);
    assert.throws(() => resolveConfig({ ledger: { postgres: { backupRetentionDays: 0 } } }), /backupRetentionDays/);
    assert.throws(() => resolveConfig({ ledger: { postgres: { instanceType: 'db.t4g.small' } } }), /instanceType/);
    assert.throws(() => resolveConfig({ ledger: { postgres: { username: 'postgres' } } }), /username/);
  });
});

describe('ledger database URL: Secrets Manager -> External Secrets -> pod env', () => {
  const built = fastApp();
  const t = template(built.gateway);
  const objs = manifests(t);
  const c = helmCharts(t)[0];
  const ext = objs.find((o) => o.kind === 'ExternalSecret' && o.metadata.name === 'hybridgw-ledger-db');
  const store = objs.find((o) => o.kind === 'SecretStore' && o.metadata.name === ext?.spec.secretStoreRef.name);

  it('builds HYBRIDGW_DATABASE_URL with an ExternalSecret template from the RDS secret', () => {
    assert.ok(ext, 'no ExternalSecret hybridgw-ledger-db');
    assert.ok(store, 'its SecretStore is missing');
    assert.equal(ext!.apiVersion, 'external-secrets.io/v1');
    const tpl = ext!.spec.target.template;
    assert.equal(ext!.spec.target.name, 'hybridgw-ledger-db');
    assert.equal(tpl.engineVersion, 'v2');
    assert.equal(tpl.mergePolicy, 'Replace', 'only the URL goes into the Kubernetes Secret');
    assert.deepEqual(Object.keys(tpl.data), ['HYBRIDGW_DATABASE_URL']);
    assert.equal(tpl.data.HYBRIDGW_DATABASE_URL,
      'postgres://{{ .username | urlquery }}:{{ .password | urlquery }}@{{ .host }}:{{ .port }}/hybridgw?sslmode=require');
    assert.equal(ext!.spec.dataFrom.length, 1);
    assert.equal(ext!.spec.dataFrom[0].extract.key, 'hybridgw/hybridgw/ledger-db');
    assert.equal(ext!.spec.dataFrom[0].extract.key, resourcesOf(template(built.database!), 'AWS::SecretsManager::Secret')[0][1].Properties.Name);
    assert.equal(store!.spec.provider.aws.auth.jwt.serviceAccountRef.name, 'hybridgw-ledger-db-reader');
  });

  it('gives that store (IRSA) read access to the database secret only, and the API-key reader none', () => {
    const policies = resourcesOf(t, 'AWS::IAM::Policy');
    const forRole = (re: RegExp) => policies.filter(([, r]) => r.Properties.Roles.some((x: Obj) => re.test(flatten(x))));
    const dbPolicies = forRole(/LedgerDbReader/);
    assert.equal(dbPolicies.length, 1);
    const statements = dbPolicies[0][1].Properties.PolicyDocument.Statement as Obj[];
    assert.equal(statements.length, 1);
    assert.deepEqual([statements[0].Action].flat().sort(), ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
    const resources = [statements[0].Resource].flat().map(flatten);
    assert.equal(resources.length, 1);
    assert.match(resources[0], /^IMPORT_.*Hybridgw_Database.*LedgerDbSecret/);
    const apiKeyResources = forRole(/SecretsReader/).flatMap(([, r]) => r.Properties.PolicyDocument.Statement as Obj[])
      .flatMap((s) => [s.Resource].flat().map(flatten));
    assert.ok(apiKeyResources.length > 0);
    for (const r of apiKeyResources) assert.doesNotMatch(r, /Database/, 'the API-key reader must not read the database secret');
  });

  it('renders the gateway config with ledger.database = ${HYBRIDGW_DATABASE_URL}, read from that Secret', () => {
    assert.equal(c.values.config.ledger.database, '${HYBRIDGW_DATABASE_URL}');
    const env = (c.values.secretEnv as Obj[]).find((e) => e.name === 'HYBRIDGW_DATABASE_URL');
    assert.deepEqual(env, { name: 'HYBRIDGW_DATABASE_URL', key: 'HYBRIDGW_DATABASE_URL', secret: 'hybridgw-ledger-db', optional: false });
    assert.doesNotMatch(JSON.stringify(c.values), /postgres(ql)?:\/\//, 'no database URL in chart values');
  });

  it('the template percent-encodes any password into a URL libpq parses back (rendered by Go templates)', () => {
    const password = 'p@ss:w/rd?#&=%,^.-_~x+y';
    const url = renderEsoTemplate(databaseUrlTemplate('hybridgw'), {
      username: 'hybridgw', password, host: 'ledger.abc123.us-east-1.rds.amazonaws.com', port: '5432', engine: 'postgres',
    });
    assert.doesNotMatch(url, /p@ss/, 'password not escaped');
    const u = new URL(url);
    assert.equal(u.protocol, 'postgres:');
    assert.equal(decodeURIComponent(u.username), 'hybridgw');
    assert.equal(decodeURIComponent(u.password), password);
    assert.equal(u.hostname, 'ledger.abc123.us-east-1.rds.amazonaws.com');
    assert.equal(u.port, '5432');
    assert.equal(u.pathname, '/hybridgw');
    assert.equal(u.searchParams.get('sslmode'), 'require');
  });
});

describe('SQLite ledger guard rail (CDK)', () => {
  it('refuses a SQLite ledger with more than one replica, at synth', () => {
    assert.throws(() => fastApp({ overrides: { ledger: { backend: 'sqlite' } } }),
      /ledger\.backend 'sqlite' with gateway\.replicas\.max 10.*own budgets and rate limits/s);
    assert.throws(() => fastApp({ overrides: { ledger: { backend: 'sqlite' }, gateway: { replicas: { min: 1, max: 2 } } } }), /replicas\.max 2/);
  });

  it('accepts SQLite with exactly one replica: no Database stack, no URL secret, no HPA or PDB', () => {
    const built = fastApp({ overrides: { ledger: { backend: 'sqlite' }, gateway: { replicas: { min: 1, max: 1 } } } });
    assert.equal(built.database, undefined);
    assert.ok(!built.stacks.some((s) => s.stackName.endsWith('-Database')));
    const t = template(built.gateway);
    const c = helmCharts(t)[0];
    assert.equal(c.values.config.ledger.database, 'sqlite:///var/lib/hybridgw/ledger.db');
    assert.equal(c.values.replicaCount, 1);
    assert.equal(c.values.hpa.enabled, false);
    assert.equal(c.values.pdb.enabled, false);
    assert.ok(!(c.values.secretEnv as Obj[]).some((e) => e.name === 'HYBRIDGW_DATABASE_URL'));
    assert.ok(!manifests(t).some((o) => o.metadata?.name === 'hybridgw-ledger-db'));
    t.resourceCountIs('AWS::RDS::DBInstance', 0);
  });

  it('keeps the chart guard and the CDK guard in step (gatewayValues of a refused config fails helm too)', () => {
    const ok = resolveConfig({ ledger: { backend: 'sqlite' }, gateway: { replicas: { min: 1, max: 1 } } });
    // Bypass validateConfig to hand the chart what the CDK app refuses.
    const refused = { ...ok, gateway: { ...ok.gateway, replicas: { min: 2, max: 10 } } };
    const file = path.join(tempDir('sqlite-values'), 'values.json');
    fs.writeFileSync(file, JSON.stringify(gatewayValues(refused, 'registry.example.com/hybridgw')));
    const r = helm(['template', 'gw', path.join(CHARTS_DIR, 'hybridgw'), '-f', file]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /SQLite/);
  });
});
