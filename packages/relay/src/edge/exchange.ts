import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import type { RequestHead } from '@tunnel/protocol';
import type { Route } from '../store/types.js';
import { stripV4Mapped } from './client-ip.js';

/**
 * Where the request body comes from when an exchange is sent on:
 * - `client`: piped from the request as it arrives (sent once, never retried
 *   unless the client had finished sending it);
 * - `buffered`: read whole beforehand (a forwarder did, to be able to retry
 *   on another holder); an empty buffer is a bodyless request;
 * - `sealed`: a stream standing for the body (a peer's MAC-checked body: if
 *   it fails, the connector stream is reset, never passed off as complete).
 */
export type ExchangeBody = { readonly kind: 'client' } | { readonly kind: 'buffered'; readonly bytes: Buffer } | { readonly kind: 'sealed'; readonly stream: Readable };

export const CLIENT_BODY: ExchangeBody = { kind: 'client' };

export interface ProxyHooks {
  /** A request finished (or failed) with this status; for metrics. */
  onResponse?(route: Route | undefined, status: number, startedAt: bigint): void;
  /** A request was forwarded to a peer relay. */
  onForward?(peerId: string): void;
  /** A relay-to-relay request was refused (see peerRefusalReason). */
  onPeerRefused?(reason: string): void;
}

/** One public request (or upgrade) on its way to a connector, as every dispatch sees it. */
export interface Exchange {
  readonly req: IncomingMessage;
  readonly route: Route;
  readonly requestId: string;
  /** process.hrtime.bigint() when the relay took the request: the request metrics' clock. */
  readonly startedAt: bigint;
  /** The head sent to the connector: the client's, or the one a peer relay signed. */
  readonly head: RequestHead;
  /** 0 on the first connection tried; one retry on another connection is attempt 1. */
  readonly attempt: number;
  readonly body: ExchangeBody;
}

/**
 * A way to serve an exchange: over a connector stream of this relay
 * (LocalDispatch), or through the peer relay that holds one (PeerDispatch).
 * Each answers false when it has nothing to serve the tunnel with, and has
 * then touched neither the response nor the socket; true means it took the
 * exchange and answers it, errors included.
 */
export interface Dispatch {
  serve(ex: Exchange, res: ServerResponse): boolean;
  upgrade(ex: Exchange, socket: Duplex, clientHead: Buffer): boolean;
}

// Request ids: 16 random bytes per id would cost a syscall-backed RNG call per
// request; a random per-process prefix plus a counter is unique and cheap.
const idPrefix = randomBytes(6).toString('hex');
let idCounter = 0;
export function newRequestId(): string {
  idCounter = (idCounter + 1) % 0x1000000000;
  return `${idPrefix}${idCounter.toString(16).padStart(9, '0')}`;
}

/** The exchange for a public request that arrived on this relay. */
export function publicExchange(req: IncomingMessage, route: Route, kind: RequestHead['kind'], requestId: string, startedAt: bigint): Exchange {
  return { req, route, requestId, startedAt, head: requestHead(req, kind, requestId), attempt: 0, body: CLIENT_BODY };
}

function pairs(raw: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = new Array(raw.length >> 1);
  for (let i = 0, j = 0; i < raw.length; i += 2, j++) out[j] = [raw[i]!, raw[i + 1]!];
  return out;
}

export function requestHead(req: IncomingMessage, kind: RequestHead['kind'], requestId: string): RequestHead {
  const sock = req.socket as { encrypted?: boolean; remoteAddress?: string };
  return {
    kind,
    method: req.method ?? 'GET',
    path: originForm(req.url ?? '/', req.headers.host ?? ''),
    host: req.headers.host ?? '',
    scheme: sock.encrypted ? 'https' : 'http',
    clientIp: stripV4Mapped(sock.remoteAddress ?? ''),
    requestId,
    headers: pairs(req.rawHeaders),
  };
}

const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)([^#]*)$/i;

/**
 * The origin-form of a request target. An absolute-form target (RFC 9112
 * §3.2.2) for the very host it is sent to is reduced to its path; any other
 * target is left as it is, for checkRequestHead to refuse: only paths ever
 * reach a connector, which always talks to its configured origin.
 */
function originForm(target: string, host: string): string {
  if (target.charCodeAt(0) === 0x2f /* / */ || target === '*') return target;
  const m = ABSOLUTE_FORM.exec(target);
  if (!m || m[1]!.toLowerCase() !== host.toLowerCase()) return target;
  const rest = m[2]!;
  return rest.startsWith('/') ? rest : `/${rest}`;
}
