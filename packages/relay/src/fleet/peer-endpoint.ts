import http from 'node:http';
import type https from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { RequestHead } from '@tunnel/protocol';
import { PeerAuth, PeerHeaders, peerRefusalReason, isSignedHeader, readSignedRequest, sha256, type BodySeal, type SignedRequest } from './peer-auth.js';
import { RETRY_BODY_LIMIT } from './peer-dispatch.js';
import type { Route } from '../store/types.js';
import type { RouteTable } from '../edge/route-table.js';
import { RelayErrors, rawError, sendError } from '../edge/error-page.js';
import type { Exchange, ExchangeBody, ProxyHooks } from '../edge/exchange.js';
import type { LocalDispatch } from '../edge/local-dispatch.js';
import { readBody } from '../control/read-body.js';

const EMPTY_BODY: ExchangeBody = { kind: 'buffered', bytes: Buffer.alloc(0) };

export interface PeerEndpointOptions {
  routes: RouteTable;
  /** This relay's own connections, and nothing else: a forwarded request is never forwarded again. */
  local: LocalDispatch;
  auth: PeerAuth;
  log: Logger;
  hooks: ProxyHooks;
  /** HTTPS on the relay's certificate when it has one. */
  createServer?: (opts: http.ServerOptions, handler: http.RequestListener) => http.Server | https.Server;
}

type Accepted = { head: RequestHead; route: Route; sig: string; fields: SignedRequest; body: BodySeal };
type Checked = Accepted | { status: number; code: string; message: string };

/** Largest body a `digest` seal may announce: the forwarder reads only up to RETRY_BODY_LIMIT whole. */
const MAX_DIGEST_BODY = RETRY_BODY_LIMIT;

/** The peer endpoint: serves forwarded requests from this relay's own connections only. */
export function createPeerServer(o: PeerEndpointOptions): http.Server | https.Server {
  const { routes, local, auth, log, hooks } = o;
  const createServer = o.createServer ?? ((opts, h) => http.createServer(opts, h));
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
    const route = routes.lookup(fields.host);
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
    if (c.code === 'peer_refused') hooks.onPeerRefused?.(peerRefusalReason(c.message));
    log.warn({ code: c.code, from: req.headers[PeerHeaders.from], ip: req.socket.remoteAddress }, c.message);
    res.writeHead(c.status, { 'content-type': 'application/json', 'tunnel-error': c.code, 'tunnel-error-source': 'relay', connection: 'close' });
    res.end(JSON.stringify({ error: { code: c.code, message: c.message } }));
    // Whatever body follows is not read: this connection is done.
    req.resume();
  };

  const serve = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const c = await check(req, false);
    if ('status' in c) return refuse(req, res, c);
    let body: ExchangeBody = EMPTY_BODY;
    if (c.body.kind === 'digest') {
      // The body is checked before the nonce is claimed: an altered copy
      // costs the sender its request, never the genuine one its nonce.
      const got = await readBody(req, c.body.length).catch(() => null);
      if (got === null || got.length !== c.body.length || sha256(got) !== c.body.sha256) {
        return refuse(req, res, { status: 403, code: 'peer_refused', message: 'peer request refused: body does not match its signed digest' });
      }
      body = { kind: 'buffered', bytes: got };
    }
    const replay = await auth.claimNonce(c.fields);
    if (replay) return refuse(req, res, { status: 403, code: 'peer_refused', message: `peer request refused: ${replay}` });
    if (c.body.kind === 'stream') {
      const opened = auth.openStream(c.sig, c.body.length);
      req.on('error', (e) => opened.destroy(e));
      opened.on('error', (e) => log.warn({ requestId: c.head.requestId, from: req.headers[PeerHeaders.from], err: e.message }, 'peer request refused mid-body: stream reset'));
      body = { kind: 'sealed', stream: req.pipe(opened) };
    }
    if (!local.serve(exchange(req, c, body), res)) sendError(req, res, RelayErrors.tunnelOffline(c.head.host), c.head.requestId);
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
        if (c.code === 'peer_refused') hooks.onPeerRefused?.(peerRefusalReason(c.message));
        log.warn({ code: c.code, from: req.headers[PeerHeaders.from] }, c.message);
        return void socket.end(`HTTP/1.1 ${c.status} Refused\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      if (!local.upgrade(exchange(req, c, EMPTY_BODY), socket, head)) rawError(socket, req, RelayErrors.tunnelOffline(c.head.host), c.head.requestId);
    }).catch((e: unknown) => {
      // Last resort for this one upgrade: never an unhandled rejection.
      log.error({ err: (e as Error).message }, 'peer upgrade failed: connection ended');
      socket.destroy();
    });
  });
  return server;
}

/** A checked peer request as an exchange for this relay's own connections. */
function exchange(req: http.IncomingMessage, c: Accepted, body: ExchangeBody): Exchange {
  return { req, route: c.route, requestId: c.head.requestId, startedAt: process.hrtime.bigint(), head: c.head, attempt: 0, body };
}
