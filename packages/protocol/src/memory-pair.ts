import { Duplex } from 'node:stream';

/**
 * Two in-memory duplex ends joined back to back, with real backpressure: a
 * write completes only once the other end's reader has room. For tests and
 * the in-memory benchmark.
 */
export function memoryDuplexPair(highWaterMark = 256 * 1024): [Duplex, Duplex] {
  const a = new MemoryEnd(highWaterMark);
  const b = new MemoryEnd(highWaterMark);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

class MemoryEnd extends Duplex {
  peer!: MemoryEnd;
  private waiting: (() => void) | null = null;

  constructor(hwm: number) {
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.peer.push(chunk)) cb();
    else this.peer.waiting = cb;
  }

  override _read(): void {
    const cb = this.waiting;
    if (cb) {
      this.waiting = null;
      cb();
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.peer.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.destroy();
    cb(err);
  }
}
