import { Duplex } from 'node:stream';
import { INITIAL_WINDOW } from './frame.js';

/**
 * Stream life cycle. Transitions (anything else is a protocol error):
 *
 *   syn_sent      --ACK-->            established     (we opened it)
 *   syn_received  --accepted-->       established     (peer opened it; ACK sent on accept)
 *   open*         --we send FIN-->    local_closed
 *   open*         --peer FIN-->       remote_closed
 *   local_closed  --peer FIN-->       closed
 *   remote_closed --we send FIN-->    closed
 *   any           --RST either way--> reset
 *
 * open* = syn_sent | syn_received | established. Writes are allowed before the
 * ACK (as in hashicorp/yamux); the peer's 256 KiB initial window covers them.
 */
export type StreamState =
  | 'syn_sent'
  | 'syn_received'
  | 'established'
  | 'local_closed'
  | 'remote_closed'
  | 'closed'
  | 'reset';

/** What a stream needs from its session; implemented by Session. */
export interface StreamOwner {
  sendData(id: number, payload: Buffer): void;
  sendWindowUpdate(id: number, flags: number, delta: number): void;
  /** Run `cb` once the transport is below its high-water mark (synchronously if it is now). */
  whenWritable(cb: () => void): void;
  /** Receive-buffer accounting across the whole session. */
  adjustBuffered(delta: number): void;
  /** The stream needs no more frames: drop it from the session. */
  retire(stream: YamuxStream): void;
}

export class StreamResetError extends Error {
  readonly code = 'ERR_STREAM_RESET';
  constructor(message = 'stream reset by peer') {
    super(message);
    this.name = 'StreamResetError';
  }
}

/** Largest Data frame we send; keeps one frame from monopolising the byte stream. */
const MAX_DATA_FRAME = 256 * 1024;

export class YamuxStream extends Duplex {
  readonly id: number;
  private _state: StreamState;
  private readonly owner: StreamOwner;
  private readonly maxWindow: number;

  // Send side: credit the peer has given us, and a chunk waiting for more.
  private sendWindow = INITIAL_WINDOW;
  private pending: Buffer | null = null;
  private pendingCb: ((err?: Error | null) => void) | null = null;

  // Receive side, as running totals so partial frames never skew the window:
  // granted = window bytes ever offered to the peer, announced = bytes the peer
  // has declared in Data headers, pushed = bytes handed to the readable side,
  // seenConsumed = what the consumer had read when we last looked.
  private granted = INITIAL_WINDOW;
  private announced = 0;
  private pushed = 0;
  private seenConsumed = 0;

  constructor(owner: StreamOwner, id: number, state: 'syn_sent' | 'syn_received', maxWindow: number) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: 64 * 1024,
      writableHighWaterMark: 64 * 1024,
    });
    this.owner = owner;
    this.id = id;
    this._state = state;
    this.maxWindow = Math.max(maxWindow, INITIAL_WINDOW);
  }

  get state(): StreamState {
    return this._state;
  }

  /** The peer has sent FIN: everything it will send is already buffered here. */
  get remoteEnded(): boolean {
    return this._state === 'remote_closed' || this._state === 'closed';
  }

  /** Bytes received but not yet read by the consumer. */
  get receiveBuffered(): number {
    return this.pushed - this.seenConsumed;
  }

  // ---- called by the session -------------------------------------------------

  /** Extra window beyond the spec's initial one, sent with our SYN or ACK. */
  initialWindowBonus(): number {
    const bonus = this.maxWindow - INITIAL_WINDOW;
    this.granted += bonus;
    return bonus;
  }

  /** Peer acknowledged our SYN. */
  onAck(): boolean {
    if (this._state === 'syn_sent') this._state = 'established';
    return true;
  }

  /** We handed a peer-opened stream to the owner. */
  markAccepted(): void {
    if (this._state === 'syn_received') this._state = 'established';
  }

  /** A Data header announced `length` bytes. False = peer overran the window we gave it. */
  expectData(length: number): boolean {
    if (this._state === 'remote_closed' || this._state === 'closed') return false;
    this.announced += length;
    return this.announced <= this.granted;
  }

  canReceiveData(): boolean {
    return this._state !== 'remote_closed' && this._state !== 'closed';
  }

  onData(piece: Buffer): void {
    if (this._state === 'reset' || this.destroyed) return;
    this.pushed += piece.length;
    this.owner.adjustBuffered(piece.length);
    this.push(piece);
    // In flowing mode push() may have delivered it already.
    this.updateWindow();
  }

  onWindowUpdate(delta: number): void {
    this.sendWindow += delta;
    if (this.pending) this.flushPending();
  }

  /** Peer sent FIN. False = illegal in this state. */
  onRemoteFin(): boolean {
    switch (this._state) {
      case 'syn_sent':
      case 'syn_received':
      case 'established':
        this._state = 'remote_closed';
        break;
      case 'local_closed':
        this._state = 'closed';
        this.owner.retire(this);
        break;
      case 'reset':
        return true; // we reset it; frames in flight are harmless
      default:
        return false;
    }
    this.push(null);
    return true;
  }

  onRemoteReset(): void {
    if (this._state === 'reset' || this._state === 'closed') return;
    this._state = 'reset';
    this.owner.retire(this);
    this.destroy(new StreamResetError());
  }

  /** The session died under us. */
  abort(err: Error): void {
    if (this._state === 'reset' || this._state === 'closed') {
      if (!this.destroyed) this.destroy();
      return;
    }
    this._state = 'reset';
    this.destroy(err);
  }

  // ---- Duplex implementation -------------------------------------------------

  override read(size?: number): unknown {
    const chunk = super.read(size);
    this.updateWindow();
    return chunk;
  }

  override _read(): void {
    this.updateWindow();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.pending = chunk;
    this.pendingCb = cb;
    this.flushPending();
  }

  override _final(cb: (err?: Error | null) => void): void {
    switch (this._state) {
      case 'syn_sent':
      case 'syn_received':
      case 'established':
        this._state = 'local_closed';
        break;
      case 'remote_closed':
        this._state = 'closed';
        break;
      default:
        cb();
        return;
    }
    this.owner.sendWindowUpdate(this.id, /* FIN */ 4, 0);
    if (this._state === 'closed') this.owner.retire(this);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this._state !== 'closed' && this._state !== 'reset') {
      this._state = 'reset';
      this.owner.sendWindowUpdate(this.id, /* RST */ 8, 0);
      this.owner.retire(this);
    }
    this.pending = null;
    this.pendingCb = null;
    const unread = this.pushed - this.seenConsumed;
    if (unread > 0) {
      this.seenConsumed = this.pushed;
      this.owner.adjustBuffered(-unread);
    }
    cb(err);
  }

  // ---- internals -------------------------------------------------------------

  private flushPending(): void {
    let chunk = this.pending;
    if (!chunk) return;
    while (chunk.length > 0 && this.sendWindow > 0) {
      const n = Math.min(chunk.length, this.sendWindow, MAX_DATA_FRAME);
      this.owner.sendData(this.id, n === chunk.length ? chunk : chunk.subarray(0, n));
      this.sendWindow -= n;
      chunk = chunk.subarray(n);
    }
    if (chunk.length > 0) {
      this.pending = chunk; // resumes from onWindowUpdate; never polled
      return;
    }
    const cb = this.pendingCb!;
    this.pending = null;
    this.pendingCb = null;
    this.owner.whenWritable(cb);
  }

  /**
   * Give window back for what the consumer has read (never for what merely
   * arrived), so a paused reader stops the sender after one window.
   */
  private updateWindow(): void {
    // _destroy already released everything unread; a read() after it (Node's
    // own resume/flow ticks do that) must not count the dead buffer again.
    if (this.destroyed) return;
    const consumed = this.pushed - this.readableLength;
    if (consumed === this.seenConsumed) return;
    this.owner.adjustBuffered(this.seenConsumed - consumed);
    this.seenConsumed = consumed;
    if (this._state === 'remote_closed' || this._state === 'closed' || this._state === 'reset') return;
    const delta = consumed + this.maxWindow - this.granted;
    if (delta >= this.maxWindow / 2) {
      this.granted += delta;
      this.owner.sendWindowUpdate(this.id, 0, delta);
    }
  }
}
