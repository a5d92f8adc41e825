import type http from 'node:http';
import type { Socket } from 'node:net';

/**
 * The plain-HTTP public listener through a drain. node's `server.close()`
 * closes the connections idle between requests but keeps one accepted a
 * moment ago whose request has not arrived yet (node 20: its parser has no
 * message, yet it is not on the idle list), and answers that request with
 * keep-alive. The drain used to end as soon as nothing was in flight and
 * close every connection left: that client, which did nothing wrong and
 * cannot know, got a reset instead of an answer (seen in fleet tests whose
 * client connected just before a relay drained). So:
 * - the drain counts connections that have not begun a request ("fresh") and
 *   waits for them, for a short grace (the relay's FRESH_CONNECTION_GRACE_MS);
 * - once draining, every answer says `Connection: close`, answers not yet
 *   begun included, so each connection closes after its current request
 *   instead of being cut at the end of the drain.
 */
export class PublicHttpDrain {
  /** Requests begun on each open connection (upgrades included). */
  private readonly requests = new Map<Socket, number>();
  private readonly answers = new Set<http.ServerResponse>();
  private draining = false;
  private listener: (() => void) | null = null;

  constructor(server: http.Server) {
    server.on('connection', (s: Socket) => {
      this.requests.set(s, 0);
      s.once('close', () => {
        this.requests.delete(s);
        this.listener?.();
      });
    });
    // Before the relay's own handlers: a refusal may answer at once.
    server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.begun(req.socket);
      this.answers.add(res);
      if (this.draining) res.shouldKeepAlive = false;
      res.once('close', () => {
        this.answers.delete(res);
        this.listener?.();
      });
    });
    server.prependListener('upgrade', (req: http.IncomingMessage) => this.begun(req.socket));
  }

  private begun(s: Socket): void {
    const n = this.requests.get(s);
    if (n !== undefined) this.requests.set(s, n + 1);
  }

  /** From now on every answer closes its connection; answers not yet begun included. */
  begin(): void {
    this.draining = true;
    for (const res of this.answers) if (!res.headersSent) res.shouldKeepAlive = false;
  }

  /** Open connections that have not begun a request (the head of their first may be arriving). */
  get fresh(): number {
    let n = 0;
    for (const begun of this.requests.values()) if (begun === 0) n++;
    return n;
  }

  /** Told whenever a response or a connection closes (one listener: the drain's). */
  onChange(fn: (() => void) | null): void {
    this.listener = fn;
  }
}
