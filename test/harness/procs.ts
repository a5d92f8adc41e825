// Real relay and connector processes for end-to-end tests: spawned from the
// built CLIs (`npm test` builds first), JSON logs parsed line by line so a test
// can wait on an event instead of sleeping, and every process ended by PID.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { waitFor } from './wait.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const RELAY_CLI = path.join(root, 'packages/relay/dist/cli/cli.js');
export const CONNECTOR_CLI = path.join(root, 'packages/connector/dist/cli/cli.js');

export type LogLine = Record<string, unknown> & { msg?: string; event?: string; level?: number };

const live = new Set<Proc>();

/**
 * Registered when a test file imports the harness, so it runs after every
 * other hook of the file (hooks run as a stack): by then nothing the file
 * does may start a process. A hook that timed out keeps running in the
 * background, and a process it started now would outlive the file.
 */
let fileDone = false;
afterAll(async () => {
  fileDone = true;
  await stopAll();
});

export class Proc {
  readonly child: ChildProcess;
  readonly logs: LogLine[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private partial = '';

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    env: Record<string, string | undefined> = {},
    cwd?: string,
    /** Its own process group, so killGroup() ends whatever it spawned too (a launcher such as the demo). */
    opts: { group?: boolean } = {},
  ) {
    if (fileDone) throw new Error(`${name}: not started, its test file has finished (a hook that timed out is still running?)`);
    this.child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd, detached: opts.group === true });
    live.add(this);
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => this.onStdout(d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(this);
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private onStdout(d: string): void {
    this.stdout += d;
    const text = this.partial + d;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        /* not a log line */
      }
    }
  }

  /** Wait for a log line matching `pred` (already seen ones count). */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000, message?: string): Promise<LogLine> {
    return waitFor(() => this.logs.find(pred), timeoutMs, {
      message: message ?? `${this.name}: log line`,
    }).catch((e: Error) => {
      throw new Error(`${e.message}\n--- ${this.name} stderr ---\n${this.stderr.slice(-2000)}\n--- last logs ---\n${this.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`);
    });
  }

  /**
   * Start-up: waits for the log line that says the process is up, or for the
   * process to exit first (then fails at once, with its stderr). The deadline
   * only bounds a process that hangs without exiting: start-up on a loaded
   * machine takes what it takes, and a slow start is not what a test checks
   * (45 s: under the e2e hook timeout, so a hang fails here with its stderr).
   */
  async waitForStart(pred: (l: LogLine) => boolean, message: string, hangMs = 45_000): Promise<LogLine> {
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    void this.exited.then((e) => (exit = e));
    await waitFor(() => this.logs.some(pred) || exit !== undefined, hangMs, { message }).catch((e: Error) => {
      throw new Error(`${e.message}\n--- ${this.name} stderr ---\n${this.stderr.slice(-2000)}`);
    });
    const up = this.logs.find(pred);
    if (up) return up;
    throw new Error(`${message}: ${this.name} exited first (code ${exit?.code}, signal ${exit?.signal})\n--- stderr ---\n${this.stderr.slice(-2000)}`);
  }

  countLogs(pred: (l: LogLine) => boolean): number {
    return this.logs.filter(pred).length;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) process.kill(this.pid, sig);
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }

  /**
   * SIGKILL to the process group of a Proc started with `group: true` (by its
   * PID: the group id is the leader's), the leader and every child it left,
   * even after the leader itself has exited. For afterAll/finally.
   */
  killGroup(): void {
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e; // nothing left in the group
    }
  }

  async kill9(): Promise<void> {
    this.signal('SIGKILL');
    await this.exited;
  }
}

/** Whether a process with this PID exists (signal 0 delivers nothing; it only checks). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** End every process a test file started (afterAll). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop(2_000)));
}

export function tempDir(prefix = 'tunnel-test-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function runCli(cli: string, args: string[], env: Record<string, string | undefined> = {}, cwd?: string, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = new Proc(path.basename(cli), process.execPath, [cli, ...args], env, cwd);
  const timer = setTimeout(() => p.signal('SIGKILL'), timeoutMs);
  return p.exited.then(({ code }) => {
    clearTimeout(timer);
    return { code, stdout: p.stdout, stderr: p.stderr };
  });
}

export interface RelayProc {
  proc: Proc;
  id: string;
  http: number;
  connect: number;
  control?: number;
  peer?: number;
  /** ws:// URL connectors dial. */
  connectUrl: string;
  /** Base URL of the public HTTP listener. */
  publicUrl: string;
  controlUrl?: string;
}

export interface RelayStartOptions {
  dir: string;
  store: string;
  keys: string;
  id?: string;
  control?: boolean;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** Fixed ports (for restarts that must come back on the same address). */
  ports?: { http?: number; connect?: number; control?: number; peer?: number };
}

export async function startRelay(o: RelayStartOptions): Promise<RelayProc> {
  const id = o.id ?? `relay-${Math.random().toString(36).slice(2, 8)}`;
  const args = [
    RELAY_CLI,
    'serve',
    '--id',
    id,
    '--store',
    o.store,
    '--keys',
    o.keys,
    '--http',
    `127.0.0.1:${o.ports?.http ?? 0}`,
    '--connect',
    `127.0.0.1:${o.ports?.connect ?? 0}`,
    '--control',
    o.control === false ? 'off' : `127.0.0.1:${o.ports?.control ?? 0}`,
    '--peer',
    `127.0.0.1:${o.ports?.peer ?? 0}`,
    '--drain-delay',
    '200ms',
    '--log-format',
    'json',
    '--log-level',
    'debug',
    ...(o.extraArgs ?? []),
  ];
  const proc = new Proc(id, process.execPath, args, o.env ?? {}, o.dir);
  const line = await proc.waitForStart((l) => l.event === 'listening', `${id} listening`);
  const ports = line.ports as { http: number; connect: number; control?: number; peer?: number };
  if (o.control !== false) {
    const c = await proc.waitForStart((l) => l.event === 'control-listening', `${id} control listening`);
    ports.control = c.port as number;
  }
  return {
    proc,
    id,
    http: ports.http,
    connect: ports.connect,
    control: ports.control,
    peer: ports.peer,
    connectUrl: `ws://127.0.0.1:${ports.connect}`,
    publicUrl: `http://127.0.0.1:${ports.http}`,
    controlUrl: ports.control ? `http://127.0.0.1:${ports.control}` : undefined,
  };
}

/**
 * Operator path: `tunnel-relay tunnel create NAME --zone Z --hostname H`
 * prints a run token. Each hostname's own name is granted as a zone of the
 * `default` account first (an account routes only inside zones it holds).
 */
export async function createTunnel(o: { dir: string; store: string; keys: string; name: string; hostnames: string[]; relays?: string[] }): Promise<string> {
  const zones = [...new Set(o.hostnames.map((h) => h.replace(/^\*\./, '')))];
  const r = await runCli(
    RELAY_CLI,
    [
      'tunnel',
      'create',
      o.name,
      '--store',
      o.store,
      '--keys',
      o.keys,
      ...zones.flatMap((z) => ['--zone', z]),
      ...o.hostnames.flatMap((h) => ['--hostname', h]),
      ...(o.relays ?? []).flatMap((u) => ['--relay-url', u]),
    ],
    {},
    o.dir,
  );
  if (r.code !== 0) throw new Error(`tunnel create failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

export interface ConnectorStartOptions {
  token: string;
  relays: string[];
  url?: string;
  config?: string;
  ha?: number;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** Wait until this many connections are registered (default: ha). */
  waitRegistered?: number;
}

export async function startConnector(o: ConnectorStartOptions): Promise<Proc> {
  const ha = o.ha ?? 4;
  const args = [
    CONNECTOR_CLI,
    'run',
    ...(o.url ? ['--url', o.url] : []),
    ...(o.config ? ['--config', o.config] : []),
    ...o.relays.flatMap((r) => ['--relay', r]),
    '--ha-connections',
    String(ha),
    '--log-format',
    'json',
    '--loglevel',
    'debug',
    ...(o.extraArgs ?? []),
  ];
  const proc = new Proc('connector', process.execPath, args, { TUNNEL_TOKEN: o.token, ...(o.env ?? {}) });
  const want = o.waitRegistered ?? ha;
  if (want > 0) {
    await waitFor(() => proc.countLogs((l) => l.event === 'registered') >= want || !proc.running, 15_000, { message: `connector: ${want} registered` });
    if (!proc.running) throw new Error(`connector exited: ${proc.stderr}`);
  }
  return proc;
}
