// postgres.mjs - a throw-away PostgreSQL server for the integration tests,
// started the way tests/ledger/run-pg does it: Debian's server binaries
// (/usr/lib/postgresql/N/bin, or PG_BIN), initdb in a temporary directory,
// scram password authentication with a random password, 127.0.0.1 and a
// free port, fsync off. PostgreSQL refuses to run as root, so as root the
// server runs as `postgres` (the Debian package creates it) or `nobody`.
//
// Every server started here is stopped (immediate mode) and its directory
// removed when the test file's process exits, however it exits. Every wait
// has a timeout.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { T } from './harness.mjs';

/** The directory holding initdb and pg_ctl, or null when there is none. */
export function findPgBin() {
  const ok = (d) => d && fs.existsSync(path.join(d, 'initdb')) && fs.existsSync(path.join(d, 'pg_ctl'));
  if (process.env.PG_BIN) return ok(process.env.PG_BIN) ? process.env.PG_BIN : null;
  let versions = [];
  try {
    versions = fs.readdirSync('/usr/lib/postgresql');
  } catch {
    return null;
  }
  versions.sort((a, b) => Number(b) - Number(a) || b.localeCompare(a));
  for (const v of versions) {
    const d = `/usr/lib/postgresql/${v}/bin`;
    if (ok(d)) return d;
  }
  return null;
}

/** Why PostgreSQL tests can't run here, or '' when they can. */
export function pgSkipReason() {
  return findPgBin()
    ? ''
    : 'no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb; apt-get install postgresql, or set PG_BIN)';
}

// ---- registry: nothing outlives the test file ----

const live = new Set();

process.on('exit', () => {
  for (const pg of live) pg.stopSync();
});

function run(file, args, { timeout = T(30000), env } = {}) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout, env: env || process.env, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\n${stdout}${stderr}`;
        reject(err);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

/** A loopback port free right now (bound to 0 and closed). */
async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

export class Postgres {
  /**
   * initdb + pg_ctl start + createdb; resolves with a running server:
   * { url, port, password, db, dir }.
   */
  static async start({ db = 'hgw_test', user = 'hgw' } = {}) {
    const bin = findPgBin();
    if (!bin) throw new Error(pgSkipReason());
    const pg = new Postgres();
    pg.bin = bin;
    pg.user = user;
    pg.db = db;
    pg.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hgw-pg-'));
    fs.chmodSync(pg.dir, 0o755);
    pg.data = path.join(pg.dir, 'data');
    pg.log = path.join(pg.dir, 'server.log');
    pg.running = false;
    live.add(pg);
    // as root, the server runs as postgres (or nobody)
    pg.as = [];
    if (process.getuid && process.getuid() === 0) {
      const who = spawnSync('id', ['-u', 'postgres']).status === 0 ? 'postgres' : 'nobody';
      pg.as = ['runuser', '-u', who, '--'];
      pg.runAs = who;
    }
    pg.password = crypto.randomBytes(15).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, 20) + 'Q7';
    const pwfile = path.join(pg.dir, 'pwfile');
    fs.writeFileSync(pwfile, `${pg.password}\n`, { mode: 0o600 });
    if (pg.runAs) execFileSync('chown', ['-R', pg.runAs, pg.dir]);
    try {
      await pg.cmd('initdb', ['-D', pg.data, '-U', user, `--pwfile=${pwfile}`, '-A', 'scram-sha-256',
        '-E', 'UTF8', '--no-locale']);
    } finally {
      fs.rmSync(pwfile, { force: true });
    }
    let lastErr;
    for (let attempt = 0; attempt < 3 && !pg.running; attempt++) {
      pg.port = await freePort();
      try {
        await pg.startServer();
      } catch (e) {
        lastErr = e; // someone took the port in between: another one
      }
    }
    if (!pg.running) {
      await pg.stop();
      throw new Error(`PostgreSQL did not start: ${lastErr?.message}`);
    }
    await run(path.join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(pg.port), '-U', user, db], {
      env: { ...process.env, PGPASSWORD: pg.password },
    });
    pg.url = `postgres://${user}:${pg.password}@127.0.0.1:${pg.port}/${db}`;
    return pg;
  }

  cmd(name, args, opts) {
    const file = path.join(this.bin, name);
    return this.as.length ? run(this.as[0], [...this.as.slice(1), file, ...args], opts) : run(file, args, opts);
  }

  /** pg_ctl start on this.port (again after stopServer(): same port, same data). */
  async startServer() {
    await this.cmd('pg_ctl', ['-D', this.data, '-l', this.log, '-w', '-t', '20', '-o',
      `-c listen_addresses=127.0.0.1 -p ${this.port} -c unix_socket_directories=${this.dir} -c fsync=off -c max_connections=50`,
      'start'], { timeout: T(30000) });
    this.running = true;
  }

  /** Stop the server, keep the data (mode: fast | immediate). */
  async stopServer(mode = 'immediate') {
    if (!this.running) return;
    await this.cmd('pg_ctl', ['-D', this.data, '-m', mode, '-w', '-t', '20', 'stop'], { timeout: T(30000) });
    this.running = false;
  }

  /** Stop the server and remove everything. */
  async stop() {
    try {
      await this.stopServer('immediate');
    } catch {
      this.stopSync();
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  /** The same, synchronously (the exit hook). */
  stopSync() {
    if (this.running) {
      try {
        const file = path.join(this.bin, 'pg_ctl');
        const args = ['-D', this.data, '-m', 'immediate', '-w', '-t', '10', 'stop'];
        if (this.as.length) execFileSync(this.as[0], [...this.as.slice(1), file, ...args], { stdio: 'ignore', timeout: 15000 });
        else execFileSync(file, args, { stdio: 'ignore', timeout: 15000 });
      } catch {
        // last resort: SIGQUIT to the postmaster is an immediate shutdown
        try {
          const pid = Number(fs.readFileSync(path.join(this.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
          if (pid > 0) process.kill(pid, 'SIGQUIT');
        } catch {
          /* gone */
        }
      }
      this.running = false;
    }
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
    live.delete(this);
  }

  /** The server log so far (for failure messages). */
  serverLog(n = 20) {
    try {
      return fs.readFileSync(this.log, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '';
    }
  }
}
