import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';

/**
 * One debug line per finished request, carrying its Tunnel-Request-Id so a
 * request can be followed across relay, connector and origin. `kind` says
 * whether it came from a client (public) or was forwarded by a peer relay.
 * Costs nothing unless the logger is at debug level (the caller checks).
 */
export function logRequestWhenDone(log: Logger, req: IncomingMessage, res: ServerResponse, kind: 'public' | 'peer', requestId: string | undefined): void {
  const started = process.hrtime.bigint();
  // Read now: by 'close' the socket may already be detached from the request.
  const clientIp = req.socket?.remoteAddress;
  res.once('close', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log.debug(
      {
        event: 'request',
        requestId: requestId ?? null,
        kind,
        method: req.method,
        host: req.headers.host,
        path: req.url,
        status: res.headersSent ? res.statusCode : null,
        complete: res.writableFinished,
        ms: Math.round(ms * 100) / 100,
        clientIp,
      },
      'request',
    );
  });
}
