import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  checkRequestHead,
  checkResponseHead,
  decodeResponseHead,
  encodeRequestHead,
  readHead,
  type BodyFraming,
  type HeadCheck,
  type HeaderPairs,
  type RequestHead,
  type ResponseHead,
  type YamuxStream,
  RETRYABLE_METHODS,
} from '@tunnel/protocol';
import type { ConnectorConnection } from '../connectors/connector-connection.js';
import type { TunnelConnections } from '../connectors/tunnel-connections.js';
import type { RouteTable } from './route-table.js';
import { RelayErrors, sendError, renderError, type TunnelErrorInfo } from './error-page.js';
import { reasonPhrase } from '@tunnel/protocol';
import type { Route } from '../store/types.js';

export interface ProxyHooks {
  /** A request finished (or failed) with this status; for metrics. */
  onResponse?(route: Route | undefined, status: number, startedAt: bigint): void;
  /** A request was forwarded to a peer relay. */
  onForward?(peerId: string): void;
  /** A relay-to-relay request was refused (see peerRefusalReason). */
  onPeerRefused?(reason: string): void;
}

export interface ProxyContext {
  routes: RouteTable;
  connections: TunnelConnections;
  log: Logger;
  hooks: ProxyHooks;
  /**
   * No local connection for the tunnel: try a peer relay that holds one.
   * Returns false when there is none (the caller answers 530).
   */
  forwardToPeer?(route: Route, req: IncomingMessage, res: ServerResponse, requestId: string): boolean;
  forwardUpgradeToPeer?(route: Route, req: IncomingMessage, socket: Duplex, head: Buffer, requestId: string): boolean;
  /**
   * Access (access/access-gate.ts), asked before any stream is opened or a
   * request forwarded: null to go on now; else wait for true (go on, the
   * assertion added) or false (the gate has answered).
   */
  access?(req: IncomingMessage, route: Route, reply: { res: ServerResponse } | { socket: Duplex }): Promise<boolean> | null;
}

// Request ids: 16 random bytes per id would cost a syscall-backed RNG call per
// request; a random per-process prefix plus a counter is unique and cheap.
const idPrefix = randomBytes(6).toString('hex');
let idCounter = 0;
export function newRequestId(): string {
  idCounter = (idCounter + 1) % 0x1000000000;
  return `${idPrefix}${idCounter.toString(16).padStart(9, '0')}`;
}


function pairs(raw: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = new Array(raw.length >> 1);
  for (let i = 0, j = 0; i < raw.length; i += 2, j++) out[j] = [raw[i]!, raw[i + 1]!];
  return out;
}

export function makeRequestHead(req: IncomingMessage, kind: RequestHead['kind'], requestId: string): RequestHead {
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

export function stripV4Mapped(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

/** Entry point for every public HTTP request; returns the Tunnel-Request-Id it assigned. */
export function handleRequest(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse): string {
  const started = process.hrtime.bigint();
  const requestId = newRequestId();
  const host = req.headers.host;
  const route = host ? ctx.routes.lookup(host) : undefined;
  if (!route) {
    fail(ctx, req, res, undefined, RelayErrors.unknownHostname(host ?? '(no Host header)'), requestId, started);
    return requestId;
  }
  const waiting = ctx.access?.(req, route, { res });
  if (waiting) void waiting.then((go) => go && !res.destroyed && dispatchRequest(ctx, req, res, route, requestId, started));
  else dispatchRequest(ctx, req, res, route, requestId, started);
  return requestId;
}

function dispatchRequest(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse, route: Route, requestId: string, started: bigint): void {
  const conn = ctx.connections.pick(route.tunnelId);
  if (!conn) {
    if (!ctx.forwardToPeer?.(route, req, res, requestId)) fail(ctx, req, res, route, RelayErrors.tunnelOffline(req.headers.host!), requestId, started);
    return;
  }
  proxyOverStream(ctx, conn, route, req, res, makeRequestHead(req, 'http', requestId), started, 0);
}

/** Proxy one request over a stream of `conn`; also used for requests forwarded by a peer relay. */
export function proxyOverStream(
  ctx: ProxyContext,
  conn: ConnectorConnection,
  route: Route,
  req: IncomingMessage,
  res: ServerResponse,
  head: RequestHead,
  started: bigint,
  attempt: number,
  /**
   * The request body, already read (a peer forwarder buffered it to be able
   * to retry), or a stream standing for it (a peer's MAC-checked body: if it
   * fails, the connector stream is reset); else `req` is piped.
   */
  readBody?: Buffer | Readable,
): void {
  const requestId = head.requestId;
  const checked = checkRequestHead(head);
  if (!checked.ok) {
    ctx.log.info({ requestId, reason: checked.reason }, 'bad request head from client');
    return fail(ctx, req, res, route, RelayErrors.badRequest(checked.reason), requestId, started);
  }
  let stream: YamuxStream;
  try {
    stream = conn.openStream();
  } catch {
    const other = attempt === 0 ? ctx.connections.pick(route.tunnelId, conn) : undefined;
    if (other) return proxyOverStream(ctx, other, route, req, res, head, started, attempt + 1, readBody);
    return fail(ctx, req, res, route, RelayErrors.connectorStreamFailed(), requestId, started);
  }
  const given = Buffer.isBuffer(readBody) ? readBody : undefined;
  const source: Readable = readBody !== undefined && !Buffer.isBuffer(readBody) ? readBody : req;
  const bodyless = given ? given.length === 0 : checked.body.kind === 'none';
  let encoded: Buffer;
  try {
    encoded = encodeRequestHead(head);
  } catch (e) {
    // Over the head limits (header count/size): refuse, never crash.
    stream.destroy();
    return fail(ctx, req, res, route, RelayErrors.headTooLarge((e as Error).message), requestId, started);
  }
  if (bodyless) {
    stream.end(encoded);
    if (source !== req) source.resume();
  } else if (given) {
    stream.write(encoded);
    stream.end(given);
  } else {
    stream.write(encoded);
    // A body source that fails (a bad MAC) resets the stream: the origin
    // sees an aborted request, never a short one passed off as complete.
    if (source !== req) source.once('error', (e) => stream.destroy(e));
    source.pipe(stream);
  }

  let state: 'waiting' | 'streaming' | 'done' = 'waiting';
  const onStreamError = (err: Error) => {
    if (state === 'done') return;
    if (state === 'streaming') {
      // Mid-body: abort the client's response so a short body is never passed off as complete.
      state = 'done';
      ctx.log.debug({ requestId, err: err.message }, 'stream failed mid-response');
      res.destroy(err);
      return;
    }
    state = 'done';
    if ((source === req && req.readableEnded) || given !== undefined || bodyless) {
      if (attempt === 0 && (bodyless || RETRYABLE_METHODS.has(head.method)) && !res.destroyed) {
        const other = ctx.connections.pick(route.tunnelId, conn);
        if (other) {
          ctx.log.debug({ requestId, err: err.message }, 'retrying on another connection');
          return proxyOverStream(ctx, other, route, req, res, head, started, attempt + 1, readBody);
        }
      }
    }
    fail(ctx, req, res, route, RelayErrors.connectorStreamFailed(), requestId, started);
  };
  stream.on('error', onStreamError);

  /** The connector's answer cannot be passed on: a 502 if nothing went out yet, else the client connection is cut. */
  const refuse = (reason: string) => {
    const wasStreaming = state === 'streaming';
    state = 'done';
    stream.destroy();
    ctx.log.warn({ requestId, reason }, 'bad response from connector');
    if (wasStreaming && res.headersSent) {
      // Never a short body passed off as complete, never bytes past the declared length.
      res.destroy();
      ctx.hooks.onResponse?.(route, 502, started);
      return;
    }
    fail(ctx, req, res, route, RelayErrors.badResponseHead(), requestId, started);
  };

  readHead(stream, (err, body) =>
    lastResort(ctx, requestId, () => refuse('relay error'), () => {
      if (err) {
        onStreamError(err);
        stream.destroy();
        return;
      }
      if (state !== 'waiting') return;
      const ok = connectorAnswer(body!, head.method, false);
      if (!ok.ok) return refuse(ok.reason);
      const rh = ok.head;
      state = 'streaming';
      // The rest of the message that carried the head (body, FIN) is parsed
      // before the next tick: decide then between one write and a pipe.
      process.nextTick(() => lastResort(ctx, requestId, () => refuse('relay error'), () => sendBody(rh, ok.headers, ok.body)));
    }),
  );

  const sendBody = (rh: ResponseHead, headers: HeaderPairs, framing: BodyFraming) => {
    if (state !== 'streaming' || res.destroyed) return;
    const flat: string[] = new Array(headers.length * 2 + 2);
    let i = 0;
    for (const [k, v] of headers) {
      flat[i++] = k;
      flat[i++] = v;
    }
    flat[i++] = 'Tunnel-Request-Id';
    flat[i] = requestId;
    if (stream.remoteEnded) {
      // The whole response is already here (the common small response):
      // check its length, then head and body leave in one write, with no
      // pipe to set up.
      const parts: Buffer[] = [];
      let total = 0;
      let c: Buffer | null;
      while ((c = stream.read() as Buffer | null) !== null) {
        parts.push(c);
        total += c.length;
      }
      const want = framing.kind === 'length' ? framing.length : framing.kind === 'none' ? 0 : total;
      if (total !== want) return refuse(`body of ${total} bytes where the head declares ${want}`);
      state = 'done';
      res.writeHead(rh.status, rh.statusText || undefined, flat);
      res.end(parts.length === 0 ? undefined : parts.length === 1 ? parts[0] : Buffer.concat(parts, total));
      ctx.hooks.onResponse?.(route, rh.status, started);
      return;
    }
    res.writeHead(rh.status, rh.statusText || undefined, flat);
    pumpBody(stream, res, framing, refuse, () => {
      if (state !== 'streaming') return;
      state = 'done';
      ctx.hooks.onResponse?.(route, rh.status, started);
    });
    // writeHead only stores the head; node sends it with the first body
    // write. A body that comes later (SSE, streamed or long-held responses)
    // must not hold the head back: flush it once the bytes already here
    // (usually the whole small body) have had their turn to go out with it.
    setImmediate(() => {
      if (!res.writableEnded && !res.destroyed) res.flushHeaders();
    });
  };

  res.once('finish', () => {
    // The origin answered (e.g. 413) before reading the whole request body.
    // The response is out, so nothing is lost by resetting the stream; left
    // half-open it would never close. The client's remaining body is read and
    // discarded here (as node does for an unread body) so its connection
    // stays usable, rather than closed under a response still in flight.
    if (!stream.writableEnded && !stream.destroyed) {
      ctx.log.debug({ event: 'body-unread', requestId }, 'response finished before the request body: stream reset');
      req.unpipe(stream);
      req.resume();
      stream.destroy();
    }
  });
  res.once('close', () => {
    // Client went away before the response finished: cancel upstream.
    if (!res.writableFinished && !stream.destroyed) {
      state = 'done';
      ctx.log.debug({ event: 'client-cancelled', requestId }, 'client went away before the response finished: stream reset');
      stream.destroy();
    }
  });
}

/**
 * Stream a body to `to` holding it to its declared framing: a byte past the
 * declared length, or an end short of it, goes to `refuse` (which cuts the
 * client connection) instead of reaching the client, where extra bytes would
 * read as a forged next response and missing ones would eat the next one.
 */
function pumpBody(from: YamuxStream, to: ServerResponse | Duplex, framing: BodyFraming, refuse: (why: string) => void, done: () => void): void {
  const limit = framing.kind === 'length' ? framing.length : framing.kind === 'none' ? 0 : -1;
  let sent = 0;
  let failed = false;
  const resume = () => from.resume();
  from.on('data', (c: Buffer) => {
    if (failed) return;
    if (limit >= 0 && sent + c.length > limit) {
      failed = true;
      return refuse(`body longer than the declared ${limit} bytes`);
    }
    sent += c.length;
    if (!to.write(c)) {
      from.pause();
      to.once('drain', resume);
    }
  });
  from.once('end', () => {
    if (failed) return;
    if (limit >= 0 && sent !== limit) return refuse(`body of ${sent} bytes where the head declares ${limit}`);
    to.end();
    done();
  });
  from.resume();
}

/**
 * The last resort for one request: a throw in its handling (a bug, or input
 * no check foresaw) ends that request with a logged reason, never the process.
 */
export function lastResort(ctx: { log: Logger }, requestId: string, end: () => void, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    ctx.log.error({ requestId, err: (e as Error).message, stack: (e as Error).stack }, 'request handler failed: request ended');
    try {
      end();
    } catch {
      /* ending it failed too: nothing more to do for this request */
    }
  }
}

function fail(
  ctx: ProxyContext,
  req: IncomingMessage,
  res: ServerResponse,
  route: Route | undefined,
  info: TunnelErrorInfo,
  requestId: string,
  started: bigint,
): void {
  ctx.log.debug({ requestId, code: info.code, host: req.headers.host }, 'request failed at relay');
  sendError(req, res, info, requestId);
  ctx.hooks.onResponse?.(route, info.status, started);
}

/** A public HTTP upgrade (WebSocket): the stream becomes a raw two-way pipe after a 101. */
export function handleUpgrade(ctx: ProxyContext, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const started = process.hrtime.bigint();
  const requestId = newRequestId();
  socket.on('error', () => {});
  const host = req.headers.host;
  const route = host ? ctx.routes.lookup(host) : undefined;
  if (!route) return upgradeFailed(ctx, socket, req, undefined, RelayErrors.unknownHostname(host ?? '(no Host header)'), requestId, started);
  const waiting = ctx.access?.(req, route, { socket });
  if (waiting) void waiting.then((go) => go && !socket.destroyed && dispatchUpgrade(ctx, req, socket, head, route, requestId, started));
  else dispatchUpgrade(ctx, req, socket, head, route, requestId, started);
}

function dispatchUpgrade(ctx: ProxyContext, req: IncomingMessage, socket: Duplex, head: Buffer, route: Route, requestId: string, started: bigint): void {
  const conn = ctx.connections.pick(route.tunnelId);
  if (!conn) {
    if (ctx.forwardUpgradeToPeer?.(route, req, socket, head, requestId)) return;
    return upgradeFailed(ctx, socket, req, route, RelayErrors.tunnelOffline(req.headers.host!), requestId, started);
  }
  upgradeOverStream(ctx, conn, req, socket, head, makeRequestHead(req, 'websocket', requestId), route, started);
}

/** An upgrade answered with an error by this relay: counted like any request. */
function upgradeFailed(ctx: ProxyContext, socket: Duplex, req: IncomingMessage, route: Route | undefined, info: TunnelErrorInfo, requestId: string, started: bigint): void {
  rawError(socket, req, info, requestId);
  ctx.hooks.onResponse?.(route, info.status, started);
}

export function upgradeOverStream(
  ctx: ProxyContext,
  conn: ConnectorConnection,
  req: IncomingMessage,
  socket: Duplex,
  clientHead: Buffer,
  head: RequestHead,
  /** For the request metrics: counted when the answer's head is known (101 or not). */
  route?: Route,
  started: bigint = process.hrtime.bigint(),
): void {
  const checked = checkRequestHead(head);
  if (!checked.ok) {
    ctx.log.info({ requestId: head.requestId, reason: checked.reason }, 'bad request head from client');
    return upgradeFailed(ctx, socket, req, route, RelayErrors.badRequest(checked.reason), head.requestId, started);
  }
  let stream: YamuxStream;
  try {
    stream = conn.openStream();
  } catch {
    return upgradeFailed(ctx, socket, req, route, RelayErrors.connectorStreamFailed(), head.requestId, started);
  }
  stream.on('error', () => resetSocket(socket));
  socket.on('close', () => stream.destroy());
  let encoded: Buffer;
  try {
    encoded = encodeRequestHead(head);
  } catch (e) {
    stream.destroy();
    return upgradeFailed(ctx, socket, req, route, RelayErrors.headTooLarge((e as Error).message), head.requestId, started);
  }
  stream.write(encoded);
  if (clientHead.length > 0) stream.write(clientHead);
  readHead(stream, (err, body) =>
    lastResort(ctx, head.requestId, () => resetSocket(socket), () => {
      if (err) return upgradeFailed(ctx, socket, req, route, RelayErrors.connectorStreamFailed(), head.requestId, started);
      const ok = connectorAnswer(body!, head.method, true);
      if (!ok.ok) return refuseUpgrade(ok.reason);
      const rh = ok.head;
      // Built from checked pieces only: no CR LF can reach the client from a connector.
      let lines = `HTTP/1.1 ${rh.status} ${rh.statusText || STATUS_CODES[rh.status] || ''}\r\n`;
      for (const [k, v] of ok.headers) lines += `${k}: ${v}\r\n`;
      // After a refusal the connection ends with the body: it is never reused.
      lines += rh.status === 101 ? 'Connection: Upgrade\r\n' : 'Connection: close\r\n';
      lines += `Tunnel-Request-Id: ${head.requestId}\r\n\r\n`;
      socket.write(lines, 'latin1');
      ctx.hooks.onResponse?.(route, rh.status, started);
      if (rh.status === 101) {
        stream.pipe(socket);
        socket.pipe(stream);
        return;
      }
      // Origin refused the upgrade: relay its answer, held to its length, then close.
      pumpBody(stream, socket, ok.body, (why) => {
        ctx.log.warn({ requestId: head.requestId, reason: why }, 'bad response from connector');
        stream.destroy();
        resetSocket(socket);
      }, () => {});
    }),
  );

  function refuseUpgrade(reason: string): void {
    ctx.log.warn({ requestId: head.requestId, reason }, 'bad response from connector');
    stream.destroy();
    upgradeFailed(ctx, socket, req, route, RelayErrors.badResponseHead(), head.requestId, started);
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

/**
 * End an upgraded client connection whose tunnel stream was reset with a TCP
 * RST rather than a FIN, so a raw TCP client (`tunnel access tcp`) sees a cut
 * connection, not a clean end. TLS sockets cannot be reset; they are destroyed.
 */
function resetSocket(socket: Duplex): void {
  const s = socket as Duplex & { resetAndDestroy?: () => void };
  try {
    if (typeof s.resetAndDestroy === 'function') return void s.resetAndDestroy();
  } catch {
    /* not a plain TCP socket */
  }
  socket.destroy();
}

/** A connector's response head, decoded and checked: the one gate both the plain and the upgrade path pass through. */
function connectorAnswer(body: Buffer, method: string, upgrade: boolean): HeadCheck<{ head: ResponseHead; headers: HeaderPairs; body: BodyFraming }> {
  let head: ResponseHead;
  try {
    head = decodeResponseHead(body);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const checked = checkResponseHead(head, { method, upgrade });
  return checked.ok ? { ok: true, head, headers: checked.headers, body: checked.body } : checked;
}
