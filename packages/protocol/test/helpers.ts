// Shared test helpers for the yamux session tests: deadlines and polling (no
// bare sleeps), session pairs over in-memory byte streams, a transport pair
// that re-chunks the byte stream per a cut pattern, a capturing transport for
// fuzzing, a frame builder/parser and a seeded PRNG.
import type { EventEmitter } from 'node:events';
import {
  FrameType,
  HEADER_SIZE,
  Session,
  duplexTransport,
  encodeHeader,
  memoryDuplexPair,
  type SessionOptions,
  type Transport,
  type TransportHandlers,
  type YamuxStream,
} from '../src/index.js';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';

export type PairOptions = Partial<Omit<SessionOptions, 'client'>>;

// ---- time ------------------------------------------------------------------------

/** Reject with a labelled error when `p` has not settled within `ms`. */
export function deadline<T>(p: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Poll `cond` (every `everyMs`) until it holds; reject after `ms`. */
export function waitFor(cond: () => boolean, ms = 5000, label = 'condition', everyMs = 2): Promise<void> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      let ok: boolean;
      try {
        ok = cond();
      } catch (e) {
        reject(e as Error);
        return;
      }
      if (ok) resolve();
      else if (Date.now() - start > ms) reject(new Error(`timed out after ${ms} ms waiting for ${label}`));
      else setTimeout(tick, everyMs);
    };
    tick();
  });
}

/** The next emission of `event`, as its argument list; rejects after `ms`. */
export function nextEvent(emitter: EventEmitter, event: string, ms = 5000): Promise<unknown[]> {
  return deadline(
    new Promise<unknown[]>((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args))),
    ms,
    `event '${event}'`,
  );
}

/** One event-loop turn (lets setImmediate-batched frames go out). */
export function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

// ---- streams ---------------------------------------------------------------------

/** Everything the stream delivers until 'end'; rejects on 'error'. */
export function collect(s: YamuxStream | Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

/** Resolves with the stream's error (rejects if it ends or closes cleanly instead). */
export function streamError(s: YamuxStream, ms = 5000): Promise<Error & { code?: string }> {
  return deadline(
    new Promise<Error & { code?: string }>((resolve, reject) => {
      s.on('error', resolve);
      s.on('close', () => {
        if (!s.errored) reject(new Error(`stream ${s.id} closed without an error`));
      });
    }),
    ms,
    `error on stream ${s.id}`,
  );
}

/** Resolves once the writable side has finished (our FIN was handed to the session). */
export function writeFinished(s: YamuxStream): Promise<void> {
  if (s.writableFinished) return Promise.resolve();
  return new Promise((resolve, reject) => {
    s.once('finish', () => resolve());
    s.once('error', reject);
  });
}

/** Deterministic content: byte i of stream `seed` — lets a receiver check order without keeping a copy. */
export function patternByte(seed: number, i: number): number {
  return (i * 31 + seed * 17 + (i >>> 8)) & 0xff;
}

export function patternBytes(seed: number, offset: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = patternByte(seed, offset + i);
  return b;
}

/** Incremental checker for a patternBytes() stream. */
export class PatternChecker {
  received = 0;
  bad = -1;
  constructor(readonly seed: number) {}
  push(c: Buffer): void {
    if (this.bad < 0) {
      for (let i = 0; i < c.length; i++) {
        if (c[i] !== patternByte(this.seed, this.received + i)) {
          this.bad = this.received + i;
          break;
        }
      }
    }
    this.received += c.length;
  }
}

// ---- PRNG ------------------------------------------------------------------------

/** mulberry32: small, fast, seeded. Returns [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randInt(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

// ---- frames ----------------------------------------------------------------------

export interface ParsedFrame {
  version: number;
  type: number;
  flags: number;
  streamId: number;
  length: number;
  /** Data payload length actually present (Data frames only). */
  payload: number;
}

/** Encode one frame (header, plus payload for Data). */
export function frame(type: number, flags: number, streamId: number, length: number, payload?: Buffer): Buffer {
  const h = encodeHeader(type as FrameType, flags, streamId, length);
  return payload ? Buffer.concat([h, payload]) : h;
}

/**
 * Incremental frame parser for one direction of a byte stream (taps what a
 * session writes). Data payloads are skipped by length.
 */
export class FrameTap {
  readonly frames: ParsedFrame[] = [];
  private hdr = Buffer.alloc(HEADER_SIZE);
  private fill = 0;
  private skip = 0;
  bytes = 0;
  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        off += n;
        continue;
      }
      const n = Math.min(HEADER_SIZE - this.fill, chunk.length - off);
      chunk.copy(this.hdr, this.fill, off, off + n);
      this.fill += n;
      off += n;
      if (this.fill < HEADER_SIZE) return;
      this.fill = 0;
      const f: ParsedFrame = {
        version: this.hdr[0]!,
        type: this.hdr[1]!,
        flags: this.hdr.readUInt16BE(2),
        streamId: this.hdr.readUInt32BE(4),
        length: this.hdr.readUInt32BE(8),
        payload: 0,
      };
      if (f.type === FrameType.Data) {
        f.payload = f.length;
        this.skip = f.length;
      }
      this.frames.push(f);
    }
  }
  /** True when the byte stream so far ends exactly on a frame boundary. */
  get atBoundary(): boolean {
    return this.fill === 0 && this.skip === 0;
  }
}

/** Parse a complete byte sequence into frames. */
export function parseFrames(buf: Buffer): { frames: ParsedFrame[]; complete: boolean } {
  const t = new FrameTap();
  t.push(buf);
  return { frames: t.frames, complete: t.atBoundary };
}

// ---- transports ------------------------------------------------------------------

/** Wrap a transport so every byte it sends is also given to `tap`. */
export function tapTransport(t: Transport, tap: (chunk: Buffer) => void): Transport {
  return {
    send: (c) => {
      tap(c);
      return t.send(c);
    },
    end: () => t.end(),
    destroy: () => t.destroy(),
    attach: (h) => t.attach(h),
    ...(t.queuedBytes ? { queuedBytes: () => t.queuedBytes!(), pauseReading: () => t.pauseReading?.(), resumeReading: () => t.resumeReading?.() } : {}),
  };
}

/**
 * A session pair over memoryDuplexPair() (real backpressure), with frame taps
 * on both directions: `c2s` is what the client wrote, `s2c` what the server wrote.
 */
export function sessionPair(opts: PairOptions = {}, serverOpts: PairOptions = {}) {
  const [a, b] = memoryDuplexPair();
  const c2s = new FrameTap();
  const s2c = new FrameTap();
  const client = new Session(tapTransport(duplexTransport(a), (c) => c2s.push(c)), {
    client: true,
    keepaliveIntervalMs: 0,
    ...opts,
  });
  const server = new Session(tapTransport(duplexTransport(b), (c) => s2c.push(c)), {
    client: false,
    keepaliveIntervalMs: 0,
    ...opts,
    ...serverOpts,
  });
  return { client, server, a, b, c2s, s2c };
}

export interface ChunkedOptions {
  /** Bytes queued in one direction before send() returns false. */
  highWaterMark?: number;
  /** Pieces delivered per event-loop turn (then the rest waits for the next turn). */
  piecesPerTurn?: number;
}

/**
 * An in-memory transport pair that re-chunks the byte stream: whatever the
 * sender wrote is concatenated and delivered in pieces whose sizes cycle
 * through `pattern` (so writes are both split, down to 1 byte, and merged),
 * asynchronously (setImmediate), with backpressure (send() false above the
 * high-water mark, drain once the queue is half empty).
 */
export function chunkedTransportPair(patternAtoB: readonly number[], patternBtoA: readonly number[], o: ChunkedOptions = {}): [ChunkedEnd, ChunkedEnd] {
  const a = new ChunkedEnd(patternAtoB, o.highWaterMark ?? 64 * 1024, o.piecesPerTurn ?? 64);
  const b = new ChunkedEnd(patternBtoA, o.highWaterMark ?? 64 * 1024, o.piecesPerTurn ?? 64);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

export class ChunkedEnd implements Transport {
  peer!: ChunkedEnd;
  private h: TransportHandlers | null = null;
  private queue: Buffer[] = [];
  private headOff = 0;
  private queued = 0;
  private full = false;
  private scheduled = false;
  private ending = false;
  closed = false;
  private pi = 0;
  /** Pieces and bytes delivered to the peer. */
  pieces = 0;
  bytes = 0;
  drains = 0;

  constructor(
    private readonly pattern: readonly number[],
    private readonly hwm: number,
    private readonly piecesPerTurn: number,
  ) {
    if (pattern.length === 0 || pattern.some((n) => !(n >= 1))) throw new Error('bad cut pattern');
  }

  attach(h: TransportHandlers): void {
    this.h = h;
  }

  send(chunk: Buffer): boolean {
    if (this.closed || this.ending) return true;
    if (chunk.length > 0) {
      this.queue.push(chunk);
      this.queued += chunk.length;
      this.schedule();
    }
    if (this.queued > this.hwm) this.full = true;
    return !this.full;
  }

  end(): void {
    if (this.closed) return;
    this.ending = true;
    this.schedule();
  }

  destroy(): void {
    if (this.closed) return;
    this.queue = [];
    this.queued = 0;
    this.closeBoth(new Error('peer destroyed the transport'));
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.pump());
  }

  private take(n: number): Buffer {
    const first = this.queue[0]!;
    const avail = first.length - this.headOff;
    if (avail >= n) {
      const piece = first.subarray(this.headOff, this.headOff + n);
      this.headOff += n;
      if (this.headOff === first.length) {
        this.queue.shift();
        this.headOff = 0;
      }
      this.queued -= n;
      return piece;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const b = this.queue[0]!;
      const k = Math.min(n - filled, b.length - this.headOff);
      b.copy(out, filled, this.headOff, this.headOff + k);
      filled += k;
      this.headOff += k;
      if (this.headOff === b.length) {
        this.queue.shift();
        this.headOff = 0;
      }
    }
    this.queued -= n;
    return out;
  }

  private pump(): void {
    this.scheduled = false;
    let delivered = 0;
    while (this.queued > 0 && delivered < this.piecesPerTurn && !this.closed && !this.peer.closed) {
      const want = this.pattern[this.pi++ % this.pattern.length]!;
      const piece = this.take(Math.min(want, this.queued));
      this.pieces++;
      this.bytes += piece.length;
      delivered++;
      this.peer.h?.data(piece);
    }
    if (this.closed) return;
    if (this.full && this.queued <= this.hwm / 2) {
      this.full = false;
      this.drains++;
      this.h?.drain();
    }
    if (this.queued > 0) this.schedule();
    else if (this.ending) this.closeBoth(undefined);
  }

  private closeBoth(err: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.peer.closed = true;
    setImmediate(() => {
      this.h?.close();
      this.peer.h?.close(err);
    });
  }
}

/**
 * A transport with no peer: records what the session writes and lets the test
 * feed bytes in. `sendReturns` controls backpressure.
 */
export class CaptureTransport implements Transport {
  h: TransportHandlers | null = null;
  written: Buffer[] = [];
  writtenBytes = 0;
  ended = false;
  destroyed = false;
  constructor(private readonly keep = true) {}
  attach(h: TransportHandlers): void {
    this.h = h;
  }
  send(chunk: Buffer): boolean {
    if (this.keep) this.written.push(Buffer.from(chunk));
    this.writtenBytes += chunk.length;
    return true;
  }
  end(): void {
    this.ended = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
  feed(b: Buffer): void {
    this.h!.data(b);
  }
  output(): Buffer {
    return Buffer.concat(this.written);
  }
}

// ---- loopback WebSocket ------------------------------------------------------------

export interface WsPair {
  /** The accepted (server-side) socket. */
  serverWs: WebSocket;
  /** The connecting (client-side) socket. */
  clientWs: WebSocket;
  close(): Promise<void>;
}

/** A ws server on 127.0.0.1:0 and one client connected to it. */
export async function wsPair(clientOptions: ConstructorParameters<typeof WebSocket>[2] = {}): Promise<WsPair> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await deadline(new Promise<void>((r) => wss.once('listening', () => r())), 5000, 'ws listening');
  const port = (wss.address() as AddressInfo).port;
  const accepted = new Promise<WebSocket>((r) => wss.once('connection', (ws: WebSocket) => r(ws)));
  const clientWs = new WebSocket(`ws://127.0.0.1:${port}`, clientOptions);
  await deadline(
    new Promise<void>((r, j) => {
      clientWs.once('open', () => r());
      clientWs.once('error', j);
    }),
    5000,
    'ws open',
  );
  const serverWs = await deadline(accepted, 5000, 'ws accepted');
  return {
    serverWs,
    clientWs,
    async close() {
      clientWs.terminate();
      serverWs.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}
