// BENCH_ONLY=abuse: relay RSS before, during and after three abuses, with the
// relay's default ceilings:
//
//   ping flood   a registered connector sends pings as fast as it can and never reads (10 s)
//   SYN flood    a registered connector opens streams by the hundred thousand, reconnecting
//                each time the relay closes it (10 s)
//   idle conns   10,000 idle TCP connections to the public port from one IP
//
// Aim (issue 9): growth ≤ 64 MiB during each, released after. RSS is sampled
// every 50 ms; "after" is read once the abuse has stopped and 3 s have passed.

import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import WebSocket from 'ws';
import { ControlDecoder, Flag, FrameType, Session, encodeControl, encodeHeader, wsTransport, zeroMask, type ControlMessage } from '@tunnel/protocol';
import { Child, MiB, ROOT, fmt, residentBytes, run, sleep } from './common.js';

const RELAY_CLI = path.join(ROOT, 'packages/relay/dist/cli/cli.js');
const NODE = process.execPath;
const FLOOD_MS = Number(process.env.BENCH_ABUSE_SECONDS ?? 10) * 1000;
const IDLE_CONNS = Number(process.env.BENCH_ABUSE_CONNS ?? 10_000);
const log = (s: string) => process.stderr.write(s + '\n');

interface Figures {
  before: number;
  peak: number;
  after: number;
  heapBefore: number;
  heapAfter: number;
  note: string;
}

/** The relay's V8 heap in use (MiB), from its /metrics: shows what was released even when RSS is not given back. */
async function heapUsed(metricsUrl: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const m = /^nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([\d.e+]+)$/m.exec(text);
  return m ? Number(m[1]) / MiB : NaN;
}

function rss(pid: number): number {
  return (residentBytes(pid)?.rss ?? 0) / MiB;
}

/** Run `work` while sampling `pid`'s RSS; then settle 3 s and read it again. */
async function measure(pid: number, metricsUrl: string, work: () => Promise<string>): Promise<Figures> {
  await sleep(1000);
  const before = rss(pid);
  const heapBefore = await heapUsed(metricsUrl);
  let peak = before;
  const t = setInterval(() => (peak = Math.max(peak, rss(pid))), 50);
  let note: string;
  try {
    note = await work();
  } finally {
    clearInterval(t);
  }
  peak = Math.max(peak, rss(pid));
  await sleep(3000);
  return { before, peak, after: rss(pid), heapBefore, heapAfter: await heapUsed(metricsUrl), note };
}

async function register(connectUrl: string, token: string, connectorId: string): Promise<WebSocket> {
  const ws = new WebSocket(`${connectUrl}/v1/connect`, {
    headers: { authorization: `Bearer ${token}`, 'tunnel-connector-id': connectorId, 'tunnel-conn-index': '0', 'tunnel-version': 'abuse/1' },
    generateMask: zeroMask,
  });
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_q, res) => reject(new Error(`refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
  const session = new Session(wsTransport(ws), { client: true, keepaliveIntervalMs: 0 });
  session.on('close', () => {});
  const control = session.openStream();
  control.on('error', () => {});
  const dec = new ControlDecoder();
  await new Promise<void>((resolve) => {
    control.on('data', (c: Buffer) => {
      if (dec.push(c).some((m: ControlMessage) => m.type === 'registered')) resolve();
    });
    control.write(encodeControl({ type: 'register', connectorId, connIndex: 0, version: 'abuse/1', features: [] }));
  });
  return ws;
}

function batch(n: number, make: (i: number) => Buffer): Buffer {
  const out = Buffer.allocUnsafe(n * 12);
  for (let i = 0; i < n; i++) make(i).copy(out, i * 12);
  return out;
}

async function pingFlood(connectUrl: string, token: string): Promise<string> {
  const ws = await register(connectUrl, token, 'pinger');
  ws.pause(); // never read the answers
  const pings = batch(50_000, (i) => encodeHeader(FrameType.Ping, Flag.SYN, 0, i));
  let sent = 0;
  const end = Date.now() + FLOOD_MS;
  while (Date.now() < end && ws.readyState === ws.OPEN) {
    if (ws.bufferedAmount < 8 * MiB) {
      ws.send(pings);
      sent += 50_000;
    }
    await sleep(1);
  }
  const closedByRelay = ws.readyState !== ws.OPEN;
  ws.terminate();
  return `${(sent / 1e6).toFixed(1)} M pings sent (${fmt((sent * 12) / MiB)} MiB)${closedByRelay ? ', session closed by the relay' : ''}`;
}

async function synFlood(connectUrl: string, token: string): Promise<string> {
  const syns = batch(300_000, (i) => encodeHeader(FrameType.WindowUpdate, Flag.SYN, 2 * i + 3, 0));
  let sessions = 0;
  let sent = 0;
  const end = Date.now() + FLOOD_MS;
  while (Date.now() < end) {
    const ws = await register(connectUrl, token, `flooder-${sessions % 4}`).catch(() => null);
    if (!ws) {
      await sleep(50);
      continue;
    }
    sessions++;
    const closed = new Promise<void>((r) => ws.once('close', () => r()));
    for (let i = 0; i < 10 && ws.readyState === ws.OPEN; i++) {
      ws.send(syns);
      sent += 300_000;
    }
    await Promise.race([closed, sleep(2000)]);
    ws.terminate();
  }
  return `${(sent / 1e6).toFixed(1)} M SYNs sent over ${sessions} sessions, each closed by the relay at its second stream`;
}

async function idleConnections(port: number): Promise<string> {
  const socks: Socket[] = [];
  let refused = 0;
  let refusedWith = '';
  const open = (): Promise<void> =>
    new Promise((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.setEncoding('latin1');
      s.on('error', () => {});
      s.once('data', (d: string) => {
        refused++;
        refusedWith ||= d.split('\r\n')[0]!;
      });
      s.once('connect', () => resolve());
      s.once('close', () => resolve());
      socks.push(s);
    });
  for (let i = 0; i < IDLE_CONNS; i += 200) await Promise.all(Array.from({ length: Math.min(200, IDLE_CONNS - i) }, open));
  await sleep(2000);
  const held = socks.filter((s) => !s.destroyed && !s.readableEnded).length;
  for (const s of socks) s.destroy();
  return `${IDLE_CONNS} opened: ${held} held, ${refused} refused${refusedWith ? ` (${refusedWith})` : ''}`;
}

export async function abuseOnly(): Promise<void> {
  const tmp = mkdtempSync(path.join(tmpdir(), 'tunnel-bench-abuse-'));
  let relay: Child | null = null;
  try {
    const keys = path.join(tmp, 'fleet-key.json');
    const store = `file:${path.join(tmp, 'store')}`;
    const k = await run('keys generate', NODE, [RELAY_CLI, 'keys', 'generate', '--out', keys]);
    if (k.code !== 0) throw new Error(`keys generate failed: ${k.stderr}`);
    relay = new Child('relay', NODE, [RELAY_CLI, 'serve', '--id', 'abuse-relay', '--store', store, '--keys', keys, '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off', '--metrics', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'info']);
    const l = await relay.waitFor((x) => x.event === 'listening', 20_000, 'listening');
    const ports = l.ports as { http: number; connect: number };
    const metricsUrl = `http://127.0.0.1:${(await relay.waitFor((x) => x.event === 'metrics-listening', 10_000, 'metrics')).port as number}/metrics`;
    const connectUrl = `ws://127.0.0.1:${ports.connect}`;
    const t = await run('tunnel create', NODE, [RELAY_CLI, 'tunnel', 'create', 'abuse', '--store', store, '--keys', keys, '--zone', 'abuse.test', '--hostname', 'abuse.test', '--relay-url', connectUrl]);
    if (t.code !== 0) throw new Error(`tunnel create failed: ${t.stderr}`);
    const token = t.stdout.trim();
    const pid = relay.pid;
    const results: Array<[string, Figures]> = [];
    for (const [name, work] of [
      ['ping flood', () => pingFlood(connectUrl, token)],
      ['SYN flood', () => synFlood(connectUrl, token)],
      [`${IDLE_CONNS} idle connections`, () => idleConnections(ports.http)],
    ] as const) {
      log(`abuse: ${name}…`);
      const f = await measure(pid, metricsUrl, work);
      results.push([name, f]);
      if (!relay.running) throw new Error(`relay exited during ${name}: ${relay.stderr.slice(-2000)}`);
    }
    log('\n| abuse (default ceilings) | RSS before | peak | growth | RSS after | V8 heap used before → after | what happened |\n|---|---:|---:|---:|---:|---:|---|');
    for (const [name, f] of results) {
      log(`| ${name} | ${fmt(f.before)} MiB | ${fmt(f.peak)} MiB | +${fmt(f.peak - f.before)} MiB | ${fmt(f.after)} MiB | ${fmt(f.heapBefore)} → ${fmt(f.heapAfter)} MiB | ${f.note} |`);
    }
  } finally {
    await relay?.stop(3_000);
    rmSync(tmp, { recursive: true, force: true });
  }
}
