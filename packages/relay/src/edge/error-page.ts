import type { IncomingMessage, ServerResponse } from 'node:http';
import { reasonPhrase, renderTunnelError, type ErrorSource, type TunnelErrorInfo } from '@tunnel/protocol';

export type { ErrorSource, TunnelErrorInfo };

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

/** Render an error: HTML for a browser, JSON otherwise (the connector answers the same way). */
export const renderError = renderTunnelError;

export function sendError(req: IncomingMessage, res: ServerResponse, info: TunnelErrorInfo, requestId: string): void {
  // Part of an answer already went out: a clean error can no longer be
  // told, so the client connection is cut rather than left mid-message.
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const { type, body } = renderError(info, req.headers.accept, requestId);
  try {
    // Always given: a failed writeHead leaves its status message behind, and
    // node has none for 530 (it would send `530 unknown`).
    res.writeHead(info.status, reasonPhrase(info.status), {
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
