// Shared helpers for the benchmarks: child processes that report JSON lines,
// /proc readings (CPU time, RSS), statistics and markdown tables.
//
// Every process a benchmark starts is registered here and ended by its PID
// when the benchmark exits, however it exits.

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(BENCH_DIST, '../..');
export const RESULTS_DIR = path.join(ROOT, 'bench/results');

export type Json = Record<string, unknown>;

const live = new Set<Child>();
let cleanupInstalled = false;

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  const killAll = () => {
    for (const c of live) c.kill('SIGKILL');
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      killAll();
      process.exit(130);
    });
  }
}

/**
 * A child process whose stdout is read as JSON lines (pino logs or our own
 * reports); anything else is kept as text.
 */
export class Child {
  readonly proc: ChildProcess;
  readonly lines: Json[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private partial = '';
  private waiters: Array<() => void> = [];
  /** Called for every JSON line as it arrives (before waiters wake). */
  onLine: ((l: Json) => void) | null = null;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    opts: { env?: Record<string, string | undefined>; cwd?: string; stdin?: boolean } = {},
  ) {
    installCleanup();
    this.proc = spawn(cmd, args, {
      env: { ...process.env, ...(opts.env ?? {}) },
      cwd: opts.cwd ?? ROOT,
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    live.add(this);
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => this.onStdout(d));
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      if (this.stderr.length > 200_000) this.stderr = this.stderr.slice(-100_000);
      this.wake();
    });
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        live.delete(this);
        this.wake();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  private onStdout(d: string): void {
    if (this.stdout.length < 100_000) this.stdout += d;
    const text = this.partial + d;
    const parts = text.split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) {
      if (!line.startsWith('{')) continue;
      let l: Json;
      try {
        l = JSON.parse(line) as Json;
      } catch {
        continue; /* not JSON */
      }
      this.lines.push(l);
      this.onLine?.(l);
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolve with the first line (seen or future) matching `pred`. */
  waitFor(pred: (l: Json) => boolean, timeoutMs = 30_000, what = 'line'): Promise<Json> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`${this.name}: no ${what} within ${timeoutMs} ms`)), timeoutMs);
      const fail = (e: Error) => {
        clearTimeout(timer);
        reject(new Error(`${e.message}\n--- ${this.name} stderr ---\n${this.stderr.slice(-3000)}\n--- ${this.name} stdout ---\n${this.stdout.slice(-1500)}`));
      };
      const check = () => {
        const hit = this.lines.find(pred);
        if (hit) {
          clearTimeout(timer);
          resolve(hit);
          return;
        }
        if (!this.running) {
          fail(new Error(`${this.name}: exited (${this.proc.exitCode ?? this.proc.signalCode}) before ${what}`));
          return;
        }
        this.waiters.push(check);
      };
      check();
    });
  }

  count(pred: (l: Json) => boolean): number {
    let n = 0;
    for (const l of this.lines) if (pred(l)) n++;
    return n;
  }

  send(line: string): void {
    this.proc.stdin?.write(line + '\n');
  }

  kill(sig: NodeJS.Signals): void {
    if (this.running) {
      try {
        process.kill(this.pid, sig);
      } catch {
        /* already gone */
      }
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.kill('SIGTERM');
    const t = setTimeout(() => this.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

/** Run a command to completion; stdout/stderr returned. */
export async function run(name: string, cmd: string, args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = new Child(name, cmd, args, { env: opts.env });
  const t = setTimeout(() => c.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  const { code } = await c.exited;
  clearTimeout(t);
  return { code, stdout: c.stdout, stderr: c.stderr };
}

// ---- /proc ---------------------------------------------------------------------

let clkTck = 100;
try {
  // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; the file tells when it is not.
  const auxv = readFileSync('/proc/self/auxv');
  for (let i = 0; i + 16 <= auxv.length; i += 16) {
    const type = Number(auxv.readBigUInt64LE(i));
    if (type === 17 /* AT_CLKTCK */) clkTck = Number(auxv.readBigUInt64LE(i + 8)) || 100;
    if (type === 0) break;
  }
} catch {
  /* keep 100 */
}

/** User and system CPU time of a process (all its threads) in microseconds; null when it is gone. */
export function cpuSplit(pid: number): { user: number; sys: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces; split after its closing parenthesis.
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return { user: (Number(rest[11]) * 1e6) / clkTck, sys: (Number(rest[12]) * 1e6) / clkTck };
  } catch {
    return null;
  }
}

/**
 * CPU µs of a process's main (JavaScript) thread; the rest of cpuMicros is
 * other threads, in Node mostly V8's parallel and concurrent GC helpers.
 */
export function mainThreadMicros(pid: number): number | null {
  try {
    const s = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1e6) / clkTck;
  } catch {
    return null;
  }
}

/** CPU time (user + system) of a process in microseconds; null when it is gone. */
export function cpuMicros(pid: number): number | null {
  const c = cpuSplit(pid);
  return c ? c.user + c.sys : null;
}

/** Read and write system calls a process has made so far (/proc/PID/io syscr, syscw). */
export function syscalls(pid: number): { r: number; w: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/io`, 'utf8');
    const r = /syscr:\s+(\d+)/.exec(s);
    const w = /syscw:\s+(\d+)/.exec(s);
    return r && w ? { r: Number(r[1]), w: Number(w[1]) } : null;
  } catch {
    return null;
  }
}

/**
 * Resident memory of a process from one read of /proc/PID/status: `rss`
 * (VmRSS) and `private` (RssAnon: RSS without the file pages of the node
 * binary and libraries, ≈ 45 MB here, which every Node process on the host
 * maps and shares). Null when the process is gone.
 */
export function residentBytes(pid: number): { rss: number; private: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /VmRSS:\s+(\d+) kB/.exec(s);
    const anon = /RssAnon:\s+(\d+) kB/.exec(s);
    return rss && anon ? { rss: Number(rss[1]) * 1024, private: Number(anon[1]) * 1024 } : null;
  } catch {
    return null;
  }
}

/** Peak RSS (and peak private RSS) of a set of processes, sampled every `intervalMs` until stopped. */
export class RssSampler {
  readonly peak = new Map<string, number>();
  readonly privatePeak = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  constructor(private readonly procs: Record<string, number>, private readonly intervalMs = 200) {}
  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }
  private sample(): void {
    for (const [name, pid] of Object.entries(this.procs)) {
      const m = residentBytes(pid);
      if (m === null) continue;
      if (m.rss > (this.peak.get(name) ?? 0)) this.peak.set(name, m.rss);
      if (m.private > (this.privatePeak.get(name) ?? 0)) this.privatePeak.set(name, m.private);
    }
  }
  stop(): Record<string, number> {
    if (this.timer) clearInterval(this.timer);
    this.sample();
    return Object.fromEntries(this.peak);
  }
}

// ---- statistics and formatting -----------------------------------------------------

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function max(xs: number[]): number {
  return xs.length ? Math.max(...xs) : NaN;
}

/** Percentile of a sorted array (nearest rank). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export const MiB = 1024 * 1024;

export function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function pct(ratio: number | null | undefined): string {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return '–';
  return `${(ratio * 100).toFixed(0)}%`;
}

export function markdownTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(headers), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitUntil(fn: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** One line describing the machine and its load, for the result files. */
export function machineInfo(): Json {
  let load: number[] = [];
  try {
    load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch {
    /* not Linux */
  }
  let cpus = 0;
  try {
    cpus = (readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s*:/gm) ?? []).length;
  } catch {
    /* not Linux */
  }
  return { node: process.version, cpus, loadavg: load, date: new Date().toISOString() };
}

/** A port free on 127.0.0.1 right now (for listeners that cannot report the port they bound). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** V8 heap used of a relay or connector, from its Prometheus /metrics (nodejs_heap_size_used_bytes); NaN when unreadable. */
export async function heapUsedBytes(metricsPort: number): Promise<number> {
  try {
    const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
    const m = /^nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([\d.e+]+)$/m.exec(await r.text());
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}
