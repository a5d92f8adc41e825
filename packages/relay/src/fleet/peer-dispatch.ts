import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { checkResponseHead, type HeaderPairs } from '@tunnel/protocol';
import { PeerAuth, headersDigest, isSignedHeader, sha256, upgradeProtocol, type BodySeal, type SignedRequest } from './peer-auth.js';
import type { FleetView } from './fleet-view.js';
import type { RelayMember } from '../store/types.js';
import { RelayErrors, rawError, sendError } from '../edge/error-page.js';
import { stripV4Mapped } from '../edge/client-ip.js';
import type { Dispatch, Exchange } from '../edge/exchange.js';
import { readBody } from '../control/read-body.js';

/** Bodies up to this size are read before forwarding, so the request can be retried on another holder. */
export const RETRY_BODY_LIMIT = 64 * 1024;
const EMPTY = Buffer.alloc(0);
/** Errors before the connection to a peer opened: the request was never sent. */
const PEER_CONNECT_FAILURES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/** A peer's own "I hold no usable connection" answer, given before any stream opens: safe to retry elsewhere. */
const REFUSAL = 'tunnel_offline';

/** `raw`: alternating names and values, as undici (Buffers) or node:http (strings) give them. */
function isRefusal(status: number, raw: ReadonlyArray<Buffer | string>): boolean {
  if (status !== 530) return false;
  let code = '';
  let source = '';
  for (let k = 0; k < raw.length; k += 2) {
    const name = String(raw[k]).toLowerCase();
    if (name === 'tunnel-error') code = String(raw[k + 1]);
    else if (name === 'tunnel-error-source') source = String(raw[k + 1]);
  }
  return source === 'relay' && code === REFUSAL;
}

/** One forwarded request across its attempts: the holders to try, and what every attempt signs. */
interface Forwarding {
  readonly ex: Exchange;
  readonly res: http.ServerResponse;
  readonly peers: readonly RelayMember[];
  /** The client's headers the digest covers, as a flat name/value list. */
  readonly headers: string[];
  readonly digest: string;
}

export interface PeerDispatchOptions {
  selfId: string;
  auth: PeerAuth;
  fleet: Pick<FleetView, 'peersFor'>;
  log: Logger;
  /**
   * This relay's own connections: where a peer turns a forwarded request
   * away, the connector has often just moved its connection here.
   */
  local: Dispatch;
  onForward?: (peerId: string) => void;
  /** CA bundle that verifies https:// peers (unset: the system store plus NODE_EXTRA_CA_CERTS). */
  ca?: string[];
}

/**
 * Forwarding a public request to the relay that holds the tunnel's
 * connection, over that relay's peer endpoint. A forwarded request is served
 * only from local connections there, so nothing is ever forwarded twice.
 */
export class PeerDispatch implements Dispatch {
  private readonly pools = new Map<string, Pool>();
  /** Pools to peers that drain or left, closing once their requests finish. */
  private readonly retiring = new Set<Pool>();

  constructor(private readonly o: PeerDispatchOptions) {}

  private pool(url: string): Pool {
    let p = this.pools.get(url);
    if (!p) {
      p = new Pool(url, { connections: 64, keepAliveTimeout: 30_000, headersTimeout: 0, bodyTimeout: 0, connectTimeout: 5_000, ...(this.o.ca ? { connect: { ca: this.o.ca } } : {}) });
      this.pools.set(url, p);
    }
    return p;
  }

  /**
   * The signed fields of one attempt: each attempt (a retry on another
   * holder included) gets its own nonce, since the replay cache is shared.
   */
  private signed(ex: Exchange, headers: string, body: BodySeal): { fields: SignedRequest; sig: string; pairs: string[] } {
    const { req } = ex;
    const sock = req.socket as { encrypted?: boolean; remoteAddress?: string };
    const fields: SignedRequest = {
      from: this.o.selfId,
      time: Date.now(),
      nonce: PeerAuth.nonce(),
      requestId: ex.requestId,
      method: req.method ?? 'GET',
      host: req.headers.host ?? '',
      target: req.url ?? '/',
      clientIp: stripV4Mapped(sock.remoteAddress ?? ''),
      scheme: sock.encrypted ? 'https' : 'http',
      headers,
      body,
    };
    const sig = this.o.auth.sign(fields);
    return { fields, sig, pairs: this.o.auth.headerPairs(fields, sig) };
  }

  serve(ex: Exchange, res: http.ServerResponse): boolean {
    const peers = this.o.fleet.peersFor(ex.route.tunnelId);
    if (peers.length === 0) return false;
    const { req } = ex;
    // Exactly the headers the digest covers are sent: whatever the hop adds
    // on its own (framing, connection) the receiver neither signs nor passes on.
    const headers = signedHeaders(req.rawHeaders);
    const f = (body: Exchange['body']): Forwarding => ({ ex: { ...ex, body }, res, peers, headers, digest: headersDigest(headers) });
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const length = Number(req.headers['content-length'] ?? 0);
    if (!chunked && req.headers['content-length'] === undefined) {
      this.attempt(f({ kind: 'buffered', bytes: EMPTY }), 0);
    } else if (!chunked && length <= RETRY_BODY_LIMIT) {
      // A small body is read first, so a peer that turns the request away
      // (it is draining, or its connection just left) can be retried.
      readBody(req, length).then(
        (body) => {
          if (body === null || body.length !== length) return void res.destroy();
          this.attempt(f({ kind: 'buffered', bytes: body }), 0);
        },
        () => res.destroy(), // the client went away mid-body
      );
    } else {
      this.attempt(f({ kind: 'client' }), 0);
    }
    return true;
  }

  /** A buffered body can be sent again; a streamed one (`client`) goes to one holder only. */
  private attempt(f: Forwarding, i: number): void {
    const { ex, res, peers } = f;
    const { req, requestId } = ex;
    const body = ex.body.kind === 'buffered' ? ex.body.bytes : null;
    const peer = peers[i]!;
    // `body` EMPTY with a Content-Length: 0 from the client is a zero-length digest, not `none`.
    const seal: BodySeal =
      body === null
        ? { kind: 'stream', length: req.headers['transfer-encoding'] !== undefined ? 'chunked' : Number(req.headers['content-length']) }
        : body.length === 0 && req.headers['content-length'] === undefined
          ? { kind: 'none' }
          : { kind: 'digest', length: body.length, sha256: sha256(body) };
    const signed = this.signed(ex, f.digest, seal);
    this.o.onForward?.(peer.id);
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
      this.o.log.debug({ requestId, peer: peer.id, why }, 'peer relay could not serve; retrying');
      if (this.o.local.serve(ex, res)) return true;
      if (i + 1 < peers.length) {
        this.attempt(f, i + 1);
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
          // rather than pass its 530 on.
          refused = true;
          abort?.(new Error('peer refused'));
          return false;
        }
        const checked = checkResponseHead({ status, statusText: statusText ?? '', headers: pairsOf(raw) }, { method: req.method ?? 'GET', upgrade: false });
        if (!checked.ok) {
          this.o.log.warn({ requestId, peer: peer.id, reason: checked.reason }, 'bad response from peer relay');
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
        this.o.log.warn({ requestId, peer: peer.id, err: err.message }, 'forwarding to peer relay failed');
        // Nothing reached the client yet, but the peer may have passed the
        // request on before failing: only a bodyless one is tried again --
        // or any whose connection never opened (a peer killed before its
        // presence expired): then nothing was sent at all.
        // A reset while the connection was still opening (`connect ECONNRESET`: a
        // peer that stopped with it in its listen backlog) also sent nothing.
        const notSent = PEER_CONNECT_FAILURES.has((err as NodeJS.ErrnoException).code ?? '') || (err as NodeJS.ErrnoException).syscall === 'connect';
        if (body !== null && (body.length === 0 || notSent) && retry(err.message)) return;
        sendError(req, res, RelayErrors.peerFailed(), requestId);
      },
    };
    let sendBody: Buffer | Duplex | null;
    if (body !== null) sendBody = body.length === 0 ? null : body;
    else {
      const sealed = this.o.auth.sealStream(signed.sig);
      req.on('error', (e) => sealed.destroy(e));
      sendBody = req.pipe(sealed);
    }
    this.pool(peer.peerUrl).dispatch(
      { method: req.method as Dispatcher.HttpMethod, path: req.url ?? '/', headers: f.headers.concat(signed.pairs), body: sendBody, blocking: false } as Dispatcher.DispatchOptions,
      handler,
    );
  }

  upgrade(ex: Exchange, socket: Duplex, clientHead: Buffer): boolean {
    const peers = this.o.fleet.peersFor(ex.route.tunnelId);
    if (peers.length === 0) return false;
    this.upgradeAttempt(ex, peers, 0, socket, clientHead);
    return true;
  }

  private upgradeAttempt(ex: Exchange, peers: readonly RelayMember[], i: number, socket: Duplex, clientHead: Buffer): void {
    const { req, requestId } = ex;
    const peer = peers[i]!;
    this.o.onForward?.(peer.id);
    // A flat list keeps the client's order and duplicates, as the digest does;
    // Connection/Upgrade are the hop's own (not signed) and are set again here.
    const headers = signedHeaders(req.rawHeaders);
    const protocol = upgradeProtocol(req.headers.upgrade) ?? 'websocket';
    const signed = this.signed(ex, headersDigest(headers), { kind: 'upgrade', protocol });
    headers.push(...signed.pairs, 'Connection', 'Upgrade', 'Upgrade', protocol);
    const u = new URL(peer.peerUrl);
    const out =
      u.protocol === 'https:'
        ? https.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers, ...(this.o.ca ? { ca: this.o.ca } : {}) })
        : http.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers });
    /** The peer's answer as the client's head; null (the client told, `from` ended) when it does not pass the checks. */
    const answer = (pres: http.IncomingMessage, from: { destroy(): void }): string | null => {
      const lines = headLines(pres, req.method ?? 'GET');
      if (lines !== null) return lines;
      this.o.log.warn({ requestId, peer: peer.id }, 'bad upgrade answer from peer relay');
      from.destroy();
      rawError(socket, req, RelayErrors.peerFailed(), requestId);
      return null;
    };
    out.on('upgrade', (pres, psock: Duplex, phead: Buffer) => {
      const lines = answer(pres, psock);
      if (lines === null) return;
      socket.write(lines, 'latin1');
      if (phead.length) socket.write(phead);
      if (clientHead.length) psock.write(clientHead);
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
        this.o.log.debug({ requestId, peer: peer.id }, 'peer relay could not serve the upgrade; retrying');
        if (this.o.local.upgrade(ex, socket, clientHead)) return;
        if (i + 1 < peers.length) return this.upgradeAttempt(ex, peers, i + 1, socket, clientHead);
        return rawError(socket, req, RelayErrors.tunnelOffline(req.headers.host ?? ''), requestId);
      }
      const lines = answer(pres, pres);
      if (lines === null) return;
      socket.write(lines, 'latin1');
      pres.pipe(socket);
    });
    out.on('error', () => rawError(socket, req, RelayErrors.peerFailed(), requestId));
    out.end();
  }

  /**
   * A peer drains or left: its requests in flight finish, then its
   * connections close from this side. A draining peer waits for that
   * rather than close an idle one under a request being written on it.
   */
  retire(peerUrl: string): void {
    const p = this.pools.get(peerUrl);
    if (!p) return;
    this.pools.delete(peerUrl);
    this.retiring.add(p);
    p.close().then(
      () => this.retiring.delete(p),
      () => this.retiring.delete(p),
    );
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values(), ...this.retiring].map((p) => p.destroy()));
  }
}

/** The client's headers a peer request signs and sends on, in order, duplicates kept: a flat name/value list. */
function signedHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let k = 0; k < raw.length; k += 2) if (isSignedHeader(raw[k]!.toLowerCase())) out.push(raw[k]!, raw[k + 1]!);
  return out;
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
