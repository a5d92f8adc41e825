/**
 * Interop with the npm `yamux-js` 0.2.0 package (devDependency) over a real
 * loopback WebSocket: yamux-js gets a Duplex from ws's createWebSocketStream,
 * our Session uses wsTransport. Both sides open streams, move whole-frame data
 * (small payloads, well under the 256 KiB window) and answer each other's
 * pings, in both role assignments.
 *
 * yamux-js behaviours that are out of spec and that these tests therefore do
 * NOT rely on (each is checked below where noted; "observed" = a test here
 * demonstrates it against 0.2.0):
 *
 *  - FIN does not end the receiving stream (observed): its processFlags()
 *    tests `flags === SYN` where it means FIN, so a peer's FIN never moves the
 *    stream to RemoteClose and never pushes end-of-stream; its readable never
 *    emits 'end'. The exchanges below are length-prefixed so yamux-js knows
 *    when it has everything; yamux-js ends its own side with stream.close()
 *    (Duplex end() sends nothing at all).
 *  - No receive backpressure (observed): it sends a window update as bytes
 *    arrive, not as they are read, so a paused reader buffers without bound
 *    (the test buffers 2 MiB, 8x its window, in a stream nobody reads).
 *  - A frame split across two reads loses its payload (observed): its
 *    _transform() drops a partial Data payload (and a partial header), so the
 *    stream receives nothing and the parser loses sync. We never split a frame
 *    inside a payload when sending (a header may end one WebSocket message and
 *    its payload be the next, which it happens to handle), and we keep
 *    payloads small here.
 *  - A full send window is polled every 100 ms (observed): _write() retries on
 *    setTimeout(…, 100) instead of waiting for the window update.
 *  - Streams are never freed (observed): a stream that has sent and received
 *    FIN stays in its map, and the accept "backlog" counts every stream in the
 *    map, so once 256 streams have existed every new incoming one is reset.
 *  - It ignores the window delta carried on a SYN (observed): a stream we open
 *    with a window above 256 KiB stalls once yamux-js has sent 256 KiB,
 *    because we expect it to use the larger window and only top it up after
 *    half of it is consumed. So our side uses maxStreamWindow = 256 KiB here.
 *  - A yamux-js Client cannot accept streams (its constructor takes no
 *    onStream); the reversed-role test sets its `onStream` field directly.
 *  - Frames that follow a GoAway in the same read are dropped (observed):
 *    its GoAway branch does not parse the rest of the chunk. A ping batched
 *    with our GoAway is never answered; the GoAway test sends it alone.
 *  - Not exercised: a protocol/internal-error GoAway (it closes with an
 *    'error' event); its recursive parser (one stack level per frame in a
 *    message, so a message holding thousands of tiny frames could overflow
 *    it); its connectionWriteTimeout (a timer per write, cleared
 *    synchronously, so it never fires).
 */
import { describe, it, expect, vi, afterEach } from 'vitest';
import { format } from 'node:util';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, type WebSocket } from 'ws';
import { Client as YClient, Server as YServer } from 'yamux-js';
import { Flag, FrameType, Session, wsTransport, type YamuxStream } from '../src/index.js';
import { CaptureTransport, deadline, frame, rng, randInt, turn, waitFor, wsPair, type WsPair } from './helpers.js';

const WINDOW = 256 * 1024;

/** A yamux-js 0.2.0 session as used here, including what its typings mark private. */
interface YSession extends Duplex {
  streams: Map<number, YStream>;
  pings: Map<number, NodeJS.Timeout>;
  onStream?: (d: Duplex) => void;
  open(): YStream;
  ping(): void;
  close(err?: Error): void;
}
type YStream = Duplex & { ID(): number; close(): void; state: number };
const Y_REMOTE_CLOSE = 5;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function yamuxJs(ws: WebSocket, role: 'server' | 'client', onStream: (s: YStream) => void, logs: string[]): YSession {
  const cfg = {
    enableKeepAlive: false,
    maxStreamWindowSize: WINDOW,
    logger: (...a: unknown[]) => logs.push(format(...a)),
  };
  const y = (role === 'server' ? new YServer((d) => onStream(d as YStream), cfg) : new YClient(cfg)) as unknown as YSession;
  if (role === 'client') y.onStream = (d) => onStream(d as YStream);
  const d = createWebSocketStream(ws);
  y.on('error', (e: Error) => logs.push(`session error: ${e.message}`));
  d.on('error', (e: Error) => logs.push(`ws stream error: ${e.message}`));
  y.pipe(d).pipe(y);
  cleanups.push(() => {
    y.unpipe();
    d.destroy();
  });
  return y;
}

async function setup(oursRole: 'client' | 'server', ourOpts: { maxStreamWindow?: number } = {}) {
  const pair: WsPair = await wsPair();
  cleanups.push(() => pair.close());
  const logs: string[] = [];
  const ourWs = oursRole === 'client' ? pair.clientWs : pair.serverWs;
  const theirWs = oursRole === 'client' ? pair.serverWs : pair.clientWs;
  const ours = new Session(wsTransport(ourWs), { client: oursRole === 'client', keepaliveIntervalMs: 0, maxStreamWindow: WINDOW, ...ourOpts });
  cleanups.push(() => ours.destroy());
  const incoming: YStream[] = [];
  let handler: (s: YStream) => void = (s) => incoming.push(s);
  const theirs = yamuxJs(theirWs, oursRole === 'client' ? 'server' : 'client', (s) => handler(s), logs);
  return {
    ours,
    theirs,
    logs,
    incoming,
    onTheirStream(h: (s: YStream) => void) {
      handler = h;
    },
  };
}

/** Length-prefixed message: u32 length, then payload. */
function message(r: () => number, maxLen: number): Buffer {
  const len = randInt(r, 0, maxLen);
  const b = Buffer.allocUnsafe(4 + len);
  b.writeUInt32BE(len, 0);
  for (let i = 0; i < len; i++) b[4 + i] = (r() * 256) | 0;
  return b;
}

/** Echo every byte back; once the whole length-prefixed message has been echoed, call `done`. */
function echoer(s: Duplex, done: () => void): void {
  let want = -1;
  let seen = 0;
  const head: Buffer[] = [];
  s.on('data', (c: Buffer) => {
    s.write(c);
    seen += c.length;
    if (want < 0) {
      head.push(c);
      const h = Buffer.concat(head);
      if (h.length >= 4) want = 4 + h.readUInt32BE(0);
    }
    if (want >= 0 && seen === want) done();
  });
}

/** Write `msg` in random pieces of at most 8 KiB. */
function writePieces(s: Duplex, msg: Buffer, r: () => number): void {
  let off = 0;
  while (off < msg.length) {
    const n = Math.min(randInt(r, 1, 8192), msg.length - off);
    s.write(msg.subarray(off, off + n));
    off += n;
  }
}

async function exchange(oursRole: 'client' | 'server', seed: number) {
  const r = rng(seed);
  const { ours, theirs, logs, onTheirStream } = await setup(oursRole);
  const N = 16;
  const theirEnds: number[] = [];

  // yamux-js accepts our streams and echoes; it ends its side with close().
  onTheirStream((ys) => {
    ys.on('error', (e: Error) => logs.push(`their stream error: ${e.message}`));
    ys.on('end', () => theirEnds.push(ys.ID()));
    echoer(ys, () => ys.end(() => ys.close()));
  });
  // We accept theirs and echo; we end our side when done.
  ours.on('stream', (s: YamuxStream) => echoer(s, () => s.end()));

  const ourStreams: Promise<void>[] = [];
  for (let i = 0; i < N; i++) {
    const msg = message(r, 60_000);
    const s = ours.openStream();
    const got: Buffer[] = [];
    s.on('data', (c: Buffer) => got.push(c));
    ourStreams.push(
      new Promise<void>((resolve, reject) => {
        s.on('error', reject);
        s.on('end', () => {
          const b = Buffer.concat(got);
          if (b.equals(msg)) resolve();
          else reject(new Error(`our stream ${s.id}: echo of ${msg.length} bytes came back as ${b.length}`));
        });
      }),
    );
    writePieces(s, msg, r);
    s.end();
  }

  const theirStreams: Promise<void>[] = [];
  const theirOpened: YStream[] = [];
  for (let i = 0; i < N; i++) {
    const msg = message(r, 60_000);
    const ys = theirs.open();
    theirOpened.push(ys);
    ys.on('end', () => theirEnds.push(ys.ID()));
    const got: Buffer[] = [];
    let have = 0;
    theirStreams.push(
      new Promise<void>((resolve, reject) => {
        ys.on('error', reject);
        // No 'end' will come (our FIN is ignored): stop at the expected length.
        ys.on('data', (c: Buffer) => {
          got.push(c);
          have += c.length;
          if (have === msg.length) {
            const b = Buffer.concat(got);
            if (b.equals(msg)) resolve();
            else reject(new Error(`their stream ${ys.ID()}: echo differs`));
          }
        });
      }),
    );
    writePieces(ys, msg, r);
    ys.end(() => ys.close());
  }

  await deadline(Promise.all([...ourStreams, ...theirStreams]), 15_000, 'all echoes');

  // Pings both ways.
  const rtt = await deadline(ours.ping(), 5000, 'our ping answered by yamux-js');
  expect(rtt).toBeGreaterThanOrEqual(0);
  theirs.ping();
  theirs.ping();
  expect(theirs.pings.size).toBe(2);
  await waitFor(() => theirs.pings.size === 0, 5000, 'yamux-js pings answered by us');

  // Our stream map is empty: every stream saw FIN both ways.
  await waitFor(() => ours.streamCount === 0, 5000, 'our streams retired');
  // Ours sent FIN on all 32 streams and the ping round trip above came after
  // those FINs: yamux-js ended none of them (FIN ignored) and freed none.
  expect(theirEnds).toEqual([]);
  expect(theirs.streams.size).toBe(2 * N);
  for (const ys of theirOpened) expect(ys.state).not.toBe(Y_REMOTE_CLOSE);
  expect(logs.filter((l) => /ERR|error/.test(l))).toEqual([]);
  expect(ours.closed).toBe(false);
}

describe('interop with yamux-js 0.2.0 over a WebSocket', () => {
  it('our client, yamux-js server: both open streams, whole-frame data both ways, pings both ways', async () => {
    await exchange('client', 1);
  });

  it('our server, yamux-js client: both open streams, whole-frame data both ways, pings both ways', async () => {
    await exchange('server', 2);
  });

  it('a normal GoAway from us stops yamux-js opening streams (open() emits an error)', async () => {
    const { ours, theirs, logs } = await setup('client');
    ours.goAway();
    await turn(); // the GoAway goes out alone: yamux-js drops whatever follows it in a message
    await ours.ping(); // barrier: answered after the GoAway was processed
    const errs: Error[] = [];
    theirs.on('error', (e: Error) => errs.push(e));
    theirs.open();
    expect(errs.map((e) => e.message)).toEqual(['remote end is not accepting connections']);
    expect(logs.filter((l) => /ERR/.test(l))).toEqual([]);
  });
});

describe('yamux-js out-of-spec behaviours (documented above), observed', () => {
  it('FIN does not end a yamux-js stream', async () => {
    const { ours, incoming } = await setup('client');
    const s = ours.openStream();
    s.on('error', () => {});
    s.end('bye');
    await waitFor(() => incoming.length === 1, 5000, 'accepted');
    const ys = incoming[0]!;
    let ended = false;
    ys.on('end', () => {
      ended = true;
    });
    const got: Buffer[] = [];
    ys.on('data', (c: Buffer) => got.push(c));
    await ours.ping(); // everything before it, the FIN included, has been processed
    await turn();
    expect(Buffer.concat(got).toString()).toBe('bye');
    expect(ended).toBe(false);
    expect(ys.readableEnded).toBe(false);
    expect(ys.state).not.toBe(Y_REMOTE_CLOSE);
    expect(s.state).toBe('local_closed');
  });

  it('no receive backpressure: a yamux-js stream nobody reads buffers far past its window', async () => {
    const { ours, incoming } = await setup('client');
    const s = ours.openStream();
    s.on('error', () => {});
    const total = 2 * 1024 * 1024;
    const chunk = Buffer.alloc(8192, 7);
    for (let off = 0; off < total; off += chunk.length) s.write(chunk);
    await waitFor(() => incoming.length === 1, 5000, 'accepted');
    const ys = incoming[0]!; // never read, never resumed
    await waitFor(() => ys.readableLength === total, 10_000, 'all 2 MiB buffered by yamux-js');
    expect(ys.readableLength).toBeGreaterThan(WINDOW * 4);
    s.destroy();
  });

  it('a Data frame split across two reads loses its payload in yamux-js (and not in ours)', async () => {
    const payload = Buffer.from('0123456789abcdefghij');
    const syn = frame(FrameType.WindowUpdate, Flag.SYN, 1, 0);
    const data = frame(FrameType.Data, 0, 1, payload.length, payload);
    const pieces = [syn, data.subarray(0, 12 + 7), data.subarray(12 + 7)];

    const logs: string[] = [];
    const theirGot: Buffer[] = [];
    const y = new YServer((d) => d.on('data', (c: Buffer) => theirGot.push(c)), {
      enableKeepAlive: false,
      logger: (...a: unknown[]) => logs.push(format(...a)),
    });
    y.on('error', () => {});
    y.resume(); // discard what it writes back
    for (const p of pieces) y.write(p);
    await turn();
    expect(Buffer.concat(theirGot).length).toBeLessThan(payload.length);
    expect(Buffer.concat(theirGot).toString()).not.toBe(payload.toString());

    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0 });
    const ourGot: Buffer[] = [];
    s.on('stream', (x: YamuxStream) => {
      x.on('error', () => {});
      x.on('data', (c: Buffer) => ourGot.push(c));
    });
    for (const p of pieces) cap.feed(p);
    await turn();
    expect(Buffer.concat(ourGot)).toEqual(payload);
    s.destroy();
  });

  it('a full send window is polled every 100 ms; ignoring the SYN window delta stalls a stream we open with a larger window', async () => {
    const spy = vi.spyOn(globalThis, 'setTimeout');
    cleanups.push(() => spy.mockRestore());
    const polls = () => spy.mock.calls.filter((c) => c[1] === 100).length;

    // (1) Our reader paused: yamux-js fills the 256 KiB window and polls.
    {
      const { ours, incoming } = await setup('client');
      const s = ours.openStream();
      s.on('error', () => {});
      s.write('go');
      await waitFor(() => incoming.length === 1, 5000, 'accepted');
      const ys = incoming[0]!;
      ys.on('error', () => {});
      ys.write(Buffer.alloc(WINDOW + 10_000, 3)); // one write: one frame of 256 KiB, then polling
      const before = polls();
      await waitFor(() => polls() - before >= 3, 5000, 'yamux-js polling a full window');
      expect(s.receiveBuffered).toBe(WINDOW);
      // Reading gives the window back; its next 100 ms poll sends the rest.
      let got = 0;
      s.on('data', (c: Buffer) => {
        got += c.length;
      });
      await waitFor(() => got === WINDOW + 10_000, 5000, 'rest after the poll');
      ours.destroy();
    }

    // (2) We open with a 1 MiB window and read everything: yamux-js still
    // stops at 256 KiB, because it ignored the 768 KiB carried on our SYN and
    // we top up only after half of the 1 MiB is consumed.
    {
      const { ours, incoming } = await setup('client', { maxStreamWindow: 1024 * 1024 });
      const s = ours.openStream();
      let got = 0;
      s.on('data', (c: Buffer) => {
        got += c.length;
      });
      s.on('error', () => {});
      s.write('go');
      await waitFor(() => incoming.length === 1, 5000, 'accepted');
      const ys = incoming[0]!;
      ys.on('error', () => {});
      ys.write(Buffer.alloc(WINDOW + 10_000, 4));
      const before = polls();
      await waitFor(() => polls() - before >= 3, 5000, 'yamux-js stuck polling');
      expect(got).toBe(WINDOW);
      expect(s.receiveBuffered).toBe(0);
      ours.destroy();
    }
  });

  it('frames after a GoAway in the same message are dropped by yamux-js', async () => {
    const { ours } = await setup('client');
    ours.goAway();
    const lost = ours.ping(300); // batched into the GoAway's message
    await expect(lost).rejects.toMatchObject({ code: 'KEEPALIVE_TIMEOUT' });
    expect(await deadline(ours.ping(), 5000, 'ping in its own message')).toBeGreaterThanOrEqual(0);
  });

  it('streams are never freed: after 256 completed streams the next incoming one is reset', async () => {
    const { ours, onTheirStream, theirs } = await setup('client');
    onTheirStream((ys) => {
      ys.on('error', () => {});
      ys.on('data', (c: Buffer) => {
        ys.write(c);
        ys.close(); // FIN
      });
    });
    const one = async () => {
      const s = ours.openStream();
      s.end('x');
      const got: Buffer[] = [];
      s.on('data', (c: Buffer) => got.push(c));
      await new Promise<void>((resolve, reject) => {
        s.on('end', () => resolve());
        s.on('error', reject);
      });
      return Buffer.concat(got).toString();
    };
    const results = await deadline(Promise.all(Array.from({ length: 256 }, one)), 15_000, '256 streams');
    expect(results.every((x) => x === 'x')).toBe(true);
    await waitFor(() => ours.streamCount === 0, 5000, 'ours freed all 256');
    expect(theirs.streams.size).toBe(256);
    const s = ours.openStream();
    s.write('x');
    const err = await deadline(new Promise<Error & { code?: string }>((r) => s.on('error', r)), 5000, 'reset');
    expect(err.code).toBe('ERR_STREAM_RESET');
  });
});
