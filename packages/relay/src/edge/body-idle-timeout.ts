import type { IncomingMessage, ServerResponse } from 'node:http';
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
 */
export function watchBodyIdle(req: IncomingMessage, res: ServerResponse, idleMs: number, hits: LimitHits, log: Logger, requestId: () => string | undefined): void {
  if (idleMs <= 0 || req.complete) return;
  const socket = req.socket;
  let seen = socket.bytesRead;
  let last = performance.now();
  const every = Math.max(50, Math.floor(idleMs / 4));
  const timer = setInterval(() => {
    if (req.complete || res.destroyed) return done();
    const now = performance.now();
    const bytes = socket.bytesRead;
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
    res.setHeader('connection', 'close');
    res.once('finish', () => {
      socket.end();
      setTimeout(() => socket.destroy(), 1_000).unref();
    });
    sendError(req, res, { status: 408, code: 'request_body_timeout', source: 'relay', message: `No request body byte for ${Math.round(idleMs / 1000)} s.` }, requestId() ?? '');
  }, every);
  timer.unref();
  const done = () => clearInterval(timer);
  req.once('end', done);
  res.once('close', done);
}
