import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { DEPLOY_DIR } from './helpers';

const SCRIPTS = ['test', 'teardown'].map((s) => path.join(DEPLOY_DIR, 'scripts', s));

describe('deploy scripts', () => {
  for (const script of SCRIPTS) {
    const name = path.basename(script);
    it(`${name} is executable bash with strict mode and parses (bash -n)`, () => {
      const st = fs.statSync(script);
      assert.ok(st.mode & 0o111, `${name} not executable`);
      const text = fs.readFileSync(script, 'utf8');
      assert.match(text.split('\n')[0], /^#!\/usr\/bin\/env bash$/);
      assert.match(text, /^set -euo pipefail$/m);
      const r = spawnSync('bash', ['-n', script], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    });
    it(`${name} is shellcheck-clean (when shellcheck is installed)`, (t) => {
      const probe = spawnSync('shellcheck', ['--version'], { encoding: 'utf8' });
      if (probe.error) {
        t.skip('shellcheck not installed (apt-get install shellcheck)');
        return;
      }
      const r = spawnSync('shellcheck', ['-x', script], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
    });
  }

  it('teardown cleans Kubernetes-made resources before destroying stacks, in reverse order', () => {
    const text = fs.readFileSync(SCRIPTS[1], 'utf8');
    const at = (re: RegExp) => {
      const m = re.exec(text);
      assert.ok(m, `missing ${re}`);
      return m!.index;
    };
    const ingress = at(/delete ingress --all-namespaces/);
    const lbSvc = at(/type=="LoadBalancer"/);
    const nodeclaims = at(/delete nodeclaims\.karpenter\.sh/);
    const deleteStack = at(/cloudformation delete-stack/);
    assert.ok(ingress < deleteStack && lbSvc < deleteStack && nodeclaims < deleteStack);
    assert.match(text, /layers=\(Network Cluster NodeGroups Addons Models Database Gateway Observability\)/);
    assert.match(text, /for \(\(i = \$\{#layers\[@\]\} - 1; i >= 0; i--\)\)/, 'stacks must be destroyed last-first');
    // The ledger database is not deleted behind the operator's back: deletion protection stops it.
    const protection = at(/DBInstances\[0\]\.DeletionProtection/);
    assert.ok(protection < deleteStack, 'check deletion protection before delete-stack');
    assert.match(text, /--no-deletion-protection/);
  });

  it('teardown --help works without aws or kubectl', () => {
    const r = spawnSync('bash', [SCRIPTS[1], '--help'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Usage: deploy\/scripts\/teardown/);
  });
});
