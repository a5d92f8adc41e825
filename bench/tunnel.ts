// Over 500 lines: one benchmark run as one readable sequence (start the processes, scenarios (a)-(f) in order, the report); load generation, the origin and h2load live in their own files beside it.
// `npm run bench`: real processes — an origin, two relays, a connector with
// four connections — and, in the same run, direct-to-origin, through two
// chained nginx ("nginx ×2", the native yardstick of DESIGN §10, when nginx is
// installed) and through the tunnel:
//
//   (a) GET 1 KiB, 64 connections, 10 s (wrk if installed, else autocannon): req/s, p50, p99,
//       CPU µs per request of each process (relays, connector, nginx front/back, origin) from /proc
//   (b) a fixed 1,000 req/s for 10 s (open-loop Node client, wrk2-style): p50, p99, what each chain adds
//   (c) one download and one upload (BENCH_BULK_MIB, default 256 MiB), single stream, and bare ws moving the same bytes
//   (d) RSS, V8 heap used and private memory (RssAnon) of relays and connector: idle, after (a),
//       after (c), and BENCH_SETTLE_SECONDS (default 60) after the last load
//   (e) a relay forwarding to the peer that holds the connection
//   (f) h2load over HTTP/2 (when installed): the relay's HTTPS listener against the origin's own h2c (h2load.ts)
//
// Every ratio is given against direct and against nginx ×2 (the one we steer
// by). The machine is shared, so single figures are noisy (±25%); the ratios
// and the CPU per request are what to compare.
//
// Environment: BENCH_SECONDS (default 10), BENCH_BULK_MIB, BENCH_SETTLE_SECONDS,
// BENCH_NGINX (the nginx binary), BENCH_LOADGEN=autocannon (force the fallback),
// BENCH_PROFILE=1 (run relays and connector under --cpu-prof, drive (a) and (c)
// through the tunnel only, and print each process's top self-time functions per
// phase), BENCH_ONLY=abuse (relay RSS under a ping flood, a SYN flood and 10k
// idle connections: abuse.ts), BENCH_ONLY=bulk, BENCH_ONLY=rate, BENCH_ONLY=h2load,
// BENCH_ONLY=requests (only (a) and (b) for direct, nginx ×2 and the tunnel,
// BENCH_ROUNDS times in one fleet: for measuring a change to the request path;
// with BENCH_COMPARE_ROOT=DIR, a checkout with built dist, and/or
// BENCH_COMPARE_NODE_FLAGS, a second tunnel fleet (from DIR, with those node
// flags) runs in the same rounds, interleaved with this one).

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { BENCH_DIST, Child, MiB, RESULTS_DIR, ROOT, RssSampler, cpuMicros, cpuSplit, freePort, heapUsedBytes, mainThreadMicros, residentBytes, syscalls, fmt, machineInfo, markdownTable, pct, run, sleep, waitUntil, type Json } from './common.js';
import { findNginx, startNginxChain, type NginxChain } from './nginx.js';
import { formatProfile, newestProfile, summarizeProfile, type ProfileSummary, type ProfileWindow } from './cpuprofile.js';
import { wsRun } from './runner.js';
import { abuseOnly } from './abuse.js';
import { h2loadBench, h2loadRows, type H2loadResult } from './h2load.js';

const relayCli = (root: string) => path.join(root, 'packages/relay/dist/cli/cli.js');
const connectorCli = (root: string) => path.join(root, 'packages/connector/dist/cli/cli.js');
const ORIGIN = path.join(BENCH_DIST, 'origin.js');
const LOADGEN = path.join(BENCH_DIST, 'loadgen.js');
const NODE = process.execPath;

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP_SECONDS = 2;
const CONNECTIONS = 64;
const RATE = 1000;
const BULK = Number(process.env.BENCH_BULK_MIB ?? 256) * MiB;
/** How long after the last load memory is read again (the aim: within 20% of idle a minute after). */
const SETTLE_SECONDS = Number(process.env.BENCH_SETTLE_SECONDS ?? 60);
const HOST = 'app.test';
const PROFILE = process.env.BENCH_PROFILE === '1' || process.env.BENCH_PROFILE === 'true';
const PROFILE_DIR = path.join(RESULTS_DIR, 'profiles', 'tunnel');
/** Extra node flags for relays and connector, to try runtime settings (e.g. "--max-semi-space-size=32"). */
const NODE_FLAGS = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);

const log = (s: string) => process.stderr.write(s + '\n');
const mono = () => Number(process.hrtime.bigint() / 1000n);

interface Target {
  host: string;
  port: number;
}

function haveWrk(): boolean {
  if (process.env.BENCH_LOADGEN === 'autocannon') return false;
  const r = spawnSync('wrk', ['-v'], { stdio: 'ignore' });
  return !r.error;
}

// wrk: thread i connects to target i (so -t2 over two relays puts 32
// connections on each), and done() prints the merged figures as JSON.
const WRK_LUA = `
local targets = {}
for t in string.gmatch(os.getenv("BENCH_TARGETS") or "", "[^,]+") do table.insert(targets, t) end
local n = 0
function setup(thread)
  n = n + 1
  local t = targets[((n - 1) % #targets) + 1]
  local host, port = t:match("([^:]+):(%d+)")
  thread.addr = wrk.lookup(host, port)[1]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"event":"result","tool":"wrk","requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
`;

interface Mem {
  rss: number;
  private: number;
  heapUsed: number;
}

interface Phase {
  out: Json;
  /** CPU µs of each watched process over the phase. */
  cpuUs: Record<string, number>;
  /** Of which on the main (JavaScript) thread; the rest is mostly V8's GC helper threads. */
  mainUs: Record<string, number>;
  /** Read and write system calls of each watched process over the phase. */
  sys: Record<string, { r: number; w: number }>;
  /** Kernel (system) share of each watched process's CPU over the phase. */
  kernelShare: Record<string, number>;
  rssPeak: Record<string, number>;
  /** Peak anonymous RSS: without the shared file pages of the node binary. */
  privateRssPeak: Record<string, number>;
  window: ProfileWindow;
}

/**
 * Run a load child to its result line, with the CPU time of `watch` (and of
 * the load generator) over the measured part and their peak RSS.
 */
async function phase(child: Child, watch: Record<string, number>, timeoutMs = 120_000): Promise<Phase> {
  const all = { ...watch, loadgen: child.pid };
  const sample = () => Object.fromEntries(Object.entries(all).map(([k, pid]) => [k, cpuMicros(pid) ?? NaN]));
  const sampleMain = () => Object.fromEntries(Object.entries(all).map(([k, pid]) => [k, mainThreadMicros(pid) ?? NaN]));
  const sampleSys = () => Object.fromEntries(Object.entries(all).map(([k, pid]) => [k, syscalls(pid) ?? { r: NaN, w: NaN }]));
  const sampleSplit = () => Object.fromEntries(Object.entries(all).map(([k, pid]) => [k, cpuSplit(pid) ?? { user: NaN, sys: NaN }]));
  let base = sample();
  let baseMain = sampleMain();
  let baseSys = sampleSys();
  let baseSplit = sampleSplit();
  let fromUs = mono();
  const rss = new RssSampler(watch).start();
  child.onLine = (l) => {
    if (l.event === 'start') {
      base = sample();
      baseMain = sampleMain();
      baseSys = sampleSys();
      baseSplit = sampleSplit();
      fromUs = mono();
      rss.peak.clear();
      rss.privatePeak.clear();
    }
  };
  try {
    const out = await child.waitFor((l) => l.event === 'result', timeoutMs, 'result');
    const end = sample();
    const endMain = sampleMain();
    const endSys = sampleSys();
    const endSplit = sampleSplit();
    const toUs = mono();
    const rssPeak = rss.stop();
    const privateRssPeak = Object.fromEntries(rss.privatePeak);
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await child.exited;
    clearTimeout(t);
    return {
      out,
      cpuUs: Object.fromEntries(Object.keys(all).map((k) => [k, end[k]! - base[k]!])),
      mainUs: Object.fromEntries(Object.keys(all).map((k) => [k, endMain[k]! - baseMain[k]!])),
      sys: Object.fromEntries(Object.keys(all).map((k) => [k, { r: endSys[k]!.r - baseSys[k]!.r, w: endSys[k]!.w - baseSys[k]!.w }])),
      kernelShare: Object.fromEntries(
        Object.keys(all).map((k) => {
          const u = endSplit[k]!.user - baseSplit[k]!.user;
          const sy = endSplit[k]!.sys - baseSplit[k]!.sys;
          return [k, sy / (u + sy)];
        }),
      ),
      rssPeak,
      privateRssPeak,
      window: { fromUs, toUs },
    };
  } catch (e) {
    rss.stop();
    child.kill('SIGKILL');
    throw e;
  }
}

const reqs = (p: Phase) => p.out.requests as number;
const rps = (p: Phase) => reqs(p) / ((p.out.duration_us as number) / 1e6);
const mbps = (p: Phase) => p.out.mbps as number;

function closedLoop(targets: Target[], hostHeader: string | undefined, seconds: number, useWrk: boolean, tmp: string): Child {
  if (useWrk) {
    const lua = path.join(tmp, 'spread.lua');
    writeFileSync(lua, WRK_LUA);
    const args = ['-t', String(targets.length), '-c', String(CONNECTIONS), '-d', `${seconds}s`, '--timeout', '10s', '-s', lua];
    if (hostHeader) args.push('-H', `Host: ${hostHeader}`);
    args.push(`http://${targets[0]!.host}:${targets[0]!.port}/`);
    return new Child('wrk', 'wrk', args, { env: { BENCH_TARGETS: targets.map((t) => `${t.host}:${t.port}`).join(',') } });
  }
  return new Child('autocannon', NODE, [LOADGEN, JSON.stringify({ mode: 'ac', targets, hostHeader, seconds, connections: CONNECTIONS })]);
}

function loadgen(params: Json): Child {
  return new Child(`loadgen ${params.mode as string}`, NODE, [LOADGEN, JSON.stringify(params)]);
}

function get(port: number, host: string, urlPath = '/'): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, headers: { host, accept: 'application/json' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.setTimeout(5000, () => req.destroy());
  });
}

interface Fleet {
  tmp: string;
  origin: Child;
  originPort: number;
  relays: Array<{ proc: Child; http: number; connect: number; metrics: number }>;
  /** A third relay the connector is not connected to: every request it takes is forwarded to a peer. */
  forwarder: { proc: Child; http: number; connect: number; metrics: number };
  connector: Child;
  /** The connector's /metrics port (heap used). */
  connectorMetrics: number;
  stop(): Promise<void>;
}

async function startFleet(profile: boolean, root = ROOT, nodeFlags = NODE_FLAGS): Promise<Fleet> {
  const RELAY_CLI = relayCli(root);
  const CONNECTOR_CLI = connectorCli(root);
  const tmp = mkdtempSync(path.join(tmpdir(), 'tunnel-bench-'));
  const started: Child[] = [];
  const prof = (name: string) => {
    if (!profile) return [];
    const dir = path.join(PROFILE_DIR, name);
    mkdirSync(dir, { recursive: true });
    return ['--cpu-prof', '--cpu-prof-dir', dir];
  };
  const stop = async () => {
    // Connector first (it drains), then relays, then the origin; each by its PID.
    for (const c of [...started].reverse()) await c.stop(profile ? 15_000 : 3_000);
    rmSync(tmp, { recursive: true, force: true });
  };
  try {
    const keys = path.join(tmp, 'fleet-key.json');
    const k = await run('keys generate', NODE, [RELAY_CLI, 'keys', 'generate', '--out', keys]);
    if (k.code !== 0) throw new Error(`keys generate failed: ${k.stderr}`);
    const store = `file:${path.join(tmp, 'store')}`;

    const origin = new Child('origin', NODE, [ORIGIN]);
    started.push(origin);
    const originPort = (await origin.waitFor((l) => l.event === 'listening', 15_000, 'listening')).port as number;

    // Listeners and flags the relay CLI has grown since: bind what it offers to a free port, drain fast.
    const help = (await run('relay help', NODE, [RELAY_CLI, 'serve', '--help'])).stdout;
    const optional = [
      ...(help.includes('--peer <') ? ['--peer', '127.0.0.1:0'] : []),
      ...(help.includes('--drain-delay <') ? ['--drain-delay', '0'] : []),
    ];
    const relays: Fleet['relays'] = [];
    for (let i = 0; i < 3; i++) {
      const metrics = await freePort();
      const proc = new Child(`relay-${i}`, NODE, [
        ...nodeFlags,
        ...prof(`relay-${i}`),
        RELAY_CLI,
        'serve',
        '--id',
        `bench-relay-${i}`,
        '--store',
        store,
        '--keys',
        keys,
        '--http',
        '127.0.0.1:0',
        '--connect',
        '127.0.0.1:0',
        '--control',
        'off',
        '--log-format',
        'json',
        '--log-level',
        'info',
        '--drain-timeout',
        '2s',
        '--metrics',
        `127.0.0.1:${metrics}`,
        ...optional,
      ]);
      started.push(proc);
      const l = await proc.waitFor((x) => x.event === 'listening', 20_000, 'listening');
      const ports = l.ports as { http: number; connect: number };
      relays.push({ proc, http: ports.http, connect: ports.connect, metrics });
    }
    const forwarder = relays.pop()!;
    const relayUrls = relays.map((r) => `ws://127.0.0.1:${r.connect}`);
    const t = await run('tunnel create', NODE, [
      RELAY_CLI,
      'tunnel',
      'create',
      'bench',
      '--zone',
      HOST,
      '--hostname',
      HOST,
      '--store',
      store,
      '--keys',
      keys,
      ...relayUrls.flatMap((u) => ['--relay-url', u]),
    ]);
    if (t.code !== 0) throw new Error(`tunnel create failed: ${t.stderr}`);
    const token = t.stdout.trim();
    const connectorMetrics = await freePort();

    const connector = new Child(
      'connector',
      NODE,
      [
        ...nodeFlags,
        ...prof('connector'),
        CONNECTOR_CLI,
        'run',
        '--url',
        `http://127.0.0.1:${originPort}`,
        ...relayUrls.flatMap((u) => ['--relay', u]),
        '--ha-connections',
        '4',
        '--log-format',
        'json',
        '--loglevel',
        'info',
        '--grace-period',
        '2s',
        '--no-discover',
        '--metrics',
        `127.0.0.1:${connectorMetrics}`,
      ],
      { env: { TUNNEL_TOKEN: token } },
    );
    started.push(connector);
    await waitUntil(() => connector.count((l) => l.event === 'registered') >= 4 || !connector.running, 20_000, 'connector: 4 registered connections');
    if (!connector.running) throw new Error(`connector exited: ${connector.stderr}`);
    // The route reaches every relay through the store within a second or so.
    for (const r of [...relays, forwarder]) await waitUntil(async () => (await get(r.http, HOST)) === 200, 15_000, `200 from relay :${r.http}`);
    return { tmp, origin, originPort, relays, forwarder, connector, connectorMetrics, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function measure(): Promise<void> {
  const startedAt = Date.now();
  const useWrk = haveWrk();
  const nginxBin = findNginx();
  const fleet = await startFleet(false);
  let chain: NginxChain | null = null;
  try {
    const { origin, relays, connector } = fleet;
    const perRelay = relays.map((_r, i) => connector.count((l) => l.event === 'registered' && l.relayId === `bench-relay-${i}`));
    if ('bin' in nginxBin) chain = await startNginxChain(nginxBin.bin, fleet.tmp, fleet.originPort);
    else log(`bench: nginx ×2 skipped: ${nginxBin.missing}`);
    log(
      `bench: origin :${fleet.originPort}, relays :${relays.map((r) => r.http).join(' :')}, connector registered ${perRelay.join(' + ')}; ` +
        `nginx ×2 ${chain ? `:${chain.port}` : 'skipped'}; load: ${useWrk ? 'wrk' : 'autocannon'}`,
    );
    const direct: Target[] = [
      { host: '127.0.0.1', port: fleet.originPort },
      { host: '127.0.0.1', port: fleet.originPort },
    ];
    const native: Target[] = chain ? [{ host: '127.0.0.1', port: chain.port }, { host: '127.0.0.1', port: chain.port }] : [];
    const tunnel: Target[] = relays.map((r) => ({ host: '127.0.0.1', port: r.http }));
    const pids = { relay0: relays[0]!.proc.pid, relay1: relays[1]!.proc.pid, connector: connector.pid, origin: origin.pid };
    const nginxPids: Record<string, number> = chain ? { nginxFront: chain.front.pid, nginxBack: chain.back.pid, origin: origin.pid } : { origin: origin.pid };
    const ours = { relay0: pids.relay0, relay1: pids.relay1, connector: pids.connector };
    const heapPorts = { relay0: relays[0]!.metrics, relay1: relays[1]!.metrics, connector: fleet.connectorMetrics };
    const memNow = async (): Promise<Record<keyof typeof ours, Mem>> => {
      const out = {} as Record<keyof typeof ours, Mem>;
      for (const k of Object.keys(ours) as Array<keyof typeof ours>) {
        const r = residentBytes(ours[k]);
        out[k] = { rss: r?.rss ?? NaN, private: r?.private ?? NaN, heapUsed: await heapUsedBytes(heapPorts[k]) };
      }
      return out;
    };
    // Idle: memory, and the CPU the processes burn with no traffic (timers, store rescans, keepalives).
    await sleep(500);
    const idleFrom = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMicros(pid) ?? NaN]));
    const idleT0 = Date.now();
    await sleep(3000);
    const idleSecs = (Date.now() - idleT0) / 1000;
    const idleCpuMsPerSec = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, ((cpuMicros(pid) ?? NaN) - idleFrom[k]!) / 1000 / idleSecs])) as Record<keyof typeof pids, number>;
    const idleMem = await memNow();
    const nginxIdleRss = chain ? (residentBytes(chain.front.pid)?.rss ?? NaN) + (residentBytes(chain.back.pid)?.rss ?? NaN) : NaN;

    // (a) closed loop, 64 connections: direct, nginx ×2, tunnel; each after a warm-up.
    const closed = async (targets: Target[], host: string | undefined, watch: Record<string, number>) => {
      await phase(closedLoop(targets, host, WARMUP_SECONDS, useWrk, fleet.tmp), {});
      return phase(closedLoop(targets, host, SECONDS, useWrk, fleet.tmp), watch);
    };
    const aDirect = await closed(direct, undefined, { origin: pids.origin });
    log(`  (a) direct: ${fmt(rps(aDirect))} req/s`);
    const aNginx = chain ? await closed(native, HOST, nginxPids) : null;
    if (aNginx) log(`  (a) nginx ×2: ${fmt(rps(aNginx))} req/s`);
    const aTunnel = await closed(tunnel, HOST, pids);
    log(`  (a) tunnel: ${fmt(rps(aTunnel))} req/s`);
    const loadMem = await memNow();

    // (b) open loop at a fixed rate.
    const rate = (targets: Target[], watch: Record<string, number>, hostHeader?: string) =>
      phase(loadgen({ mode: 'rate', targets, hostHeader, rate: RATE, seconds: SECONDS, warmupSeconds: 1, connections: 16 }), watch);
    const bDirect = await rate(direct, pids);
    const bNginx = chain ? await rate(native, nginxPids, HOST) : null;
    const bTunnel = await rate(tunnel, pids, HOST);
    log(`  (b) p99 direct ${(bDirect.out.p99_ms as number).toFixed(2)} ms, nginx ×2 ${bNginx ? (bNginx.out.p99_ms as number).toFixed(2) : '–'} ms, tunnel ${(bTunnel.out.p99_ms as number).toFixed(2)} ms`);

    // (c) bulk, one stream each way: direct, nginx ×2, tunnel, and bare ws moving the same bytes the same way.
    const bare = async (dir: 'c2s' | 's2c') =>
      (await wsRun({ kind: 'bare', test: 'bulk', dir, mask: 'zero', streams: 1, bytes: BULK, chunk: 64 * 1024, warmupBytes: 0 }))[0]!;
    const bulkWatch = { relay0: pids.relay0, connector: pids.connector, origin: pids.origin, ...(chain ? { nginxFront: chain.front.pid, nginxBack: chain.back.pid } : {}) };
    const transfer = (mode: 'download' | 'upload', target: Target, host?: string) =>
      phase(loadgen({ mode, targets: [target], hostHeader: host, path: mode === 'download' ? `/download?bytes=${BULK}` : '/upload', bytes: BULK }), bulkWatch);
    const bareDown = await bare('c2s');
    const downTunnel = await transfer('download', tunnel[0]!, HOST);
    const downNginx = chain ? await transfer('download', native[0]!, HOST) : null;
    const downDirect = await transfer('download', direct[0]!);
    log(`  (c) download: bare ws c→s ${fmt(bareDown.mbps as number)}, tunnel ${fmt(mbps(downTunnel))}, nginx ×2 ${downNginx ? fmt(mbps(downNginx)) : '–'}, direct ${fmt(mbps(downDirect))} MB/s`);
    const bareUp = await bare('s2c');
    const upTunnel = await transfer('upload', tunnel[0]!, HOST);
    const upNginx = chain ? await transfer('upload', native[0]!, HOST) : null;
    const upDirect = await transfer('upload', direct[0]!);
    log(`  (c) upload: bare ws s→c ${fmt(bareUp.mbps as number)}, tunnel ${fmt(mbps(upTunnel))}, nginx ×2 ${upNginx ? fmt(mbps(upNginx)) : '–'}, direct ${fmt(mbps(upDirect))} MB/s`);
    const bulkMem = await memNow();

    // (e) a relay holding no connection forwards to a peer that does, vs a relay that holds one.
    const fwdPids = { ...pids, forwarder: fleet.forwarder.proc.pid };
    const eOwn = await phase(closedLoop([tunnel[0]!, tunnel[0]!], HOST, SECONDS, useWrk, fleet.tmp), fwdPids);
    const eFwd = await phase(closedLoop([{ host: '127.0.0.1', port: fleet.forwarder.http }, { host: '127.0.0.1', port: fleet.forwarder.http }], HOST, SECONDS, useWrk, fleet.tmp), fwdPids);
    log(`  (e) own connection ${fmt(rps(eOwn))} req/s, forwarded ${fmt(rps(eFwd))} req/s`);

    // (d) memory SETTLE seconds after the last load: does it come back to within 20% of idle?
    log(`  (d) waiting ${SETTLE_SECONDS} s for memory to settle`);
    await sleep(SETTLE_SECONDS * 1000);
    const settledMem = await memNow();

    // ---- figures ----
    const ms = (us: unknown) => (us as number) / 1000;
    const perReq = (p: Phase, ...k: string[]) => k.reduce((a, x) => a + p.cpuUs[x]!, 0) / reqs(p);
    const cpu = {
      originDirect: perReq(aDirect, 'origin'),
      originTunnel: perReq(aTunnel, 'origin'),
      originNginx: aNginx ? perReq(aNginx, 'origin') : NaN,
      relays: perReq(aTunnel, 'relay0', 'relay1'),
      connector: perReq(aTunnel, 'connector'),
      nginxFront: aNginx ? perReq(aNginx, 'nginxFront') : NaN,
      nginxBack: aNginx ? perReq(aNginx, 'nginxBack') : NaN,
      loadgenDirect: perReq(aDirect, 'loadgen'),
      loadgenNginx: aNginx ? perReq(aNginx, 'loadgen') : NaN,
      loadgenTunnel: perReq(aTunnel, 'loadgen'),
    };
    const relayConnectorCpu = cpu.relays + cpu.connector;
    const nginxCpu = cpu.nginxFront + cpu.nginxBack;
    const nsPerByte = (p: Phase | null, keys: string[]) => (p ? ((keys.reduce((a, k) => a + p.cpuUs[k]!, 0) * 1000) / BULK).toFixed(2) : '–');
    const sysPerReq = (p: Phase | null, keys: string[]) => {
      if (!p) return '–';
      const n = reqs(p);
      const r = keys.reduce((a, k) => a + p.sys[k]!.r, 0) / n;
      const w = keys.reduce((a, k) => a + p.sys[k]!.w, 0) / n;
      return `${r.toFixed(2)} + ${w.toFixed(2)}`;
    };
    // At a low fixed rate little is batched: CPU per request, net of what the processes burn idle.
    const bSecs = (bTunnel.window.toUs - bTunnel.window.fromUs) / 1e6;
    const bReqs = bTunnel.out.requests as number;
    const net = (k: keyof typeof pids) => (bTunnel.cpuUs[k]! - idleCpuMsPerSec[k] * 1000 * bSecs) / bReqs;
    const cpuAtRate = { relays: net('relay0') + net('relay1'), connector: net('connector'), origin: net('origin') };
    const nginxAtRate = bNginx ? perReq(bNginx, 'nginxFront', 'nginxBack') : NaN;
    const loadRss = aTunnel.rssPeak;
    const loadPrivate = aTunnel.privateRssPeak;
    const relayLoadRss = Math.max(loadRss.relay0 ?? 0, loadRss.relay1 ?? 0);
    const relayIdleRss = Math.max(idleMem.relay0.rss, idleMem.relay1.rss);
    const nginxLoadRss = aNginx ? (aNginx.rssPeak.nginxFront ?? NaN) + (aNginx.rssPeak.nginxBack ?? NaN) : NaN;
    const added = (b: Phase | null, q: 'p50_ms' | 'p99_ms') => (b ? (b.out[q] as number) - (bDirect.out[q] as number) : NaN);
    const added99 = added(bTunnel, 'p99_ms');
    const settleRatio = (k: keyof typeof ours) => settledMem[k].rss / idleMem[k].rss;
    const settledWorst = Math.max(settleRatio('relay0'), settleRatio('relay1'), settleRatio('connector'));
    const mb = (b: number) => (Number.isFinite(b) ? `${(b / MiB).toFixed(0)} MB` : '–');
    const ok = (b: boolean) => (b ? 'yes' : '**NO**');
    const x = (r: number) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–');
    const msF = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)} ms` : '–');
    const plus = (v: number) => (Number.isFinite(v) ? `+${v.toFixed(2)} ms` : '–');
    const memRow = (label: string, m: Record<keyof typeof ours, Mem>): string[] => [
      label,
      '',
      '',
      (['relay0', 'relay1', 'connector'] as const).map((k) => `${mb(m[k].rss)} / ${mb(m[k].heapUsed)} / ${mb(m[k].private)}`).join(' · '),
      '',
      '',
      '',
      '',
    ];
    const errs = [aDirect, aNginx, aTunnel].map((p) => (p ? (p.out.errors as number) : '–'));
    const ratio = {
      rpsDirect: rps(aTunnel) / rps(aDirect),
      rpsNginx: aNginx ? rps(aTunnel) / rps(aNginx) : NaN,
      cpuNginx: relayConnectorCpu / nginxCpu,
      downNginx: downNginx ? mbps(downTunnel) / mbps(downNginx) : NaN,
      upNginx: upNginx ? mbps(upTunnel) / mbps(upNginx) : NaN,
    };
    log('(f) h2load over HTTP/2');
    const h2 = await h2loadBench(log);
    const rows: string[][] = [
      [
        `(a) GET 1 KiB, ${CONNECTIONS} conns, ${SECONDS} s: req/s`,
        fmt(rps(aDirect)),
        aNginx ? `${fmt(rps(aNginx))} (${x(rps(aNginx) / rps(aDirect))} direct)` : '–',
        fmt(rps(aTunnel)),
        x(ratio.rpsDirect),
        x(ratio.rpsNginx),
        '≥ 0.6× nginx ×2',
        ok(ratio.rpsNginx >= 0.6),
      ],
      ['(a) p50 latency', msF(ms(aDirect.out.p50_us)), aNginx ? msF(ms(aNginx.out.p50_us)) : '–', msF(ms(aTunnel.out.p50_us)), x(ms(aTunnel.out.p50_us) / ms(aDirect.out.p50_us)), aNginx ? x(ms(aTunnel.out.p50_us) / ms(aNginx.out.p50_us)) : '–', '', ''],
      ['(a) p99 latency', msF(ms(aDirect.out.p99_us)), aNginx ? msF(ms(aNginx.out.p99_us)) : '–', msF(ms(aTunnel.out.p99_us)), x(ms(aTunnel.out.p99_us) / ms(aDirect.out.p99_us)), aNginx ? x(ms(aTunnel.out.p99_us) / ms(aNginx.out.p99_us)) : '–', '', ''],
      [
        '(a) CPU µs/request, the proxies: relays + connector / nginx front + back',
        '',
        aNginx ? `${fmt(nginxCpu, 1)} (${fmt(cpu.nginxFront, 1)} + ${fmt(cpu.nginxBack, 1)})` : '–',
        `${fmt(relayConnectorCpu, 1)} (${fmt(cpu.relays, 1)} + ${fmt(cpu.connector, 1)})`,
        '',
        x(ratio.cpuNginx),
        '≤ 2× nginx ×2',
        ok(ratio.cpuNginx <= 2),
      ],
      ['(a) CPU µs/request: origin', fmt(cpu.originDirect, 1), fmt(cpu.originNginx, 1), fmt(cpu.originTunnel, 1), '', '', '', ''],
      [`(a) CPU µs/request: load generator (${useWrk ? 'wrk' : 'autocannon'})`, fmt(cpu.loadgenDirect, 1), fmt(cpu.loadgenNginx, 1), fmt(cpu.loadgenTunnel, 1), '', '', '', ''],
      [
        '(a) kernel share of CPU: origin / proxies (relay-0, connector; nginx front, back)',
        pct(aDirect.kernelShare.origin),
        aNginx ? `${pct(aNginx.kernelShare.origin)} / ${pct(aNginx.kernelShare.nginxFront)}, ${pct(aNginx.kernelShare.nginxBack)}` : '–',
        `${pct(aTunnel.kernelShare.origin)} / ${pct(aTunnel.kernelShare.relay0)}, ${pct(aTunnel.kernelShare.connector)}`,
        '',
        '',
        '',
        '',
      ],
      ['(a) syscalls/request, reads + writes: proxies', '', sysPerReq(aNginx, ['nginxFront', 'nginxBack']), sysPerReq(aTunnel, ['relay0', 'relay1', 'connector']), '', '', '', ''],
      [`(b) fixed ${fmt(RATE)} req/s, ${SECONDS} s: p50`, msF(bDirect.out.p50_ms as number), bNginx ? `${msF(bNginx.out.p50_ms as number)} (${plus(added(bNginx, 'p50_ms'))})` : '–', msF(bTunnel.out.p50_ms as number), plus(added(bTunnel, 'p50_ms')), '', '', ''],
      [`(b) fixed ${fmt(RATE)} req/s, ${SECONDS} s: p99`, msF(bDirect.out.p99_ms as number), bNginx ? `${msF(bNginx.out.p99_ms as number)} (${plus(added(bNginx, 'p99_ms'))})` : '–', msF(bTunnel.out.p99_ms as number), plus(added99), bNginx ? plus((bTunnel.out.p99_ms as number) - (bNginx.out.p99_ms as number)) : '–', '≤ +2 ms over direct', ok(added99 <= 2)],
      [`(b) CPU µs/request at ${fmt(RATE)} req/s: proxies (tunnel net of idle)`, '', fmt(nginxAtRate, 1), `${fmt(cpuAtRate.relays + cpuAtRate.connector, 1)} (relays ${fmt(cpuAtRate.relays, 1)}, connector ${fmt(cpuAtRate.connector, 1)})`, '', x((cpuAtRate.relays + cpuAtRate.connector) / nginxAtRate), '', ''],
      [`(b) syscalls/request at ${fmt(RATE)} req/s: proxies`, '', sysPerReq(bNginx, ['nginxFront', 'nginxBack']), sysPerReq(bTunnel, ['relay0', 'relay1', 'connector']), '', '', '', ''],
      [`(c) ${BULK / MiB} MiB download, one stream, MB/s`, fmt(mbps(downDirect)), downNginx ? fmt(mbps(downNginx)) : '–', fmt(mbps(downTunnel)), x(mbps(downTunnel) / mbps(downDirect)), x(ratio.downNginx), '≥ 0.5× nginx ×2', ok(ratio.downNginx >= 0.5)],
      [`(c) ${BULK / MiB} MiB upload, one stream, MB/s`, fmt(mbps(upDirect)), upNginx ? fmt(mbps(upNginx)) : '–', fmt(mbps(upTunnel)), x(mbps(upTunnel) / mbps(upDirect)), x(ratio.upNginx), '≥ 0.5× nginx ×2', ok(ratio.upNginx >= 0.5)],
      ['(c) bare ws moving the same bytes (c→s / s→c), MB/s', `${fmt(bareDown.mbps as number)} / ${fmt(bareUp.mbps as number)}`, '', `${pct(mbps(downTunnel) / (bareDown.mbps as number))} / ${pct(mbps(upTunnel) / (bareUp.mbps as number))} of bare ws`, '', '', '', ''],
      ['(c) CPU ns/byte, download / upload: proxies (relay-0 + connector; nginx front + back)', '', `${nsPerByte(downNginx, ['nginxFront', 'nginxBack'])} / ${nsPerByte(upNginx, ['nginxFront', 'nginxBack'])}`, `${nsPerByte(downTunnel, ['relay0', 'connector'])} / ${nsPerByte(upTunnel, ['relay0', 'connector'])}`, '', '', '', ''],
      memRow('(d) idle, RSS / heap used / private: relay-0 · relay-1 · connector', idleMem),
      ['(d) RSS idle: relay (larger) / connector', '', '', `${mb(relayIdleRss)} / ${mb(idleMem.connector.rss)}`, '', '', 'relay ≤ 70 MB, connector ≤ 60 MB', ok(relayIdleRss <= 70 * MiB && idleMem.connector.rss <= 60 * MiB)],
      ['(d) RSS peak under (a): relay (larger) / connector; nginx front + back', '', `${mb(nginxIdleRss)} idle, ${mb(nginxLoadRss)} under (a)`, `${mb(relayLoadRss)} / ${mb(loadRss.connector ?? NaN)}`, '', '', 'each ≤ 100 MB', ok(relayLoadRss <= 100 * MiB && (loadRss.connector ?? Infinity) <= 100 * MiB)],
      ['(d) private memory (RssAnon) peak under (a): relay-0 / relay-1 / connector', '', '', `${mb(loadPrivate.relay0 ?? NaN)} / ${mb(loadPrivate.relay1 ?? NaN)} / ${mb(loadPrivate.connector ?? NaN)}`, '', '', '', ''],
      memRow('(d) after (a), RSS / heap used / private', loadMem),
      ['(d) RSS peak during the transfers: relay-0 / connector', '', '', `${mb(Math.max(downTunnel.rssPeak.relay0 ?? 0, upTunnel.rssPeak.relay0 ?? 0))} / ${mb(Math.max(downTunnel.rssPeak.connector ?? 0, upTunnel.rssPeak.connector ?? 0))}`, '', '', '', ''],
      memRow('(d) after the transfers, RSS / heap used / private', bulkMem),
      memRow(`(d) ${SETTLE_SECONDS} s after the last load, RSS / heap used / private`, settledMem),
      [`(d) RSS ${SETTLE_SECONDS} s after load, worst of the three, vs idle`, '', '', x(settledWorst), '', '', '≤ 1.2× idle after 60 s', SETTLE_SECONDS >= 60 ? ok(settledWorst <= 1.2) : `(${SETTLE_SECONDS} s < 60 s)`],
      ['(d) idle CPU, ms per s: relay-0 / relay-1 / connector / origin', '', '', `${idleCpuMsPerSec.relay0.toFixed(1)} / ${idleCpuMsPerSec.relay1.toFixed(1)} / ${idleCpuMsPerSec.connector.toFixed(1)} / ${idleCpuMsPerSec.origin.toFixed(1)}`, '', '', '', ''],
      ['(e) relay holding the connection: req/s, p99', '', '', `${fmt(rps(eOwn))}, ${ms(eOwn.out.p99_us).toFixed(2)} ms`, '', '', '', ''],
      ['(e) relay forwarding to that peer: req/s, p99', '', '', `${fmt(rps(eFwd))}, ${ms(eFwd.out.p99_us).toFixed(2)} ms (${pct(rps(eFwd) / rps(eOwn))} of own)`, '', '', '', ''],
      ['(e) CPU µs/request of the forwarding relay', '', '', fmt(eFwd.cpuUs.forwarder! / reqs(eFwd), 1), '', '', '', ''],
      ...h2loadRows(h2),
    ];
    const table = markdownTable(['measurement', 'direct', 'nginx ×2', 'tunnel', 'tunnel / direct', 'tunnel / nginx ×2', 'aim', 'met'], rows);
    const note =
      `Real processes on one 2-core machine shared with other work (figures ±25%; compare the ratios and CPU per request). ` +
      `Origin, proxies and load generator share the CPU. Tunnel: load spread over both relays (Host: ${HOST}), connector with 4 connections ` +
      `(${perRelay.join(' + ')} per relay). nginx ×2: ${chain ? 'two chained nginx, one process each (master_process off), keepalive upstreams, no buffering' : `skipped (${'missing' in nginxBin ? nginxBin.missing : ''})`}. ` +
      `(a) ${useWrk ? 'wrk -t2' : 'autocannon (percentiles combined by request-weighted mean)'}, after a ${WARMUP_SECONDS} s warm-up; errors direct/nginx/tunnel: ${errs.join('/')}. ` +
      `(b) open-loop undici client at a fixed rate (wrk2-style), latency from the scheduled dispatch to the last body byte. ` +
      `(c) one stream each way; bare ws = a ws client and server process moving the same bytes as 64 KiB binary messages. ` +
      `CPU from /proc/PID/stat (utime+stime) over the measured run divided by its requests; heap used from each process's /metrics.`;
    process.stdout.write(`\n### bench (tunnel)\n\n${table}\n\n${note}\n`);

    mkdirSync(RESULTS_DIR, { recursive: true });
    const out = {
      machine: machineInfo(),
      params: { seconds: SECONDS, warmupSeconds: WARMUP_SECONDS, connections: CONNECTIONS, rate: RATE, bulkBytes: BULK, settleSeconds: SETTLE_SECONDS, loadGenerator: useWrk ? 'wrk' : 'autocannon', connectionsPerRelay: perRelay, nginx: chain ? 'nginx ×2' : ('missing' in nginxBin ? nginxBin.missing : '') },
      a: { direct: aDirect, nginx: aNginx, tunnel: aTunnel, reqPerSec: { direct: rps(aDirect), nginx: aNginx ? rps(aNginx) : null, tunnel: rps(aTunnel), ratioToDirect: ratio.rpsDirect, ratioToNginx: ratio.rpsNginx } },
      b: { direct: bDirect, nginx: bNginx, tunnel: bTunnel, addedP99Ms: { tunnel: added99, nginx: added(bNginx, 'p99_ms') } },
      c: {
        download: { bareWsClientToServer: bareDown, tunnel: downTunnel, nginx: downNginx, direct: downDirect, ratioToNginx: ratio.downNginx },
        upload: { bareWsServerToClient: bareUp, tunnel: upTunnel, nginx: upNginx, direct: upDirect, ratioToNginx: ratio.upNginx },
      },
      d: { idle: idleMem, afterRequests: loadMem, afterTransfers: bulkMem, settled: settledMem, settledWorstToIdle: settledWorst, idleCpuMsPerSec, loadRss, loadPrivateRss: loadPrivate, nginxRss: { idle: nginxIdleRss, load: nginxLoadRss } },
      cpuUsPerRequest: { ...cpu, relayPlusConnector: relayConnectorCpu, nginxChain: nginxCpu, ratioToNginx: ratio.cpuNginx, atFixedRateNetOfIdle: cpuAtRate, nginxAtFixedRate: nginxAtRate },
      peerForwarding: { own: eOwn, forwarded: eFwd, reqPerSecRatio: rps(eFwd) / rps(eOwn) },
      h2load: h2,
      aims: {
        cpuPerRequestAtMost2xNginx: ratio.cpuNginx <= 2,
        reqPerSecAtLeast06xNginx: ratio.rpsNginx >= 0.6,
        downloadAtLeast05xNginx: ratio.downNginx >= 0.5,
        uploadAtLeast05xNginx: ratio.upNginx >= 0.5,
        p99AddedAtMost2ms: added99 <= 2,
        idleRss: relayIdleRss <= 70 * MiB && idleMem.connector.rss <= 60 * MiB,
        loadRss: relayLoadRss <= 100 * MiB && (loadRss.connector ?? Infinity) <= 100 * MiB,
        settledWithin20pct: SETTLE_SECONDS >= 60 ? settledWorst <= 1.2 : null,
      },
      table,
      elapsedSeconds: (Date.now() - startedAt) / 1000,
    };
    writeFileSync(path.join(RESULTS_DIR, 'tunnel.json'), JSON.stringify(out, null, 2) + '\n');
    process.stdout.write(`\nwrote bench/results/tunnel.json (${out.elapsedSeconds.toFixed(0)} s)\n`);
  } finally {
    await chain?.stop();
    await fleet.stop();
  }
}

/** BENCH_PROFILE=1: relays and connector under --cpu-prof; (a) and (c) through the tunnel only. */
async function profile(): Promise<void> {
  rmSync(PROFILE_DIR, { recursive: true, force: true });
  const useWrk = haveWrk();
  const fleet = await startFleet(true);
  const windows: Record<string, ProfileWindow> = {};
  const figures: Record<string, string> = {};
  let stopped = false;
  try {
    const { relays, connector, origin } = fleet;
    const tunnel: Target[] = relays.map((r) => ({ host: '127.0.0.1', port: r.http }));
    const pids = { relay0: relays[0]!.proc.pid, relay1: relays[1]!.proc.pid, connector: connector.pid, origin: origin.pid };
    await phase(closedLoop(tunnel, HOST, WARMUP_SECONDS, useWrk, fleet.tmp), {});
    const a = await phase(closedLoop(tunnel, HOST, SECONDS, useWrk, fleet.tmp), pids);
    windows.requests = a.window;
    const n = a.out.requests as number;
    figures.requests =
      `${fmt(n / SECONDS)} req/s under the profiler; CPU µs/request: relays ${fmt((a.cpuUs.relay0! + a.cpuUs.relay1!) / n, 1)}, ` +
      `connector ${fmt(a.cpuUs.connector! / n, 1)}, origin ${fmt(a.cpuUs.origin! / n, 1)}`;
    log(`  profile (a): ${figures.requests}`);
    const b = await phase(loadgen({ mode: 'rate', targets: tunnel, hostHeader: HOST, rate: RATE, seconds: SECONDS, warmupSeconds: 1, connections: 16 }), pids);
    windows.rate = b.window;
    const nb = b.out.requests as number;
    figures.rate =
      `p50 ${(b.out.p50_ms as number).toFixed(2)} ms, p99 ${(b.out.p99_ms as number).toFixed(2)} ms under the profiler; CPU µs/request: ` +
      `relays ${fmt((b.cpuUs.relay0! + b.cpuUs.relay1!) / nb, 1)}, connector ${fmt(b.cpuUs.connector! / nb, 1)}, origin ${fmt(b.cpuUs.origin! / nb, 1)}`;
    log(`  profile (b): ${figures.rate}`);
    const down = await phase(loadgen({ mode: 'download', targets: [tunnel[0]], hostHeader: HOST, path: `/download?bytes=${BULK}`, bytes: BULK }), pids);
    windows.download = down.window;
    figures.download = `${fmt(down.out.mbps as number)} MB/s under the profiler`;
    const up = await phase(loadgen({ mode: 'upload', targets: [tunnel[0]], hostHeader: HOST, path: '/upload', bytes: BULK }), pids);
    windows.upload = up.window;
    figures.upload = `${fmt(up.out.mbps as number)} MB/s under the profiler`;
    log(`  profile (c): download ${figures.download}, upload ${figures.upload}`);
    await fleet.stop(); // SIGTERM: the profiles are written as the processes exit
    stopped = true;
  } finally {
    if (!stopped) await fleet.stop();
  }
  const summaries: Record<string, Record<string, ProfileSummary>> = {};
  const titles: Record<string, string> = {
    requests: `(a) GET 1 KiB, ${CONNECTIONS} connections over both relays`,
    rate: `(b) fixed ${fmt(RATE)} req/s over both relays`,
    download: `(c) ${BULK / MiB} MiB download through relay-0`,
    upload: `(c) ${BULK / MiB} MiB upload through relay-0`,
  };
  let text = '\n### bench (tunnel) CPU profiles — figures under the profiler are not benchmark results\n';
  for (const [ph, w] of Object.entries(windows)) {
    text += `\n**${titles[ph]}**: ${figures[ph]}\n\n`;
    summaries[ph] = {};
    for (const proc of ['relay-0', 'relay-1', 'connector']) {
      if ((ph === 'download' || ph === 'upload') && proc === 'relay-1') continue; // bulk runs use relay-0 only
      const f = newestProfile(path.join(PROFILE_DIR, proc));
      if (!f) {
        text += `(no profile from ${proc})\n`;
        continue;
      }
      const s = summarizeProfile(f, 30, w);
      summaries[ph][proc] = s;
      text += formatProfile(`${proc} — ${ph}`, s, 20) + '\n';
    }
  }
  process.stdout.write(text);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(path.join(RESULTS_DIR, 'tunnel-profile.json'), JSON.stringify({ machine: machineInfo(), figures, windows, summaries }, null, 2) + '\n');
  process.stdout.write(`\nwrote bench/results/tunnel-profile.json and the raw profiles under bench/results/profiles/tunnel/\n`);
}

/**
 * BENCH_ONLY=bulk: the (c) transfers alone, with CPU split into the main
 * thread and the rest (GC helpers); for trying changes quickly, not for the README.
 */
async function bulkOnly(): Promise<void> {
  const fleet = await startFleet(false);
  try {
    const { relays, connector, origin } = fleet;
    const target: Target = { host: '127.0.0.1', port: relays[0]!.http };
    const watch = { relay0: relays[0]!.proc.pid, connector: connector.pid, origin: origin.pid };
    const ns = (p: Phase, k: string) => `${((p.cpuUs[k]! * 1000) / BULK).toFixed(2)} (main ${((p.mainUs[k]! * 1000) / BULK).toFixed(2)})`;
    for (const [mode, urlPath] of [['download', `/download?bytes=${BULK}`], ['upload', '/upload']] as const) {
      const p = await phase(loadgen({ mode, targets: [target], hostHeader: HOST, path: urlPath, bytes: BULK }), watch);
      log(`  ${mode}: ${fmt(p.out.mbps as number)} MB/s; CPU ns/byte relay ${ns(p, 'relay0')}, connector ${ns(p, 'connector')}, origin ${ns(p, 'origin')}, client ${ns(p, 'loadgen')}; peak RSS relay ${fmt((p.rssPeak.relay0 ?? 0) / MiB)} MB, connector ${fmt((p.rssPeak.connector ?? 0) / MiB)} MB`);
    }
  } finally {
    await fleet.stop();
  }
}

/**
 * BENCH_ONLY=rate: (b) alone, direct then through the tunnel; with
 * BENCH_NODE_FLAGS=--trace-gc it also lists the GC pauses of relays and
 * connector, to see what the latency tail is made of.
 */
async function rateOnly(): Promise<void> {
  const fleet = await startFleet(false);
  try {
    const { relays, connector, origin } = fleet;
    const direct: Target[] = [{ host: '127.0.0.1', port: fleet.originPort }];
    const tunnel: Target[] = relays.map((r) => ({ host: '127.0.0.1', port: r.http }));
    const pids = { relay0: relays[0]!.proc.pid, relay1: relays[1]!.proc.pid, connector: connector.pid, origin: origin.pid };
    const run1 = (targets: Target[], hostHeader?: string) => phase(loadgen({ mode: 'rate', targets, hostHeader, rate: RATE, seconds: SECONDS, warmupSeconds: 1, connections: 16 }), pids);
    const show = (name: string, p: Phase) => {
      const o = p.out;
      const n = o.requests as number;
      log(`  ${name}: p50 ${(o.p50_ms as number).toFixed(2)} p90 ${(o.p90_ms as number).toFixed(2)} p99 ${(o.p99_ms as number).toFixed(2)} p99.9 ${(o.p999_ms as number).toFixed(2)} max ${(o.max_ms as number).toFixed(2)} ms; CPU µs/request relays ${fmt((p.cpuUs.relay0! + p.cpuUs.relay1!) / n, 1)}, connector ${fmt(p.cpuUs.connector! / n, 1)}, origin ${fmt(p.cpuUs.origin! / n, 1)}; of which main thread: relays ${fmt((p.mainUs.relay0! + p.mainUs.relay1!) / n, 1)}, connector ${fmt(p.mainUs.connector! / n, 1)}; kernel share relay-0 ${pct(p.kernelShare.relay0!)}, connector ${pct(p.kernelShare.connector!)}; syscalls/request relay-0 ${((p.sys.relay0!.r + p.sys.relay0!.w) / n).toFixed(1)}, connector ${((p.sys.connector!.r + p.sys.connector!.w) / n).toFixed(1)}`);
    };
    show('direct', await run1(direct));
    const marks = [...relays.map((r) => r.proc), connector].map((c) => c.stdout.length);
    show('tunnel', await run1(tunnel, HOST));
    [...relays.map((r) => r.proc), connector].forEach((c, i) => {
      const pauses = c.stdout
        .slice(marks[i])
        .split('\n')
        .map((l) => /ms: (Scavenge|Mark-Compact|Mark-Sweep|Minor Mark-Sweep)[^,]*, ([\d.]+) \/ ([\d.]+) ms/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => ({ kind: m[1]!, ms: Number(m[2]) }));
      if (pauses.length === 0) return;
      const byKind = new Map<string, number[]>();
      for (const x of pauses) byKind.set(x.kind, [...(byKind.get(x.kind) ?? []), x.ms]);
      log(`  ${c.name} GC: ${[...byKind].map(([k, v]) => `${v.length} ${k} (max ${Math.max(...v).toFixed(1)} ms, total ${v.reduce((a, b) => a + b, 0).toFixed(0)} ms)`).join(', ')}`);
    });
  } finally {
    await fleet.stop();
  }
}

/**
 * BENCH_ONLY=requests: (a) and (b) alone for direct, nginx ×2 and the tunnel,
 * BENCH_ROUNDS (default 2) times in one fleet, with the CPU µs/request of each
 * process: for measuring a change to the request path before and after; not for the README tables.
 */
async function requestsOnly(): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
  const useWrk = haveWrk();
  const nginxBin = findNginx();
  const fleet = await startFleet(false);
  const compareRoot = process.env.BENCH_COMPARE_ROOT;
  const compareFlags = process.env.BENCH_COMPARE_NODE_FLAGS;
  const others: Array<{ name: string; fleet: Fleet }> = [];
  for (const root of compareRoot || compareFlags !== undefined ? (compareRoot ?? ROOT).split(',') : []) {
    const flags = compareFlags === undefined ? NODE_FLAGS : compareFlags.split(' ').filter(Boolean);
    others.push({ name: `tunnel from ${root}${compareFlags !== undefined ? ` with flags "${compareFlags}"` : ''}`, fleet: await startFleet(false, root, flags) });
  }
  let chain: NginxChain | null = null;
  try {
    const { relays, connector, origin } = fleet;
    if ('bin' in nginxBin) chain = await startNginxChain(nginxBin.bin, fleet.tmp, fleet.originPort);
    const tunnels = [{ name: 'tunnel', fleet }, ...others];
    const figures = new Map<string, number[]>(tunnels.map((t) => [t.name, []]));
    const direct: Target[] = [{ host: '127.0.0.1', port: fleet.originPort }, { host: '127.0.0.1', port: fleet.originPort }];
    const native: Target[] = chain ? [{ host: '127.0.0.1', port: chain.port }, { host: '127.0.0.1', port: chain.port }] : [];
    const pids = { relay0: relays[0]!.proc.pid, relay1: relays[1]!.proc.pid, connector: connector.pid, origin: origin.pid };
    const nginxPids: Record<string, number> = chain ? { nginxFront: chain.front.pid, nginxBack: chain.back.pid, origin: origin.pid } : {};
    const closed = async (targets: Target[], host: string | undefined, watch: Record<string, number>) => {
      await phase(closedLoop(targets, host, WARMUP_SECONDS, useWrk, fleet.tmp), {});
      return phase(closedLoop(targets, host, SECONDS, useWrk, fleet.tmp), watch);
    };
    const rate = (targets: Target[], watch: Record<string, number>, hostHeader?: string) =>
      phase(loadgen({ mode: 'rate', targets, hostHeader, rate: RATE, seconds: SECONDS, warmupSeconds: 1, connections: 16 }), watch);
    const us = (p: Phase, ...k: string[]) => k.reduce((a, x) => a + p.cpuUs[x]!, 0) / reqs(p);
    const sysPer = (p: Phase, ...k: string[]) => `${(k.reduce((a, x) => a + p.sys[x]!.r, 0) / reqs(p)).toFixed(2)} r + ${(k.reduce((a, x) => a + p.sys[x]!.w, 0) / reqs(p)).toFixed(2)} w`;
    const p99 = (p: Phase) => p.out.p99_ms as number;
    for (let round = 1; round <= rounds; round++) {
      const d = await closed(direct, undefined, { origin: pids.origin });
      const n = chain ? await closed(native, HOST, nginxPids) : null;
      const nginxUs = n ? us(n, 'nginxFront', 'nginxBack') : NaN;
      log(`  round ${round} (a): req/s direct ${fmt(rps(d))}, nginx ×2 ${n ? fmt(rps(n)) : '–'}; CPU µs/request nginx ×2 ${fmt(nginxUs, 1)}${n ? `, syscalls/request ${sysPer(n, 'nginxFront', 'nginxBack')}` : ''}; origin direct ${fmt(us(d, 'origin'), 1)}`);
      // Each round starts with the next fleet: the one run right after another fleet's load pays for that fleet's wind-down.
      const order = tunnels.map((_t, i) => tunnels[(i + round - 1) % tunnels.length]!);
      for (const { name, fleet: f } of order) {
        const pids = { relay0: f.relays[0]!.proc.pid, relay1: f.relays[1]!.proc.pid, connector: f.connector.pid, origin: f.origin.pid };
        const t = await closed(f.relays.map((r) => ({ host: '127.0.0.1', port: r.http })), HOST, pids);
        const tunnelUs = us(t, 'relay0', 'relay1', 'connector');
        figures.get(name)!.push(tunnelUs);
        log(
          `  round ${round} (a) ${name}: ${fmt(rps(t))} req/s (${(rps(t) / rps(d)).toFixed(2)}× direct, ${n ? (rps(t) / rps(n)).toFixed(2) : '–'}× nginx ×2); ` +
            `CPU µs/request: relays ${fmt(us(t, 'relay0', 'relay1'), 1)} + connector ${fmt(us(t, 'connector'), 1)} = ${fmt(tunnelUs, 1)} (${(tunnelUs / nginxUs).toFixed(2)}× nginx ×2); ` +
            `main thread relays ${fmt((t.mainUs.relay0! + t.mainUs.relay1!) / reqs(t), 1)}, connector ${fmt(t.mainUs.connector! / reqs(t), 1)}; origin ${fmt(us(t, 'origin'), 1)}; ` +
            `syscalls/request relays ${sysPer(t, 'relay0', 'relay1')}, connector ${sysPer(t, 'connector')}; kernel share relay-0 ${pct(t.kernelShare.relay0!)}, connector ${pct(t.kernelShare.connector!)}`,
        );
      }
      if (process.env.BENCH_SKIP_RATE === '1') continue;
      const bd = await rate(direct, { origin: pids.origin });
      const bn = chain ? await rate(native, nginxPids, HOST) : null;
      log(`  round ${round} (b) ${RATE} req/s: p99 direct ${p99(bd).toFixed(2)}, nginx ×2 ${bn ? p99(bn).toFixed(2) : '–'} ms`);
      for (const { name, fleet: f } of tunnels) {
        const pids = { relay0: f.relays[0]!.proc.pid, relay1: f.relays[1]!.proc.pid, connector: f.connector.pid, origin: f.origin.pid };
        const bt = await rate(f.relays.map((r) => ({ host: '127.0.0.1', port: r.http })), pids, HOST);
        log(
          `  round ${round} (b) ${name}: p99 ${p99(bt).toFixed(2)} ms (added ${(p99(bt) - p99(bd)).toFixed(2)} ms); ` +
            `CPU µs/request relays ${fmt(us(bt, 'relay0', 'relay1'), 1)} + connector ${fmt(us(bt, 'connector'), 1)}`,
        );
      }
    }
    for (const [name, v] of figures) {
      const sorted = [...v].sort((x, y) => x - y);
      log(`  ${name}: relays + connector CPU µs/request over ${v.length} rounds: min ${fmt(sorted[0]!, 1)}, median ${fmt(sorted[sorted.length >> 1]!, 1)}`);
    }
  } finally {
    await chain?.stop();
    for (const o of others) await o.fleet.stop();
    await fleet.stop();
  }
}

/** BENCH_ONLY=h2load: the (f) rows alone. */
async function h2loadOnly(): Promise<void> {
  const r: H2loadResult = await h2loadBench(log);
  process.stdout.write(`\n### bench (h2load)\n\n${markdownTable(['measurement', 'direct', 'nginx ×2', 'tunnel', 'tunnel / direct', 'tunnel / nginx ×2', 'aim', 'met'], h2loadRows(r))}\n`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(path.join(RESULTS_DIR, 'h2load.json'), JSON.stringify({ machine: machineInfo(), h2load: r }, null, 2) + '\n');
}

const only = process.env.BENCH_ONLY;
(PROFILE ? profile() : only === 'abuse' ? abuseOnly() : only === 'bulk' ? bulkOnly() : only === 'rate' ? rateOnly() : only === 'h2load' ? h2loadOnly() : only === 'requests' ? requestsOnly() : measure()).then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`bench failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
