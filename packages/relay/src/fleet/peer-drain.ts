import type http from 'node:http';
import type https from 'node:https';
import type { Socket } from 'node:net';

/**
 * The peer endpoint through a drain. Peers reach this relay over pooled
 * keep-alive connections and learn that it drains only when the fleet
 * store's event reaches them: under load, a second later (seen in a rolling
 * restart: a peer forwarded 800 ms after the announcement, on a connection
 * the drained relay then closed, and its client got a 502). So:
 * - a forwarded request counts from its arrival until its answer closes (its
 *   body read and nonce claim come before any connector stream opens, so the
 *   connector streams alone do not see it);
 * - once draining, every answer says `Connection: close`, so a connection a
 *   peer still uses closes between requests, after that answer;
 * - idle connections are left to the peers, which close their pool to a
 *   draining relay as soon as they learn (PeerDispatch.retire): closing one
 *   here races a request the peer may be writing on it, which it cannot
 *   send again if it is a POST. The drain waits for them, bounded.
 */
export class PeerEndpointDrain {
  private readonly sockets = new Set<Socket>();
  private readonly answers = new Set<http.ServerResponse>();
  private draining = false;
  private listener: (() => void) | null = null;

  constructor(server: http.Server | https.Server) {
    // The TCP socket under TLS too: it closes when the TLS one does, handshake or not.
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => {
        this.sockets.delete(s);
        this.listener?.();
      });
    });
    // Before the endpoint's own handler: its refusals may answer at once.
    server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      this.answers.add(res);
      if (this.draining) res.shouldKeepAlive = false;
      res.once('close', () => {
        this.answers.delete(res);
        this.listener?.();
      });
    });
  }

  /** From now on every answer closes its connection; answers not yet begun included. */
  begin(): void {
    this.draining = true;
    for (const res of this.answers) if (!res.headersSent) res.shouldKeepAlive = false;
  }

  /** Forwarded requests accepted and not yet answered in full. */
  get inFlight(): number {
    return this.answers.size;
  }

  /** Connections from peers still open (idle keep-alive ones and upgraded ones included). */
  get connections(): number {
    return this.sockets.size;
  }

  /** Told whenever a request finishes or a connection closes (one listener: the drain's). */
  onChange(fn: (() => void) | null): void {
    this.listener = fn;
  }
}
