// `npm run bench:mux`: our yamux Session over an in-memory pair and over a
// loopback WebSocket, against the bare transport moving the same bytes.
//
// Every measurement runs in fresh child processes (bench/dist/peers.js): over
// WebSocket the two ends are separate processes, as relay and connector are;
// in memory both ends share one process. The machine is shared and noisy, so
// throughput runs are interleaved (bare, ours, ours×64, bare, …) and the best
// of each is kept; ratios are taken within the same run.
//
// Environment: BENCH_ROUNDS (default 3), BENCH_MUX_MIB (default 512),
// BENCH_PROFILE=1 (instead of measuring, run the main cases under
// `--cpu-prof` and print the top self-time functions of each process).

import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { RESULTS_DIR, fmt, machineInfo, markdownTable, max, median, pct, MiB, type Json } from './common.js';
import { memRun, wsRun } from './runner.js';
import { formatProfile, newestProfile, summarizeProfile, type ProfileSummary } from './cpuprofile.js';
import type { PeerParams } from './peers.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BYTES = Number(process.env.BENCH_MUX_MIB ?? 512) * MiB;
const WARMUP = 32 * MiB;
const CHUNK = 64 * 1024;
const PING_SECONDS = Number(process.env.BENCH_PING_SECONDS ?? 3);
const IDLE_STREAMS = 10_000;
const PROFILE = process.env.BENCH_PROFILE === '1' || process.env.BENCH_PROFILE === 'true';

const mbps = (r: Json) => r.mbps as number;
const log = (s: string) => process.stderr.write(s + '\n');

interface Series {
  runs: Json[];
}
const series = (): Series => ({ runs: [] });
/** Best throughput of the runs (least disturbed by the other work on the machine). */
const bestMBps = (s: Series) => max(s.runs.map((r) => r.mbps as number));
/** Median CPU (both ends together) per byte moved. */
const nsPerByte = (s: Series) => median(s.runs.map((r) => r.cpuNsPerByte as number).filter(Number.isFinite));
/** Median write system calls per MiB made by the sending process (ws runs: [server, client]). */
const sendWrites = (s: Series, dir: 'c2s' | 's2c') => median(s.runs.map((r) => (r.writesPerMiB as number[] | undefined)?.[dir === 'c2s' ? 1 : 0] ?? NaN).filter(Number.isFinite));

async function measure(): Promise<void> {
  const started = Date.now();
  const bulk = (kind: 'mux' | 'bare', streams: number, extra: Partial<PeerParams> = {}): PeerParams => ({
    kind,
    test: 'bulk',
    streams,
    bytes: BYTES,
    chunk: CHUNK,
    warmupBytes: WARMUP,
    ...extra,
  });

  // ---- in memory ----
  log(`bench:mux: ${ROUNDS} rounds, ${BYTES / MiB} MiB per transfer, ${CHUNK / 1024} KiB writes`);
  const mem = { bare: series(), single: series(), multi: series() };
  for (let r = 0; r < ROUNDS; r++) {
    mem.bare.runs.push(await memRun(bulk('bare', 1)));
    mem.single.runs.push(await memRun(bulk('mux', 1)));
    mem.multi.runs.push(await memRun(bulk('mux', 64)));
    log(`  memory round ${r + 1}: pair ${fmt(mbps(mem.bare.runs[r]!))}, 1 stream ${fmt(mbps(mem.single.runs[r]!))}, 64 streams ${fmt(mbps(mem.multi.runs[r]!))} MB/s`);
  }
  const memPing1 = await memRun({ kind: 'mux', test: 'pingpong', streams: 1, msg: 64, seconds: PING_SECONDS });
  const memPing64 = await memRun({ kind: 'mux', test: 'pingpong', streams: 64, msg: 64, seconds: PING_SECONDS });
  const memIdle = await memRun({ kind: 'mux', test: 'idle', count: IDLE_STREAMS });
  log(`  memory ping-pong: ${fmt(memPing1.rtPerSec as number)} / ${fmt(memPing64.rtPerSec as number)} RT/s; idle ${fmt(memIdle.heapPerStream as number)} B/stream (both ends)`);

  // ---- loopback WebSocket ----
  const ws = {
    c2s: { bare: series(), bareMasked: series(), single: series(), multi: series() },
    s2c: { bare: series(), single: series(), multi: series() },
  };
  const one = async (p: PeerParams) => (await wsRun(p))[0]!;
  for (let r = 0; r < ROUNDS; r++) {
    ws.c2s.bare.runs.push(await one(bulk('bare', 1, { dir: 'c2s', mask: 'zero' })));
    ws.c2s.single.runs.push(await one(bulk('mux', 1, { dir: 'c2s', mask: 'zero' })));
    ws.c2s.multi.runs.push(await one(bulk('mux', 64, { dir: 'c2s', mask: 'zero' })));
    ws.c2s.bareMasked.runs.push(await one(bulk('bare', 1, { dir: 'c2s', mask: 'default' })));
    ws.s2c.bare.runs.push(await one(bulk('bare', 1, { dir: 's2c' })));
    ws.s2c.single.runs.push(await one(bulk('mux', 1, { dir: 's2c' })));
    ws.s2c.multi.runs.push(await one(bulk('mux', 64, { dir: 's2c' })));
    const f = (s: Series) => fmt(mbps(s.runs[r]!));
    log(
      `  ws round ${r + 1}: c2s bare ${f(ws.c2s.bare)} (random mask ${f(ws.c2s.bareMasked)}), ours ${f(ws.c2s.single)} / ×64 ${f(ws.c2s.multi)}; ` +
        `s2c bare ${f(ws.s2c.bare)}, ours ${f(ws.s2c.single)} / ×64 ${f(ws.s2c.multi)} MB/s`,
    );
  }
  const ping = async (kind: 'mux' | 'bare', streams: number) => one({ kind, test: 'pingpong', streams, msg: 64, seconds: PING_SECONDS, mask: 'zero' });
  const wsPing = { bare1: await ping('bare', 1), mux1: await ping('mux', 1), bare64: await ping('bare', 64), mux64: await ping('mux', 64) };
  const rt = (r: Json) => r.rtPerSec as number;
  const usRt = (r: Json) => r.cpuUsPerRt as number;
  log(`  ws ping-pong: 1 stream ${fmt(rt(wsPing.mux1))} (bare ${fmt(rt(wsPing.bare1))}), 64 streams ${fmt(rt(wsPing.mux64))} (bare ${fmt(rt(wsPing.bare64))}) RT/s`);
  const [idleOpener, idleAcceptor] = await wsRun({ kind: 'mux', test: 'idle', count: IDLE_STREAMS, mask: 'zero' });
  log(`  ws idle: opener ${fmt(idleOpener!.heapPerStream as number)} B, acceptor ${fmt(idleAcceptor!.heapPerStream as number)} B per stream`);

  // ---- report ----
  const best = {
    memBare: bestMBps(mem.bare),
    memSingle: bestMBps(mem.single),
    memMulti: bestMBps(mem.multi),
    c2sBare: bestMBps(ws.c2s.bare),
    c2sBareMasked: bestMBps(ws.c2s.bareMasked),
    c2sSingle: bestMBps(ws.c2s.single),
    c2sMulti: bestMBps(ws.c2s.multi),
    s2cBare: bestMBps(ws.s2c.bare),
    s2cSingle: bestMBps(ws.s2c.single),
    s2cMulti: bestMBps(ws.s2c.multi),
  };
  const cpu = {
    memBare: nsPerByte(mem.bare),
    memSingle: nsPerByte(mem.single),
    memMulti: nsPerByte(mem.multi),
    c2sBare: nsPerByte(ws.c2s.bare),
    c2sBareMasked: nsPerByte(ws.c2s.bareMasked),
    c2sSingle: nsPerByte(ws.c2s.single),
    c2sMulti: nsPerByte(ws.c2s.multi),
    s2cBare: nsPerByte(ws.s2c.bare),
    s2cSingle: nsPerByte(ws.s2c.single),
    s2cMulti: nsPerByte(ws.s2c.multi),
  };
  const KiB2 = 2048;
  const perEndMem = (memIdle.heapPerStream as number) / 2;
  const wsIdleWorst = Math.max(idleOpener!.heapPerStream as number, idleAcceptor!.heapPerStream as number);
  const ok = (b: boolean) => (b ? 'yes' : '**NO**');
  const ns = (x: number) => `${x.toFixed(2)} ns/B`;
  const us = (x: number) => `${x.toFixed(1)} µs/RT`;
  // CPU efficiency: the bare transport's CPU per byte over ours (1 = ours costs no more).
  const eff = (bare: number, ours: number) => pct(bare / ours);
  const rows: string[][] = [
    ['memory', 'single stream', `${fmt(best.memSingle)} MB/s`, `${fmt(best.memBare)} MB/s (pair alone)`, pct(best.memSingle / best.memBare), ns(cpu.memSingle), ns(cpu.memBare), '≥ 1,500 MB/s', ok(best.memSingle >= 1500)],
    ['memory', '64 streams, aggregate', `${fmt(best.memMulti)} MB/s`, `${fmt(best.memBare)} MB/s (pair alone)`, pct(best.memMulti / best.memBare), ns(cpu.memMulti), ns(cpu.memBare), '', ''],
    ['memory', 'ping-pong 64 B, 1 stream', `${fmt(rt(memPing1))} RT/s`, '', '', us(usRt(memPing1)), '', '', ''],
    ['memory', 'ping-pong 64 B, 64 streams', `${fmt(rt(memPing64))} RT/s`, '', '', us(usRt(memPing64)), '', '', ''],
    ['memory', `idle stream heap (${fmt(IDLE_STREAMS)} open)`, `${fmt(perEndMem)} B per end (${fmt(memIdle.heapPerStream as number)} both)`, '', '', '', '', '≤ 2 KiB', ok(perEndMem <= KiB2)],
    ['ws c→s (connector→relay)', 'single stream', `${fmt(best.c2sSingle)} MB/s`, `${fmt(best.c2sBare)} MB/s (zero mask)`, pct(best.c2sSingle / best.c2sBare), ns(cpu.c2sSingle), `${ns(cpu.c2sBare)} (${eff(cpu.c2sBare, cpu.c2sSingle)})`, '≥ 85%', ok(best.c2sSingle / best.c2sBare >= 0.85)],
    ['ws c→s (connector→relay)', '64 streams, aggregate', `${fmt(best.c2sMulti)} MB/s`, `${fmt(best.c2sBare)} MB/s (zero mask)`, pct(best.c2sMulti / best.c2sBare), ns(cpu.c2sMulti), `${ns(cpu.c2sBare)} (${eff(cpu.c2sBare, cpu.c2sMulti)})`, '≥ 85%', ok(best.c2sMulti / best.c2sBare >= 0.85)],
    ['ws c→s (connector→relay)', 'bare ws, default random mask', '', `${fmt(best.c2sBareMasked)} MB/s`, `zero mask ${(best.c2sBare / best.c2sBareMasked).toFixed(2)}× faster`, '', ns(cpu.c2sBareMasked), '', ''],
    ['ws s→c (relay→connector)', 'single stream', `${fmt(best.s2cSingle)} MB/s`, `${fmt(best.s2cBare)} MB/s`, pct(best.s2cSingle / best.s2cBare), ns(cpu.s2cSingle), `${ns(cpu.s2cBare)} (${eff(cpu.s2cBare, cpu.s2cSingle)})`, '≥ 85%', ok(best.s2cSingle / best.s2cBare >= 0.85)],
    ['ws s→c (relay→connector)', '64 streams, aggregate', `${fmt(best.s2cMulti)} MB/s`, `${fmt(best.s2cBare)} MB/s`, pct(best.s2cMulti / best.s2cBare), ns(cpu.s2cMulti), `${ns(cpu.s2cBare)} (${eff(cpu.s2cBare, cpu.s2cMulti)})`, '≥ 85%', ok(best.s2cMulti / best.s2cBare >= 0.85)],
    ['ws', 'ping-pong 64 B, 1 stream', `${fmt(rt(wsPing.mux1))} RT/s`, `${fmt(rt(wsPing.bare1))} RT/s`, pct(rt(wsPing.mux1) / rt(wsPing.bare1)), us(usRt(wsPing.mux1)), us(usRt(wsPing.bare1)), '', ''],
    ['ws', 'ping-pong 64 B, 64 streams', `${fmt(rt(wsPing.mux64))} RT/s`, `${fmt(rt(wsPing.bare64))} RT/s`, pct(rt(wsPing.mux64) / rt(wsPing.bare64)), us(usRt(wsPing.mux64)), us(usRt(wsPing.bare64)), '', ''],
    ['ws', 'idle stream heap, relay side (opener)', `${fmt(idleOpener!.heapPerStream as number)} B`, '', '', '', '', '≤ 2 KiB', ok((idleOpener!.heapPerStream as number) <= KiB2)],
    ['ws', 'idle stream heap, connector side (acceptor)', `${fmt(idleAcceptor!.heapPerStream as number)} B`, '', '', '', '', '≤ 2 KiB', ok((idleAcceptor!.heapPerStream as number) <= KiB2)],
  ];
  // Sender's write syscalls per MiB, ours vs bare, for the bulk WebSocket rows.
  const wr = (ours: Series, bare: Series, dir: 'c2s' | 's2c') => `${sendWrites(ours, dir).toFixed(1)} / ${sendWrites(bare, dir).toFixed(1)}`;
  const writesCol: Record<number, string> = {
    5: wr(ws.c2s.single, ws.c2s.bare, 'c2s'),
    6: wr(ws.c2s.multi, ws.c2s.bare, 'c2s'),
    7: `– / ${sendWrites(ws.c2s.bareMasked, 'c2s').toFixed(1)}`,
    8: wr(ws.s2c.single, ws.s2c.bare, 's2c'),
    9: wr(ws.s2c.multi, ws.s2c.bare, 's2c'),
  };
  rows.forEach((r, i) => r.splice(7, 0, writesCol[i] ?? ''));
  const table = markdownTable(['transport', 'measurement', 'ours', 'bare transport (ceiling)', '% of ceiling', 'CPU ours', 'CPU bare (bare/ours)', 'sender writes/MiB ours / bare', 'target', 'met'], rows);
  const note =
    `Throughput: best of ${ROUNDS} interleaved runs of ${BYTES / MiB} MiB in ${CHUNK / 1024} KiB writes, after a ${WARMUP / MiB} MiB warm-up on the same connection. ` +
    `CPU: median over the runs of user+system time of both ends during the measured transfer, per byte moved (per round trip for ping-pong); ` +
    `it is steadier than MB/s on this shared machine. Sender writes/MiB: write system calls (/proc/PID/io syscw) of the sending process per MiB moved. WebSocket ends are separate processes (ws 8 with bufferutil, no compression); ` +
    `the ceiling is bare ws moving the same bytes as binary messages of the same size with the same 1 MiB write high-water mark. ` +
    `Single figures are ±25% here; compare ratios within one run.`;
  process.stdout.write(`\n### bench:mux\n\n${table}\n\n${note}\n`);

  mkdirSync(RESULTS_DIR, { recursive: true });
  const out = {
    machine: machineInfo(),
    params: { rounds: ROUNDS, bytes: BYTES, chunk: CHUNK, warmupBytes: WARMUP, pingSeconds: PING_SECONDS, idleStreams: IDLE_STREAMS },
    memory: { pairAlone: mem.bare.runs, singleStream: mem.single.runs, streams64: mem.multi.runs, pingPong1: memPing1, pingPong64: memPing64, idle: memIdle },
    websocket: {
      clientToServer: { bareZeroMask: ws.c2s.bare.runs, bareDefaultMask: ws.c2s.bareMasked.runs, singleStream: ws.c2s.single.runs, streams64: ws.c2s.multi.runs },
      serverToClient: { bare: ws.s2c.bare.runs, singleStream: ws.s2c.single.runs, streams64: ws.s2c.multi.runs },
      pingPong: wsPing,
      idle: { opener: idleOpener, acceptor: idleAcceptor },
    },
    bestMBps: best,
    medianCpuNsPerByte: cpu,
    ratios: {
      memSingleVsPair: best.memSingle / best.memBare,
      c2sSingle: best.c2sSingle / best.c2sBare,
      c2s64: best.c2sMulti / best.c2sBare,
      s2cSingle: best.s2cSingle / best.s2cBare,
      s2c64: best.s2cMulti / best.s2cBare,
      zeroMaskSpeedup: best.c2sBare / best.c2sBareMasked,
      cpuEfficiency: { c2sSingle: cpu.c2sBare / cpu.c2sSingle, c2s64: cpu.c2sBare / cpu.c2sMulti, s2cSingle: cpu.s2cBare / cpu.s2cSingle, s2c64: cpu.s2cBare / cpu.s2cMulti },
    },
    targets: {
      memSingle1500: best.memSingle >= 1500,
      wsC2sSingle85: best.c2sSingle / best.c2sBare >= 0.85,
      wsC2s64_85: best.c2sMulti / best.c2sBare >= 0.85,
      wsS2cSingle85: best.s2cSingle / best.s2cBare >= 0.85,
      wsS2c64_85: best.s2cMulti / best.s2cBare >= 0.85,
      idleHeap2KiB: perEndMem <= KiB2 && wsIdleWorst <= KiB2,
    },
    table,
    elapsedSeconds: (Date.now() - started) / 1000,
  };
  writeFileSync(path.join(RESULTS_DIR, 'mux.json'), JSON.stringify(out, null, 2) + '\n');
  process.stdout.write(`\nwrote bench/results/mux.json (${out.elapsedSeconds.toFixed(0)} s)\n`);
}

/** BENCH_PROFILE=1: the main cases under --cpu-prof; top self-time functions per process. */
async function profile(): Promise<void> {
  const dir = path.join(RESULTS_DIR, 'profiles', 'mux');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const o = { profileDir: dir };
  const bulk = (kind: 'mux' | 'bare', streams: number, extra: Partial<PeerParams> = {}): PeerParams => ({ kind, test: 'bulk', streams, bytes: BYTES, chunk: CHUNK, warmupBytes: WARMUP, ...extra });
  const cases: Array<{ tag: string; title: string; run: () => Promise<unknown>; procs: string[] }> = [
    { tag: 'mem-single', title: 'memory, single stream (sender and receiver in one process)', run: () => memRun(bulk('mux', 1), o, 'mem-single'), procs: ['mem-single'] },
    { tag: 'mem-multi', title: 'memory, 64 streams', run: () => memRun(bulk('mux', 64), o, 'mem-multi'), procs: ['mem-multi'] },
    { tag: 'ws-c2s-single', title: 'ws c→s single stream', run: () => wsRun(bulk('mux', 1, { dir: 'c2s', mask: 'zero' }), o, 'ws-c2s-single'), procs: ['ws-c2s-single-client', 'ws-c2s-single-server'] },
    { tag: 'ws-c2s-bare', title: 'ws c→s bare ws (ceiling)', run: () => wsRun(bulk('bare', 1, { dir: 'c2s', mask: 'zero' }), o, 'ws-c2s-bare'), procs: ['ws-c2s-bare-client', 'ws-c2s-bare-server'] },
    { tag: 'ws-s2c-single', title: 'ws s→c single stream', run: () => wsRun(bulk('mux', 1, { dir: 's2c' }), o, 'ws-s2c-single'), procs: ['ws-s2c-single-server', 'ws-s2c-single-client'] },
    { tag: 'ws-ping64', title: 'ws ping-pong 64 B × 64 streams', run: () => wsRun({ kind: 'mux', test: 'pingpong', streams: 64, msg: 64, seconds: PING_SECONDS, mask: 'zero' }, o, 'ws-ping64'), procs: ['ws-ping64-client', 'ws-ping64-server'] },
  ];
  const summaries: Record<string, ProfileSummary> = {};
  let text = '\n### bench:mux CPU profiles (figures under the profiler are not benchmark results)\n\n';
  for (const c of cases) {
    const r = await c.run();
    const res = (Array.isArray(r) ? r[0] : r) as Json;
    const window = res.window as { fromUs: number; toUs: number } | undefined;
    text += `**${c.title}**: ${'mbps' in res ? `${fmt(res.mbps as number)} MB/s` : `${fmt(res.rtPerSec as number)} RT/s`} under the profiler (samples of the measured phase only)\n\n`;
    for (const p of c.procs) {
      const f = newestProfile(path.join(dir, p));
      if (!f) continue;
      const s = summarizeProfile(f, 25, window);
      summaries[p] = s;
      text += formatProfile(p, s, 15) + '\n';
    }
  }
  process.stdout.write(text);
  writeFileSync(path.join(RESULTS_DIR, 'mux-profile.json'), JSON.stringify({ machine: machineInfo(), summaries }, null, 2) + '\n');
  process.stdout.write(`wrote bench/results/mux-profile.json and the raw profiles under bench/results/profiles/mux/\n`);
}

(PROFILE ? profile() : measure()).then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`bench:mux failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
