import type { Duplex } from 'node:stream';

/**
 * What a session needs from the byte stream under it. Message boundaries are
 * meaningless: the session may send a frame in several pieces and receive
 * many frames (or part of one) per chunk.
 */
export interface Transport {
  /** Queue bytes. Returns false once the transport holds more than it wants; `onDrain` follows. */
  send(chunk: Buffer): boolean;
  /** Flush what is queued, then close. */
  end(): void;
  /** Close now, dropping anything queued. */
  destroy(): void;
  attach(handlers: TransportHandlers): void;
  /**
   * Bytes handed to `send` and not yet written out. With `pauseReading` and
   * `resumeReading`, what lets a session stop reading a peer that never reads
   * the answers its frames cause; a transport without them only gets the
   * stall close.
   */
  queuedBytes?(): number;
  /** Stop delivering `data` until `resumeReading`; a `drain` must follow once queued bytes are written. */
  pauseReading?(): void;
  resumeReading?(): void;
}

export interface TransportHandlers {
  data(chunk: Buffer): void;
  drain(): void;
  /** The byte stream is gone; `err` when it did not end cleanly. */
  close(err?: Error): void;
}

const EMPTY = Buffer.alloc(0);

/** A transport over any Node duplex byte stream (a socket, an in-memory pair, a ws stream). */
export function duplexTransport(d: Duplex): Transport {
  let closed = false;
  let drainCb: (() => void) | null = null;
  return {
    send: (chunk) => d.write(chunk),
    end: () => d.end(),
    destroy: () => d.destroy(),
    queuedBytes: () => d.writableLength,
    pauseReading() {
      d.pause();
      // 'drain' follows only a write that returned false: an empty write's
      // callback runs once everything queued before it is written.
      if (!d.writableNeedDrain && !d.writableEnded && !d.destroyed) d.write(EMPTY, () => drainCb?.());
    },
    resumeReading: () => void d.resume(),
    attach(h) {
      drainCb = () => h.drain();
      let failure: Error | undefined;
      const close = () => {
        if (closed) return;
        closed = true;
        h.close(failure);
      };
      d.on('data', (c: Buffer) => h.data(c));
      d.on('drain', () => h.drain());
      d.on('error', (e: Error) => {
        failure = e;
      });
      d.on('end', () => {
        // Peer finished writing; we have no half-open use, so close our side too.
        d.end();
        close();
      });
      d.on('close', close);
    },
  };
}
