import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RouteTable } from './route-table.js';
import { ErrorAnswers, RelayErrors } from './error-page.js';
import { newRequestId, publicExchange, type Dispatch } from './exchange.js';
import type { Route } from '../store/types.js';

/**
 * Access (access/access-gate.ts), asked before any stream is opened or a
 * request forwarded: null to go on now; else wait for true (go on, the
 * assertion added to the request) or false (the gate has answered).
 */
export interface AccessCheck {
  check(req: IncomingMessage, route: Route, reply: { res: ServerResponse } | { socket: Duplex }, requestId: string): Promise<boolean> | null;
}

const OPEN: AccessCheck = { check: () => null };

/**
 * The public request path: `Host` → route → Access → the first dispatch
 * that can serve the tunnel (this relay's own connections, then a peer relay
 * holding one) → else `530 tunnel_offline`. Unknown hosts get `404 unknown_hostname`.
 */
export class RequestProxy {
  constructor(
    private readonly routes: RouteTable,
    /** Tried in order; the first that takes an exchange answers it. */
    private readonly dispatch: readonly Dispatch[],
    private readonly errors: ErrorAnswers,
    private readonly access: AccessCheck = OPEN,
  ) {}

  /** Every public HTTP request; returns the Tunnel-Request-Id it assigned. */
  handleRequest(req: IncomingMessage, res: ServerResponse): string {
    const started = process.hrtime.bigint();
    const requestId = newRequestId();
    const host = req.headers.host;
    const route = host ? this.routes.lookup(host) : undefined;
    if (!route) {
      this.errors.send({ req, route, requestId, startedAt: started }, res, RelayErrors.unknownHostname(host ?? '(no Host header)'));
      return requestId;
    }
    const waiting = this.access.check(req, route, { res }, requestId);
    if (waiting) void waiting.then((go) => go && !res.destroyed && this.dispatchRequest(req, res, route, requestId, started));
    else this.dispatchRequest(req, res, route, requestId, started);
    return requestId;
  }

  /** After Access: the exchange is made from the request as the gate left it (its assertion added). */
  private dispatchRequest(req: IncomingMessage, res: ServerResponse, route: Route, requestId: string, started: bigint): void {
    const ex = publicExchange(req, route, 'http', requestId, started);
    for (const d of this.dispatch) if (d.serve(ex, res)) return;
    this.errors.send(ex, res, RelayErrors.tunnelOffline(req.headers.host!));
  }

  /** A public HTTP upgrade (WebSocket, raw TCP): the stream becomes a raw two-way pipe after a 101. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, clientHead: Buffer): void {
    const started = process.hrtime.bigint();
    const requestId = newRequestId();
    socket.on('error', () => {});
    const host = req.headers.host;
    const route = host ? this.routes.lookup(host) : undefined;
    if (!route) return this.errors.raw({ req, route, requestId, startedAt: started }, socket, RelayErrors.unknownHostname(host ?? '(no Host header)'));
    const waiting = this.access.check(req, route, { socket }, requestId);
    if (waiting) void waiting.then((go) => go && !socket.destroyed && this.dispatchUpgrade(req, socket, clientHead, route, requestId, started));
    else this.dispatchUpgrade(req, socket, clientHead, route, requestId, started);
  }

  private dispatchUpgrade(req: IncomingMessage, socket: Duplex, clientHead: Buffer, route: Route, requestId: string, started: bigint): void {
    const ex = publicExchange(req, route, 'websocket', requestId, started);
    for (const d of this.dispatch) if (d.upgrade(ex, socket, clientHead)) return;
    this.errors.raw(ex, socket, RelayErrors.tunnelOffline(req.headers.host!));
  }
}
