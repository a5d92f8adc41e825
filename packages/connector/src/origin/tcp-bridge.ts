import net from 'node:net';
import { encodeResponseHead, type RequestHead, type YamuxStream } from '@tunnel/protocol';
import { classifyOriginError, type OriginFailure } from './origin-errors.js';

/**
 * The Upgrade token `tunnel access tcp` asks for. After the 101 the request
 * stream carries the TCP bytes as they are: the relay already pipes any
 * upgraded connection raw, so TCP needs no framing of its own (cloudflared
 * wraps it in WebSocket messages because its edge is a shared HTTP proxy).
 */
export const TCP_UPGRADE = 'tunnel-tcp';

/** Whether a request head asks to become a raw TCP stream. */
export function wantsTcp(head: RequestHead): boolean {
  if (head.kind !== 'websocket') return false;
  for (const [k, v] of head.headers) if (k.toLowerCase() === 'upgrade') return v.trim().toLowerCase() === TCP_UPGRADE;
  return false;
}

export interface TcpBridgeHooks {
  /** The origin accepted the connection and the client got its 101. */
  connected(): void;
  /** Connecting failed: answer the request with this failure instead. */
  failed(f: OriginFailure): void;
}

/**
 * Connect to a TCP origin and, once it accepts, answer 101 and join the
 * stream and the socket. Half-close travels both ways (a FIN on the stream
 * ends the origin socket's writes and vice versa), which is what protocols
 * like SSH and `nc -N` rely on.
 */
export function bridgeTcp(stream: YamuxStream, target: { host: string; port: number }, connectTimeoutMs: number, hooks: TcpBridgeHooks): void {
  type State = 'connecting' | 'joined' | 'done';
  let state: State = 'connecting';
  const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
  socket.setNoDelay(true);
  const timer = setTimeout(() => socket.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), connectTimeoutMs);
  socket.once('connect', () => {
    clearTimeout(timer);
    if (state !== 'connecting') return;
    state = 'joined';
    stream.write(encodeResponseHead({ status: 101, statusText: 'Switching Protocols', headers: [['Upgrade', TCP_UPGRADE], ['Connection', 'Upgrade']] }));
    hooks.connected();
    stream.pipe(socket);
    socket.pipe(stream);
  });
  socket.on('error', (err) => {
    clearTimeout(timer);
    if (state === 'connecting') {
      state = 'done';
      hooks.failed(classifyOriginError(err));
    } else {
      // A reset, not a clean end: the client must not take a cut stream for a whole one.
      stream.destroy(err);
    }
  });
  socket.on('close', () => {
    clearTimeout(timer);
    state = 'done';
  });
  stream.once('close', () => {
    // A stream that closed with both directions finished leaves the socket to
    // end by itself (its last writes may still be queued); any other close is
    // a reset or a client that went away, and the origin connection goes too.
    const graceful = stream.readableEnded && stream.writableFinished;
    if (state === 'connecting' || !graceful) socket.destroy();
    if (state === 'connecting') state = 'done';
  });
}
