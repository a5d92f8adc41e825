// Child processes of the benchmarks (never run by hand): one end of a
// measurement, configured by a JSON argument, reporting JSON lines on stdout.
//
//   node bench/dist/peers.js mem       '{"test":"bulk",...}'   both ends in this process (in-memory pair)
//   node bench/dist/peers.js ws-server '{"kind":"mux",...}'    relay-like end: WebSocketServer on 127.0.0.1
//   node bench/dist/peers.js ws-client '{"kind":"mux","port":N,...}'  connector-like end: ws client
//
// kind "mux" runs our yamux Session over the transport; kind "bare" moves the
// same bytes as plain ws binary messages (the transport's ceiling).

import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import { Session, duplexTransport, memoryDuplexPair, wsTransport, zeroMask, type YamuxStream } from '@tunnel/protocol';

export type Test = 'bulk' | 'pingpong' | 'idle';
export type Direction = 'c2s' | 's2c';

export interface PeerParams {
  kind: 'mux' | 'bare';
  test: Test;
  /** Who sends the bulk bytes: c2s = ws client → server (masked direction). */
  dir?: Direction;
  /** ws client frame masking: zero (our connector) or ws's default random mask. */
  mask?: 'zero' | 'default';
  streams?: number;
  bytes?: number;
  chunk?: number;
  warmupBytes?: number;
  seconds?: number;
  msg?: number;
  count?: number;
  port?: number;
}

export interface PeerResult {
  event: 'result';
  test: Test;
  [k: string]: unknown;
}

/** One JSON line on stdout; `mono` is CLOCK_MONOTONIC in µs, the clock of V8's CPU profiles. */
function report(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ...o, mono: Number(process.hrtime.bigint() / 1000n) }) + '\n');
}

const now = () => performance.now();

// ---- heap -----------------------------------------------------------------------

function heap(): { heapUsed: number; external: number; arrayBuffers: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  gc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

// ---- writing with backpressure -----------------------------------------------------

/** Write `total` bytes of `chunk`-sized writes, honouring write() === false; then end `s` unless told not to. */
function pump(s: Writable, total: number, chunk: Buffer, o: { end: boolean } = { end: true }): void {
  let left = total;
  const go = () => {
    while (left > 0) {
      const n = Math.min(chunk.length, left);
      left -= n;
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
        s.once('drain', go);
        return;
      }
    }
    if (o.end) s.end();
  };
  go();
}

// ---- yamux measurements ------------------------------------------------------------

/** Receiving end of a bulk test: count each stream's bytes, answer its FIN with one byte and FIN. */
function muxBulkReceiver(session: Session): void {
  session.on('stream', (s) => {
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('end', () => s.end(Buffer.from('k')));
  });
}

/** Send `bytes` spread over `streams` streams; resolves with ms until every stream was acknowledged. */
function muxBulkSend(session: Session, streams: number, bytes: number, chunkSize: number): Promise<number> {
  const chunk = Buffer.alloc(chunkSize, 0x61);
  const per = Math.floor(bytes / streams);
  return new Promise((resolve, reject) => {
    const t0 = now();
    let left = streams;
    for (let i = 0; i < streams; i++) {
      const s = session.openStream();
      s.on('error', reject);
      s.on('data', () => {});
      s.on('end', () => {
        if (--left === 0) resolve(now() - t0);
      });
      pump(s, per, chunk);
    }
  });
}

function muxEchoServer(session: Session): void {
  session.on('stream', (s) => {
    s.on('error', () => {});
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  });
}

/** `streams` concurrent ping-pongs of `msg`-byte messages; round trips per second. */
function muxPingPong(session: Session, streams: number, msg: number, seconds: number): Promise<{ rtPerSec: number; rts: number; ms: number }> {
  const payload = Buffer.alloc(msg, 0x62);
  let measuring = false;
  let stopped = false;
  let rts = 0;
  const all: YamuxStream[] = [];
  for (let i = 0; i < streams; i++) {
    const s = session.openStream();
    all.push(s);
    let got = 0;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      got += d.length;
      while (got >= msg) {
        got -= msg;
        if (measuring) rts++;
        if (!stopped) s.write(payload);
      }
    });
    s.write(payload);
  }
  return new Promise((resolve) => {
    setTimeout(() => {
      measuring = true;
      report({ event: 'start' });
      const t0 = now();
      setTimeout(() => {
        measuring = false;
        stopped = true;
        const ms = now() - t0;
        for (const s of all) s.end();
        resolve({ rtPerSec: (rts * 1000) / ms, rts, ms });
      }, seconds * 1000);
    }, 300);
  });
}

// ---- bare ws measurements -------------------------------------------------------------

const SEND_OPTS = { binary: true, compress: false };
const BARE_HWM = 1024 * 1024; // same high-water mark and resume point as wsTransport

/** Send `total` bytes as `chunk`-sized binary messages with callback-counted backpressure. */
function bareSend(ws: WebSocket, total: number, chunk: Buffer): void {
  let left = total;
  let inFlight = 0;
  let paused = false;
  const go = () => {
    while (left > 0) {
      if (inFlight > BARE_HWM) {
        paused = true;
        return;
      }
      const n = Math.min(chunk.length, left);
      left -= n;
      inFlight += n;
      ws.send(n === chunk.length ? chunk : chunk.subarray(0, n), SEND_OPTS, () => {
        inFlight -= n;
        if (paused && inFlight <= BARE_HWM / 2) {
          paused = false;
          go();
        }
      });
    }
  };
  go();
}

/** Count bytes; each time the next of `totals` has arrived, send one byte back. */
function bareReceiver(ws: WebSocket, totals: number[]): void {
  let got = 0;
  let i = 0;
  ws.on('message', (d: Buffer) => {
    if (i >= totals.length) return;
    got += d.length;
    if (got >= totals[i]!) {
      got -= totals[i]!;
      i++;
      ws.send(Buffer.from('k'), SEND_OPTS);
    }
  });
}

// ---- roles ------------------------------------------------------------------------------

async function memRole(p: PeerParams): Promise<void> {
  const [a, b] = memoryDuplexPair();
  if (p.kind === 'bare') {
    // The in-memory pair itself moving the bytes: the memory transport's ceiling.
    const chunk = Buffer.alloc(p.chunk ?? 64 * 1024, 0x61);
    const total = p.bytes!;
    report({ event: 'start' });
    const ms = await new Promise<number>((resolve) => {
      let got = 0;
      const t0 = now();
      b.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= total) resolve(now() - t0);
      });
      pump(a, total, chunk, { end: false }); // the pair stays open: the reader counts bytes, not an end
    });
    report({ event: 'result', test: p.test, bytes: total, ms, mbps: total / 1e6 / (ms / 1000) });
    process.exit(0);
  }
  const opts = p.count ? { maxStreams: p.count + 64 } : {};
  const client = new Session(duplexTransport(a), { client: true, ...opts });
  const server = new Session(duplexTransport(b), { client: false, ...opts });
  if (p.test === 'bulk') {
    muxBulkReceiver(server);
    if (p.warmupBytes) await muxBulkSend(client, 1, p.warmupBytes, p.chunk!);
    report({ event: 'start' });
    const ms = await muxBulkSend(client, p.streams!, p.bytes!, p.chunk!);
    report({ event: 'result', test: p.test, bytes: p.bytes, streams: p.streams, ms, mbps: p.bytes! / 1e6 / (ms / 1000) });
  } else if (p.test === 'pingpong') {
    muxEchoServer(server);
    const r = await muxPingPong(client, p.streams!, p.msg!, p.seconds!);
    report({ event: 'result', test: p.test, streams: p.streams, msg: p.msg, ...r });
  } else {
    const n = p.count!;
    let accepted = 0;
    server.on('stream', () => accepted++);
    const before = heap();
    for (let i = 0; i < n; i++) client.openStream();
    await client.ping(30_000);
    if (accepted !== n) throw new Error(`accepted ${accepted} of ${n}`);
    const after = heap();
    report({
      event: 'result',
      test: p.test,
      count: n,
      side: 'both ends',
      heapPerStream: (after.heapUsed - before.heapUsed) / n,
      externalPerStream: (after.external - before.external) / n,
      streamsOpen: [client.streamCount, server.streamCount],
    });
  }
  process.exit(0);
}

function wsServerRole(p: PeerParams): void {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024, skipUTF8Validation: true });
  wss.on('listening', () => report({ event: 'listening', port: (wss.address() as AddressInfo).port }));
  wss.on('connection', (ws) => {
    ws.on('close', () => process.exit(0));
    ws.on('error', () => process.exit(1));
    if (p.kind === 'bare') return bareServer(ws, p);
    const session = new Session(wsTransport(ws), { client: false, ...(p.count ? { maxStreams: p.count + 64 } : {}) });
    session.on('close', () => process.exit(0));
    if (p.test === 'bulk') {
      if (p.dir === 'c2s') muxBulkReceiver(session);
      else {
        // The client opens one stream to say "go" (its session is up), then we send.
        session.once('stream', (go) => {
          go.on('data', () => {});
          go.on('error', () => {});
          void (async () => {
            if (p.warmupBytes) await muxBulkSend(session, 1, p.warmupBytes, p.chunk!);
            report({ event: 'start' });
    const ms = await muxBulkSend(session, p.streams!, p.bytes!, p.chunk!);
            report({ event: 'result', test: p.test, bytes: p.bytes, streams: p.streams, ms, mbps: p.bytes! / 1e6 / (ms / 1000) });
            go.end();
          })();
        });
      }
    } else if (p.test === 'pingpong') {
      muxEchoServer(session);
    } else {
      // Idle streams: the relay side opens them (as the relay opens request streams).
      session.once('stream', (control) => {
        control.on('error', () => {});
        control.once('data', () => {
          const n = p.count!;
          const before = heap();
          for (let i = 0; i < n; i++) session.openStream();
          void session.ping(30_000).then(() => {
            const after = heap();
            report({
              event: 'result',
              test: 'idle',
              side: 'opener (relay side, ws server)',
              count: n,
              heapPerStream: (after.heapUsed - before.heapUsed) / n,
              externalPerStream: (after.external - before.external) / n,
            });
            control.write(Buffer.from('m'));
          });
        });
      });
    }
  });
}

function bareServer(ws: WebSocket, p: PeerParams): void {
  if (p.test === 'bulk') {
    if (p.dir === 'c2s') {
      // Warm-up transfer first (if any), then the measured one.
      bareReceiver(ws, p.warmupBytes ? [p.warmupBytes, p.bytes!] : [p.bytes!]);
    } else {
      const chunk = Buffer.alloc(p.chunk!, 0x61);
      let t0 = 0;
      let phase = 0;
      ws.on('message', () => {
        // 'go' from the client, then one ack per transfer.
        if (phase === 0) {
          phase = p.warmupBytes ? 1 : 2;
          if (phase === 2) report({ event: 'start' });
          t0 = now();
          bareSend(ws, p.warmupBytes || p.bytes!, chunk);
        } else if (phase === 1) {
          phase = 2;
          report({ event: 'start' });
          t0 = now();
          bareSend(ws, p.bytes!, chunk);
        } else {
          const ms = now() - t0;
          report({ event: 'result', test: p.test, bytes: p.bytes, ms, mbps: p.bytes! / 1e6 / (ms / 1000) });
          ws.send(Buffer.from('e'), SEND_OPTS);
        }
      });
    }
  } else if (p.test === 'pingpong') {
    ws.on('message', (d: Buffer) => ws.send(d, SEND_OPTS));
  }
}

function wsClientRole(p: PeerParams): void {
  const ws = new WebSocket(`ws://127.0.0.1:${p.port}/`, {
    perMessageDeflate: false,
    maxPayload: 64 * 1024 * 1024,
    skipUTF8Validation: true,
    ...(p.mask === 'default' ? {} : { generateMask: zeroMask }),
  });
  ws.on('error', (e) => {
    process.stderr.write(`ws client: ${e.message}\n`);
    process.exit(1);
  });
  ws.on('close', () => process.exit(0));
  ws.on('open', () => {
    if (p.kind === 'bare') return bareClient(ws, p);
    const session = new Session(wsTransport(ws), { client: true, ...(p.count ? { maxStreams: p.count + 64 } : {}) });
    void (async () => {
      if (p.test === 'bulk') {
        if (p.dir === 'c2s') {
          if (p.warmupBytes) await muxBulkSend(session, 1, p.warmupBytes, p.chunk!);
          report({ event: 'start' });
    const ms = await muxBulkSend(session, p.streams!, p.bytes!, p.chunk!);
          report({ event: 'result', test: p.test, bytes: p.bytes, streams: p.streams, ms, mbps: p.bytes! / 1e6 / (ms / 1000) });
          session.close();
        } else {
          muxBulkReceiver(session);
          const go = session.openStream();
          go.on('error', () => {});
          go.on('data', () => {});
          go.on('end', () => session.close());
          go.write(Buffer.from('g'));
        }
      } else if (p.test === 'pingpong') {
        const r = await muxPingPong(session, p.streams!, p.msg!, p.seconds!);
        report({ event: 'result', test: p.test, streams: p.streams, msg: p.msg, ...r });
        session.close();
      } else {
        const n = p.count!;
        let accepted = 0;
        let marked = false;
        const before = heap();
        const done = () => {
          if (accepted < n || !marked) return;
          const after = heap();
          report({
            event: 'result',
            test: 'idle',
            side: 'acceptor (connector side, ws client)',
            count: n,
            heapPerStream: (after.heapUsed - before.heapUsed) / n,
            externalPerStream: (after.external - before.external) / n,
          });
          setTimeout(() => session.close(), 50);
        };
        session.on('stream', (s) => {
          s.on('error', () => {});
          accepted++;
        });
        const control = session.openStream();
        control.on('error', () => {});
        control.on('data', () => {
          marked = true;
          // Streams were opened before the mark was written: all are here by now.
          done();
        });
        control.write(Buffer.from('r'));
      }
    })().catch((e: Error) => {
      process.stderr.write(`ws client: ${e.stack}\n`);
      process.exit(1);
    });
  });
}

function bareClient(ws: WebSocket, p: PeerParams): void {
  if (p.test === 'bulk') {
    if (p.dir === 'c2s') {
      const chunk = Buffer.alloc(p.chunk!, 0x61);
      let phase = p.warmupBytes ? 0 : 1;
      let t0 = now();
      ws.on('message', () => {
        if (phase === 0) {
          phase = 1;
          report({ event: 'start' });
          t0 = now();
          bareSend(ws, p.bytes!, chunk);
          return;
        }
        const ms = now() - t0;
        report({ event: 'result', test: p.test, bytes: p.bytes, ms, mbps: p.bytes! / 1e6 / (ms / 1000) });
        ws.close();
      });
      if (phase === 1) report({ event: 'start' });
      t0 = now();
      bareSend(ws, phase === 0 ? p.warmupBytes! : p.bytes!, chunk);
    } else {
      bareReceiver(ws, p.warmupBytes ? [p.warmupBytes, p.bytes!] : [p.bytes!]);
      ws.on('message', (d: Buffer) => {
        if (d.length === 1 && d[0] === 0x65 /* 'e' */) ws.close();
      });
      ws.send(Buffer.from('g'), SEND_OPTS);
    }
  } else if (p.test === 'pingpong') {
    const payload = Buffer.alloc(p.msg!, 0x62);
    let measuring = false;
    let stopped = false;
    let rts = 0;
    ws.on('message', () => {
      if (measuring) rts++;
      if (!stopped) ws.send(payload, SEND_OPTS);
    });
    for (let i = 0; i < p.streams!; i++) ws.send(payload, SEND_OPTS);
    setTimeout(() => {
      measuring = true;
      report({ event: 'start' });
      const t0 = now();
      setTimeout(() => {
        measuring = false;
        stopped = true;
        const ms = now() - t0;
        report({ event: 'result', test: p.test, streams: p.streams, msg: p.msg, rtPerSec: (rts * 1000) / ms, rts, ms });
        setTimeout(() => ws.close(), 50);
      }, p.seconds! * 1000);
    }, 300);
  }
}

// ---- entry ----------------------------------------------------------------------------

const [, , role, json] = process.argv;
if (role) {
  const p = JSON.parse(json ?? '{}') as PeerParams;
  // Never outlive a broken run.
  setTimeout(() => {
    process.stderr.write(`${role}: gave up after 180 s\n`);
    process.exit(2);
  }, 180_000).unref();
  if (role === 'mem') {
    memRole(p).catch((e: Error) => {
      process.stderr.write(`mem: ${e.stack}\n`);
      process.exit(1);
    });
  } else if (role === 'ws-server') wsServerRole(p);
  else if (role === 'ws-client') wsClientRole(p);
  else {
    process.stderr.write(`unknown role ${role}\n`);
    process.exit(2);
  }
}
