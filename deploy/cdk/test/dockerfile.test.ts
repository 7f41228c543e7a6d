import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT } from './helpers';

/**
 * Structure checks of the root Dockerfile. There is no Docker engine on the machines that run
 * these tests, so no image is built here; this guards the properties we rely on.
 */
interface Stage { name: string; from: string; lines: string[] }

function parseDockerfile(text: string): { args: Record<string, string>; stages: Stage[] } {
  // Join continuation lines, drop comments and blanks.
  const logical = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of logical) {
    const m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (m) {
      stages.push({ from: m[1].replace(/^\$\{(\w+)\}$/, (_, v: string) => args[v] ?? v), name: m[2] ?? '', lines: [] });
    } else if (stages.length === 0) {
      const a = /^ARG\s+(\w+)=(\S+)/i.exec(line);
      if (a) args[a[1]] = a[2];
    } else {
      stages[stages.length - 1].lines.push(line);
    }
  }
  return { args, stages };
}

const text = fs.readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
const { stages } = parseDockerfile(text);
const build = stages[0];
const runtime = stages[stages.length - 1];
const instr = (s: Stage, kw: string) => s.lines.filter((l) => l.toUpperCase().startsWith(`${kw} `));

describe('Dockerfile', () => {
  it('is multi-stage on debian:12-slim', () => {
    assert.ok(stages.length >= 2, 'expected a build and a runtime stage');
    for (const s of stages) assert.match(s.from, /^debian:12-slim(@sha256:[0-9a-f]{64})?$/);
  });

  it('builds with the project\'s own steps: scripts/install-deps, then CMake + Ninja Release', () => {
    const runs = instr(build, 'RUN').join('\n');
    assert.match(runs, /scripts\/install-deps/);
    assert.match(runs, /cmake -S \. -B build -G Ninja -DCMAKE_BUILD_TYPE=Release/);
    assert.match(runs, /cmake --build build/);
    assert.ok(runs.indexOf('install-deps') < runs.indexOf('cmake -S'), 'deps before configure');
  });

  it('copies only build/hybridgw and build/hybridgw-sim from the build stage', () => {
    const copies = instr(runtime, 'COPY').filter((l) => /--from=/.test(l));
    assert.equal(copies.length, 1);
    assert.match(copies[0], new RegExp(`--from=${build.name}\\s`));
    assert.match(copies[0], /\/build\/hybridgw\s/);
    assert.match(copies[0], /\/build\/hybridgw-sim\s/);
  });

  it('installs only runtime libraries in the final stage (no -dev packages, no compiler)', () => {
    const runs = instr(runtime, 'RUN').join('\n');
    for (const lib of ['libuv1', 'libhttp-parser2.9', 'libcurl4', 'libjansson4', 'libyaml-0-2', 'libpcre2-8-0', 'libssl3', 'ca-certificates']) {
      assert.match(runs, new RegExp(`\\s${lib.replace(/[.+]/g, '\\$&')}(\\s|$)`), `${lib} missing`);
    }
    assert.doesNotMatch(runs, /\S+-dev\b/, 'a -dev package in the runtime stage');
    assert.doesNotMatch(runs, /\b(gcc|clang|cmake|ninja-build|make|build-essential)\b/);
    assert.doesNotMatch(runs, /install-deps/);
    assert.match(runs, /--no-install-recommends/);
    assert.match(runs, /rm -rf \/var\/lib\/apt\/lists/);
  });

  it('runs as a non-root user', () => {
    const users = instr(runtime, 'USER');
    assert.equal(users.length, 1, 'one USER in the final stage');
    const user = users[0].split(/\s+/)[1].split(':')[0];
    assert.notEqual(user, 'root');
    assert.notEqual(user, '0');
    const uid = /ARG\s+HYBRIDGW_UID=(\d+)/.exec(runtime.lines.join('\n'));
    if (/^\$\{?HYBRIDGW_UID\}?$/.test(user)) assert.ok(uid && Number(uid[1]) >= 1000, 'non-root UID >= 1000');
    // The user is switched to after the last RUN (so nothing later runs as root by mistake).
    const idx = runtime.lines.findIndex((l) => l.toUpperCase().startsWith('USER '));
    assert.ok(!runtime.lines.slice(idx).some((l) => l.toUpperCase().startsWith('RUN ')));
  });

  it('has a HEALTHCHECK on /healthz, exposes 8080 and 9090, and runs `hybridgw serve`', () => {
    const hc = instr(runtime, 'HEALTHCHECK');
    assert.equal(hc.length, 1);
    assert.match(hc[0], /CMD .*http:\/\/127\.0\.0\.1:8080\/healthz/);
    assert.match(runtime.lines.join('\n'), /curl/, 'the HEALTHCHECK tool is installed');
    const ports = instr(runtime, 'EXPOSE').join(' ').split(/\s+/).slice(1).sort();
    assert.deepEqual(ports, ['8080', '9090']);
    assert.deepEqual(JSON.parse(instr(runtime, 'ENTRYPOINT')[0].slice('ENTRYPOINT '.length)), ['hybridgw']);
    assert.deepEqual(JSON.parse(instr(runtime, 'CMD')[0].slice('CMD '.length)), ['serve', '-c', '/etc/hybridgw/hybridgw.yaml']);
  });

  it('has a .dockerignore that keeps deploy/, git and node_modules out of the build context', () => {
    const ignore = fs.readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const p of ['.git', 'deploy/', '**/node_modules/', 'build*/']) assert.ok(ignore.includes(p), `${p} not ignored`);
    // install-deps, the sources and the classifier training data must stay in the context.
    for (const p of ['scripts', 'src', 'include', 'cmake', 'data', 'CMakeLists.txt']) assert.ok(!ignore.includes(p) && !ignore.includes(`${p}/`), `${p} ignored`);
  });
});
