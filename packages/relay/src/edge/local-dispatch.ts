import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import type { Logger } from 'pino';
import {
  checkRequestHead,
  checkResponseHead,
  decodeResponseHead,
  encodeRequestHead,
  readHead,
  RETRYABLE_METHODS,
  type BodyFraming,
  type HeadCheck,
  type HeaderPairs,
  type ResponseHead,
  type YamuxStream,
} from '@tunnel/protocol';
import type { ConnectorConnection } from '../connectors/connector-connection.js';
import type { TunnelConnections } from '../connectors/tunnel-connections.js';
import { ErrorAnswers, RelayErrors, type TunnelErrorInfo } from './error-page.js';
import type { Dispatch, Exchange, ProxyHooks } from './exchange.js';

/**
 * Serves an exchange over a stream of one of this relay's own connections
 * for the tunnel: the one with the fewest streams in flight, and once more
 * on another when the first fails before anything of the answer went out
 * and the request can be sent again.
 */
export class LocalDispatch implements Dispatch {
  /** Sets it apart from any other Dispatch: the peer endpoint takes this one only, so nothing is forwarded twice. */
  readonly serves = 'own-connections';

  constructor(
    private readonly connections: TunnelConnections,
    private readonly log: Logger,
    private readonly hooks: ProxyHooks,
    private readonly errors: ErrorAnswers,
  ) {}

  serve(ex: Exchange, res: ServerResponse): boolean {
    const conn = this.connections.pick(ex.route.tunnelId);
    if (!conn) return false;
    this.send(ex, conn, res);
    return true;
  }

  upgrade(ex: Exchange, socket: Duplex, clientHead: Buffer): boolean {
    const conn = this.connections.pick(ex.route.tunnelId);
    if (!conn) return false;
    this.sendUpgrade(ex, conn, socket, clientHead);
    return true;
  }

  /** A second try on another connection of the tunnel, if there is one and this was the first. */
  private retry(ex: Exchange, failed: ConnectorConnection, res: ServerResponse): boolean {
    const other = ex.attempt === 0 ? this.connections.pick(ex.route.tunnelId, failed) : undefined;
    if (!other) return false;
    this.send({ ...ex, attempt: ex.attempt + 1 }, other, res);
    return true;
  }

  /**
   * The head, checked and encoded before any stream opens: one the tunnel
   * cannot carry is refused (400, or 431 over the head limits), never a crash.
   */
  private prepare(ex: Exchange): { ok: true; body: BodyFraming; encoded: Buffer } | { ok: false; refusal: TunnelErrorInfo } {
    const checked = checkRequestHead(ex.head);
    if (!checked.ok) {
      this.log.info({ requestId: ex.requestId, reason: checked.reason }, 'bad request head from client');
      return { ok: false, refusal: RelayErrors.badRequest(checked.reason) };
    }
    try {
      return { ok: true, body: checked.body, encoded: encodeRequestHead(ex.head) };
    } catch (e) {
      return { ok: false, refusal: RelayErrors.headTooLarge((e as Error).message) };
    }
  }

  private send(ex: Exchange, conn: ConnectorConnection, res: ServerResponse): void {
    const { req, head, requestId, route, startedAt } = ex;
    const prepared = this.prepare(ex);
    if (!prepared.ok) return this.errors.send(ex, res, prepared.refusal);
    const { encoded } = prepared;
    let stream: YamuxStream;
    try {
      stream = conn.openStream();
    } catch {
      if (this.retry(ex, conn, res)) return;
      return this.errors.send(ex, res, RelayErrors.connectorStreamFailed());
    }
    const given = ex.body.kind === 'buffered' ? ex.body.bytes : undefined;
    const source: Readable = ex.body.kind === 'sealed' ? ex.body.stream : req;
    const bodyless = given ? given.length === 0 : prepared.body.kind === 'none';
    if (bodyless) {
      stream.end(encoded);
      if (source !== req) source.resume();
    } else if (given) {
      stream.write(encoded);
      stream.end(given);
    } else {
      stream.write(encoded);
      // A body source that fails (a bad MAC) resets the stream: the origin
      // sees an aborted request, never a short one passed off as complete.
      if (source !== req) source.once('error', (e) => stream.destroy(e));
      source.pipe(stream);
    }

    let state: 'waiting' | 'streaming' | 'done' = 'waiting';
    const onStreamError = (err: Error) => {
      if (state === 'done') return;
      if (state === 'streaming') {
        // Mid-body: abort the client's response so a short body is never passed off as complete.
        state = 'done';
        this.log.debug({ requestId, err: err.message }, 'stream failed mid-response');
        res.destroy(err);
        return;
      }
      state = 'done';
      // Sent again only when the whole body is at hand (or there is none),
      // and only a request that may be repeated.
      const wholeBody = (source === req && req.readableEnded) || given !== undefined || bodyless;
      if (wholeBody && (bodyless || RETRYABLE_METHODS.has(head.method)) && !res.destroyed && this.retry(ex, conn, res)) {
        this.log.debug({ requestId, err: err.message }, 'retried on another connection');
        return;
      }
      this.errors.send(ex, res, RelayErrors.connectorStreamFailed());
    };
    stream.on('error', onStreamError);

    /** The connector's answer cannot be passed on: a 502 if nothing went out yet, else the client connection is cut. */
    const refuse = (reason: string) => {
      const wasStreaming = state === 'streaming';
      state = 'done';
      stream.destroy();
      this.log.warn({ requestId, reason }, 'bad response from connector');
      if (wasStreaming && res.headersSent) {
        // Never a short body passed off as complete, never bytes past the declared length.
        res.destroy();
        this.hooks.onResponse?.(route, 502, startedAt);
        return;
      }
      this.errors.send(ex, res, RelayErrors.badResponseHead());
    };

    readHead(stream, (err, body) =>
      lastResort(this.log, requestId, () => refuse('relay error'), () => {
        if (err) {
          onStreamError(err);
          stream.destroy();
          return;
        }
        if (state !== 'waiting') return;
        const ok = connectorAnswer(body!, head.method, false);
        if (!ok.ok) return refuse(ok.reason);
        const rh = ok.head;
        state = 'streaming';
        // The rest of the message that carried the head (body, FIN) is parsed
        // before the next tick: decide then between one write and a pipe.
        process.nextTick(() => lastResort(this.log, requestId, () => refuse('relay error'), () => sendBody(rh, ok.headers, ok.body)));
      }),
    );

    const sendBody = (rh: ResponseHead, headers: HeaderPairs, framing: BodyFraming) => {
      if (state !== 'streaming' || res.destroyed) return;
      const flat: string[] = new Array(headers.length * 2 + 2);
      let i = 0;
      for (const [k, v] of headers) {
        flat[i++] = k;
        flat[i++] = v;
      }
      flat[i++] = 'Tunnel-Request-Id';
      flat[i] = requestId;
      if (stream.remoteEnded) {
        // The whole response is already here (the common small response):
        // check its length, then head and body leave in one write, with no
        // pipe to set up.
        const parts: Buffer[] = [];
        let total = 0;
        let c: Buffer | null;
        while ((c = stream.read() as Buffer | null) !== null) {
          parts.push(c);
          total += c.length;
        }
        const want = framing.kind === 'length' ? framing.length : framing.kind === 'none' ? 0 : total;
        if (total !== want) return refuse(`body of ${total} bytes where the head declares ${want}`);
        state = 'done';
        res.writeHead(rh.status, rh.statusText || undefined, flat);
        res.end(parts.length === 0 ? undefined : parts.length === 1 ? parts[0] : Buffer.concat(parts, total));
        this.hooks.onResponse?.(route, rh.status, startedAt);
        return;
      }
      res.writeHead(rh.status, rh.statusText || undefined, flat);
      pumpBody(stream, res, framing, refuse, () => {
        if (state !== 'streaming') return;
        state = 'done';
        this.hooks.onResponse?.(route, rh.status, startedAt);
      });
      // writeHead only stores the head; node sends it with the first body
      // write. A body that comes later (SSE, streamed or long-held responses)
      // must not hold the head back: flush it once the bytes already here
      // (usually the whole small body) have had their turn to go out with it.
      setImmediate(() => {
        if (!res.writableEnded && !res.destroyed) res.flushHeaders();
      });
    };

    res.once('finish', () => {
      // The origin answered (e.g. 413) before reading the whole request body.
      // The response is out, so nothing is lost by resetting the stream; left
      // half-open it would never close. The client's remaining body is read and
      // discarded here (as node does for an unread body) so its connection
      // stays usable, rather than closed under a response still in flight.
      if (!stream.writableEnded && !stream.destroyed) {
        this.log.debug({ event: 'body-unread', requestId }, 'response finished before the request body: stream reset');
        req.unpipe(stream);
        req.resume();
        stream.destroy();
      }
    });
    res.once('close', () => {
      // Client went away before the response finished: cancel upstream.
      if (!res.writableFinished && !stream.destroyed) {
        state = 'done';
        this.log.debug({ event: 'client-cancelled', requestId }, 'client went away before the response finished: stream reset');
        stream.destroy();
      }
    });
  }

  /** The stream becomes a raw two-way pipe after a 101. */
  private sendUpgrade(ex: Exchange, conn: ConnectorConnection, socket: Duplex, clientHead: Buffer): void {
    const { head, requestId } = ex;
    const prepared = this.prepare(ex);
    if (!prepared.ok) return this.errors.raw(ex, socket, prepared.refusal);
    let stream: YamuxStream;
    try {
      stream = conn.openStream();
    } catch {
      return this.errors.raw(ex, socket, RelayErrors.connectorStreamFailed());
    }
    stream.on('error', () => resetSocket(socket));
    socket.on('close', () => stream.destroy());
    stream.write(prepared.encoded);
    if (clientHead.length > 0) stream.write(clientHead);
    const refuseUpgrade = (reason: string): void => {
      this.log.warn({ requestId, reason }, 'bad response from connector');
      stream.destroy();
      this.errors.raw(ex, socket, RelayErrors.badResponseHead());
    };
    readHead(stream, (err, body) =>
      lastResort(this.log, requestId, () => resetSocket(socket), () => {
        if (err) return this.errors.raw(ex, socket, RelayErrors.connectorStreamFailed());
        const ok = connectorAnswer(body!, head.method, true);
        if (!ok.ok) return refuseUpgrade(ok.reason);
        const rh = ok.head;
        // Built from checked pieces only: no CR LF can reach the client from a connector.
        let lines = `HTTP/1.1 ${rh.status} ${rh.statusText || STATUS_CODES[rh.status] || ''}\r\n`;
        for (const [k, v] of ok.headers) lines += `${k}: ${v}\r\n`;
        // After a refusal the connection ends with the body: it is never reused.
        lines += rh.status === 101 ? 'Connection: Upgrade\r\n' : 'Connection: close\r\n';
        lines += `Tunnel-Request-Id: ${requestId}\r\n\r\n`;
        socket.write(lines, 'latin1');
        this.hooks.onResponse?.(ex.route, rh.status, ex.startedAt);
        if (rh.status === 101) {
          stream.pipe(socket);
          socket.pipe(stream);
          return;
        }
        // Origin refused the upgrade: relay its answer, held to its length, then close.
        pumpBody(stream, socket, ok.body, (why) => {
          this.log.warn({ requestId, reason: why }, 'bad response from connector');
          stream.destroy();
          resetSocket(socket);
        }, () => {});
      }),
    );
  }
}

/**
 * Stream a body to `to` holding it to its declared framing: a byte past the
 * declared length, or an end short of it, goes to `refuse` (which cuts the
 * client connection) instead of reaching the client, where extra bytes would
 * read as a forged next response and missing ones would eat the next one.
 */
function pumpBody(from: YamuxStream, to: ServerResponse | Duplex, framing: BodyFraming, refuse: (why: string) => void, done: () => void): void {
  const limit = framing.kind === 'length' ? framing.length : framing.kind === 'none' ? 0 : -1;
  let sent = 0;
  let failed = false;
  const resume = () => from.resume();
  from.on('data', (c: Buffer) => {
    if (failed) return;
    if (limit >= 0 && sent + c.length > limit) {
      failed = true;
      return refuse(`body longer than the declared ${limit} bytes`);
    }
    sent += c.length;
    if (!to.write(c)) {
      from.pause();
      to.once('drain', resume);
    }
  });
  from.once('end', () => {
    if (failed) return;
    if (limit >= 0 && sent !== limit) return refuse(`body of ${sent} bytes where the head declares ${limit}`);
    to.end();
    done();
  });
  from.resume();
}

/**
 * The last resort for one request: a throw in its handling (a bug, or input
 * no check foresaw) ends that request with a logged reason, never the process.
 */
export function lastResort(log: Logger, requestId: string, end: () => void, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    log.error({ requestId, err: (e as Error).message, stack: (e as Error).stack }, 'request handler failed: request ended');
    try {
      end();
    } catch {
      /* ending it failed too: nothing more to do for this request */
    }
  }
}

/**
 * End an upgraded client connection whose tunnel stream was reset with a TCP
 * RST rather than a FIN, so a raw TCP client (`tunnel access tcp`) sees a cut
 * connection, not a clean end. TLS sockets cannot be reset; they are destroyed.
 */
function resetSocket(socket: Duplex): void {
  const s = socket as Duplex & { resetAndDestroy?: () => void };
  try {
    if (typeof s.resetAndDestroy === 'function') return void s.resetAndDestroy();
  } catch {
    /* not a plain TCP socket */
  }
  socket.destroy();
}

/** A connector's response head, decoded and checked: the one gate both the plain and the upgrade path pass through. */
function connectorAnswer(body: Buffer, method: string, upgrade: boolean): HeadCheck<{ head: ResponseHead; headers: HeaderPairs; body: BodyFraming }> {
  let head: ResponseHead;
  try {
    head = decodeResponseHead(body);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const checked = checkResponseHead(head, { method, upgrade });
  return checked.ok ? { ok: true, head, headers: checked.headers, body: checked.body } : checked;
}
