import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { LimitHits } from '../relay-limits.js';
import { sendError } from './error-page.js';

/**
 * A request body must keep coming: past `idleMs` without a byte, the relay
 * answers 408 (nothing sent yet) or aborts the response, and closes the
 * connection. Closing the response resets the request's stream to the
 * connector (request-proxy ends it on the response's close or finish).
 *
 * Progress is read from the socket's byte count on a timer (a quarter of
 * the timeout), so the body's consumers are not touched: no 'data' listener
 * (which would set the body flowing before its consumer is there), no work
 * per chunk. While the relay itself holds the body back (its consumer
 * paused, or its buffer full) the client is not idle, so the clock restarts.
 *
 * An HTTP/2 request shares its connection with other streams and PINGs, so
 * the connection's byte count would keep a stalled body alive: there the
 * request's own stream is counted (node's compatibility layer already reads
 * it in flowing mode, so one more listener changes nothing).
 */
export function watchBodyIdle(req: IncomingMessage, res: ServerResponse, idleMs: number, hits: LimitHits, log: Logger, requestId: () => string | undefined): void {
  if (idleMs <= 0 || req.complete) return;
  const socket = req.socket;
  const progress = bodyBytes(req);
  let seen = progress.read();
  let last = performance.now();
  const every = Math.max(50, Math.floor(idleMs / 4));
  const timer = setInterval(() => {
    if (req.complete || res.destroyed) return done();
    const now = performance.now();
    const bytes = progress.read();
    if (bytes !== seen || req.isPaused() || req.readableLength >= req.readableHighWaterMark) {
      seen = bytes;
      last = now;
      return;
    }
    if (now - last < idleMs) return;
    done();
    hits.hit('body_idle_timeout');
    log.info({ event: 'body-idle-timeout', requestId: requestId(), ip: socket.remoteAddress, idleMs }, 'request body stalled: connection closed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // HTTP/2 has no Connection header; ending the request's socket there ends its stream only.
    if (req.httpVersionMajor < 2) res.setHeader('connection', 'close');
    res.once('finish', () => {
      socket.end();
      setTimeout(() => socket.destroy(), 1_000).unref();
    });
    sendError(req, res, { status: 408, code: 'request_body_timeout', source: 'relay', message: `No request body byte for ${Math.round(idleMs / 1000)} s.` }, requestId() ?? '');
  }, every);
  timer.unref();
  const done = () => {
    clearInterval(timer);
    progress.stop();
  };
  req.once('end', done);
  res.once('close', done);
}

/** Bytes the client has sent so far: its connection's for HTTP/1.1, its stream's for HTTP/2. */
function bodyBytes(req: IncomingMessage): { read(): number; stop(): void } {
  const stream = (req as { stream?: Duplex }).stream;
  if (req.httpVersionMajor < 2 || !stream) return { read: () => req.socket.bytesRead, stop() {} };
  let n = 0;
  const count = (c: Buffer) => (n += c.length);
  stream.on('data', count);
  return { read: () => n, stop: () => stream.off('data', count) };
}
