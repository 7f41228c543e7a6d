import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { buildApp } from '../lib/app';

/** Synthesizes the whole app like `cdk synth` does: assets staged, CloudFormation validation on. */
describe('full app synth', () => {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'hybridgw-cdk-out-'));
  after(() => fs.rmSync(outdir, { recursive: true, force: true }));
  const built = buildApp({ outdir });
  const assembly = built.app.synth();

  it('produces the eight layer stacks in deploy order (Database before Gateway)', () => {
    const names = assembly.stacks.map((s) => s.stackName);
    const expected = ['Network', 'Cluster', 'NodeGroups', 'Addons', 'Models', 'Database', 'Gateway', 'Observability'].map((l) => `Hybridgw-${l}`);
    assert.deepEqual([...names].sort(), [...expected].sort());
    for (let i = 1; i < expected.length; i++) {
      const deps = assembly.getStackByName(expected[i]).dependencies.map((d) => d.id);
      assert.ok(deps.includes(expected[i - 1]), `${expected[i]} must depend on ${expected[i - 1]}`);
    }
  });

  it('passes CDK\'s built-in CloudFormation validation with no errors', () => {
    for (const s of assembly.stacks) {
      const errors = s.messages.filter((m) => m.level === 'error');
      assert.deepEqual(errors.map((e) => `${e.id}: ${String(e.entry.data)}`), [], `${s.stackName} has synth errors`);
    }
    const report = path.join(outdir, 'validation-report.json');
    if (fs.existsSync(report)) {
      const text = fs.readFileSync(report, 'utf8');
      assert.doesNotMatch(text, /"severity":\s*"(error|fatal)"/);
    }
  });

  it('keeps every template well under the CloudFormation size limit', () => {
    for (const s of assembly.stacks) {
      const size = fs.statSync(path.join(outdir, s.templateFile)).size;
      assert.ok(size < 800_000, `${s.stackName} template is ${size} bytes`);
    }
  });

  it('stages our two charts as assets containing Chart.yaml and values.schema.json', () => {
    const dirs = fs.readdirSync(outdir).filter((d) => d.startsWith('asset.') && fs.statSync(path.join(outdir, d)).isDirectory());
    const charts = dirs.map((d) => path.join(outdir, d, 'Chart.yaml')).filter((f) => fs.existsSync(f))
      .map((f) => /^name:\s*(\S+)/m.exec(fs.readFileSync(f, 'utf8'))?.[1]).sort();
    assert.deepEqual(charts, ['hybridgw', 'vllm']);
    for (const d of dirs) {
      if (fs.existsSync(path.join(outdir, d, 'Chart.yaml'))) assert.ok(fs.existsSync(path.join(outdir, d, 'values.schema.json')));
    }
  });

  it('writes no secret material into any template', () => {
    for (const s of assembly.stacks) {
      const text = fs.readFileSync(path.join(outdir, s.templateFile), 'utf8');
      assert.doesNotMatch(text, /sk-ant-[A-Za-z0-9]|sk-proj-|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY/);
    }
  });

  it('puts no database password in any template, output or chart value', () => {
    let urls = 0;
    for (const s of assembly.stacks) {
      const text = fs.readFileSync(path.join(outdir, s.templateFile), 'utf8');
      const tpl = JSON.parse(text) as { Resources: Record<string, any>; Outputs?: Record<string, any> };
      // Every postgres URL in a template is the ExternalSecret template: user and password are placeholders.
      for (const m of text.matchAll(/postgres(?:ql)?:\/\/([^@"]*)@/g)) {
        urls++;
        assert.match(m[1], /^\{\{ \.username \| urlquery \}\}:\{\{ \.password \| urlquery \}\}$/, `${s.stackName}: ${m[0]}`);
      }
      assert.doesNotMatch(text, /password=/i, `${s.stackName}: a password parameter`);
      for (const [id, r] of Object.entries(tpl.Resources)) {
        if (r.Type === 'AWS::RDS::DBInstance') {
          assert.match(JSON.stringify(r.Properties.MasterUserPassword), /^\{"Fn::Join":\["",\["\{\{resolve:secretsmanager:/, `${id}: password must be a dynamic reference`);
        }
        if (r.Type === 'AWS::SecretsManager::Secret') assert.equal(r.Properties.SecretString, undefined, `${id}: literal secret value`);
        if (r.Type === 'Custom::AWSCDK-EKS-HelmChart') assert.doesNotMatch(JSON.stringify(r.Properties.Values ?? ''), /postgres(ql)?:\/\//, `${id}: URL in chart values`);
      }
      for (const [id, o] of Object.entries(tpl.Outputs ?? {})) assert.doesNotMatch(JSON.stringify(o), /resolve:secretsmanager|SecretString|password/i, `output ${id}`);
    }
    assert.equal(urls, 1, 'exactly one URL template (the ledger ExternalSecret)');
  });
});
