import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import type { RequestHead } from '@tunnel/protocol';
import { PeerAuth, PeerHeaders, isPeerHeader } from './peer-auth.js';
import type { FleetView } from './fleet-view.js';
import type { Route } from './store/types.js';
import { RelayErrors, sendError } from './error-page.js';
import { proxyOverStream, rawError, stripV4Mapped, upgradeOverStream, type ProxyContext } from './request-proxy.js';
import { readBody } from './read-body.js';

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect']);
/** Bodies up to this size are read before forwarding, so the request can be retried on another holder. */
const RETRY_BODY_LIMIT = 64 * 1024;
const EMPTY = Buffer.alloc(0);
/** A peer's own "I hold no usable connection" answers, given before any stream opens: safe to retry elsewhere. */
const REFUSALS = new Set(['tunnel_offline', 'relay_draining']);

/** `raw`: alternating names and values, as undici (Buffers) or node:http (strings) give them. */
function isRefusal(status: number, raw: ReadonlyArray<Buffer | string>): boolean {
  if (status !== 530 && status !== 503) return false;
  let code = '';
  let source = '';
  for (let k = 0; k < raw.length; k += 2) {
    const name = String(raw[k]).toLowerCase();
    if (name === 'tunnel-error') code = String(raw[k + 1]);
    else if (name === 'tunnel-error-source') source = String(raw[k + 1]);
  }
  return source === 'relay' && REFUSALS.has(code);
}

/**
 * Forwarding a public request to the relay that holds the tunnel's
 * connection, over that relay's peer endpoint. A forwarded request is served
 * only from local connections there, so nothing is ever forwarded twice.
 */
export class PeerForwarder {
  private readonly pools = new Map<string, Pool>();

  constructor(
    private readonly selfId: string,
    private readonly auth: PeerAuth,
    private readonly fleet: FleetView,
    private readonly log: Logger,
    private readonly onForward?: (peerId: string) => void,
    /** CA bundle that verifies https:// peers (unset: the system store plus NODE_EXTRA_CA_CERTS). */
    private readonly ca?: string[],
  ) {}

  private pool(url: string): Pool {
    let p = this.pools.get(url);
    if (!p) {
      p = new Pool(url, { connections: 64, keepAliveTimeout: 30_000, headersTimeout: 0, bodyTimeout: 0, connectTimeout: 5_000, ...(this.ca ? { connect: { ca: this.ca } } : {}) });
      this.pools.set(url, p);
    }
    return p;
  }

  private metaHeaders(req: http.IncomingMessage, requestId: string): string[] {
    const sock = req.socket as { encrypted?: boolean; remoteAddress?: string };
    const time = Date.now();
    const host = req.headers.host ?? '';
    const path = req.url ?? '/';
    const ip = stripV4Mapped(sock.remoteAddress ?? '');
    return [
      PeerHeaders.from, this.selfId,
      PeerHeaders.time, String(time),
      PeerHeaders.requestId, requestId,
      PeerHeaders.clientIp, ip,
      PeerHeaders.scheme, sock.encrypted ? 'https' : 'http',
      PeerHeaders.sig, this.auth.sign(this.selfId, time, requestId, req.method ?? 'GET', host, path),
    ];
  }

  /**
   * Serve a request on this relay's own connections, if it now has one (set
   * by the relay): where a peer turns a forwarded request away, the
   * connector has often just moved its connection here.
   */
  serveLocally: ((route: Route, req: http.IncomingMessage, res: http.ServerResponse, requestId: string, body: Buffer) => boolean) | null = null;

  forward(route: Route, req: http.IncomingMessage, res: http.ServerResponse, requestId: string): boolean {
    const peers = this.fleet.peersFor(route.tunnelId);
    if (peers.length === 0) return false;
    const headers: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const lk = raw[i]!.toLowerCase();
      if (HOP.has(lk) || isPeerHeader(lk)) continue;
      headers.push(raw[i]!, raw[i + 1]!);
    }
    headers.push(...this.metaHeaders(req, requestId));
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const length = Number(req.headers['content-length'] ?? 0);
    if (!chunked && length === 0) {
      this.attempt(route, peers, 0, req, res, headers, EMPTY, requestId);
    } else if (!chunked && length <= RETRY_BODY_LIMIT) {
      // A small body is read first, so a peer that turns the request away
      // (it is draining, or its connection just left) can be retried.
      readBody(req, length).then(
        (body) => {
          if (body === null || body.length !== length) return void res.destroy();
          this.attempt(route, peers, 0, req, res, headers, body, requestId);
        },
        () => res.destroy(), // the client went away mid-body
      );
    } else {
      this.attempt(route, peers, 0, req, res, headers, null, requestId);
    }
    return true;
  }

  /** `body`: the whole body when it was read first (retryable); null: stream `req`, no retry. */
  private attempt(route: Route, peers: { id: string; peerUrl: string }[], i: number, req: http.IncomingMessage, res: http.ServerResponse, headers: string[], body: Buffer | null, requestId: string): void {
    const peer = peers[i]!;
    this.onForward?.(peer.id);
    let started = false;
    let refused = false;
    let resume: (() => void) | null = null;
    let abort: ((e?: Error) => void) | null = null;
    const onDrain = () => resume?.();
    res.on('drain', onDrain);
    const onClose = () => {
      if (!res.writableFinished) abort?.(new Error('client went away'));
    };
    res.once('close', onClose);
    const retry = (why: string): boolean => {
      if (body === null || res.destroyed || res.headersSent) return false;
      res.off('drain', onDrain);
      res.off('close', onClose);
      this.log.debug({ requestId, peer: peer.id, why }, 'peer relay could not serve; retrying');
      if (this.serveLocally?.(route, req, res, requestId, body)) return true;
      if (i + 1 < peers.length) {
        this.attempt(route, peers, i + 1, req, res, headers, body, requestId);
        return true;
      }
      return false;
    };
    const handler: Dispatcher.DispatchHandler = {
      onConnect: (a) => {
        abort = a;
      },
      onHeaders: (status, raw, r, statusText) => {
        if (body !== null && isRefusal(status, raw)) {
          // The peer holds no usable connection any more: try elsewhere
          // rather than pass its 530/503 on.
          refused = true;
          abort?.(new Error('peer refused'));
          return false;
        }
        started = true;
        resume = r;
        const flat: string[] = [];
        for (let k = 0; k < raw.length; k += 2) {
          const name = raw[k]!.toString('latin1');
          if (HOP.has(name.toLowerCase())) continue;
          flat.push(name, raw[k + 1]!.toString('latin1'));
        }
        try {
          res.writeHead(status, statusText || undefined, flat);
        } catch {
          res.destroy();
          return false;
        }
        // Streamed responses (SSE) must not wait for a first body byte; small
        // bodies written this same tick still leave with the head.
        setImmediate(() => {
          if (!res.destroyed && !res.writableEnded) res.flushHeaders();
        });
        return true;
      },
      onData: (chunk) => res.write(chunk),
      onComplete: () => {
        res.off('drain', onDrain);
        res.end();
      },
      onError: (err) => {
        res.off('drain', onDrain);
        if (started) return void res.destroy(err);
        if (refused) {
          if (retry('refused')) return;
          return sendError(req, res, RelayErrors.tunnelOffline(req.headers.host ?? ''), requestId);
        }
        this.log.warn({ requestId, peer: peer.id, err: err.message }, 'forwarding to peer relay failed');
        // Nothing reached the client yet, but the peer may have passed the
        // request on before failing: only a bodyless one is tried again.
        if (body !== null && body.length === 0 && retry(err.message)) return;
        sendError(req, res, RelayErrors.peerFailed(), requestId);
      },
    };
    this.pool(peer.peerUrl).dispatch(
      { method: req.method as Dispatcher.HttpMethod, path: req.url ?? '/', headers, body: body === null ? req : body.length === 0 ? null : body, blocking: false } as Dispatcher.DispatchOptions,
      handler,
    );
  }

  /** Like serveLocally, for an upgrade (set by the relay). */
  upgradeLocally: ((route: Route, req: http.IncomingMessage, socket: Duplex, head: Buffer, requestId: string) => boolean) | null = null;

  forwardUpgrade(route: Route, req: http.IncomingMessage, socket: Duplex, head: Buffer, requestId: string): boolean {
    const peers = this.fleet.peersFor(route.tunnelId);
    if (peers.length === 0) return false;
    this.upgradeAttempt(route, peers, 0, req, socket, head, requestId);
    return true;
  }

  private upgradeAttempt(route: Route, peers: { id: string; peerUrl: string }[], i: number, req: http.IncomingMessage, socket: Duplex, head: Buffer, requestId: string): void {
    const peer = peers[i]!;
    this.onForward?.(peer.id);
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !isPeerHeader(k)) headers[k] = v;
    const meta = this.metaHeaders(req, requestId);
    for (let k = 0; k < meta.length; k += 2) headers[meta[k]!] = meta[k + 1]!;
    const u = new URL(peer.peerUrl);
    const out =
      u.protocol === 'https:'
        ? https.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers, ...(this.ca ? { ca: this.ca } : {}) })
        : http.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers });
    out.on('upgrade', (pres, psock: Duplex, phead: Buffer) => {
      let lines = `HTTP/1.1 101 ${pres.statusMessage ?? 'Switching Protocols'}\r\n`;
      for (let k = 0; k < pres.rawHeaders.length; k += 2) lines += `${pres.rawHeaders[k]}: ${pres.rawHeaders[k + 1]}\r\n`;
      socket.write(lines + '\r\n');
      if (phead.length) socket.write(phead);
      if (head.length) psock.write(head);
      psock.on('error', () => socket.destroy());
      socket.on('error', () => psock.destroy());
      // After a clean end in one direction the pipe ends the other side with
      // its last bytes still queued: only an abrupt close tears down the pair.
      socket.on('close', () => {
        if (!socket.readableEnded) psock.destroy();
      });
      psock.on('close', () => {
        if (!psock.readableEnded) socket.destroy();
      });
      psock.pipe(socket);
      socket.pipe(psock);
    });
    out.on('response', (pres) => {
      if (isRefusal(pres.statusCode ?? 0, pres.rawHeaders)) {
        // The peer holds no usable connection any more; nothing of the
        // client's has been sent yet, so go elsewhere.
        pres.resume();
        this.log.debug({ requestId, peer: peer.id }, 'peer relay could not serve the upgrade; retrying');
        if (this.upgradeLocally?.(route, req, socket, head, requestId)) return;
        if (i + 1 < peers.length) return this.upgradeAttempt(route, peers, i + 1, req, socket, head, requestId);
        return rawError(socket, req, RelayErrors.tunnelOffline(req.headers.host ?? ''), requestId);
      }
      let lines = `HTTP/1.1 ${pres.statusCode} ${pres.statusMessage ?? ''}\r\n`;
      for (let k = 0; k < pres.rawHeaders.length; k += 2) {
        if (pres.rawHeaders[k]!.toLowerCase() === 'connection') continue;
        lines += `${pres.rawHeaders[k]}: ${pres.rawHeaders[k + 1]}\r\n`;
      }
      socket.write(lines + 'Connection: close\r\n\r\n');
      pres.pipe(socket);
    });
    out.on('error', () => rawError(socket, req, RelayErrors.peerFailed(), requestId));
    out.end();
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.destroy()));
  }
}

/** The peer endpoint: serves forwarded requests from this relay's own connections only. */
export function createPeerServer(
  ctx: ProxyContext,
  auth: PeerAuth,
  log: Logger,
  /** HTTPS on the relay's certificate when it has one. */
  createServer: (opts: http.ServerOptions, handler: http.RequestListener) => http.Server | https.Server = (o, h) => http.createServer(o, h),
): http.Server | https.Server {
  const check = (req: http.IncomingMessage): { head: RequestHead; route: Route } | { status: number; code: string; message: string } => {
    const h = (n: string) => {
      const v = req.headers[n];
      return Array.isArray(v) ? v[0] : v;
    };
    const from = h(PeerHeaders.from) ?? '';
    const time = Number(h(PeerHeaders.time));
    const requestId = h(PeerHeaders.requestId) ?? '';
    const why = auth.verify(h(PeerHeaders.sig) ?? '', from, time, requestId, req.method ?? 'GET', req.headers.host ?? '', req.url ?? '/');
    if (why) return { status: 403, code: 'peer_refused', message: `peer request refused: ${why}` };
    const route = ctx.routes.lookup(req.headers.host ?? '');
    if (!route) return { status: 404, code: 'unknown_hostname', message: 'no route for this hostname' };
    const headers: Array<[string, string]> = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (!isPeerHeader(req.rawHeaders[i]!.toLowerCase())) headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    }
    const scheme = h(PeerHeaders.scheme) === 'https' ? 'https' : 'http';
    const isUpgrade = req.headers.upgrade !== undefined;
    return {
      route,
      head: {
        kind: isUpgrade ? 'websocket' : 'http',
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        host: req.headers.host ?? '',
        scheme,
        clientIp: h(PeerHeaders.clientIp) ?? '',
        requestId,
        headers,
      },
    };
  };

  const server = createServer({ requestTimeout: 0, keepAliveTimeout: 35_000 }, (req, res) => {
    const c = check(req);
    if ('status' in c) {
      log.warn({ code: c.code, from: req.headers[PeerHeaders.from] }, c.message);
      res.writeHead(c.status, { 'content-type': 'application/json', 'tunnel-error': c.code, 'tunnel-error-source': 'relay' });
      res.end(JSON.stringify({ error: { code: c.code, message: c.message } }));
      return;
    }
    const conn = ctx.connections.pick(c.route.tunnelId);
    if (!conn) return sendError(req, res, RelayErrors.tunnelOffline(req.headers.host ?? ''), c.head.requestId);
    proxyOverStream(ctx, conn, c.route, req, res, c.head, process.hrtime.bigint(), 0);
  });
  server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    const c = check(req);
    if ('status' in c) return void socket.end(`HTTP/1.1 ${c.status} Refused\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    const conn = ctx.connections.pick(c.route.tunnelId);
    if (!conn) return rawError(socket, req, RelayErrors.tunnelOffline(req.headers.host ?? ''), c.head.requestId);
    upgradeOverStream(ctx, conn, req, socket, head, c.head, c.route);
  });
  return server;
}
