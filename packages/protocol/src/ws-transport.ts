import type { WebSocket } from 'ws';
import type { Transport, TransportHandlers } from './transport.js';

export interface WsTransportOptions {
  /** Bytes handed to the socket but not yet written before writers are paused. */
  highWaterMark?: number;
}

/**
 * A WebSocket as a byte stream: binary messages are concatenated by the
 * session's parser, so a frame may span messages and a message may carry many
 * frames. The session already coalesces small frames into one message per
 * loop turn and sends large payloads uncopied; this adapter only adds
 * backpressure, counted from ws's own write callbacks.
 */
export function wsTransport(ws: WebSocket, options: WsTransportOptions = {}): Transport {
  const hwm = options.highWaterMark ?? 1024 * 1024;
  let inFlight = 0;
  let full = false;
  let handlers: TransportHandlers | null = null;
  const sendOpts = { binary: true, compress: false };
  // Every message sent in one tick leaves in one writev: ws corks per
  // message, we cork across them (a frame header and its payload are two).
  const socket = (ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket?.uncork();
  };

  return {
    send(chunk) {
      if (ws.readyState !== ws.OPEN) return true;
      if (!corked && socket) {
        corked = true;
        socket.cork();
        process.nextTick(uncork);
      }
      const n = chunk.length;
      inFlight += n;
      ws.send(chunk, sendOpts, (err) => {
        inFlight -= n;
        if (full && !err && inFlight <= hwm / 2) {
          full = false;
          handlers?.drain();
        }
      });
      if (inFlight > hwm) full = true;
      return !full;
    },
    end() {
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000);
    },
    destroy() {
      ws.terminate();
    },
    queuedBytes: () => inFlight,
    pauseReading() {
      ws.pause();
      // Ask for a drain once what is queued is mostly written.
      if (inFlight > 0) full = true;
      else queueMicrotask(() => handlers?.drain());
    },
    resumeReading() {
      if (ws.readyState === ws.OPEN) ws.resume();
    },
    attach(h) {
      handlers = h;
      let closed = false;
      let failure: Error | undefined;
      ws.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
        if (!isBinary) {
          // Text has no meaning on a tunnel connection: treat it as a broken peer.
          failure = new Error('text message on a binary tunnel connection');
          ws.close(1003, 'binary only');
          return;
        }
        h.data(Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data));
      });
      ws.on('error', (e) => {
        failure = e;
      });
      ws.on('close', (code, reason) => {
        if (closed) return;
        closed = true;
        if (!failure && code !== 1000 && code !== 1001) {
          failure = new Error(`websocket closed with ${code}${reason.length ? `: ${reason.toString()}` : ''}`);
        }
        h.close(failure);
      });
    },
  };
}

/**
 * ws client option that sends frames with an all-zero mask, which ws then
 * skips applying. Masking protects intermediaries from browser-controlled
 * payloads; our connector is not a browser and production links are TLS, so
 * the per-byte XOR (the slow client→relay direction) buys nothing here.
 */
export function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/**
 * The ws settings both ends of a connector connection use, so the relay's
 * server and the connector's client cannot drift apart. Messages carry only
 * yamux bytes: no compression (the payload is the origin's, often already
 * compressed, and inflating attacker-sized input is a memory bomb), no text
 * (so no UTF-8 check), and at most one 256 KiB frame or a 64 KiB batch per
 * message, far under the 4 MiB ceiling.
 */
export const TUNNEL_WS_OPTIONS = {
  perMessageDeflate: false,
  maxPayload: 4 * 1024 * 1024,
  skipUTF8Validation: true,
} as const;
