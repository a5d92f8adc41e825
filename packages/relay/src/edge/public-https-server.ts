import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { SecureContext, SecureContextOptions, TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { LimitHits, RelayLimits } from '../relay-limits.js';
import { EdgeH2Request, EdgeH2Response } from './h2-compat.js';
import { noRefusedStreams, type H2RefusedStreams } from './h2-refused-streams.js';
import { sendError } from './error-page.js';
import { newRequestId } from './exchange.js';

/** What the public HTTPS listener needs from the relay's certificate sources. */
export interface HttpsCertificates extends SecureContextOptions {
  /**
   * Per-SNI certificates (ACME): called with the TLS socket, after `alpn`.
   * An undefined context means the default `cert`/`key` (the fallback).
   */
  sni?: (socket: object, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;
  /** ALPN choice per handshake (lets ACME see `acme-tls/1` before the certificate is picked). */
  alpn?: (socket: object, info: { servername: string; protocols: string[] }) => string | undefined;
}

/** An HTTP/2 stream or HTTP/1.1 request as node hands it to the 'request' listener. */
export type PublicRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type PublicResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface PublicHttpsServer {
  server: http2.Http2SecureServer;
  /** HTTP/2 sessions and streams open now (for /metrics). */
  readonly open: { sessions: number; streams: number };
  /** Streams ended unserved, by reason (for /metrics). */
  readonly refused: H2RefusedStreams;
  /** Drain: GOAWAY every HTTP/2 session (in-flight streams finish), close idle HTTP/1.1 connections. */
  closeIdleConnections(): void;
  /** Stop: every connection, whatever it carries. */
  closeAllConnections(): void;
}

/**
 * The public HTTPS listener: HTTP/2 for clients that offer it in ALPN, and
 * HTTP/1.1 (with upgrades) on the same port for the rest. Both reach the
 * same request handler; node's compatibility objects for HTTP/2 are close
 * enough to http's that the request path takes either (see edge/h2-head.ts
 * for where they differ: :authority, pseudo-headers, split cookies).
 *
 * Ceilings of HTTP/2 itself: concurrent streams per connection (advertised
 * in SETTINGS; nghttp2 refuses the streams past it), header list size (a
 * 431 from here; nghttp2 resets past twice the limit, bounding memory before
 * the head is whole), and client resets per connection per second (a GOAWAY
 * past the rate: the rapid-reset attack opens and cancels streams faster
 * than any backend can notice).
 */
export function createPublicHttpsServer(o: {
  certificates: HttpsCertificates;
  limits: RelayLimits;
  /** The HTTP/1.1 side's timeouts and head size (as for the plain listener). */
  http1: http.ServerOptions;
  hits: LimitHits;
  log: Logger;
  onRequest: (req: PublicRequest, res: PublicResponse) => void;
}): PublicHttpsServer {
  const { limits, hits, log } = o;
  const { sni, alpn, ...secure } = o.certificates;
  const headerLimit = limits.h2MaxHeaderListSize > 0 ? limits.h2MaxHeaderListSize : 0;
  const settings: http2.Settings = {
    // 0 (off) leaves node's default, which is unbounded.
    ...(limits.h2MaxConcurrentStreams > 0 ? { maxConcurrentStreams: limits.h2MaxConcurrentStreams } : {}),
    maxHeaderListSize: headerLimit > 0 ? Math.min(2 * headerLimit, 0xffffffff) : 0xffffffff,
  };
  const server = http2.createSecureServer({
    ...secure,
    // node calls these with the TLS socket as `this`.
    ...(sni ? { SNICallback: function (this: object, name: string, cb: (err: Error | null, ctx?: SecureContext) => void) { sni(this, name, cb); } } : {}),
    allowHTTP1: true,
    Http2ServerRequest: EdgeH2Request,
    Http2ServerResponse: EdgeH2Response,
    settings,
    // Header pairs: node's default (128) would cut a legitimate cookie-heavy
    // request before our byte limit says anything; the byte limit bounds them.
    maxHeaderListPairs: 4096,
    maxSessionMemory: 32,
    // A connection that negotiated no protocol we speak is closed soon (e.g. acme-tls/1 after its handshake).
    unknownProtocolTimeout: 2_000,
  });
  if (alpn) {
    // node's http2 fixes ALPNProtocols to h2 + http/1.1; a callback takes their place (the two cannot be set together).
    const tlsServer = server as unknown as { ALPNProtocols?: Buffer; ALPNCallback?: (this: object, info: { servername: string; protocols: string[] }) => string | undefined };
    tlsServer.ALPNProtocols = undefined;
    tlsServer.ALPNCallback = function (info) {
      return alpn(this, info);
    };
  }
  // HTTP/1.1 connections on this server are node's http ones: the same
  // timeouts and head size as the plain listener.
  const h1 = server as unknown as { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number; maxHeaderSize: number; connectionsCheckingInterval: number };
  if (o.http1.headersTimeout !== undefined) h1.headersTimeout = o.http1.headersTimeout;
  h1.requestTimeout = o.http1.requestTimeout ?? 0;
  if (o.http1.keepAliveTimeout !== undefined) h1.keepAliveTimeout = o.http1.keepAliveTimeout;
  if (o.http1.maxHeaderSize !== undefined) h1.maxHeaderSize = o.http1.maxHeaderSize;
  if (o.http1.connectionsCheckingInterval !== undefined) h1.connectionsCheckingInterval = o.http1.connectionsCheckingInterval;

  const sockets = new Set<Socket>();
  /** Each session's open streams; frozen once the session is destroyed, so its teardown can be counted. */
  const sessions = new Map<http2.ServerHttp2Session, { streams: number }>();
  const open = { sessions: 0, streams: 0 };
  const refused = noRefusedStreams();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('unknownProtocol', (s: TLSSocket) => s.destroy());
  server.on('session', (session: http2.ServerHttp2Session) => {
    const mine = { streams: 0 };
    sessions.set(session, mine);
    open.sessions++;
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      mine.streams++;
      stream.once('close', () => {
        if (!session.destroyed) mine.streams--;
      });
    });
    session.once('close', () => {
      sessions.delete(session);
      open.sessions--;
    });
    const resets = watchResets(session, limits.h2ResetRate, hits, log, (n) => (refused.rapid_reset += n), mine);
    // A hostile peer's bad frames end its session; never the process.
    session.on('error', (e: Error & { errno?: number }) => {
      if (e.errno === NGHTTP2_ERR_CALLBACK_FAILURE && resets.endedByNode()) return;
      // nghttp2 ends a connection whose client opens a stream past the limit it acknowledged
      // with a protocol error; the relay sees only that, with the limit's worth of streams open.
      const cap = limits.h2MaxConcurrentStreams;
      if (cap > 0 && e.errno === NGHTTP2_ERR_PROTO && mine.streams >= cap) {
        refused.concurrent_streams += mine.streams + 1;
        hits.hit('h2_concurrent_streams');
        log.warn({ event: 'h2-concurrent-streams', clientIp: (session.socket as Socket | undefined)?.remoteAddress, open: mine.streams, limit: cap }, 'HTTP/2 client opened a stream past the concurrent-stream limit: connection closed');
        return;
      }
      log.debug({ event: 'h2-session-error', err: e.message }, 'HTTP/2 session failed');
    });
  });
  server.on('stream', (stream: http2.ServerHttp2Stream) => {
    open.streams++;
    stream.once('close', () => open.streams--);
  });

  server.on('request', (req: PublicRequest, res: PublicResponse) => {
    if (req.httpVersionMajor === 2 && headerLimit > 0) {
      const size = headerListSize(req.rawHeaders);
      if (size > headerLimit) {
        hits.hit('h2_header_list_size');
        // The one error answer (HTML or JSON, source and request id), as every other refusal of the edge.
        const info = { status: 431, code: 'headers_too_large', source: 'relay', message: `request header list of ${size} bytes is over the relay's ${headerLimit}` } as const;
        sendError(req as http.IncomingMessage, res as http.ServerResponse, info, newRequestId());
        return;
      }
    }
    o.onRequest(req, res);
  });

  return {
    server,
    open,
    refused,
    closeIdleConnections() {
      for (const s of sessions.keys()) s.close();
      (server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
    },
    closeAllConnections() {
      for (const [s, mine] of sessions) {
        if (!s.destroyed) refused.goaway += mine.streams;
        s.destroy();
      }
      for (const s of sockets) s.destroy();
    },
  };
}

/** nghttp2's NGHTTP2_ERR_PROTO, as node reports it in a session error's errno. */
const NGHTTP2_ERR_PROTO = -505;
/**
 * nghttp2's NGHTTP2_ERR_CALLBACK_FAILURE: how node ends a session its own
 * guards gave up on (past `maxSessionRejectedStreams` refused streams, or
 * `maxSessionInvalidFrames` bad frames), with GOAWAY INTERNAL_ERROR.
 */
const NGHTTP2_ERR_CALLBACK_FAILURE = -902;

/** RFC 9113 §6.5.2: the size of a header list is its names and values plus 32 bytes per field. */
function headerListSize(raw: string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i++) n += raw[i]!.length;
  return n + 16 * raw.length;
}

/**
 * Rapid reset (CVE-2023-44487): a client opens streams and cancels each at
 * once, so every stream costs the relay a request set-up while the client's
 * concurrency never grows. Streams the peer resets are counted per session
 * per second; past `perSecond` the session gets GOAWAY (ENHANCE_YOUR_CALM)
 * and is closed. Streams this relay resets itself are not counted.
 *
 * From node 22 on, a flood read faster than the streams' closes reach
 * JavaScript fills the concurrency limit with streams already reset; node
 * refuses the streams past it itself, and past 100 refusals ends the session
 * (GOAWAY INTERNAL_ERROR) before this count trips. That is the same attack
 * stopped by node's guard: `endedByNode()` records it the same way (limit
 * hit, `h2-rapid-reset` with `by: "node"`, the streams still open counted as
 * refused) when the session ends that way after its peer reset streams.
 */
function watchResets(
  session: http2.ServerHttp2Session,
  perSecond: number,
  hits: LimitHits,
  log: Logger,
  refuse: (streams: number) => void,
  mine: { streams: number },
): { endedByNode(): boolean } {
  let windowStart = 0;
  let count = 0;
  let peerResets = 0;
  let tripped = false;
  const trip = (by: 'relay' | 'node'): void => {
    tripped = true;
    hits.hit('h2_reset_rate');
    const remote = (session.socket as Socket | undefined)?.remoteAddress;
    log.warn({ event: 'h2-rapid-reset', clientIp: remote, resetsPerSecond: count, by }, 'HTTP/2 client resets streams too fast: connection closed');
  };
  if (perSecond > 0) {
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      stream.once('close', () => {
        const code = stream.rstCode;
        // NO_ERROR: closed normally, or reset by us without an error; INTERNAL_ERROR: reset by us after a failure.
        if (code === undefined || code === http2.constants.NGHTTP2_NO_ERROR || code === http2.constants.NGHTTP2_INTERNAL_ERROR) return;
        peerResets++;
        const now = Date.now();
        if (now - windowStart >= 1_000) {
          windowStart = now;
          count = 0;
        }
        if (++count <= perSecond || tripped) return;
        trip('relay');
        // A GOAWAY with this code goes out, then the connection closes: its other streams end too.
        // Not from inside nghttp2's callback (this 'close' runs in it): its own teardown would lose the frame.
        setImmediate(() => {
          // The streams it still holds (opened before or since the trip) end unserved.
          if (!session.destroyed) refuse(mine.streams);
          session.destroy(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM as unknown as Error);
        });
      });
    });
  }
  return {
    endedByNode() {
      if (perSecond <= 0) return false;
      // Decided once every stream has closed: their resets may reach us after the session's error.
      session.once('close', () => {
        if (tripped || peerResets === 0) {
          if (!tripped) log.debug({ event: 'h2-session-error', err: 'ended by node (callback failure)' }, 'HTTP/2 session failed');
          return;
        }
        trip('node');
        // `mine.streams` stopped counting closes when the session was destroyed: the ones it held then.
        refuse(mine.streams);
      });
      return true;
    },
  };
}
