// Runs one measurement of bench/dist/peers.js: in one process (memory pair)
// or as a WebSocket server and client in two processes, with the CPU time of
// each process over the measured phase (from /proc, between the measuring
// side's 'start' and 'result' lines).

import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { BENCH_DIST, Child, cpuMicros, syscalls, type Json } from './common.js';
import type { PeerParams } from './peers.js';

const PEERS = path.join(BENCH_DIST, 'peers.js');

export interface RunOpts {
  profileDir?: string;
}

function nodeArgs(o: RunOpts, tag: string): string[] {
  const args = ['--expose-gc'];
  if (o.profileDir) {
    const dir = path.join(o.profileDir, tag);
    mkdirSync(dir, { recursive: true });
    args.push('--cpu-prof', '--cpu-prof-dir', dir);
  }
  return args;
}

/**
 * CPU time (user+system, from /proc) each child spends between the measuring
 * side's 'start' line and its 'result' line: the measured phase only.
 */
interface Tracked {
  cpu: number[];
  /** Write system calls of each process over the measured phase. */
  writes: number[];
  window: { fromUs: number; toUs: number };
}

function trackCpu(children: Child[]): () => Tracked | null {
  let start: number[] | null = null;
  let end: number[] | null = null;
  let wStart: number[] = [];
  let wEnd: number[] = [];
  let fromUs = 0;
  let toUs = 0;
  const sample = () => children.map((c) => cpuMicros(c.pid) ?? NaN);
  const writes = () => children.map((c) => syscalls(c.pid)?.w ?? NaN);
  for (const c of children) {
    c.onLine = (l) => {
      if (l.event === 'start' && !start) {
        start = sample();
        wStart = writes();
        fromUs = l.mono as number;
      } else if (l.event === 'result' && start && !end) {
        end = sample();
        wEnd = writes();
        toUs = l.mono as number;
      }
    };
  }
  return () =>
    start && end ? { cpu: end.map((e, i) => e - start![i]!), writes: wEnd.map((e, i) => e - wStart[i]!), window: { fromUs, toUs } } : null;
}

/** Add CPU figures to a result: total µs, ns per byte moved, µs per round trip. */
function withCpu(r: Json, t: Tracked | null): Json {
  if (!t) return r;
  const cpu = t.cpu;
  const total = cpu.reduce((a, b) => a + b, 0);
  const out: Json = { ...r, cpuUs: cpu, cpuTotalUs: total, writeSyscalls: t.writes, window: t.window };
  if (typeof r.bytes === 'number') {
    out.cpuNsPerByte = (total * 1000) / r.bytes;
    out.writesPerMiB = t.writes.map((w) => w / ((r.bytes as number) / (1024 * 1024)));
  }
  if (typeof r.rts === 'number') out.cpuUsPerRt = total / (r.rts as number);
  return out;
}

export async function memRun(p: PeerParams, o: RunOpts = {}, tag = 'mem'): Promise<Json> {
  const c = new Child(`mem ${p.kind} ${p.test}`, process.execPath, [...nodeArgs(o, tag), PEERS, 'mem', JSON.stringify(p)]);
  const cpu = trackCpu([c]);
  const r = await c.waitFor((l) => l.event === 'result', 120_000, 'result');
  await c.exited;
  return withCpu(r, cpu());
}

/** Server and client processes; resolves with every result line (one, or two for idle). */
export async function wsRun(p: PeerParams, o: RunOpts = {}, tag = 'ws'): Promise<Json[]> {
  const server = new Child(`ws-server ${p.kind} ${p.test} ${p.dir ?? ''}`, process.execPath, [...nodeArgs(o, `${tag}-server`), PEERS, 'ws-server', JSON.stringify(p)]);
  let client: Child | undefined;
  try {
    const l = await server.waitFor((x) => x.event === 'listening', 15_000, 'listening');
    client = new Child(`ws-client ${p.kind} ${p.test} ${p.dir ?? ''}`, process.execPath, [
      ...nodeArgs(o, `${tag}-client`),
      PEERS,
      'ws-client',
      JSON.stringify({ ...p, port: l.port }),
    ]);
    const cpu = trackCpu([server, client]);
    const isResult = (x: Json) => x.event === 'result';
    const results: Json[] = [];
    if (p.test === 'idle') {
      results.push(await server.waitFor(isResult, 120_000, 'result'), await client.waitFor(isResult, 120_000, 'result'));
    } else {
      const sender = p.test === 'bulk' && p.dir === 's2c' ? server : client;
      results.push(await sender.waitFor(isResult, 120_000, 'result'));
    }
    await Promise.all([exitWithin(server, 10_000), exitWithin(client, 10_000)]);
    const c = cpu();
    results[0] = withCpu(results[0]!, c);
    return results;
  } catch (e) {
    server.kill('SIGKILL');
    client?.kill('SIGKILL');
    throw e;
  }
}

async function exitWithin(c: Child, ms: number): Promise<void> {
  const t = setTimeout(() => c.kill('SIGKILL'), ms);
  await c.exited;
  clearTimeout(t);
}

