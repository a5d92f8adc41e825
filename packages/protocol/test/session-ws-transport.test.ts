// The session over wsTransport on a real loopback WebSocket: small frames are
// coalesced into few messages, frames spanning messages are reassembled, and
// WebSocket backpressure stops the session's writers with bounded memory.
import { describe, it, expect, afterEach } from 'vitest';
import type { WebSocket } from 'ws';
import { Session, wsTransport, zeroMask, type YamuxStream } from '../src/index.js';
import { PatternChecker, collect, deadline, nextEvent, patternBytes, rng, randInt, waitFor, wsPair, type WsPair } from './helpers.js';

const MiB = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function sessions(opts: { hwm?: number; window?: number; zeroMask?: boolean } = {}) {
  const pair: WsPair = await wsPair(opts.zeroMask ? { generateMask: zeroMask } : {});
  cleanups.push(() => pair.close());
  // pingAnswersPerSecond off: one test measures how 1,000 pings in one tick are batched.
  const so = { keepaliveIntervalMs: 0, pingAnswersPerSecond: 0, ...(opts.window ? { maxStreamWindow: opts.window } : {}) };
  const to = opts.hwm ? { highWaterMark: opts.hwm } : {};
  const client = new Session(wsTransport(pair.clientWs, to), { client: true, ...so });
  const server = new Session(wsTransport(pair.serverWs, to), { client: false, ...so });
  cleanups.push(() => {
    client.destroy();
    server.destroy();
  });
  return { client, server, pair };
}

function countMessages(ws: WebSocket): { n: number } {
  const c = { n: 0 };
  ws.on('message', () => c.n++);
  return c;
}

describe('ws transport', () => {
  it('a burst of 1,000 small frames goes out as a few messages', async () => {
    const { client, server, pair } = await sessions({ zeroMask: true });
    const accepted = nextEvent(server, 'stream');
    const s = client.openStream();
    s.on('error', () => {});
    s.write('hello');
    const [ss] = (await accepted) as [YamuxStream];
    ss.on('error', () => {});
    await waitFor(() => ss.readableLength === 5, 2000, 'hello');
    ss.read();
    await client.ping();

    // 1,000 ten-byte writes in one tick: 1,000 Data frames.
    const atServer = countMessages(pair.serverWs);
    const parts: Buffer[] = [];
    ss.on('data', (c: Buffer) => parts.push(c));
    for (let i = 0; i < 1000; i++) s.write(Buffer.from(`[${String(i).padStart(7, '0')}]\n`));
    await waitFor(() => Buffer.concat(parts).length === 10_000, 5000, '10,000 bytes');
    const expected = Array.from({ length: 1000 }, (_, i) => `[${String(i).padStart(7, '0')}]\n`).join('');
    expect(Buffer.concat(parts).toString()).toBe(expected);
    console.log(`1,000 data frames arrived in ${atServer.n} WebSocket message(s)`);
    expect(atServer.n).toBeLessThan(20);

    // 1,000 pings in one tick, and their 1,000 answers.
    const atClient = countMessages(pair.clientWs);
    const before = atServer.n;
    const rtts = await deadline(Promise.all(Array.from({ length: 1000 }, () => client.ping())), 5000, '1,000 pings');
    expect(rtts).toHaveLength(1000);
    expect(atServer.n - before).toBeLessThan(10);
    expect(atClient.n).toBeLessThan(10);

    // Many streams opened in one tick: 200 SYNs (+ data + FIN) in few messages.
    const before2 = atServer.n;
    server.on('stream', (x: YamuxStream) => x.resume().on('end', () => x.end()));
    const many = Array.from({ length: 200 }, () => {
      const x = client.openStream();
      x.end('x');
      return collect(x);
    });
    await deadline(Promise.all(many), 5000, '200 streams');
    expect(atServer.n - before2).toBeLessThan(20);
  });

  it('frames that span messages and messages that hold many frames are reassembled', async () => {
    const { client, server } = await sessions({ window: 4 * MiB });
    const r = rng(42);
    const results: Promise<PatternChecker>[] = [];
    server.on('stream', (ss: YamuxStream) => {
      const c = new PatternChecker(ss.id);
      results.push(
        new Promise((resolve, reject) => {
          ss.on('data', (b: Buffer) => c.push(b));
          ss.on('end', () => {
            resolve(c);
            ss.end();
          });
          ss.on('error', reject);
        }),
      );
    });
    // Mixed sizes: tiny writes are coalesced, big ones go out as their own message.
    const sent: number[] = [];
    for (let k = 0; k < 6; k++) {
      const s = client.openStream();
      let off = 0;
      const total = randInt(r, 1, 3 * MiB);
      while (off < total) {
        const n = Math.min(total - off, r() < 0.5 ? randInt(r, 1, 300) : randInt(r, 16 * 1024, 600 * 1024));
        s.write(patternBytes(s.id, off, n));
        off += n;
      }
      s.end();
      s.resume();
      sent.push(total);
    }
    await waitFor(() => results.length === 6, 5000, 'accepted');
    const got = await deadline(Promise.all(results), 20_000, 'all streams');
    expect(got.map((c) => c.bad)).toEqual([-1, -1, -1, -1, -1, -1]);
    expect(got.map((c) => c.received)).toEqual(sent);
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 5000, 'maps empty');
  });

  it('a receiver that stops reading the socket stops the writers (write() false) with bounded memory, then all arrives', async () => {
    const hwm = 256 * 1024;
    const window = 16 * MiB; // so the window is not what stops them
    const { client, server, pair } = await sessions({ hwm, window });
    const n = 4;
    const accepted: YamuxStream[] = [];
    server.on('stream', (s: YamuxStream) => {
      accepted.push(s);
      s.on('error', () => {});
    });
    const streams = Array.from({ length: n }, () => {
      const s = client.openStream();
      s.on('error', () => {});
      s.write('hi');
      return s;
    });
    await waitFor(() => accepted.length === n && streams.every((s) => s.state === 'established'), 5000, 'established');
    const checkers = accepted.map((ss) => {
      const c = new PatternChecker(ss.id);
      ss.on('data', (b: Buffer) => c.push(b));
      return c;
    });
    await waitFor(() => checkers.every((c) => c.received === 2), 5000, 'hello bytes');
    for (const c of checkers) {
      c.received = 0; // the pattern starts after 'hi'
      c.bad = -1;
    }

    // The receiver stops reading its socket.
    pair.serverWs.pause();
    const chunk = 64 * 1024;
    const limit = 64 * MiB; // per stream; never reached
    const written = streams.map(() => 0);
    const blocked = streams.map(() => false);
    let stop = false;
    const writers = streams.map(async (s, i) => {
      // The pattern is keyed by the server-side id, which equals the client-side id.
      while (written[i]! < limit) {
        const ok = s.write(patternBytes(s.id, written[i]!, chunk));
        written[i]! += chunk;
        if (!ok) {
          blocked[i] = true;
          await new Promise<void>((resolve) => s.once('drain', () => resolve()));
          blocked[i] = false;
          if (stop) break;
        }
        if (stop) break;
      }
      s.end();
    });

    // Settle: every writer blocked and nothing moving for 25 consecutive polls.
    let last = -1;
    let still = 0;
    await waitFor(
      () => {
        const total = written.reduce((a, b) => a + b, 0);
        still = total === last && blocked.every(Boolean) ? still + 1 : 0;
        last = total;
        return still >= 25;
      },
      20_000,
      'writers blocked and quiet',
      10,
    );
    const total = written.reduce((a, b) => a + b, 0);
    const buffered = pair.clientWs.bufferedAmount;
    console.log(
      `receiver paused: writers stopped after ${(total / MiB).toFixed(1)} MiB; ws.bufferedAmount ${(buffered / 1024).toFixed(0)} KiB (hwm ${hwm / 1024} KiB)`,
    );
    for (const s of streams) expect(s.writableNeedDrain).toBe(true);
    // Far below what the windows allow: the WebSocket stopped them.
    expect(total).toBeLessThan((n * window) / 2);
    // User-space memory on the sender: the transport's high-water mark plus at
    // most one chunk per stream that was already inside _write, plus headers.
    expect(buffered).toBeLessThanOrEqual(hwm + n * chunk + 64 * 1024);
    // Nothing was lost or reordered; nothing reached the receiver's streams meanwhile beyond what was in flight.
    expect(server.closed).toBe(false);

    // Resume: everything arrives.
    stop = true;
    pair.serverWs.resume();
    await deadline(Promise.all(writers), 20_000, 'writers finish');
    await waitFor(() => checkers.every((c, i) => c.received === written[i]), 30_000, 'all bytes arrive');
    expect(checkers.map((c) => c.bad)).toEqual(checkers.map(() => -1));
  }, 60_000);
});
