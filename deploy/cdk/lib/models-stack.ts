import { CfnOutput, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { HybridgwConfig, ModelConfig } from './config';
import { localChart, namespace } from './helm';

export interface ModelsStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly cluster: eks.ICluster;
}

/** In-cluster URL of a model's vLLM Service (what the gateway config points at). */
export function modelServiceUrl(cfg: HybridgwConfig, m: ModelConfig): string {
  return `http://vllm-${m.name}.${cfg.models.namespace}.svc:8000`;
}

/** Prometheus inside the cluster (kube-prometheus-stack release in the Observability stack). */
export function prometheusUrl(cfg: HybridgwConfig): string {
  return `http://kube-prometheus-stack-prometheus.${cfg.observability.kubePrometheusStack.namespace}.svc:9090`;
}

/**
 * Layer 5: the local tier. One release of deploy/charts/vllm per configured model, on the GPU
 * pool, autoscaled by KEDA on vLLM's queue depth. Weights come from Hugging Face at pod start or
 * from the weights bucket (read through an IRSA service account) into the model cache volume.
 */
export class ModelsStack extends Stack {
  public readonly weightsBucket: s3.IBucket;
  public readonly releases: eks.HelmChart[] = [];

  constructor(scope: Construct, id: string, props: ModelsStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const { cluster } = props;
    const ns = cfg.models.namespace;

    this.weightsBucket = cfg.models.weightsBucketName
      ? s3.Bucket.fromBucketName(this, 'WeightsBucket', cfg.models.weightsBucketName)
      : new s3.Bucket(this, 'WeightsBucket', {
        encryption: s3.BucketEncryption.S3_MANAGED,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        enforceSSL: true,
        versioned: false,
        // Weights are large and slow to re-upload: keep them past a stack delete.
        removalPolicy: RemovalPolicy.RETAIN,
      });

    const nsManifest = namespace(this, 'Namespace', cluster, ns);

    const sa = new eks.ServiceAccount(this, 'VllmServiceAccount', {
      cluster,
      name: 'vllm',
      namespace: ns,
      identityType: eks.IdentityType.IRSA,
    });
    sa.node.addDependency(nsManifest);
    this.weightsBucket.grantRead(sa);

    for (const m of cfg.models.list) {
      const release = localChart(this, `Vllm-${m.name}`, cluster, 'vllm', {
        release: `vllm-${m.name}`,
        namespace: ns,
        // Model download + load can take far longer than helm's default wait.
        wait: false,
        values: vllmValues(cfg, m, sa.serviceAccountName, this.weightsBucket.bucketName),
      });
      release.node.addDependency(sa);
      this.releases.push(release);
    }

    new CfnOutput(this, 'WeightsBucketName', { value: this.weightsBucket.bucketName });
  }
}

/** Values for one vllm release; exported so tests render the chart with exactly these. */
export function vllmValues(cfg: HybridgwConfig, m: ModelConfig, serviceAccountName: string, bucketName: string): Record<string, unknown> {
  return {
    image: { repository: cfg.models.image.repository, tag: cfg.models.image.tag },
    s3Sync: { image: { repository: cfg.models.s3SyncImage.repository, tag: cfg.models.s3SyncImage.tag } },
    model: {
      name: m.name,
      id: m.hfModelId,
      servedModelName: m.servedModelName,
      source: m.source,
      s3Uri: m.source === 's3' ? `s3://${bucketName}/${m.s3Prefix}` : '',
      maxModelLen: m.maxModelLen,
      gpus: m.gpusPerReplica,
      extraArgs: m.extraArgs,
    },
    cache: m.cache.type === 'pvc'
      ? { type: 'pvc', claimName: m.cache.claimName ?? '' }
      : { type: 'emptyDir', sizeLimit: `${m.cache.sizeGiB}Gi` },
    serviceAccount: { create: false, name: serviceAccountName },
    keda: {
      enabled: true,
      minReplicas: m.minReplicas,
      maxReplicas: m.maxReplicas,
      waitingRequestsTarget: m.waitingRequestsTarget,
      prometheusServerAddress: prometheusUrl(cfg),
    },
  };
}
