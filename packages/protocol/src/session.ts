// Over 500 lines on purpose: one yamux session state machine (streams, windows, keep-alive, GoAway) whose transitions share private state; split, its invariants would span files.
import { EventEmitter } from 'node:events';
import {
  Flag,
  FrameType,
  GoAwayCode,
  HEADER_SIZE,
  INITIAL_WINDOW,
  YAMUX_VERSION,
  encodeHeader,
  goAwayName,
} from './frame.js';
import type { Transport } from './transport.js';
import { YamuxStream, type StreamOwner } from './stream.js';
import { TokenBucket } from './token-bucket.js';

/** A ceiling a session enforced against its peer; reported through `SessionOptions.onLimit`. */
export type SessionLimit =
  /** Outbound bytes queued past `maxOutboundQueued`: reading from the peer paused. */
  | 'outbound_queue'
  /** Still over the queue cap after `outboundStallMs`: session closed. */
  | 'outbound_stall'
  /** A ping over `pingAnswersPerSecond` went unanswered. */
  | 'ping_rate'
  /** Refused stream opens over `refusalsPerSecond`: session closed with a protocol error. */
  | 'refusal_rate';

export interface SessionOptions {
  /** Client sessions open odd stream ids, servers even (spec). */
  client: boolean;
  /** Per-stream receive window we offer; the spec's 256 KiB initial, grown by a window update. */
  maxStreamWindow?: number;
  /** Open streams (both directions) before new ones are refused. */
  maxStreams?: number;
  /** Peer-opened streams waiting for a 'stream' listener before further SYNs are reset. */
  acceptBacklog?: number;
  /** Unread bytes across all streams; a stream that arrives past this is reset. */
  maxSessionBuffered?: number;
  /** Largest Data frame accepted from the peer. */
  maxFrameLength?: number;
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
  /** Small frames are copied into one batch; larger payloads are sent as they are. */
  coalesceBelow?: number;
  /**
   * How long the ACK of a peer-opened stream may wait to ride on the
   * stream's first outbound frame (0: send it at once, as hashicorp/yamux does).
   */
  ackDelayMs?: number;
  /**
   * Bytes the transport may hold unwritten before the session stops reading
   * from the peer. Frames we send in answer to the peer's (pings, refusals,
   * window updates) would otherwise queue without bound when it never reads.
   * 0 = no cap.
   */
  maxOutboundQueued?: number;
  /** Over `maxOutboundQueued` this long without draining: the session ends (GoAway, then close). 0 = never. */
  outboundStallMs?: number;
  /** Pings answered per second (bursts of as many); the rest go unanswered. 0 = no limit. */
  pingAnswersPerSecond?: number;
  /**
   * Peer stream opens we refuse (RST answers) per second, in bursts of as
   * many; past it the peer is flooding and the session ends with a
   * protocol-error GoAway. 0 = no limit.
   */
  refusalsPerSecond?: number;
  /** Told each time a ceiling above is hit (for metrics); must not throw. */
  onLimit?: (limit: SessionLimit) => void;
}

export class SessionError extends Error {
  constructor(
    readonly code: 'PROTOCOL_ERROR' | 'INTERNAL_ERROR' | 'KEEPALIVE_TIMEOUT' | 'TRANSPORT_CLOSED' | 'GOAWAY' | 'CLOSED' | 'STREAM_LIMIT' | 'OUTBOUND_STALLED',
    message: string,
  ) {
    super(message);
    this.name = 'SessionError';
  }
}

type SessionState = 'open' | 'closed';

const DEFAULTS = {
  // Big enough that one stream is not window-bound on a fast link; a paused
  // reader still holds at most this much, and maxSessionBuffered caps the sum.
  maxStreamWindow: 4 * 1024 * 1024,
  maxStreams: 4096,
  acceptBacklog: 256,
  maxSessionBuffered: 64 * 1024 * 1024,
  maxFrameLength: 16 * 1024 * 1024,
  keepaliveIntervalMs: 15_000,
  keepaliveTimeoutMs: 10_000,
  coalesceBelow: 16 * 1024,
  // A request's response usually follows within a millisecond or two; its
  // head carries the ACK, saving a message (a write here, a wakeup and a read
  // on the peer) per stream. The peer needs the ACK only for the window bonus
  // past 256 KiB, so a stream that answers slowly is acknowledged soon anyway.
  ackDelayMs: 20,
  // Well above the transports' own high-water marks (1 MiB for ws) plus one
  // in-flight chunk per busy stream, so only a peer that stops reading hits it.
  maxOutboundQueued: 32 * 1024 * 1024,
  outboundStallMs: 30_000,
  // Keepalive is one ping per 15 s; a thousand times that is still generous.
  pingAnswersPerSecond: 64,
  // A peer only sees refusals past maxStreams/backlog or after our GoAway.
  refusalsPerSecond: 128,
};

/** Most bytes we hand the transport in one batched message. */
const BATCH_LIMIT = 64 * 1024;

export interface SessionEvents {
  stream: [YamuxStream];
  /** A stream left the session (both directions done, or reset); for owners that wait for idle. */
  streamclosed: [];
  goaway: [code: number];
  close: [err?: SessionError];
}

/**
 * A yamux session (hashicorp/yamux spec.md, version 0) over any byte stream.
 *
 * Events: 'stream' (peer opened one), 'goaway' (peer will accept no new
 * streams), 'close' (the session is over; an error when it did not end
 * cleanly). It never emits 'error': a hostile or broken peer ends this session
 * with a GoAway, never the process.
 */
export class Session extends EventEmitter<SessionEvents> implements StreamOwner {
  private readonly opts: Required<Omit<SessionOptions, 'client' | 'onLimit'>>;
  private readonly onLimit: (limit: SessionLimit) => void;
  private readonly pingAnswers: TokenBucket;
  private readonly refusals: TokenBucket;
  /** Reading from the peer is paused because our outbound queue is over its cap. */
  private readPaused = false;
  private stallTimer: NodeJS.Timeout | null = null;
  private readonly transport: Transport;
  private readonly streams = new Map<number, YamuxStream>();
  private readonly backlog: YamuxStream[] = [];
  private nextId: number;
  private readonly client: boolean;
  private state: SessionState = 'open';
  private _localGoAway = false;
  private _remoteGoAway: number | null = null;
  private buffered = 0;

  // Outbound batching: small frames are gathered and sent as one message.
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private flushScheduled = false;
  private transportFull = false;
  private drainWaiters: Array<() => void> = [];

  // Delayed ACKs: accepted streams whose ACK has not gone out yet.
  private readonly unacked = new Map<number, YamuxStream>();
  private ackTimer: NodeJS.Timeout | null = null;

  // Inbound parser: header bytes (possibly split), then the payload of a Data frame.
  private readonly hdr = Buffer.alloc(HEADER_SIZE);
  private hdrFill = 0;
  private payloadLeft = 0;
  private payloadStream: YamuxStream | null = null; // null while discarding
  private payloadFlags = 0;

  // Keepalive.
  private pingId = 0;
  private readonly pings = new Map<number, { sent: bigint; resolve: (ms: number) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private _rtt = -1;

  constructor(transport: Transport, options: SessionOptions) {
    super();
    const { client, onLimit, ...rest } = options;
    this.opts = { ...DEFAULTS, ...stripUndefined(rest) };
    this.onLimit = onLimit ?? noLimitHook;
    this.pingAnswers = new TokenBucket(this.opts.pingAnswersPerSecond);
    this.refusals = new TokenBucket(this.opts.refusalsPerSecond);
    this.client = client;
    this.nextId = client ? 1 : 2;
    this.transport = transport;
    transport.attach({
      data: (c) => this.receive(c),
      drain: () => this.onTransportDrain(),
      close: (err) => this.onTransportClose(err),
    });
    // Streams that arrived before anyone listened wait in the backlog.
    (this as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event !== 'stream' || this.backlog.length === 0) return;
      queueMicrotask(() => {
        // Only while someone listens: a once() listener takes one, the rest stay queued.
        while (this.backlog.length > 0 && this.listenerCount('stream') > 0) {
          const s = this.backlog.shift()!;
          if (this.streams.get(s.id) === s) this.deliver(s);
        }
      });
    });
    if (this.opts.keepaliveIntervalMs > 0) {
      this.keepaliveTimer = setInterval(() => this.keepalive(), this.opts.keepaliveIntervalMs);
      this.keepaliveTimer.unref();
    }
  }

  // ---- public API --------------------------------------------------------------

  get isClient(): boolean {
    return this.client;
  }
  get closed(): boolean {
    return this.state === 'closed';
  }
  /** The peer sent GoAway: no new streams may be opened. */
  get remoteGoAway(): number | null {
    return this._remoteGoAway;
  }
  get localGoAway(): boolean {
    return this._localGoAway;
  }
  /** Last measured keepalive round trip in ms, -1 before the first. */
  get rtt(): number {
    return this._rtt;
  }
  get streamCount(): number {
    return this.streams.size;
  }
  get bufferedBytes(): number {
    return this.buffered;
  }
  /** True when openStream() would succeed. */
  get canOpen(): boolean {
    return this.state === 'open' && this._remoteGoAway === null && this.streams.size < this.opts.maxStreams;
  }

  openStream(): YamuxStream {
    if (this.state !== 'open') throw new SessionError('CLOSED', 'session is closed');
    if (this._remoteGoAway !== null) throw new SessionError('GOAWAY', 'peer sent GoAway: no new streams');
    if (this.streams.size >= this.opts.maxStreams) {
      throw new SessionError('STREAM_LIMIT', `stream limit reached (${this.opts.maxStreams})`);
    }
    if (this.nextId > 0xffffffff) throw new SessionError('STREAM_LIMIT', 'stream ids exhausted');
    const id = this.nextId;
    this.nextId += 2;
    const s = new YamuxStream(this, id, 'syn_sent', this.opts.maxStreamWindow);
    this.streams.set(id, s);
    this.sendWindowUpdate(id, Flag.SYN, s.initialWindowBonus());
    return s;
  }

  /** Tell the peer to open no new streams; existing ones continue. */
  goAway(code: GoAwayCode = GoAwayCode.Normal): void {
    if (this.state !== 'open' || this._localGoAway) return;
    this._localGoAway = true;
    this.enqueue(encodeHeader(FrameType.GoAway, 0, 0, code));
  }

  /** Measure a round trip. Rejects when the session closes or after `timeoutMs`. */
  ping(timeoutMs = this.opts.keepaliveTimeoutMs): Promise<number> {
    if (this.state !== 'open') return Promise.reject(new SessionError('CLOSED', 'session is closed'));
    const id = (this.pingId = (this.pingId + 1) >>> 0);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(id);
        reject(new SessionError('KEEPALIVE_TIMEOUT', `no ping answer within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.pings.set(id, { sent: process.hrtime.bigint(), resolve, reject, timer });
      this.enqueue(encodeHeader(FrameType.Ping, Flag.SYN, 0, id));
    });
  }

  /** Flush, then end the byte stream. Open streams are aborted. */
  close(): void {
    if (this.state !== 'open') return;
    this.goAway(GoAwayCode.Normal);
    this.shutdown(undefined, false);
  }

  /** Drop the byte stream now. */
  destroy(err?: SessionError): void {
    this.shutdown(err, true);
  }

  // ---- StreamOwner (called by streams) -------------------------------------------

  sendData(id: number, payload: Buffer): void {
    if (this.state !== 'open') return;
    if (this.unacked.size !== 0) {
      const s = this.unacked.get(id);
      if (s) {
        this.unacked.delete(id);
        this.enqueue(encodeHeader(FrameType.WindowUpdate, Flag.ACK, id, s.initialWindowBonus()));
      }
    }
    this.enqueue(encodeHeader(FrameType.Data, 0, id, payload.length));
    this.enqueue(payload);
  }

  sendWindowUpdate(id: number, flags: number, delta: number): void {
    if (this.state !== 'open') return;
    if (this.unacked.size !== 0) {
      const s = this.unacked.get(id);
      if (s) {
        this.unacked.delete(id);
        // A reset needs no ACK; anything else carries it and the window bonus.
        if (!(flags & Flag.RST)) {
          flags |= Flag.ACK;
          delta += s.initialWindowBonus();
        }
      }
    }
    this.enqueue(encodeHeader(FrameType.WindowUpdate, flags, id, delta));
  }

  whenWritable(cb: () => void): void {
    if (!this.transportFull || this.state !== 'open') cb();
    else this.drainWaiters.push(cb);
  }

  adjustBuffered(delta: number): void {
    this.buffered += delta;
  }

  retire(stream: YamuxStream): void {
    if (this.streams.get(stream.id) === stream) {
      this.streams.delete(stream.id);
      this.emit('streamclosed');
    }
    if (this.unacked.get(stream.id) === stream) this.unacked.delete(stream.id);
  }

  // ---- outbound ------------------------------------------------------------------

  private enqueue(buf: Buffer): void {
    if (buf.length >= this.opts.coalesceBelow) {
      // Big payload: send what is batched (ending with its header), then the
      // payload itself, uncopied, as its own message.
      this.flush();
      this.transmit(buf);
      return;
    }
    this.batch.push(buf);
    this.batchBytes += buf.length;
    if (this.batchBytes >= BATCH_LIMIT) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      // setImmediate, not nextTick: frames produced by every I/O callback of
      // this loop turn share one message.
      setImmediate(this.flushBound);
    }
  }

  /** Streams that sent nothing within ackDelayMs get a bare ACK. */
  private readonly ackAllBound = () => {
    this.ackTimer = null;
    if (this.state !== 'open') return;
    for (const [id, s] of this.unacked) this.enqueue(encodeHeader(FrameType.WindowUpdate, Flag.ACK, id, s.initialWindowBonus()));
    this.unacked.clear();
  };

  private readonly flushBound = () => {
    this.flushScheduled = false;
    this.flush();
  };

  private flush(): void {
    if (this.batchBytes === 0) return;
    const out = this.batch.length === 1 ? this.batch[0]! : Buffer.concat(this.batch, this.batchBytes);
    this.batch = [];
    this.batchBytes = 0;
    this.transmit(out);
  }

  private transmit(buf: Buffer): void {
    if (this.state === 'closed') return;
    if (!this.transport.send(buf)) this.transportFull = true;
    const cap = this.opts.maxOutboundQueued;
    if (cap > 0 && !this.readPaused && this.transport.queuedBytes !== undefined && this.transport.queuedBytes() > cap) this.pauseReading();
  }

  /**
   * The peer is not reading what we send: stop reading what it sends (its
   * frames are what make us queue more), until the transport drains.
   */
  private pauseReading(): void {
    if (this.state !== 'open') return;
    this.readPaused = true;
    this.onLimit('outbound_queue');
    this.transport.pauseReading?.();
    if (this.opts.outboundStallMs > 0) {
      this.stallTimer = setTimeout(this.stallBound, this.opts.outboundStallMs);
      this.stallTimer.unref();
    }
  }

  private readonly stallBound = () => {
    this.stallTimer = null;
    if (!this.readPaused || this.state !== 'open') return;
    this.onLimit('outbound_stall');
    this._localGoAway = true;
    // Likely never read, but it says why if the peer ever does.
    this.transport.send(encodeHeader(FrameType.GoAway, 0, 0, GoAwayCode.InternalError));
    this.shutdown(new SessionError('OUTBOUND_STALLED', `peer read nothing for ${this.opts.outboundStallMs} ms with ${this.opts.maxOutboundQueued} bytes queued`), true);
  };

  private onTransportDrain(): void {
    this.transportFull = false;
    if (this.readPaused) {
      this.readPaused = false;
      if (this.stallTimer) clearTimeout(this.stallTimer);
      this.stallTimer = null;
      this.transport.resumeReading?.();
    }
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (let i = 0; i < waiters.length; i++) {
      waiters[i]!();
      if (this.transportFull) {
        // That writer refilled the transport; the rest wait for the next drain.
        this.drainWaiters.push(...waiters.slice(i + 1));
        return;
      }
    }
  }

  // ---- inbound -------------------------------------------------------------------

  /** Feed bytes from the transport; frames may be split anywhere. */
  private receive(chunk: Buffer): void {
    let off = 0;
    const len = chunk.length;
    while (off < len && this.state !== 'closed') {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, len - off);
        const stream = this.payloadStream;
        this.payloadLeft -= n;
        if (stream) stream.onData(n === len && off === 0 ? chunk : chunk.subarray(off, off + n));
        off += n;
        if (this.payloadLeft === 0) this.endPayload();
        continue;
      }
      // Header: parse in place when whole, else gather across chunks.
      let h: Buffer;
      let ho: number;
      if (this.hdrFill === 0 && len - off >= HEADER_SIZE) {
        h = chunk;
        ho = off;
        off += HEADER_SIZE;
      } else {
        const n = Math.min(HEADER_SIZE - this.hdrFill, len - off);
        chunk.copy(this.hdr, this.hdrFill, off, off + n);
        this.hdrFill += n;
        off += n;
        if (this.hdrFill < HEADER_SIZE) return;
        this.hdrFill = 0;
        h = this.hdr;
        ho = 0;
      }
      this.onHeader(h[ho]!, h[ho + 1]!, h.readUInt16BE(ho + 2), h.readUInt32BE(ho + 4), h.readUInt32BE(ho + 8));
    }
  }

  private onHeader(version: number, type: number, flags: number, id: number, length: number): void {
    if (version !== YAMUX_VERSION) return this.protocolError(`unsupported yamux version ${version}`);
    switch (type) {
      case FrameType.Data:
        return this.onDataHeader(flags, id, length);
      case FrameType.WindowUpdate:
        return this.onWindowUpdate(flags, id, length);
      case FrameType.Ping:
        return this.onPing(flags, id, length);
      case FrameType.GoAway:
        return this.onGoAway(id, length);
      default:
        return this.protocolError(`unknown frame type ${type}`);
    }
  }

  private onDataHeader(flags: number, id: number, length: number): void {
    if (id === 0) return this.protocolError('data frame on stream 0');
    if (length > this.opts.maxFrameLength) return this.protocolError(`data frame of ${length} bytes exceeds ${this.opts.maxFrameLength}`);
    const stream = this.streamForFrame(flags, id);
    if (stream === undefined) return; // session failed
    this.payloadFlags = flags;
    this.payloadStream = null;
    if (stream !== null) {
      // Any Data frame after the peer's FIN, even an empty one (the window check below would refuse it too, misnamed).
      if (!stream.canReceiveData()) return this.protocolError(`data after FIN on stream ${id}`);
      if (!stream.expectData(length)) return this.protocolError(`stream ${id} exceeded its receive window`);
      if (length > 0 && this.buffered + length > this.opts.maxSessionBuffered) {
        // Too much unread across the session: sacrifice this stream, keep the rest.
        stream.destroy(new SessionError('INTERNAL_ERROR', 'session receive buffer limit reached'));
      } else {
        this.payloadStream = stream;
      }
    }
    this.payloadLeft = length;
    if (length === 0) this.endPayload();
  }

  private endPayload(): void {
    const stream = this.payloadStream;
    this.payloadStream = null;
    if (stream) this.applyCloseFlags(stream, this.payloadFlags);
  }

  private onWindowUpdate(flags: number, id: number, delta: number): void {
    if (id === 0) return this.protocolError('window update on stream 0');
    const stream = this.streamForFrame(flags, id);
    if (!stream) return;
    if (delta > 0) stream.onWindowUpdate(delta);
    this.applyCloseFlags(stream, flags);
  }

  /**
   * Resolve the stream a Data/WindowUpdate frame is for, opening it on SYN.
   * null: a stream we no longer track (closed or reset; frames in flight are
   * dropped). undefined: the frame was illegal and the session is failing.
   */
  private streamForFrame(flags: number, id: number): YamuxStream | null | undefined {
    if (flags & Flag.SYN) return this.acceptSyn(id);
    const stream = this.streams.get(id) ?? null;
    if (stream && flags & Flag.ACK) stream.onAck();
    return stream;
  }

  private acceptSyn(id: number): YamuxStream | null | undefined {
    const peerParity = this.client ? 0 : 1;
    if (id % 2 !== peerParity) {
      this.protocolError(`peer opened stream ${id} with our id parity`);
      return undefined;
    }
    if (this.streams.has(id)) {
      this.protocolError(`peer reopened live stream ${id}`);
      return undefined;
    }
    if (this._localGoAway || this.streams.size >= this.opts.maxStreams || this.backlogFull()) {
      if (!this.refusals.take()) {
        // Opening streams faster than we can refuse them: a SYN flood.
        this.onLimit('refusal_rate');
        this.protocolError(`peer opened streams we refused faster than ${this.opts.refusalsPerSecond}/s`);
        return undefined;
      }
      this.enqueue(encodeHeader(FrameType.WindowUpdate, Flag.RST, id, 0));
      return null;
    }
    const s = new YamuxStream(this, id, 'syn_received', this.opts.maxStreamWindow);
    this.streams.set(id, s);
    if (this.listenerCount('stream') > 0) this.deliver(s);
    else {
      // No owner yet to hear its errors: a peer RST or a session close while
      // it waits must not become an uncaught 'error' event.
      s.on('error', ignoreError);
      this.backlog.push(s);
    }
    return s;
  }

  private backlogFull(): boolean {
    return this.listenerCount('stream') === 0 && this.backlog.length >= this.opts.acceptBacklog;
  }

  private deliver(s: YamuxStream): void {
    s.off('error', ignoreError);
    s.markAccepted();
    if (this.opts.ackDelayMs <= 0) this.sendWindowUpdate(s.id, Flag.ACK, s.initialWindowBonus());
    else {
      this.unacked.set(s.id, s);
      this.ackTimer ??= setTimeout(this.ackAllBound, this.opts.ackDelayMs);
    }
    this.emit('stream', s);
  }

  private applyCloseFlags(stream: YamuxStream, flags: number): void {
    if (flags & Flag.RST) {
      stream.onRemoteReset();
      return;
    }
    if (flags & Flag.FIN && !stream.onRemoteFin()) this.protocolError(`unexpected FIN on stream ${stream.id} (${stream.state})`);
  }

  private onPing(flags: number, id: number, opaque: number): void {
    if (id !== 0) return this.protocolError('ping on a stream id');
    if (flags & Flag.SYN) {
      if (this.pingAnswers.take()) this.enqueue(encodeHeader(FrameType.Ping, Flag.ACK, 0, opaque));
      else this.onLimit('ping_rate');
      return;
    }
    if (flags & Flag.ACK) {
      const p = this.pings.get(opaque);
      if (!p) return; // late answer to a ping that timed out
      this.pings.delete(opaque);
      clearTimeout(p.timer);
      const ms = Number(process.hrtime.bigint() - p.sent) / 1e6;
      this._rtt = ms;
      p.resolve(ms);
    }
  }

  private onGoAway(id: number, code: number): void {
    if (id !== 0) return this.protocolError('go away on a stream id');
    if (this._remoteGoAway !== null) return;
    this._remoteGoAway = code;
    this.emit('goaway', code);
    if (code !== GoAwayCode.Normal) {
      this.shutdown(new SessionError('GOAWAY', `peer closed the session: ${goAwayName(code)}`), false);
    }
  }

  // ---- life cycle ----------------------------------------------------------------

  private keepalive(): void {
    if (this.state !== 'open' || this.pings.size > 0) return;
    this.ping().catch((e: Error) => {
      if (this.state === 'open') this.destroy(e instanceof SessionError ? e : new SessionError('KEEPALIVE_TIMEOUT', e.message));
    });
  }

  private protocolError(message: string): void {
    if (this.state === 'closed') return;
    // Answer with a protocol-error GoAway, flushed before the byte stream ends.
    if (this.state === 'open' && !this._localGoAway) {
      this._localGoAway = true;
      this.enqueue(encodeHeader(FrameType.GoAway, 0, 0, GoAwayCode.ProtocolError));
    }
    this.shutdown(new SessionError('PROTOCOL_ERROR', message), false);
  }

  private onTransportClose(err?: Error): void {
    if (this.state === 'closed') return;
    // After the peer's normal GoAway, the byte stream ending is the clean close it announced.
    const clean = !err && this._remoteGoAway === GoAwayCode.Normal;
    this.shutdown(clean ? undefined : new SessionError('TRANSPORT_CLOSED', err ? `transport closed: ${err.message}` : 'transport closed'), true);
  }

  private shutdown(err: SessionError | undefined, hard: boolean): void {
    if (this.state === 'closed') return;
    const wasOpen = this.state === 'open';
    if (!hard && wasOpen) {
      this.flush();
    }
    this.state = 'closed';
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    this.unacked.clear();
    this.payloadLeft = 0;
    const reason = err ?? new SessionError('CLOSED', 'session closed');
    for (const p of this.pings.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.pings.clear();
    const streams = [...this.streams.values()];
    this.streams.clear();
    this.backlog.length = 0;
    for (const s of streams) s.abort(reason);
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
    if (hard) this.transport.destroy();
    else this.transport.end();
    this.emit('close', err);
  }

}

function ignoreError(): void {}
function noLimitHook(): void {}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

export { INITIAL_WINDOW };
