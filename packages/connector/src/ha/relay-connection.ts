import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import WebSocket from 'ws';
import type { Logger } from 'pino';
import { relayTrust } from '../origin/ca-trust.js';
import {
  encodeControl,
  readControl,
  Session,
  wsTransport,
  TUNNEL_WS_OPTIONS,
  zeroMask,
  type ControlMessage,
  type SessionOptions,
  type YamuxStream,
} from '@tunnel/protocol';
import { systemClock, type Clock } from './clock.js';
import { parseRetryAfter } from './retry-after.js';

/**
 * One outbound connection to a relay:
 *
 *   dialing --upgrade ok--> registering --registered--> registered --(relay GoAway | we drain)--> draining --> closed
 *   dialing|registering --failure--> closed
 *
 * Why it ended decides what the HA manager does next: `refused` and `revoked`
 * are final (the credential will not get better by retrying), everything else
 * is retried with backoff.
 */
export type RelayConnState = 'dialing' | 'registering' | 'registered' | 'draining' | 'closed';

export type CloseReason =
  | { kind: 'refused'; status: number; code: string; message: string }
  | { kind: 'revoked'; code: string; message: string }
  /** `retryAfterMs`: the relay asked not to be dialled again sooner (a 503/429 with Retry-After). */
  | { kind: 'relay-unavailable'; status: number; code: string; message: string; retryAfterMs?: number }
  | { kind: 'network'; message: string }
  | { kind: 'goaway'; message: string }
  | { kind: 'local'; message: string };

export interface RelayConnOptions {
  relayUrl: string;
  token: string;
  connectorId: string;
  connIndex: number;
  version: string;
  log: Logger;
  /** Serve a request stream the relay opened. */
  onStream(stream: YamuxStream): void;
  handshakeTimeoutMs?: number;
  /** Timers and now() (tests pass a fake clock; the WebSocket and the session keep real time). */
  clock?: Clock;
  /** The session's heartbeat: a ping every interval, the connection ends when one goes unanswered for the timeout. */
  keepalive?: Pick<SessionOptions, 'keepaliveIntervalMs' | 'keepaliveTimeoutMs'>;
}

export interface RelayConnEvents {
  registered: [info: { relayId: string; region: string; connectionId: string }];
  /** The relay asked us to leave (GoAway): replace this connection. */
  goaway: [];
  closed: [reason: CloseReason];
}

export class RelayConnection extends EventEmitter<RelayConnEvents> {
  private _state: RelayConnState = 'dialing';
  private ws: WebSocket;
  private session: Session | null = null;
  private control: YamuxStream | null = null;
  private closeReason: CloseReason | null = null;
  private drainAcked: (() => void) | null = null;
  relayId = '';
  region = '';
  connectionId = '';
  registeredAt = 0;
  private readonly clock: Clock;

  constructor(readonly opts: RelayConnOptions) {
    super();
    this.clock = opts.clock ?? systemClock;
    const url = opts.relayUrl.replace(/\/+$/, '') + '/v1/connect';
    this.ws = new WebSocket(url, {
      headers: {
        authorization: `Bearer ${opts.token}`,
        'tunnel-connector-id': opts.connectorId,
        'tunnel-conn-index': String(opts.connIndex),
        'tunnel-version': opts.version,
        // Shown to operators on the relay dashboard next to the connector id.
        'tunnel-connector-host': hostname(),
      },
      ...TUNNEL_WS_OPTIONS,
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
      generateMask: zeroMask,
      ...relayTrust.tlsOptions(),
    });
    this.ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        if (chunks.length < 64) chunks.push(c);
      });
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        let code = `http_${status}`;
        let message = res.statusMessage ?? 'unexpected response';
        try {
          const j = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code?: string; message?: string } };
          code = j.error?.code ?? code;
          message = j.error?.message ?? message;
        } catch {
          /* not our relay's JSON: keep the status line */
        }
        // A credential revoked or a tunnel deleted before we connected ends the
        // connector like one revoked while it runs (exit 3, as the README says).
        this.finish(
          status === 403 && (code === 'tunnel_deleted' || code === 'credential_revoked')
            ? { kind: 'revoked', code, message }
            : status === 401 || status === 403
              ? { kind: 'refused', status, code, message }
              : { kind: 'relay-unavailable', status, code, message, ...retryAfter(res.headers['retry-after']) },
        );
        this.ws.terminate();
      });
      res.on('error', () => this.finish({ kind: 'network', message: `relay answered ${res.statusCode}` }));
    });
    this.ws.on('error', (e) => this.finish({ kind: 'network', message: e.message }));
    this.ws.on('close', () => this.finish({ kind: 'network', message: 'connection closed' }));
    this.ws.on('open', () => this.onOpen());
  }

  get state(): RelayConnState {
    return this._state;
  }

  get streams(): number {
    return this.session ? Math.max(0, this.session.streamCount - 1) : 0;
  }

  get rtt(): number {
    return this.session?.rtt ?? -1;
  }

  private onOpen(): void {
    this._state = 'registering';
    const session = new Session(wsTransport(this.ws), { client: true, ...this.opts.keepalive });
    this.session = session;
    session.on('close', (err) => {
      this.finish(this.closeReason ?? { kind: 'network', message: err ? err.message : 'session closed' });
    });
    session.on('goaway', () => {
      if (this._state === 'registered') {
        this._state = 'draining';
        this.opts.log.info({ event: 'goaway', relayId: this.relayId, connIndex: this.opts.connIndex }, 'relay is draining this connection');
        this.emit('goaway');
      }
    });
    session.on('stream', (s) => {
      if (this._state === 'registered' || this._state === 'draining') this.opts.onStream(s);
      else s.destroy();
    });
    const control = session.openStream();
    this.control = control;
    control.on('error', () => {});
    readControl(control, {
      message: (m) => this.onControl(m),
      bad: (e) => this.abort({ kind: 'network', message: `bad control message from relay: ${e.message}` }),
    });
    control.write(
      encodeControl({ type: 'register', connectorId: this.opts.connectorId, connIndex: this.opts.connIndex, version: this.opts.version, features: ['http', 'websocket'] }),
    );
    const timer = this.clock.setTimeout(() => {
      if (this._state === 'registering') this.abort({ kind: 'network', message: 'relay did not confirm registration within 10 s' });
    }, 10_000);
    timer.unref();
  }

  private onControl(m: ControlMessage): void {
    switch (m.type) {
      case 'registered':
        if (this._state !== 'registering') return;
        this.relayId = m.relayId;
        this.region = m.region;
        this.connectionId = m.connectionId;
        this.registeredAt = this.clock.now();
        this._state = 'registered';
        this.emit('registered', { relayId: m.relayId, region: m.region, connectionId: m.connectionId });
        return;
      case 'drain':
        this.drainAcked?.();
        return;
      case 'error':
        this.closeReason =
          m.code === 'tunnel_deleted' || m.code === 'credential_revoked'
            ? { kind: 'revoked', code: m.code, message: m.message }
            : { kind: 'network', message: `relay error ${m.code}: ${m.message}` };
        return;
      default:
        return;
    }
  }

  /**
   * Graceful leave: tell the relay to send no new streams, let in-flight ones
   * finish (up to `graceMs`), then close.
   */
  async drain(graceMs: number): Promise<void> {
    if (this._state === 'closed') return;
    if (this._state !== 'registered' && this._state !== 'draining') return this.abort({ kind: 'local', message: 'shutting down' });
    this._state = 'draining';
    this.control?.write(encodeControl({ type: 'drain' }));
    // Wait for the relay's echo: after it, no new stream can arrive.
    await new Promise<void>((resolve) => {
      const t = this.clock.setTimeout(resolve, Math.min(2_000, graceMs));
      t.unref();
      this.drainAcked = () => {
        this.clock.clear(t);
        resolve();
      };
    });
    this.drainAcked = null;
    // In-flight streams finish (each one's close is an event), or the grace period ends.
    await new Promise<void>((resolve) => {
      const session = this.session;
      const done = () => {
        this.clock.clear(t);
        session?.off('streamclosed', check);
        session?.off('close', done);
        resolve();
      };
      const check = () => {
        if (this._state === 'closed' || this.streams === 0) done();
      };
      const t = this.clock.setTimeout(done, graceMs);
      session?.on('streamclosed', check);
      session?.once('close', done);
      check();
    });
    this.abort({ kind: 'local', message: 'drained' });
  }

  abort(reason: CloseReason): void {
    if (this._state === 'closed') return;
    this.closeReason = this.closeReason ?? reason;
    if (this.session) this.session.close();
    this.ws.close(1000);
    // If the close handshake stalls, don't wait for it.
    this.clock.setTimeout(() => this.ws.terminate(), 1000).unref();
    this.finish(this.closeReason);
  }

  private finish(reason: CloseReason): void {
    if (this._state === 'closed') return;
    this._state = 'closed';
    const r = this.closeReason ?? reason;
    if (this.session && !this.session.closed) this.session.destroy();
    // A graceful close (CLOSING) still has the last responses to flush: let
    // the close handshake finish (abort() arms a 1 s terminate as backstop).
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    this.emit('closed', r);
  }
}

function retryAfter(header: string | undefined): { retryAfterMs?: number } {
  const ms = parseRetryAfter(header);
  return ms === undefined ? {} : { retryAfterMs: ms };
}
