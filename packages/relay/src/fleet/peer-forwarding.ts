import http from 'node:http';
import https from 'node:https';
import type { Duplex, Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { checkResponseHead, type HeaderPairs, type RequestHead } from '@tunnel/protocol';
import { PeerAuth, PeerHeaders, peerRefusalReason, headersDigest, isSignedHeader, readSignedRequest, sha256, upgradeProtocol, type BodySeal, type SignedRequest } from './peer-auth.js';
import type { FleetView } from './fleet-view.js';
import type { Route } from '../store/types.js';
import { RelayErrors, sendError } from '../edge/error-page.js';
import { proxyOverStream, rawError, stripV4Mapped, upgradeOverStream, type ProxyContext } from '../edge/request-proxy.js';
import { readBody } from '../control/read-body.js';

/** Bodies up to this size are read before forwarding, so the request can be retried on another holder. */
const RETRY_BODY_LIMIT = 64 * 1024;
const EMPTY = Buffer.alloc(0);
/** Errors before the connection to a peer opened: the request was never sent. */
const PEER_CONNECT_FAILURES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

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

  /**
   * The signed fields of one attempt: each attempt (a retry on another
   * holder included) gets its own nonce, since the replay cache is shared.
   */
  private signed(req: http.IncomingMessage, requestId: string, headers: string, body: BodySeal): { fields: SignedRequest; sig: string; pairs: string[] } {
    const sock = req.socket as { encrypted?: boolean; remoteAddress?: string };
    const fields: SignedRequest = {
      from: this.selfId,
      time: Date.now(),
      nonce: PeerAuth.nonce(),
      requestId,
      method: req.method ?? 'GET',
      host: req.headers.host ?? '',
      target: req.url ?? '/',
      clientIp: stripV4Mapped(sock.remoteAddress ?? ''),
      scheme: sock.encrypted ? 'https' : 'http',
      headers,
      body,
    };
    const sig = this.auth.sign(fields);
    return { fields, sig, pairs: this.auth.headerPairs(fields, sig) };
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
    // Exactly the headers the digest covers are sent: whatever the hop adds
    // on its own (framing, connection) the receiver neither signs nor passes on.
    const headers: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      if (isSignedHeader(raw[i]!.toLowerCase())) headers.push(raw[i]!, raw[i + 1]!);
    }
    const digest = headersDigest(headers);
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const length = Number(req.headers['content-length'] ?? 0);
    if (!chunked && req.headers['content-length'] === undefined) {
      this.attempt(route, peers, 0, req, res, headers, digest, EMPTY, requestId);
    } else if (!chunked && length <= RETRY_BODY_LIMIT) {
      // A small body is read first, so a peer that turns the request away
      // (it is draining, or its connection just left) can be retried.
      readBody(req, length).then(
        (body) => {
          if (body === null || body.length !== length) return void res.destroy();
          this.attempt(route, peers, 0, req, res, headers, digest, body, requestId);
        },
        () => res.destroy(), // the client went away mid-body
      );
    } else {
      this.attempt(route, peers, 0, req, res, headers, digest, null, requestId);
    }
    return true;
  }

  /** `body`: the whole body when it was read first (retryable); null: stream `req`, no retry. */
  private attempt(route: Route, peers: { id: string; peerUrl: string }[], i: number, req: http.IncomingMessage, res: http.ServerResponse, headers: string[], digest: string, body: Buffer | null, requestId: string): void {
    const peer = peers[i]!;
    // `body` EMPTY with a Content-Length: 0 from the client is a zero-length digest, not `none`.
    const seal: BodySeal =
      body === null
        ? { kind: 'stream', length: req.headers['transfer-encoding'] !== undefined ? 'chunked' : Number(req.headers['content-length']) }
        : body.length === 0 && req.headers['content-length'] === undefined
          ? { kind: 'none' }
          : { kind: 'digest', length: body.length, sha256: sha256(body) };
    const signed = this.signed(req, requestId, digest, seal);
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
        this.attempt(route, peers, i + 1, req, res, headers, digest, body, requestId);
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
        const checked = checkResponseHead({ status, statusText: statusText ?? '', headers: pairsOf(raw) }, { method: req.method ?? 'GET', upgrade: false });
        if (!checked.ok) {
          this.log.warn({ requestId, peer: peer.id, reason: checked.reason }, 'bad response from peer relay');
          abort?.(new Error(`bad response from peer relay: ${checked.reason}`));
          return false;
        }
        started = true;
        resume = r;
        const flat: string[] = [];
        for (const [k, v] of checked.headers) flat.push(k, v);
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
        // request on before failing: only a bodyless one is tried again --
        // or any whose connection never opened (a peer killed before its
        // presence expired): then nothing was sent at all.
        const notSent = PEER_CONNECT_FAILURES.has((err as NodeJS.ErrnoException).code ?? '');
        if (body !== null && (body.length === 0 || notSent) && retry(err.message)) return;
        sendError(req, res, RelayErrors.peerFailed(), requestId);
      },
    };
    let sendBody: Buffer | Duplex | null;
    if (body !== null) sendBody = body.length === 0 ? null : body;
    else {
      const sealed = this.auth.sealStream(signed.sig);
      req.on('error', (e) => sealed.destroy(e));
      sendBody = req.pipe(sealed);
    }
    this.pool(peer.peerUrl).dispatch(
      { method: req.method as Dispatcher.HttpMethod, path: req.url ?? '/', headers: headers.concat(signed.pairs), body: sendBody, blocking: false } as Dispatcher.DispatchOptions,
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
    // A flat list keeps the client's order and duplicates, as the digest does;
    // Connection/Upgrade are the hop's own (not signed) and are set again here.
    const headers: string[] = [];
    const raw = req.rawHeaders;
    for (let k = 0; k < raw.length; k += 2) if (isSignedHeader(raw[k]!.toLowerCase())) headers.push(raw[k]!, raw[k + 1]!);
    const protocol = upgradeProtocol(req.headers.upgrade) ?? 'websocket';
    const signed = this.signed(req, requestId, headersDigest(headers), { kind: 'upgrade', protocol });
    headers.push(...signed.pairs, 'Connection', 'Upgrade', 'Upgrade', protocol);
    const u = new URL(peer.peerUrl);
    const out =
      u.protocol === 'https:'
        ? https.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers, ...(this.ca ? { ca: this.ca } : {}) })
        : http.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers });
    out.on('upgrade', (pres, psock: Duplex, phead: Buffer) => {
      const lines = headLines(pres, req.method ?? 'GET');
      if (lines === null) {
        this.log.warn({ requestId, peer: peer.id }, 'bad upgrade answer from peer relay');
        psock.destroy();
        return rawError(socket, req, RelayErrors.peerFailed(), requestId);
      }
      socket.write(lines, 'latin1');
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
      const lines = headLines(pres, req.method ?? 'GET');
      if (lines === null) {
        this.log.warn({ requestId, peer: peer.id }, 'bad upgrade answer from peer relay');
        pres.destroy();
        return rawError(socket, req, RelayErrors.peerFailed(), requestId);
      }
      socket.write(lines, 'latin1');
      pres.pipe(socket);
    });
    out.on('error', () => rawError(socket, req, RelayErrors.peerFailed(), requestId));
    out.end();
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.destroy()));
  }
}

function pairsOf(raw: ReadonlyArray<Buffer | string>): HeaderPairs {
  const out: HeaderPairs = new Array(raw.length >> 1);
  for (let k = 0, j = 0; k < raw.length; k += 2, j++) out[j] = [String(raw[k]), String(raw[k + 1])];
  return out;
}

/**
 * A peer relay's answer to a forwarded upgrade, as the head for the client,
 * built from checked pieces only; null if it does not pass the checks. A
 * refusal (not 101) ends with its body: `Connection: close`, no length.
 */
function headLines(pres: http.IncomingMessage, method: string): string | null {
  const status = pres.statusCode ?? 0;
  const checked = checkResponseHead({ status, statusText: pres.statusMessage ?? '', headers: pairsOf(pres.rawHeaders) }, { method, upgrade: true });
  if (!checked.ok) return null;
  let lines = `HTTP/1.1 ${status} ${pres.statusMessage || http.STATUS_CODES[status] || ''}\r\n`;
  for (const [k, v] of checked.headers) {
    if (status !== 101 && k.toLowerCase() === 'content-length') continue;
    lines += `${k}: ${v}\r\n`;
  }
  return lines + (status === 101 ? 'Connection: Upgrade\r\n\r\n' : 'Connection: close\r\n\r\n');
}

type Checked = { head: RequestHead; route: Route; sig: string; fields: SignedRequest; body: BodySeal } | { status: number; code: string; message: string };

/** Largest body a `digest` seal may announce: the forwarder reads only up to RETRY_BODY_LIMIT whole. */
const MAX_DIGEST_BODY = RETRY_BODY_LIMIT;

/** The peer endpoint: serves forwarded requests from this relay's own connections only. */
export function createPeerServer(
  ctx: ProxyContext,
  auth: PeerAuth,
  log: Logger,
  /** HTTPS on the relay's certificate when it has one. */
  createServer: (opts: http.ServerOptions, handler: http.RequestListener) => http.Server | https.Server = (o, h) => http.createServer(o, h),
): http.Server | https.Server {
  const refusal = (message: string): Checked => ({ status: 403, code: 'peer_refused', message: `peer request refused: ${message}` });
  const check = async (req: http.IncomingMessage, upgrade: boolean): Promise<Checked> => {
    const read = readSignedRequest(req);
    if (typeof read === 'string') return refusal(read);
    const { fields, sig } = read;
    // An upgrade's protocol comes from the signed seal, never from the hop's own Upgrade header.
    if (upgrade !== (fields.body.kind === 'upgrade')) return refusal(upgrade ? 'an upgrade must carry a signed upgrade seal' : 'an upgrade seal on a plain request');
    if (fields.body.kind === 'digest' && fields.body.length > MAX_DIGEST_BODY) return refusal('digest body over the limit');
    const why = auth.checkSignature(fields, sig);
    if (why) return refusal(why);
    const route = ctx.routes.lookup(fields.host);
    if (!route) return { status: 404, code: 'unknown_hostname', message: 'no route for this hostname' };
    // Only what the signature covers goes on: the signed headers, then the
    // client's framing as the body seal states it.
    const headers: Array<[string, string]> = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (isSignedHeader(req.rawHeaders[i]!.toLowerCase())) headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    }
    const b = fields.body;
    if (b.kind === 'digest') headers.push(['Content-Length', String(b.length)]);
    else if (b.kind === 'stream') headers.push(b.length === 'chunked' ? ['Transfer-Encoding', 'chunked'] : ['Content-Length', String(b.length)]);
    if (b.kind === 'upgrade') headers.push(['Connection', 'Upgrade'], ['Upgrade', b.protocol]);
    return {
      route,
      sig,
      fields,
      body: b,
      head: {
        kind: upgrade ? 'websocket' : 'http',
        method: fields.method,
        path: fields.target,
        host: fields.host,
        scheme: fields.scheme === 'https' ? 'https' : 'http',
        clientIp: fields.clientIp,
        requestId: fields.requestId,
        headers,
      },
    };
  };

  const refuse = (req: http.IncomingMessage, res: http.ServerResponse, c: { status: number; code: string; message: string }) => {
    if (c.code === 'peer_refused') ctx.hooks.onPeerRefused?.(peerRefusalReason(c.message));
    log.warn({ code: c.code, from: req.headers[PeerHeaders.from], ip: req.socket.remoteAddress }, c.message);
    res.writeHead(c.status, { 'content-type': 'application/json', 'tunnel-error': c.code, 'tunnel-error-source': 'relay', connection: 'close' });
    res.end(JSON.stringify({ error: { code: c.code, message: c.message } }));
    // Whatever body follows is not read: this connection is done.
    req.resume();
  };

  const serve = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const c = await check(req, false);
    if ('status' in c) return refuse(req, res, c);
    let body: Buffer | Readable = EMPTY;
    if (c.body.kind === 'digest') {
      // The body is checked before the nonce is claimed: an altered copy
      // costs the sender its request, never the genuine one its nonce.
      const got = await readBody(req, c.body.length).catch(() => null);
      if (got === null || got.length !== c.body.length || sha256(got) !== c.body.sha256) {
        return refuse(req, res, { status: 403, code: 'peer_refused', message: 'peer request refused: body does not match its signed digest' });
      }
      body = got;
    }
    const replay = await auth.claimNonce(c.fields);
    if (replay) return refuse(req, res, { status: 403, code: 'peer_refused', message: `peer request refused: ${replay}` });
    if (c.body.kind === 'stream') {
      const opened = auth.openStream(c.sig, c.body.length);
      req.on('error', (e) => opened.destroy(e));
      opened.on('error', (e) => log.warn({ requestId: c.head.requestId, from: req.headers[PeerHeaders.from], err: e.message }, 'peer request refused mid-body: stream reset'));
      body = req.pipe(opened);
    }
    const conn = ctx.connections.pick(c.route.tunnelId);
    if (!conn) return sendError(req, res, RelayErrors.tunnelOffline(c.head.host), c.head.requestId);
    proxyOverStream(ctx, conn, c.route, req, res, c.head, process.hrtime.bigint(), 0, body);
  };

  const server = createServer({ requestTimeout: 0, keepAliveTimeout: 35_000 }, (req, res) => {
    serve(req, res).catch((e: unknown) => {
      log.warn({ err: (e as Error).message }, 'peer request failed');
      res.destroy();
    });
  });
  server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    void check(req, true).then(async (c) => {
      if (!('status' in c)) {
        const replay = await auth.claimNonce(c.fields);
        if (replay) c = { status: 403, code: 'peer_refused', message: `peer request refused: ${replay}` };
      }
      if ('status' in c) {
        if (c.code === 'peer_refused') ctx.hooks.onPeerRefused?.(peerRefusalReason(c.message));
        log.warn({ code: c.code, from: req.headers[PeerHeaders.from] }, c.message);
        return void socket.end(`HTTP/1.1 ${c.status} Refused\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      const conn = ctx.connections.pick(c.route.tunnelId);
      if (!conn) return rawError(socket, req, RelayErrors.tunnelOffline(c.head.host), c.head.requestId);
      upgradeOverStream(ctx, conn, req, socket, head, c.head, c.route);
    }).catch((e: unknown) => {
      // Last resort for this one upgrade: never an unhandled rejection.
      log.error({ err: (e as Error).message }, 'peer upgrade failed: connection ended');
      socket.destroy();
    });
  });
  return server;
}
