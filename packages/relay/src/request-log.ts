import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';

const ID_IN_HEAD = /\r\ntunnel-request-id: *([^\r]*)\r\n/i;

/**
 * The Tunnel-Request-Id a response carries. The proxy writes its head with a
 * raw header array (not kept by getHeader), so fall back to the serialised
 * head node keeps until the response is done.
 */
export function responseRequestId(res: ServerResponse): string | undefined {
  const h = res.getHeader('tunnel-request-id');
  if (typeof h === 'string') return h;
  const head = (res as unknown as { _header?: unknown })._header;
  if (typeof head !== 'string') return undefined;
  return ID_IN_HEAD.exec(head)?.[1];
}

/**
 * One debug line per finished request, carrying its Tunnel-Request-Id so a
 * request can be followed across relay, connector and origin. `kind` says
 * whether it came from a client (public) or was forwarded by a peer relay.
 * Costs nothing unless the logger is at debug level (the caller checks).
 */
export function logRequestWhenDone(log: Logger, req: IncomingMessage, res: ServerResponse, kind: 'public' | 'peer', peerRequestId?: string): void {
  const started = process.hrtime.bigint();
  // Read now: by 'close' the socket may already be detached from the request.
  const clientIp = req.socket?.remoteAddress;
  res.once('close', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log.debug(
      {
        event: 'request',
        requestId: peerRequestId ?? responseRequestId(res) ?? null,
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
