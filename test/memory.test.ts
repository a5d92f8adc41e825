// Bounded memory on the data path (issue "Data path"), asserted on the RSS
// of the real relay and connector processes (/proc/PID/status VmRSS):
//  - a client that pauses and reads a 1 GiB response slowly: relay and
//    connector each grow by less than 64 MiB, and the origin is held back
//    (backpressure reaches it) instead of the tunnel buffering;
//  - 1,000 concurrent SSE streams through one connector: all get their
//    events, a normal request still works, RSS per stream is reported
//    (stdout and test-artifacts/memory.json).

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import type { Proc } from './harness/procs.js';
import { waitFor } from './harness/wait.js';
import { fmtMiB, GiB, MiB, nodeRequest, PatternSource, rssBytes, rssSampler, writeArtifact } from './harness/data-path.js';

const BIG = 1 * GiB;
const LIMIT = 64 * MiB;
const STREAMS = 1_000;

let bigSource: PatternSource | undefined;
const sse = new Set<http.ServerResponse>();

function origin(req: http.IncomingMessage, res: http.ServerResponse): void {
  req.resume();
  if (req.url === '/big') {
    bigSource = new PatternSource(BIG, 21);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BIG) });
    bigSource.pipe(res);
    return;
  }
  if (req.url?.startsWith('/sse')) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(`event: hello\ndata: ${req.url}\n\n`);
    sse.add(res);
    res.once('close', () => sse.delete(res));
    return;
  }
  res.end('ok');
}

/** Open file descriptors allowed for this process (children inherit it). */
function fdLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('bounded memory', () => {
  let fleet: Fleet;
  let org: Origin;
  let connector: Proc;

  beforeAll(async () => {
    org = await startOrigin(origin);
    fleet = await startFleet({ relays: 2 });
    connector = await fleet.connector({ url: org.url });
    // Warm up both paths (pools, JIT) before any baseline is taken.
    for (let i = 0; i < 20; i++) {
      for (const r of fleet.relays) expect((await nodeRequest({ port: r.http, path: '/warm' })).status).toBe(200);
    }
  });
  afterAll(async () => {
    for (const r of sse) r.destroy();
    await fleet?.close();
    await org?.close();
  });

  it('a paused, then slow, reader of a 1 GiB response: relay and connector RSS grow < 64 MiB, origin held back', { timeout: 170_000 }, async () => {
    const relay = fleet.relays[0]!;
    const pids = { relay: relay.proc.pid, connector: connector.pid };
    const base = { relay: rssBytes(pids.relay), connector: rssBytes(pids.connector) };
    const sampler = rssSampler(pids, 50);

    const sock: Socket = connect({ host: '127.0.0.1', port: relay.http });
    sock.on('error', () => {});
    const hash = createHash('sha256');
    let headDone = false;
    let head = '';
    let received = 0;
    sock.on('data', (d: Buffer) => {
      if (!headDone) {
        head += d.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end === -1) return;
        headDone = true;
        d = Buffer.from(head.slice(end + 4), 'latin1');
      }
      received += d.length;
      hash.update(d);
    });
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.write('GET /big HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n');

    // Phase 1: read 8 MiB, then stop reading until the origin is held back, and 3 s more.
    await waitFor(() => received >= 8 * MiB, 30_000, { message: 'first 8 MiB' });
    sock.pause();
    const pausedAt = received;
    // Let the buffers between origin and client fill (bounded wait), then watch the origin for 3 s.
    let last = -1;
    await waitFor(
      async () => {
        const now = bigSource!.producedBytes;
        const settled = now === last;
        last = now;
        if (!settled) await sleep(500);
        return settled;
      },
      15_000,
      { intervalMs: 1, message: 'origin held back by the paused client' },
    );
    const producedEarly = bigSource!.producedBytes;
    await sleep(3_000);
    const producedLate = bigSource!.producedBytes;
    // Backpressure reaches the origin: nothing more is produced while the client reads nothing,
    // and what is buffered between origin and client is bounded.
    const inFlight = producedLate - pausedAt;
    expect(producedLate - producedEarly).toBeLessThan(1 * MiB);
    expect(inFlight).toBeLessThan(LIMIT);
    const pausedPeak = { ...sampler.peak };

    // Phase 2: a slow reader, ~25 ms of reading every 250 ms for 5 s.
    for (let i = 0; i < 20; i++) {
      sock.resume();
      await sleep(25);
      sock.pause();
      await sleep(225);
    }
    const slowRead = received - pausedAt;
    // Phase 3: paused again, 2 s.
    await sleep(2_000);

    // Phase 4: read the rest at full speed and check every byte.
    const fastStart = performance.now();
    const fastFrom = received;
    sock.resume();
    await closed;
    const fastSecs = (performance.now() - fastStart) / 1000;
    const peak = sampler.stop();
    expect(received).toBe(BIG);
    expect(hash.digest('hex')).toBe(bigSource!.sha256());

    const growth = { relay: peak.relay! - base.relay, connector: peak.connector! - base.connector };
    const pausedGrowth = { relay: pausedPeak.relay! - base.relay, connector: pausedPeak.connector! - base.connector };
    console.log(
      `[memory] 1 GiB slow reader: in flight while paused ${fmtMiB(inFlight)}; slow phase read ${fmtMiB(slowRead)}; ` +
        `RSS growth while paused relay ${fmtMiB(pausedGrowth.relay)}, connector ${fmtMiB(pausedGrowth.connector)}; ` +
        `peak over the whole transfer relay ${fmtMiB(growth.relay)} (base ${fmtMiB(base.relay)}), connector ${fmtMiB(growth.connector)} (base ${fmtMiB(base.connector)}); ` +
        `rest at ${(((BIG - fastFrom) / 1e6) / fastSecs).toFixed(1)} MB/s`,
    );
    writeArtifact('memory.json', 'slowReader1GiB', {
      bytes: BIG,
      inFlightWhilePausedBytes: inFlight,
      baseRss: base,
      peakGrowthWhilePaused: pausedGrowth,
      peakGrowthWholeTransfer: growth,
      limitBytes: LIMIT,
      fastPhaseMBps: Number((((BIG - fastFrom) / 1e6) / fastSecs).toFixed(1)),
    });
    expect(pausedGrowth.relay).toBeLessThan(LIMIT);
    expect(pausedGrowth.connector).toBeLessThan(LIMIT);
    expect(growth.relay).toBeLessThan(LIMIT);
    expect(growth.connector).toBeLessThan(LIMIT);
  });

  it(`${STREAMS} concurrent SSE streams through one connector: all get events, the tunnel keeps serving; RSS per stream`, { timeout: 170_000 }, async (ctx) => {
    const limit = fdLimit();
    // This process holds both ends' sockets (client and origin): 2 per stream, plus slack.
    if (limit < 2 * STREAMS + 200) {
      const why = `open-file limit ${limit} < ${2 * STREAMS + 200}: raise ulimit -n (this process holds client and origin sockets; relay and connector inherit the limit)`;
      // CI must run every case (.ci/run raises the limit): a skip there would hide the claim.
      if (process.env.CI === 'true') throw new Error(`${why} (CI=true: .ci/run raises ulimit -n; run it through .ci/run)`);
      console.log(`[memory] SKIP ${STREAMS} SSE streams: ${why}`);
      ctx.skip(why);
    }
    const pids = { relay0: fleet.relays[0]!.proc.pid, relay1: fleet.relays[1]!.proc.pid, connector: connector.pid };
    const rss = () => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, rssBytes(pid)])) as Record<keyof typeof pids, number>;
    // The previous test left garbage behind: wait (bounded) until no RSS moves by more than 1 MiB in 1 s.
    let prev = rss();
    for (let i = 0, stable = 0; i < 20 && stable < 2; i++) {
      await sleep(1_000);
      const now = rss();
      stable = Object.keys(pids).every((k) => Math.abs(now[k as keyof typeof pids] - prev[k as keyof typeof pids]) < MiB) ? stable + 1 : 0;
      prev = now;
    }
    const base = rss();

    const clients: http.ClientRequest[] = [];
    const events = new Array<number>(STREAMS).fill(0);
    const buffers = new Array<string>(STREAMS).fill('');
    let failures = 0;
    const open = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const port = fleet.relays[i % 2]!.http;
        const req = http.get({ host: '127.0.0.1', port, path: `/sse/${i}`, agent: false, setHost: false, headers: { host: 'app.test', accept: 'text/event-stream' } }, (res) => {
          if (res.statusCode !== 200) {
            failures++;
            reject(new Error(`stream ${i}: status ${res.statusCode}`));
            return;
          }
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            buffers[i] += d;
            let end: number;
            while ((end = buffers[i]!.indexOf('\n\n')) !== -1) {
              buffers[i] = buffers[i]!.slice(end + 2);
              events[i]!++;
            }
          });
          res.on('error', () => {});
          resolve();
        });
        req.on('error', (e) => {
          failures++;
          reject(e);
        });
        clients.push(req);
      });

    const started = performance.now();
    // Open in batches of 100 so the accept queues are not the thing under test.
    for (let b = 0; b < STREAMS; b += 100) {
      const batch = Promise.all(Array.from({ length: Math.min(100, STREAMS - b) }, (_, k) => open(b + k)));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const hint = sse.size === 100 ? ' (= the keepAliveConnections default: the connector caps concurrent origin connections at it)' : '';
          const have = events.filter((n) => n >= 1).length;
          reject(new Error(`streams ${b}..${b + 99}: no response head within 30 s; ${have} streams have an event, the origin holds ${sse.size}${hint}`));
        }, 30_000);
      });
      try {
        await Promise.race([batch, timeout]);
      } catch (e) {
        for (const c of clients) c.destroy();
        throw e;
      } finally {
        clearTimeout(timer);
      }
    }
    await waitFor(() => events.every((n) => n >= 1), 60_000, { message: `all ${STREAMS} streams got their first event (have ${events.filter((n) => n >= 1).length})` });
    const openSecs = (performance.now() - started) / 1000;
    expect(sse.size).toBe(STREAMS);

    // Let the processes settle, then measure.
    await sleep(1_000);
    const held = rss();

    // Every stream gets a broadcast event, in one go.
    const t0 = performance.now();
    for (const r of sse) r.write(`event: tick\ndata: ${Date.now()}\n\n`);
    await waitFor(() => events.every((n) => n >= 2), 30_000, { message: `all ${STREAMS} streams got the broadcast (have ${events.filter((n) => n >= 2).length})` });
    const broadcastMs = performance.now() - t0;

    // A normal request still succeeds, through each relay, promptly.
    for (const r of fleet.relays) {
      const t = performance.now();
      const res = await nodeRequest({ port: r.http, path: '/normal', timeoutMs: 10_000 });
      expect(res.status).toBe(200);
      expect(res.body.toString()).toBe('ok');
      expect(performance.now() - t).toBeLessThan(5_000);
    }
    expect(failures).toBe(0);

    const perStream = {
      relays: (held.relay0 - base.relay0 + held.relay1 - base.relay1) / STREAMS,
      connector: (held.connector - base.connector) / STREAMS,
    };
    const line =
      `[memory] ${STREAMS} SSE streams held open (opened in ${openSecs.toFixed(1)} s, broadcast delivered to all in ${broadcastMs.toFixed(0)} ms): ` +
      `RSS per stream relays ${(perStream.relays / 1024).toFixed(1)} KiB (sum of both), connector ${(perStream.connector / 1024).toFixed(1)} KiB; ` +
      `relay0 ${fmtMiB(base.relay0)} → ${fmtMiB(held.relay0)}, relay1 ${fmtMiB(base.relay1)} → ${fmtMiB(held.relay1)}, connector ${fmtMiB(base.connector)} → ${fmtMiB(held.connector)}`;
    console.log(line);
    const file = writeArtifact('memory.json', 'sse1000', {
      streams: STREAMS,
      baseRss: base,
      heldRss: held,
      rssPerStreamBytes: { relays: Math.round(perStream.relays), connector: Math.round(perStream.connector) },
      openSeconds: Number(openSecs.toFixed(2)),
      broadcastMs: Math.round(broadcastMs),
    });
    console.log(`[memory] written to ${file}`);

    // Hang up every client: the origin sees every stream closed (freed end to end).
    for (const c of clients) c.destroy();
    await waitFor(() => sse.size === 0, 30_000, { message: `origin streams closed (${sse.size} left)` });
  });
});
