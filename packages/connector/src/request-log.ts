import diagnostics from 'node:diagnostics_channel';
import type { Logger } from 'pino';

interface UndiciRequest {
  origin?: unknown;
  method?: string;
  path?: string;
  headers?: unknown;
}

interface Pending {
  requestId: string;
  started: bigint;
  status: number | null;
}

/**
 * At debug level, one line per origin request with its Tunnel-Request-Id (the
 * id the relay put on the request and returns to the client), so a request
 * can be followed across relay, connector and origin. Uses undici's
 * diagnostics channels (the origin proxy's client), so the request path
 * carries no logging code; nothing is subscribed below debug.
 * Returns the unsubscribe function.
 */
export function logOriginRequests(log: Logger): () => void {
  if (!log.isLevelEnabled('debug')) return () => {};
  const pending = new WeakMap<object, Pending>();
  const onCreate = (m: unknown) => {
    const { request } = m as { request: UndiciRequest };
    const requestId = requestIdOf(request.headers);
    if (requestId) pending.set(request, { requestId, started: process.hrtime.bigint(), status: null });
  };
  const onHeaders = (m: unknown) => {
    const { request, response } = m as { request: UndiciRequest; response: { statusCode: number } };
    const p = pending.get(request);
    if (p) p.status = response.statusCode;
  };
  const done = (request: UndiciRequest, err?: Error) => {
    const p = pending.get(request);
    if (!p) return;
    pending.delete(request);
    log.debug(
      {
        event: 'origin-request',
        requestId: p.requestId,
        method: request.method,
        origin: String(request.origin ?? ''),
        path: request.path,
        status: p.status,
        ms: Math.round(Number(process.hrtime.bigint() - p.started) / 1e4) / 100,
        ...(err ? { err: err.message } : {}),
      },
      err ? 'origin request failed' : 'origin request',
    );
  };
  const onTrailers = (m: unknown) => done((m as { request: UndiciRequest }).request);
  const onError = (m: unknown) => {
    const { request, error } = m as { request: UndiciRequest; error: Error };
    done(request, error);
  };
  // A subscriber that throws would surface as an uncaught exception: never let one.
  const safe = (fn: (m: unknown) => void) => (m: unknown) => {
    try {
      fn(m);
    } catch {
      /* a log line is not worth a crash */
    }
  };
  const subs: Array<[string, (m: unknown) => void]> = [
    ['undici:request:create', safe(onCreate)],
    ['undici:request:headers', safe(onHeaders)],
    ['undici:request:trailers', safe(onTrailers)],
    ['undici:request:error', safe(onError)],
  ];
  for (const [name, fn] of subs) diagnostics.subscribe(name, fn);
  return () => {
    for (const [name, fn] of subs) diagnostics.unsubscribe(name, fn);
  };
}

function requestIdOf(headers: unknown): string | undefined {
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const k = headers[i];
      if (typeof k === 'string' && k.length === 17 && k.toLowerCase() === 'tunnel-request-id') return String(headers[i + 1]);
    }
    return undefined;
  }
  if (typeof headers === 'string') return /(?:^|\r\n)tunnel-request-id: *([^\r]*)/i.exec(headers)?.[1];
  return undefined;
}
