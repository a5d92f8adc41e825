import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { LimitHits } from './relay-limits.js';
import { sendError } from './error-page.js';

/**
 * A request body must keep coming: past `idleMs` without a byte, the relay
 * answers 408 (nothing sent yet) or aborts the response, and closes the
 * connection. Closing the response resets the request's stream to the
 * connector (request-proxy ends it on the response's close or finish).
 *
 * Per chunk this only stores a timestamp; the one timer per request re-arms
 * itself for the remaining time when it fires early.
 */
export function watchBodyIdle(req: IncomingMessage, res: ServerResponse, idleMs: number, hits: LimitHits, log: Logger, requestId: () => string | undefined): void {
  if (idleMs <= 0 || req.complete) return;
  let last = performance.now();
  const onData = () => {
    last = performance.now();
  };
  const check = () => {
    if (req.complete || res.destroyed) return;
    const left = idleMs - (performance.now() - last);
    if (left > 0) {
      timer = setTimeout(check, left + 1);
      timer.unref();
      return;
    }
    done();
    hits.hit('body_idle_timeout');
    log.info({ event: 'body-idle-timeout', requestId: requestId(), ip: req.socket.remoteAddress, idleMs }, 'request body stalled: connection closed');
    const socket = req.socket;
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
  };
  let timer: NodeJS.Timeout = setTimeout(check, idleMs);
  timer.unref();
  const done = () => {
    clearTimeout(timer);
    req.off('data', onData);
  };
  req.on('data', onData);
  req.once('end', done);
  res.once('close', done);
}
