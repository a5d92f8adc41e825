import type http from 'node:http';
import type { Socket } from 'node:net';

/**
 * Plain-HTTP public connections that have not begun a request yet. node's
 * `server.close()` keeps such a connection (node 20: it is not on the idle
 * list) and serves its request when it comes; a drain that ended as soon as
 * nothing was in flight then closed it, and a client that had connected a
 * moment before the listener closed got a reset instead of an answer. The
 * relay's drain waits for these, for a short grace.
 *
 * Per connection only: the relay's request and upgrade handlers call
 * `begun()`, a set deletion, and nothing is added per request.
 */
export class FreshConnections {
  private readonly fresh = new Set<Socket>();
  private listener: (() => void) | null = null;

  constructor(server: http.Server) {
    server.on('connection', (s: Socket) => {
      this.fresh.add(s);
      s.once('close', () => {
        if (this.fresh.delete(s)) this.listener?.();
      });
    });
  }

  /** The connection began a request (or an upgrade): from now on the relay's in-flight count covers it. */
  begun(socket: object): void {
    this.fresh.delete(socket as Socket);
  }

  get count(): number {
    return this.fresh.size;
  }

  /** Told when a fresh connection closes without a request (one listener: the drain's). */
  onChange(fn: (() => void) | null): void {
    this.listener = fn;
  }
}
