import { CfnOutput, Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { HybridgwConfig } from './config';

export interface DatabaseStackProps extends StackProps {
  readonly config: HybridgwConfig;
  readonly vpc: ec2.IVpc;
  /** Clients: the EKS cluster security group (managed node groups and Karpenter nodes carry it,
   *  and pods use their node's security groups). */
  readonly cluster: eks.ICluster;
}

export const LEDGER_DB_PORT = 5432;

/** Name of the Secrets Manager secret with the ledger database's master credentials. */
export function ledgerSecretName(cfg: HybridgwConfig): string {
  return `${cfg.clusterName}/hybridgw/ledger-db`;
}

const REMOVAL: Record<HybridgwConfig['ledger']['postgres']['removalPolicy'], RemovalPolicy> = {
  snapshot: RemovalPolicy.SNAPSHOT,
  retain: RemovalPolicy.RETAIN,
  destroy: RemovalPolicy.DESTROY,
};

/**
 * Layer 6: the gateway's spend store on RDS PostgreSQL (only when ledger.backend is 'postgres').
 *
 * Why PostgreSQL: SQLite is one file per pod, so with several replicas each would enforce its own
 * budgets and rate limits, and the ledger would die with the pod's ephemeral disk. With one
 * PostgreSQL database, budget reservations are atomic across replicas and the replicas exchange
 * rate-limit counts through it.
 *
 * - private subnets only, not publicly accessible, storage encrypted (aws/rds key), TLS forced;
 * - a security group that admits 5432 from the EKS cluster security group and nothing else;
 * - master credentials generated into Secrets Manager (`<clusterName>/hybridgw/ledger-db`):
 *   the password never appears in a template (the instance gets a dynamic reference) and reaches
 *   the pods only through External Secrets (Gateway stack);
 * - automated backups, deletion protection and removal policy from lib/config.ts.
 *
 * Its own stack so the Gateway stack can be destroyed and redeployed without touching the data.
 */
export class DatabaseStack extends Stack {
  public readonly instance: rds.DatabaseInstance;
  public readonly secret: secretsmanager.ISecret;
  public readonly securityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: DatabaseStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const pg = cfg.ledger.postgres;

    this.securityGroup = new ec2.SecurityGroup(this, 'LedgerDbSecurityGroup', {
      vpc: props.vpc,
      description: `hybridgw ledger PostgreSQL: ${LEDGER_DB_PORT} from the EKS cluster ${cfg.clusterName} only`,
      allowAllOutbound: false,
    });
    this.securityGroup.addIngressRule(
      props.cluster.clusterSecurityGroup,
      ec2.Port.tcp(LEDGER_DB_PORT),
      'PostgreSQL from EKS nodes and pods (cluster security group)',
    );

    const major = pg.engineVersion.split('.')[0];
    const engine = rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.of(pg.engineVersion, major) });

    // TLS only (15+ defaults to it on RDS; explicit so a parameter-group change cannot drop it).
    const parameterGroup = new rds.ParameterGroup(this, 'LedgerDbParameters', {
      engine,
      description: 'hybridgw ledger: TLS only',
      parameters: { 'rds.force_ssl': '1' },
    });

    this.instance = new rds.DatabaseInstance(this, 'LedgerDb', {
      engine,
      parameterGroup,
      instanceType: new ec2.InstanceType(pg.instanceType),
      vpc: props.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [this.securityGroup],
      publiclyAccessible: false,
      port: LEDGER_DB_PORT,
      databaseName: pg.databaseName,
      credentials: rds.Credentials.fromGeneratedSecret(pg.username, {
        secretName: ledgerSecretName(cfg),
      }),
      storageEncrypted: true,
      storageType: rds.StorageType.GP3,
      allocatedStorage: pg.allocatedStorageGiB,
      maxAllocatedStorage: pg.maxAllocatedStorageGiB,
      multiAz: pg.multiAz,
      backupRetention: Duration.days(pg.backupRetentionDays),
      copyTagsToSnapshot: true,
      autoMinorVersionUpgrade: true,
      deletionProtection: pg.deletionProtection,
      removalPolicy: REMOVAL[pg.removalPolicy],
    });
    if (!this.instance.secret) throw new Error('ledger database: no generated secret');
    this.secret = this.instance.secret;
    // A snapshot or a retained instance is useless without its master password: keep the
    // secret unless the instance is destroyed with the stack.
    const generated = this.instance.node.tryFindChild('Secret');
    if (!(generated instanceof secretsmanager.Secret)) throw new Error('ledger database: generated secret not found');
    generated.applyRemovalPolicy(pg.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN);

    // Names and addresses only; the password stays in Secrets Manager.
    new CfnOutput(this, 'LedgerDbEndpoint', { value: this.instance.dbInstanceEndpointAddress });
    new CfnOutput(this, 'LedgerDbSecretName', { value: ledgerSecretName(cfg) });
  }
}
