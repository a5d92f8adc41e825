// `npm run bench:scale`: the fleet at scale, on Redis. Real processes: a
// redis-server on a free port, two relays on it, and SCALE_PROCS processes
// that each run many simulated connectors (bench/scale-connectors.ts: the
// connector's own HAManager, RelayConnection, Session and WebSocket per
// tunnel). Measures:
//
//   registration  time until all SCALE_TUNNELS × 4 connections are registered, and the rate
//   memory        relay RSS / V8 heap / private memory per connector connection
//   idle CPU      each relay's CPU while the connections only keep alive (% of a core)
//   Redis         commands per second at steady state (INFO commandstats), by command
//   kill -9       time until every connector has 4 connections again after one relay dies,
//                 the dial rate per 100 ms against what the surviving relay registers
//   routes        SCALE_ROUTES routes written through the store: time, relay memory per route,
//                 the RouteTable's load time and lookup cost with all of them
//
// Bounded: every wait has a deadline; not part of `npm test`. Environment:
// SCALE_TUNNELS (default 1000), SCALE_ROUTES (default 100000), SCALE_PROCS
// (connector processes, default one per 250 tunnels), SCALE_IDLE_SECONDS
// (steady-state window, default 10). A quick run: SCALE_TUNNELS=100 SCALE_ROUTES=5000.

import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readdirSync, statSync, renameSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { formatProfile, newestProfile, summarizeProfile } from './cpuprofile.js';
import { BENCH_DIST, Child, MiB, RESULTS_DIR, ROOT, cpuMicros, fmt, freePort, heapUsedBytes, machineInfo, markdownTable, residentBytes, run, sleep, waitUntil, type Json } from './common.js';

type StoreModule = typeof import('../packages/relay/src/store/open.js');
type ProvisioningModule = typeof import('../packages/relay/src/control/provisioning.js');
type ZonesModule = typeof import('../packages/relay/src/zones/zone-grants.js');
type KeysModule = typeof import('../packages/relay/src/control/keys.js');
type RouteTableModule = typeof import('../packages/relay/src/edge/route-table.js');

const RELAY_CLI = path.join(ROOT, 'packages/relay/dist/cli/cli.js');
const WORKER = path.join(BENCH_DIST, 'scale-connectors.js');
const NODE = process.execPath;
const TUNNELS = Number(process.env.SCALE_TUNNELS ?? 1000);
const CONNS = 4;
const ROUTES = Number(process.env.SCALE_ROUTES ?? 100_000);
const PROCS = Number(process.env.SCALE_PROCS ?? Math.max(1, Math.ceil(TUNNELS / 250)));
const IDLE_SECONDS = Number(process.env.SCALE_IDLE_SECONDS ?? 10);
const ZONE = 'scale.test';
const REGISTER_DEADLINE_MS = 180_000;
/** SCALE_PROFILE=1: relays under --cpu-prof; their top functions are printed at the end. */
const PROFILE = process.env.SCALE_PROFILE === '1';
/** SCALE_HEAP_SNAPSHOTS=DIR: each relay writes a heap snapshot before the connectors and at steady state (SIGUSR2), to diff what a connection holds; the snapshots' own memory then inflates that run's RSS per connection. */
const SNAPSHOT_DIR = process.env.SCALE_HEAP_SNAPSHOTS ?? '';
const log = (s: string) => process.stderr.write(s + '\n');
const relayModule = <T>(rel: string) => import(pathToFileURL(path.join(ROOT, 'packages/relay/dist', rel)).href) as Promise<T>;

interface Mem {
  rss: number;
  private: number;
  heapUsed: number;
}

/** redis-server on a free port of 127.0.0.1, no persistence, started and stopped by its PID; null (with the reason) when absent. */
async function startRedis(dir: string): Promise<{ url: string; port: number; proc: Child } | { missing: string }> {
  const bin = process.env.REDIS_SERVER ?? 'redis-server';
  const probe = spawnSync(bin, ['--version'], { stdio: 'ignore' });
  if (probe.error) return { missing: `no ${bin} binary (${(probe.error as NodeJS.ErrnoException).code ?? probe.error.message})` };
  const port = await freePort();
  const proc = new Child('redis', bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no', '--maxclients', '10000']);
  const up = () =>
    new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
  await waitUntil(async () => !proc.running || (await up()), 10_000, 'redis-server listening');
  if (!proc.running) throw new Error(`redis-server exited: ${proc.stderr}`);
  return { url: `redis://127.0.0.1:${port}`, port, proc };
}

/** SCALE_HEAP_SNAPSHOTS: SIGUSR2 to each relay, then wait (bounded) until its snapshot file is complete and rename it to LABEL.heapsnapshot. */
async function heapSnapshots(relays: ReadonlyArray<{ proc: Child; id: string }>, label: string): Promise<void> {
  if (!SNAPSHOT_DIR) return;
  for (const r of relays) {
    const dir = path.join(SNAPSHOT_DIR, r.id);
    const fresh = () => readdirSync(dir).filter((f) => f.startsWith('Heap.') && f.endsWith('.heapsnapshot'));
    r.proc.kill('SIGUSR2');
    let last = -1;
    let sameSince = 0;
    // V8 writes the file while the process is paused; done when its size has not changed for 2 s.
    await waitUntil(
      () => {
        const f = fresh()[0];
        if (!f) return false;
        const size = statSync(path.join(dir, f)).size;
        if (size !== last) (last = size), (sameSince = Date.now());
        const done = size > 0 && Date.now() - sameSince >= 2_000;
        if (done) renameSync(path.join(dir, f), path.join(dir, `${label}.heapsnapshot`));
        return done;
      },
      120_000,
      `${r.id} heap snapshot`,
    );
    log(`  heap snapshot ${path.join(dir, label + '.heapsnapshot')}`);
  }
}

/** Total calls per command from INFO commandstats. */
async function commandStats(redis: Redis): Promise<Map<string, number>> {
  const info = await redis.info('commandstats');
  const out = new Map<string, number>();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

async function main(): Promise<void> {
  const startedAt = Date.now();
  const tmp = mkdtempSync(path.join(tmpdir(), 'tunnel-scale-'));
  const started: Child[] = [];
  const redisDir = path.join(tmp, 'redis');
  mkdirSync(redisDir);
  const r = await startRedis(redisDir);
  if ('missing' in r) {
    log(`bench:scale skipped: ${r.missing}; install redis-server`);
    rmSync(tmp, { recursive: true, force: true });
    return;
  }
  started.push(r.proc);
  const admin = new Redis(r.url, { lazyConnect: false, maxRetriesPerRequest: 1 });
  const { openStore } = await relayModule<StoreModule>('store/open.js');
  const { ensureAccount, issueTunnelToken } = await relayModule<ProvisioningModule>('control/provisioning.js');
  const { grantZone } = await relayModule<ZonesModule>('zones/zone-grants.js');
  const { loadKeyFile } = await relayModule<KeysModule>('control/keys.js');
  const { RouteTable } = await relayModule<RouteTableModule>('edge/route-table.js');
  const store = await openStore(r.url);
  try {
    const keyFile = path.join(tmp, 'fleet-key.json');
    const k = await run('keys generate', NODE, [RELAY_CLI, 'keys', 'generate', '--out', keyFile]);
    if (k.code !== 0) throw new Error(`keys generate failed: ${k.stderr}`);
    const keys = loadKeyFile(keyFile);

    const relays: Array<{ proc: Child; http: number; connect: number; metrics: number; id: string }> = [];
    for (let i = 0; i < 2; i++) {
      const metrics = await freePort();
      const id = `scale-relay-${i}`;
      const prof = [
        ...(PROFILE ? ['--cpu-prof', '--cpu-prof-dir', path.join(RESULTS_DIR, 'profiles', 'scale', id)] : []),
        ...(SNAPSHOT_DIR ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${path.join(SNAPSHOT_DIR, id)}`] : []),
      ];
      if (SNAPSHOT_DIR) mkdirSync(path.join(SNAPSHOT_DIR, id), { recursive: true });
      const proc = new Child(id, NODE, [
        ...prof,
        RELAY_CLI, 'serve', '--id', id, '--store', r.url, '--keys', keyFile,
        '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--peer', '127.0.0.1:0', '--control', 'off',
        '--metrics', `127.0.0.1:${metrics}`, '--log-format', 'json', '--log-level', 'warn', '--drain-timeout', '1s', '--drain-delay', '0',
      ]);
      started.push(proc);
      // --log-level warn keeps 4,000 registrations out of the log; the listening line is read from /metrics instead.
      await waitUntil(async () => !proc.running || Number.isFinite(await heapUsedBytes(metrics)), 30_000, `${id} /metrics`);
      if (!proc.running) throw new Error(`${id} exited: ${proc.stderr}`);
      relays.push({ proc, http: 0, connect: 0, metrics, id });
    }
    // The relays' listener ports: from the store's membership records.
    await waitUntil(async () => (await store.listRelays()).length >= 2, 15_000, 'both relays in the store');
    const members = await store.listRelays();
    const relayUrls = relays.map((x) => members.find((mm) => mm.id === x.id)!.connectUrl);
    const publicUrls = relays.map((x) => members.find((mm) => mm.id === x.id)!.publicUrl);
    log(`bench:scale: redis ${r.url}, relays ${relayUrls.join(' ')}; ${TUNNELS} tunnels × ${CONNS} in ${PROCS} processes`);

    // Tunnels: one account, one zone, a token and a hostname per tunnel.
    const account = await ensureAccount(store, 'scale');
    await grantZone(store, account.id, ZONE, 'operator');
    const t0 = Date.now();
    const tokens: string[] = new Array(TUNNELS);
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < TUNNELS) {
          const i = next++;
          tokens[i] = (await issueTunnelToken(store, keys, { accountId: account.id, name: `t${i}`, hostnames: [`t${i}.${ZONE}`], relays: relayUrls, ttlSeconds: 86_400 })).token;
        }
      }),
    );
    const provisionMs = Date.now() - t0;
    log(`  provisioned ${TUNNELS} tunnels in ${fmt(provisionMs)} ms`);

    const mem = async (): Promise<Mem[]> =>
      Promise.all(relays.map(async (x) => ({ rss: residentBytes(x.proc.pid)?.rss ?? NaN, private: residentBytes(x.proc.pid)?.private ?? NaN, heapUsed: await heapUsedBytes(x.metrics) })));
    await sleep(2_000);
    const before = await mem();
    await heapSnapshots(relays, 'before');

    // Connectors.
    const per = Math.ceil(TUNNELS / PROCS);
    const workers: Child[] = [];
    const status = new Map<Child, { ready: number; full: number; perRelay: Record<string, number> }>();
    const buckets = new Map<number, Record<string, number>>();
    const regStart = process.hrtime.bigint();
    for (let w = 0; w < PROCS; w++) {
      const slice = tokens.slice(w * per, (w + 1) * per);
      if (slice.length === 0) break;
      const c = new Child(`connectors-${w}`, NODE, [WORKER, JSON.stringify({ tokens: slice, relays: relayUrls, conns: CONNS })]);
      c.onLine = (l) => {
        if (l.event === 'status') status.set(c, { ready: l.ready as number, full: l.full as number, perRelay: l.perRelay as Record<string, number> });
        if (l.event === 'events') {
          for (const [b, rec] of Object.entries(l.buckets as Record<string, Record<string, number>>)) {
            const cur = buckets.get(Number(b)) ?? {};
            for (const [ev, n] of Object.entries(rec)) cur[ev] = (cur[ev] ?? 0) + n;
            buckets.set(Number(b), cur);
          }
        }
        // Keep memory flat: status and event lines are consumed here.
        c.lines.length = 0;
      };
      workers.push(c);
      started.push(c);
    }
    const total = () => [...status.values()].reduce((a, s) => ({ ready: a.ready + s.ready, full: a.full + s.full }), { ready: 0, full: 0 });
    const want = TUNNELS * CONNS;
    // Bounded: past REGISTER_DEADLINE_MS the run goes on with what registered, and says so.
    let registeredAll = true;
    try {
      await waitUntil(() => total().ready >= want || workers.some((c) => !c.running), REGISTER_DEADLINE_MS, `${want} registered connections`);
    } catch {
      registeredAll = false;
    }
    const registerMs = Number(process.hrtime.bigint() - regStart) / 1e6;
    if (workers.some((c) => !c.running)) throw new Error(`a connector process exited: ${workers.find((c) => !c.running)!.stderr}`);
    const registered = total().ready;
    log(`  ${fmt(registered)} of ${fmt(want)} connections registered in ${fmt(registerMs)} ms`);
    const perRelayAtSteady: Record<string, number> = {};
    for (const s of status.values()) for (const [id, n] of Object.entries(s.perRelay)) perRelayAtSteady[id] = (perRelayAtSteady[id] ?? 0) + n;

    const regEvents: Record<string, number> = {};
    for (const rec of buckets.values()) for (const [ev, n] of Object.entries(rec)) regEvents[ev] = (regEvents[ev] ?? 0) + n;
    log(`  registration events: ${JSON.stringify(regEvents)}`);

    // Steady state: only keepalives and presence heartbeats.
    await sleep(3_000);
    const cpu0 = relays.map((x) => cpuMicros(x.proc.pid) ?? NaN);
    const workerCpu0 = workers.map((c) => cpuMicros(c.pid) ?? NaN);
    const stats0 = await commandStats(admin);
    const idleT0 = Date.now();
    await sleep(IDLE_SECONDS * 1000);
    const idleSecs = (Date.now() - idleT0) / 1000;
    const stats1 = await commandStats(admin);
    const relayIdlePct = relays.map((x, i) => ((cpuMicros(x.proc.pid) ?? NaN) - cpu0[i]!) / 1e6 / idleSecs);
    const workerIdlePct = workers.reduce((a, c, i) => a + ((cpuMicros(c.pid) ?? NaN) - workerCpu0[i]!), 0) / 1e6 / idleSecs;
    const after = await mem();
    await heapSnapshots(relays, 'steady');
    const cmdRates = [...stats1].map(([cmd, n]) => [cmd, (n - (stats0.get(cmd) ?? 0)) / idleSecs] as const).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
    const redisPerSec = cmdRates.reduce((a, [, v]) => a + v, 0);
    // Per connection the relay holds at steady state (some may be missing if registration did not finish).
    const perConn = (k: keyof Mem, i: number) => (after[i]![k] - before[i]![k]) / (perRelayAtSteady[relays[i]!.id] ?? NaN);
    log(`  steady: relay CPU ${relayIdlePct.map((p) => `${(p * 100).toFixed(2)}%`).join(' / ')}; Redis ${fmt(redisPerSec, 1)} commands/s; per connection RSS ${relays.map((_x, i) => fmt(perConn('rss', i) / 1024, 1)).join(' / ')} KiB`);

    // kill -9 relay-1: every connection on it must come back on relay-0.
    buckets.clear();
    const victim = relays[1]!;
    const killAt = process.hrtime.bigint();
    const killBucket = Math.floor(Number(killAt / 1000n) / 100_000);
    victim.proc.kill('SIGKILL');
    await victim.proc.exited;
    // Wait until the loss is seen, then until every tunnel is back to 4 on the survivor.
    await waitUntil(() => total().ready < registered, 30_000, 'connections lost after kill -9');
    let recovered = true;
    try {
      await waitUntil(() => total().full >= TUNNELS, 60_000, 'every connector back to 4 connections');
    } catch {
      recovered = false;
    }
    const recoverMs = Number(process.hrtime.bigint() - killAt) / 1e6;
    const fullAtDeadline = total().full;
    await sleep(300); // the last event buckets
    const series = [...buckets].filter(([b]) => b >= killBucket).sort((a, b) => a[0] - b[0]);
    const peak = (ev: string) => Math.max(0, ...series.map(([, rec]) => rec[ev] ?? 0)) * 10; // per second, from 100 ms buckets
    const sum = (ev: string) => series.reduce((a, [, rec]) => a + (rec[ev] ?? 0), 0);
    const firstDial = series.find(([, rec]) => rec.dial)?.[0];
    const lastReg = [...series].reverse().find(([, rec]) => rec.registered)?.[0];
    const dialSpreadMs = firstDial !== undefined ? (([...series].reverse().find(([, rec]) => rec.dial)?.[0] ?? firstDial) - firstDial + 1) * 100 : NaN;
    const regSpanMs = firstDial !== undefined && lastReg !== undefined ? (lastReg - firstDial + 1) * 100 : NaN;
    const kill = {
      recovered,
      recoverMs,
      fullAtDeadline,
      lost: sum('lost'),
      dials: sum('dial'),
      registered: sum('registered'),
      dialFailed: sum('dial-failed'),
      // Dials that failed against the surviving relay (refused, timed out, reset): what a thundering herd costs.
      dialFailedOnSurvivor: sum('dial-failed@0'),
      dialFailedOnDead: sum('dial-failed@1'),
      backoffs: sum('backoff'),
      refused: sum('refused'),
      peakDialsPerSec: peak('dial'),
      peakRegistrationsPerSec: peak('registered'),
      dialSpreadMs,
      registerSpanMs: regSpanMs,
      series: series.map(([b, rec]) => ({ tMs: (b - killBucket) * 100, ...rec })),
    };
    log(`  kill -9 ${victim.id}: back to ${CONNS} each ${recovered ? `in ${fmt(recoverMs)} ms` : 'NOT within 120 s'}; dials ${kill.dials} (peak ${fmt(kill.peakDialsPerSec)}/s, spread over ${fmt(dialSpreadMs)} ms), failed ${kill.dialFailed}, peak registrations ${fmt(kill.peakRegistrationsPerSec)}/s`);

    // Routes: ROUTES hostnames through the store (as `tunnel route` writes them), spread over the tunnels.
    const survivor = relays[0]!;
    const memBeforeRoutes = (await mem())[0]!;
    const tunnelsList = await store.listTunnels(account.id);
    const routeT0 = Date.now();
    let written = 0;
    let nextRoute = 0;
    const routeDeadline = Date.now() + 120_000;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (nextRoute < ROUTES && Date.now() < routeDeadline) {
          const j = nextRoute++;
          const t = tunnelsList[j % tunnelsList.length]!;
          await store.addRoute({ hostname: `r${j}.${t.name}.${ZONE}`, tunnelId: t.id, accountId: account.id });
          written++;
        }
      }),
    );
    const routeWriteMs = Date.now() - routeT0;
    log(`  wrote ${fmt(written)} routes in ${fmt(routeWriteMs)} ms`);
    // The surviving relay knows the last one when it stops answering 404 for it.
    const lastHost = `r${written - 1}.${tunnelsList[(written - 1) % tunnelsList.length]!.name}.${ZONE}`;
    // http.get, not fetch: fetch does not let a caller set Host.
    const status404 = () =>
      new Promise<boolean>((resolve) => {
        const req = http.get(publicUrls[0]!, { headers: { host: lastHost }, agent: false, timeout: 5_000 }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode === 404));
        });
        req.on('error', () => resolve(true));
        req.on('timeout', () => req.destroy());
      });
    let learnedMs = NaN;
    try {
      await waitUntil(async () => !(await status404()), 120_000, `${survivor.id} routing ${lastHost}`);
      learnedMs = Date.now() - routeT0;
    } catch {
      /* reported as not learned */
    }
    await sleep(1_000);
    const memAfterRoutes = (await mem())[0]!;
    // The relay's route table, loaded from the same store: load time and lookup cost.
    const table = new RouteTable(store);
    const loadT0 = process.hrtime.bigint();
    await table.load();
    const tableLoadMs = Number(process.hrtime.bigint() - loadT0) / 1e6;
    const hosts = Array.from({ length: 10_000 }, (_x, i) => (i % 2 ? `r${(i * 7919) % written}.${tunnelsList[((i * 7919) % written) % tunnelsList.length]!.name}.${ZONE}` : `nope${i}.elsewhere.example`));
    let hits = 0;
    for (const h of hosts) if (table.lookup(h)) hits++; // warm
    const LOOKUPS = 1_000_000;
    const lt0 = process.hrtime.bigint();
    for (let i = 0; i < LOOKUPS; i++) if (table.lookup(hosts[i % hosts.length]!)) hits++;
    const lookupNs = Number(process.hrtime.bigint() - lt0) / LOOKUPS;
    table.close();
    log(`  routes: table load ${fmt(tableLoadMs)} ms, lookup ${lookupNs.toFixed(0)} ns (half hits, half misses; ${hits} hits); relay RSS +${fmt((memAfterRoutes.rss - memBeforeRoutes.rss) / MiB, 1)} MB`);

    // ---- report ----
    const mb = (b: number) => `${fmt(b / MiB, 1)} MB`;
    const kib = (b: number) => `${fmt(b / 1024, 1)} KiB`;
    const pctCore = (x: number) => `${(x * 100).toFixed(2)}%`;
    const ok = (b: boolean) => (b ? 'yes' : '**NO**');
    const worstPerConn = Math.max(perConn('rss', 0), perConn('rss', 1));
    const rows: string[][] = [
      [`provision ${fmt(TUNNELS)} tunnels (store writes + token signing, in process)`, `${fmt(provisionMs)} ms`, '', ''],
      [
        `register all ${fmt(want)} connections (${PROCS} connector processes)`,
        registeredAll ? `${fmt(registerMs)} ms (${fmt(want / (registerMs / 1000))} per s)` : `only ${fmt(registered)} within ${fmt(REGISTER_DEADLINE_MS / 1000)} s (${fmt(registered / (registerMs / 1000))} per s)`,
        '',
        registeredAll ? '' : '**NO**',
      ],
      ['  connection events while registering', Object.entries(regEvents).map(([ev, n]) => `${ev} ${fmt(n)}`).join(', '), '', ''],
      ['connections per relay at steady state', Object.entries(perRelayAtSteady).map(([id, n]) => `${id} ${fmt(n)}`).join(', '), '', ''],
      ['relay memory idle before connectors: RSS / heap used / private', before.map((m) => `${mb(m.rss)} / ${mb(m.heapUsed)} / ${mb(m.private)}`).join(' · '), '', ''],
      ['relay memory with the connections: RSS / heap used / private', after.map((m) => `${mb(m.rss)} / ${mb(m.heapUsed)} / ${mb(m.private)}`).join(' · '), '', ''],
      ['relay memory per connection: RSS / heap used / private', relays.map((_x, i) => `${kib(perConn('rss', i))} / ${kib(perConn('heapUsed', i))} / ${kib(perConn('private', i))}`).join(' · '), '≤ 30 KiB (RSS)', ok(worstPerConn <= 30 * 1024)],
      [`relay CPU while idle with the connections (${IDLE_SECONDS} s)`, relayIdlePct.map(pctCore).join(' / ') + ' of a core', '≤ 2% of a core', ok(Math.max(...relayIdlePct) <= 0.02)],
      ['connector processes CPU while idle (all of them)', `${pctCore(workerIdlePct)} of a core for ${fmt(want)} connections`, '', ''],
      ['Redis commands per second at steady state', `${fmt(redisPerSec, 1)}: ${cmdRates.slice(0, 6).map(([c, v]) => `${c} ${fmt(v, 1)}`).join(', ')}`, '', ''],
      [`kill -9 of ${victim.id}: every connector back to ${CONNS} connections`, recovered ? `${fmt(recoverMs)} ms` : `not within 60 s (${fmt(fullAtDeadline)} of ${fmt(TUNNELS)} at 4 then)`, '≤ 10 s', ok(recovered && recoverMs <= 10_000)],
      ['  re-dials after the kill: count, spread, peak rate', `${fmt(kill.dials)} dials over ${fmt(dialSpreadMs)} ms, peak ${fmt(kill.peakDialsPerSec)}/s; ${fmt(kill.dialFailed)} failed (${fmt(kill.dialFailedOnSurvivor)} against the survivor, ${fmt(kill.dialFailedOnDead)} against the dead relay), ${fmt(kill.backoffs)} back-offs, ${fmt(kill.refused)} refused`, '', ''],
      ['  registrations on the survivor: peak rate, span', `${fmt(kill.peakRegistrationsPerSec)}/s, ${fmt(regSpanMs)} ms`, 'no dial fails against the survivor', ok(kill.dialFailedOnSurvivor === 0 && kill.refused === 0)],
      [`write ${fmt(written)} routes through the store (64 at a time)`, `${fmt(routeWriteMs)} ms`, '', ''],
      [`surviving relay routes the last one written`, Number.isFinite(learnedMs) ? `${fmt(learnedMs)} ms after the first write` : 'not within 120 s', '', ''],
      [`relay memory for ${fmt(written)} routes: RSS / heap used`, `+${mb(memAfterRoutes.rss - memBeforeRoutes.rss)} / +${mb(memAfterRoutes.heapUsed - memBeforeRoutes.heapUsed)} (${fmt((memAfterRoutes.heapUsed - memBeforeRoutes.heapUsed) / written, 0)} B per route)`, '', ''],
      [`route table with ${fmt(written)} routes: load / lookup`, `${fmt(tableLoadMs)} ms / ${lookupNs.toFixed(0)} ns per lookup`, '', ''],
    ];
    const table2 = markdownTable(['measurement', 'result', 'aim', 'met'], rows);
    process.stdout.write(`\n### bench:scale\n\n${table2}\n\nTwo relays on one redis-server, ${PROCS} processes of simulated connectors (the connector's HAManager per tunnel), all on one shared 2-core machine. Last host routed: ${lastHost}.\n`);
    mkdirSync(RESULTS_DIR, { recursive: true });
    const out: Json = {
      machine: machineInfo(),
      params: { tunnels: TUNNELS, conns: CONNS, procs: PROCS, routes: ROUTES, idleSeconds: IDLE_SECONDS },
      provisionMs,
      registerMs,
      registeredAll,
      registered,
      registrationEvents: regEvents,
      perRelayAtSteady,
      memory: { before, after, perConnection: relays.map((_x, i) => ({ rss: perConn('rss', i), heapUsed: perConn('heapUsed', i), private: perConn('private', i) })) },
      idleCpuShareOfCore: relayIdlePct,
      connectorProcsIdleCpuShare: workerIdlePct,
      redis: { commandsPerSec: redisPerSec, byCommand: Object.fromEntries(cmdRates) },
      kill,
      routes: { written, writeMs: routeWriteMs, learnedMs, relayMemBefore: memBeforeRoutes, relayMemAfter: memAfterRoutes, tableLoadMs, lookupNs },
      table: table2,
      elapsedSeconds: (Date.now() - startedAt) / 1000,
    };
    writeFileSync(path.join(RESULTS_DIR, 'scale.json'), JSON.stringify(out, null, 2) + '\n');
    process.stdout.write(`\nwrote bench/results/scale.json (${fmt(out.elapsedSeconds as number)} s)\n`);
  } finally {
    admin.disconnect();
    await store.close();
    for (const c of [...started].reverse()) await c.stop(PROFILE ? 15_000 : 3_000);
    rmSync(tmp, { recursive: true, force: true });
  }
  if (PROFILE) {
    for (const id of ['scale-relay-0', 'scale-relay-1']) {
      const f = newestProfile(path.join(RESULTS_DIR, 'profiles', 'scale', id));
      if (f) process.stdout.write(formatProfile(`${id} (whole run; relay-1 until its kill -9 leaves no profile)`, summarizeProfile(f, 30), 25) + '\n');
    }
  }
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`bench:scale failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
