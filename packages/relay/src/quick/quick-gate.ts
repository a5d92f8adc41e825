// The public side of quick tunnels' limits: requests per second and in
// flight per tunnel (429 with Retry-After), in flight to all quick tunnels
// on this relay (503 with Retry-After), the request body cap (413), and
// the operator's banner header. Named tunnels never pass through here.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import { RateLimiterRes } from 'rate-limiter-flexible';
import { sendError, type TunnelErrorInfo } from '../edge/error-page.js';
import { fleetRateLimiter, type SharedRedis } from '../rate-limiter.js';
import type { LimitHits, RelayLimits } from '../relay-limits.js';
import { rawError } from '../edge/error-page.js';
import { newRequestId } from '../edge/exchange.js';
import type { RouteTable } from '../edge/route-table.js';
import type { Route } from '../store/types.js';

export interface QuickGateDeps {
  routes: RouteTable;
  /** Whether a route's account is the quick one. */
  isQuick(accountId: string): boolean;
  limits: Pick<RelayLimits, 'quickStreams' | 'quickStreamsTotal' | 'quickRequestRate' | 'quickBodyBytes'>;
  hits: LimitHits;
  log: Logger;
  banner?: string;
  redis?: SharedRedis;
}

export const BANNER_HEADER = 'Tunnel-Quick-Notice';

export class QuickGate {
  private readonly rate: RateLimiterAbstract | null;
  /** Requests (and upgraded connections) in flight per quick tunnel through this relay. */
  private readonly inFlight = new Map<string, number>();
  /** The sum of inFlight: what all quick tunnels hold of this relay at once. */
  private total = 0;

  constructor(private readonly d: QuickGateDeps) {
    this.rate = d.limits.quickRequestRate > 0 ? fleetRateLimiter({ points: d.limits.quickRequestRate, durationS: 1, keyPrefix: 'quick-rate', redis: d.redis }) : null;
  }

  /** The quick route `req` is for, if it is for one. */
  private quickRoute(req: IncomingMessage): Route | undefined {
    const host = req.headers.host;
    const route = host ? this.d.routes.lookup(host) : undefined;
    return route && this.d.isQuick(route.accountId) ? route : undefined;
  }

  /**
   * A public request: false when it is not for a quick tunnel (the caller
   * goes on at once, synchronously). Otherwise this gate answers it or calls
   * `next` once it is admitted, and returns true.
   */
  request(req: IncomingMessage, res: ServerResponse, next: () => void): boolean {
    const route = this.quickRoute(req);
    if (!route) return false;
    const cap = this.d.limits.quickBodyBytes;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (cap > 0 && declared > cap) {
      this.d.hits.hit('quick_body');
      this.refuse(req, res, { status: 413, code: 'quick_body_too_large', source: 'relay', message: `Quick tunnels take request bodies up to ${cap} bytes.` }, true);
      return true;
    }
    this.admit(route, (refusal, retryAfterS) => {
      if (refusal) {
        if (retryAfterS !== undefined) res.setHeader('retry-after', String(retryAfterS));
        return this.refuse(req, res, refusal, false);
      }
      this.hold(route.tunnelId, res);
      if (this.d.banner) res.setHeader(BANNER_HEADER, this.d.banner);
      if (cap > 0 && req.headers['transfer-encoding'] !== undefined) this.capChunkedBody(req, res, cap);
      next();
    });
    return true;
  }

  /** A public upgrade (WebSocket): rate and in-flight limits as for requests; the connection counts while open. */
  upgrade(req: IncomingMessage, socket: Duplex, next: () => void): boolean {
    const route = this.quickRoute(req);
    if (!route) return false;
    this.admit(route, (refusal, retryAfterS) => {
      if (socket.destroyed) return;
      if (refusal) return rawError(socket, req, refusal, newRequestId(), retryAfterS !== undefined ? `Retry-After: ${retryAfterS}\r\n` : '');
      this.hold(route.tunnelId, socket);
      next();
    });
    return true;
  }

  /** Requests (and upgraded connections) in flight to quick tunnels through this relay (for /metrics). */
  get inFlightTotal(): number {
    return this.total;
  }

  private admit(route: Route, then: (refusal: TunnelErrorInfo | null, retryAfterS?: number) => void): void {
    const ceiling = this.d.limits.quickStreamsTotal;
    if (ceiling > 0 && this.total >= ceiling) {
      this.d.hits.hit('quick_streams_total');
      return then({ status: 503, code: 'quick_relay_busy', source: 'relay', message: `This relay already carries ${this.total} requests to quick tunnels (its limit for them); retry shortly.` }, 1);
    }
    const max = this.d.limits.quickStreams;
    const open = this.inFlight.get(route.tunnelId) ?? 0;
    if (max > 0 && open >= max) {
      this.d.hits.hit('quick_streams');
      return then({ status: 429, code: 'quick_too_many_streams', source: 'relay', message: `This quick tunnel already has ${open} requests in flight (the limit).` }, 1);
    }
    if (!this.rate) return then(null);
    this.rate.consume(route.tunnelId).then(
      () => then(null),
      (e: unknown) => {
        if (!(e instanceof RateLimiterRes)) {
          // The counter itself failed (Redis and the insurance both): let the request through rather than fail it.
          this.d.log.warn({ event: 'quick-rate-unavailable', err: (e as Error).message }, 'quick request rate cannot be counted now');
          return then(null);
        }
        this.d.hits.hit('quick_request_rate');
        then({ status: 429, code: 'quick_rate_limited', source: 'relay', message: `This quick tunnel takes up to ${this.d.limits.quickRequestRate} requests per second.` }, Math.max(1, Math.ceil(e.msBeforeNext / 1000)));
      },
    );
  }

  /** Count one in flight until `done` closes. */
  private hold(tunnelId: string, done: ServerResponse | Duplex): void {
    this.inFlight.set(tunnelId, (this.inFlight.get(tunnelId) ?? 0) + 1);
    this.total++;
    done.once('close', () => {
      this.total--;
      const n = (this.inFlight.get(tunnelId) ?? 1) - 1;
      if (n <= 0) this.inFlight.delete(tunnelId);
      else this.inFlight.set(tunnelId, n);
    });
  }

  /**
   * A chunked body has no length to check up front: its bytes are counted
   * as they pass (the consumer attaches in this same tick, so nothing is
   * lost to the listener). Past the cap: a 413 when nothing was answered
   * yet, else the response is cut; the connection is closed either way,
   * which resets the request's stream to the connector.
   */
  private capChunkedBody(req: IncomingMessage, res: ServerResponse, cap: number): void {
    let seen = 0;
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen <= cap) return;
      req.off('data', onData);
      this.d.hits.hit('quick_body');
      if (res.headersSent) return void res.destroy();
      this.refuse(req, res, { status: 413, code: 'quick_body_too_large', source: 'relay', message: `Quick tunnels take request bodies up to ${cap} bytes.` }, true);
    };
    req.on('data', onData);
  }

  private refuse(req: IncomingMessage, res: ServerResponse, info: TunnelErrorInfo, close: boolean): void {
    this.d.log.info({ event: 'quick-limit', code: info.code, host: req.headers.host, ip: req.socket.remoteAddress }, `quick tunnel request refused: ${info.message}`);
    if (close) {
      // The body is not read: the connection cannot carry another request after it.
      res.setHeader('connection', 'close');
      res.once('finish', () => {
        req.socket.end();
        setTimeout(() => req.socket.destroy(), 1_000).unref();
      });
    }
    sendError(req, res, info, newRequestId());
  }
}
