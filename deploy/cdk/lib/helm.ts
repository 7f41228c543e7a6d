import * as path from 'path';
import { Duration } from 'aws-cdk-lib';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import { Construct } from 'constructs';
import { ChartPin } from './config';

/** deploy/ (this file is deploy/cdk/lib/helm.ts, or deploy/cdk/dist/lib/helm.js once compiled). */
export const DEPLOY_DIR = findDeployDir(__dirname);

function findDeployDir(start: string): string {
  let dir = start;
  for (let i = 0; i < 6; i++) {
    if (path.basename(dir) === 'cdk' && path.basename(path.dirname(dir)) === 'deploy') return path.dirname(dir);
    dir = path.dirname(dir);
  }
  throw new Error(`cannot find deploy/ above ${start}`);
}

export const CHARTS_DIR = path.join(DEPLOY_DIR, 'charts');
export const OBSERVABILITY_DIR = path.join(DEPLOY_DIR, 'observability');

export interface ChartOptions {
  readonly release: string;
  readonly values?: Record<string, unknown>;
  readonly namespace?: string;
  readonly createNamespace?: boolean;
  readonly wait?: boolean;
  readonly timeout?: Duration;
}

/**
 * A third-party chart pulled by the cluster's helm Lambda at deploy time, pinned to one version.
 * For oci:// repositories the URL names the chart itself.
 */
export function thirdPartyChart(scope: Construct, id: string, cluster: eks.ICluster, pin: ChartPin, opts: ChartOptions): eks.HelmChart {
  const isOci = pin.repository.startsWith('oci://');
  return new eks.HelmChart(scope, id, {
    cluster,
    chart: isOci ? path.posix.basename(pin.repository) : pin.chart,
    repository: pin.repository,
    version: pin.version,
    release: opts.release,
    namespace: opts.namespace ?? pin.namespace,
    createNamespace: opts.createNamespace ?? true,
    values: opts.values,
    wait: opts.wait ?? true,
    timeout: opts.timeout ?? Duration.minutes(15),
    atomic: true,
  });
}

/**
 * One of our own charts (deploy/charts/<name>), shipped to the cluster as a CDK S3 asset:
 * no chart repository to publish to, and the chart version that was tested is the one deployed.
 */
export function localChart(scope: Construct, id: string, cluster: eks.ICluster, chartName: string, opts: ChartOptions & { namespace: string }): eks.HelmChart {
  const chartAsset = new s3assets.Asset(scope, `${id}ChartAsset`, {
    path: path.join(CHARTS_DIR, chartName),
    exclude: ['tests', '*.tgz', '.helmignore~'],
  });
  return new eks.HelmChart(scope, id, {
    cluster,
    chartAsset,
    release: opts.release,
    namespace: opts.namespace,
    createNamespace: opts.createNamespace ?? false,
    values: opts.values,
    wait: opts.wait ?? true,
    timeout: opts.timeout ?? Duration.minutes(15),
    atomic: true,
  });
}

/** A Namespace object applied by kubectl (so service accounts and secrets can go in before a chart). */
export function namespace(scope: Construct, id: string, cluster: eks.ICluster, name: string, labels: Record<string, string> = {}): eks.KubernetesManifest {
  return new eks.KubernetesManifest(scope, id, {
    cluster,
    manifest: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'app.kubernetes.io/part-of': 'hybridgw', ...labels } } }],
    overwrite: true,
  });
}
