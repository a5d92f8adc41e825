// Starts a throwaway redis-server for a test: a free port on 127.0.0.1, no
// RDB snapshots, its own temp dir, optional AOF. Returns null (printing why)
// when redis-server is not installed, except under CI=true, where it throws.

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

export interface RedisServer {
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** The server's --dir (AOF lives here). */
  readonly dir: string;
  /** The current server process id (changes on restart). */
  readonly pid: number;
  /** Stops the server (SIGTERM, then SIGKILL after a deadline) and removes its dir. */
  stop(): Promise<void>;
  /**
   * Stops the server (SIGTERM: with appendonly it flushes the AOF), runs
   * `whileDown` if given, and starts it again on the same port and dir.
   */
  restart(whileDown?: () => Promise<void>): Promise<void>;
}

export interface StartRedisOptions {
  appendonly?: boolean;
}

function findBinary(): string | undefined {
  const explicit = process.env.REDIS_SERVER;
  const candidates = explicit ? [explicit] : (process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((d) => path.join(d, 'redis-server'));
  if (!explicit) candidates.push('/usr/bin/redis-server', '/usr/local/bin/redis-server');
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** One PING over a raw socket; true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('error', () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
  });
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisServer | null> {
  const bin = findBinary();
  if (!bin) {
    const reason = 'redis-server is not installed (apt-get install -y redis-server, or set REDIS_SERVER)';
    if (process.env.CI === 'true') throw new Error(`startRedis: ${reason}; CI=true requires it`);
    console.log(`[skip] ${reason}: Redis tests are skipped`);
    return null;
  }
  installExitHook();
  const dir = mkdtempSync(path.join(tmpdir(), 'tunnel-redis-'));
  let port = 0;
  let child: ChildProcess | undefined;
  let output = '';

  const launch = async (): Promise<void> => {
    output = '';
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--appendonly', opts.appendonly ? 'yes' : 'no', '--daemonize', 'no', '--protected-mode', 'no'];
    const c = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    live.add(c);
    const keep = (d: Buffer) => {
      output = (output + d.toString()).slice(-4000);
    };
    c.stdout?.on('data', keep);
    c.stderr?.on('data', keep);
    let exited = false;
    c.once('exit', () => {
      exited = true;
      live.delete(c);
    });
    await waitFor(
      async () => {
        if (exited) throw new Error(`redis-server exited: ${output.trim().split('\n').slice(-3).join(' | ')}`);
        return ping(port);
      },
      15_000,
      { intervalMs: 50, message: `redis-server answering PING on port ${port}` },
    ).catch((err: unknown) => {
      c.kill('SIGKILL');
      throw err;
    });
  };

  const halt = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  // The port could be taken between freePort() and the bind: try a few.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    try {
      await launch();
      lastErr = undefined;
      break;
    } catch (err) {
      lastErr = err;
    }
  }
  if (lastErr !== undefined) {
    rmSync(dir, { recursive: true, force: true });
    throw lastErr;
  }

  return {
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    dir,
    get pid() {
      return child?.pid ?? -1;
    },
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
    async restart(whileDown?: () => Promise<void>) {
      await halt();
      try {
        if (whileDown) await whileDown();
      } finally {
        await launch();
      }
    },
  };
}
