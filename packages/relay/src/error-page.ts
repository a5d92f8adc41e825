import type { IncomingMessage, ServerResponse } from 'node:http';

/** Where a failure happened: a 502 must say whether the relay, the connector or the origin failed. */
export type ErrorSource = 'relay' | 'connector' | 'origin';

export interface TunnelErrorInfo {
  status: number;
  /** Stable machine-readable code, e.g. `tunnel_offline`. */
  code: string;
  source: ErrorSource;
  message: string;
}

export const RelayErrors = {
  unknownHostname: (host: string): TunnelErrorInfo => ({
    status: 404,
    code: 'unknown_hostname',
    source: 'relay',
    message: `No tunnel is routed for ${host}.`,
  }),
  tunnelOffline: (host: string): TunnelErrorInfo => ({
    status: 530,
    code: 'tunnel_offline',
    source: 'relay',
    message: `The tunnel for ${host} has no connector online.`,
  }),
  connectorStreamFailed: (): TunnelErrorInfo => ({
    status: 502,
    code: 'connector_stream_failed',
    source: 'relay',
    message: 'The connection to the connector failed before it answered.',
  }),
  badResponseHead: (): TunnelErrorInfo => ({
    status: 502,
    code: 'connector_bad_response',
    source: 'relay',
    message: 'The connector sent a response the relay could not read.',
  }),
  draining: (): TunnelErrorInfo => ({
    status: 503,
    code: 'relay_draining',
    source: 'relay',
    message: 'This relay is shutting down; retry.',
  }),
  headTooLarge: (why: string): TunnelErrorInfo => ({
    status: 431,
    code: 'request_head_too_large',
    source: 'relay',
    message: `The request head is over the tunnel's limits (${why}).`,
  }),
  badRequest: (why: string): TunnelErrorInfo => ({
    status: 400,
    code: 'bad_request',
    source: 'relay',
    message: `The request cannot be passed on (${why}).`,
  }),
  peerFailed: (): TunnelErrorInfo => ({
    status: 502,
    code: 'peer_relay_failed',
    source: 'relay',
    message: 'The relay holding the tunnel could not be reached.',
  }),
};

/** Render an error for a browser (HTML), an API client (JSON) or anything else (text). */
export function renderError(info: TunnelErrorInfo, accept: string | undefined, requestId: string): { type: string; body: string } {
  const a = accept ?? '';
  if (a.includes('application/json')) {
    return {
      type: 'application/json; charset=utf-8',
      body: JSON.stringify({ error: { status: info.status, code: info.code, source: info.source, message: info.message, requestId } }) + '\n',
    };
  }
  if (a.includes('text/html')) {
    const title = `${info.status} ${info.code.replace(/_/g, ' ')}`;
    return {
      type: 'text/html; charset=utf-8',
      body: `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}code{color:#666}</style></head><body><h1>${esc(title)}</h1><p>${esc(info.message)}</p><p><code>error: ${esc(info.code)} · source: ${info.source} · request id: ${esc(requestId)}</code></p></body></html>\n`,
    };
  }
  return { type: 'text/plain; charset=utf-8', body: `${info.status} ${info.code}: ${info.message} (request id ${requestId})\n` };
}

export function sendError(req: IncomingMessage, res: ServerResponse, info: TunnelErrorInfo, requestId: string): void {
  // Part of an answer already went out: a clean error can no longer be
  // told, so the client connection is cut rather than left mid-message.
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const { type, body } = renderError(info, req.headers.accept, requestId);
  try {
    // A failed writeHead leaves its status message behind; ours is the default one.
    res.statusMessage = '';
    res.writeHead(info.status, {
      'content-type': type,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'tunnel-error': info.code,
      'tunnel-error-source': info.source,
      'tunnel-request-id': requestId,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch {
    res.destroy();
  }
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
