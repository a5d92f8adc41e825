import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Route } from '../store/types.js';
import type { ProxyHooks } from './exchange.js';
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

/** An error answer written straight to a socket (upgrade paths have no ServerResponse). */
export function rawError(socket: Duplex, req: IncomingMessage, info: TunnelErrorInfo, requestId: string, extraHeaders = ''): void {
  const { type, body } = renderError(info, req.headers.accept, requestId);
  socket.end(
    `HTTP/1.1 ${info.status} ${reasonPhrase(info.status)}\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extraHeaders}` +
      `Tunnel-Error: ${info.code}\r\nTunnel-Error-Source: ${info.source}\r\nTunnel-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** A request as its answer is counted and logged: an exchange, or a request that found no route. */
export interface Answered {
  readonly req: IncomingMessage;
  readonly route: Route | undefined;
  readonly requestId: string;
  readonly startedAt: bigint;
}

/** The relay's own error answers on the request path, each counted like any response. */
export class ErrorAnswers {
  constructor(
    private readonly log: Logger,
    private readonly hooks: ProxyHooks,
  ) {}

  send(a: Answered, res: ServerResponse, info: TunnelErrorInfo): void {
    this.log.debug({ requestId: a.requestId, code: info.code, host: a.req.headers.host }, 'request failed at relay');
    sendError(a.req, res, info, a.requestId);
    this.hooks.onResponse?.(a.route, info.status, a.startedAt);
  }

  /** On an upgrade's socket, which has no ServerResponse. */
  raw(a: Answered, socket: Duplex, info: TunnelErrorInfo): void {
    rawError(socket, a.req, info, a.requestId);
    this.hooks.onResponse?.(a.route, info.status, a.startedAt);
  }
}
