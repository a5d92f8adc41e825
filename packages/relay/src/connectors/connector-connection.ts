import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  readControl,
  encodeControl,
  GoAwayCode,
  type ControlMessage,
  type Session,
  type YamuxStream,
} from '@tunnel/protocol';
import { NO_LIMIT_HITS, type LimitHits } from '../relay-limits.js';

/**
 * One connector connection as the relay sees it:
 *
 *   registering --register ok--> active --connector 'drain' or relay drain--> draining --session ends--> closed
 *   registering --bad/missing register, timeout, session ends--> closed
 *
 * Only `active` connections take new request streams.
 */
export type ConnState = 'registering' | 'active' | 'draining' | 'closed';

export interface ConnIdentity {
  connectionId: string;
  tunnelId: string;
  accountId: string;
  tokenId: string;
  /** When the credential expires (ms); absent for a legacy credential. The relay ends the connection then. */
  tokenExpiresAt?: number;
  connectorId: string;
  connIndex: number;
  version: string;
  clientIp: string;
  /** The host name the connector reported (Tunnel-Connector-Host), when it is a plausible one. */
  host?: string;
}

export interface ConnectorConnectionEvents {
  active: [];
  draining: [];
  closed: [reason: string];
  /** No request stream in flight any more (a drain waits for this). */
  idle: [];
}

export class ConnectorConnection extends EventEmitter<ConnectorConnectionEvents> {
  private _state: ConnState = 'registering';
  private control: YamuxStream | null = null;
  /** Request streams opened and not yet finished. */
  inflight = 0;
  readonly connectedAt = Date.now();

  constructor(
    readonly session: Session,
    readonly id: ConnIdentity,
    private readonly relay: { relayId: string; region: string },
    private readonly log: Logger,
    private readonly hits: LimitHits = NO_LIMIT_HITS,
    /** --register-timeout (0: none; the per-token session ceiling still bounds such sessions). */
    registerTimeoutMs = 10_000,
  ) {
    super();
    const timer =
      registerTimeoutMs > 0
        ? setTimeout(() => {
            if (this._state !== 'registering') return;
            this.hits.hit('register_timeout');
            this.fail(`no register message within ${registerTimeoutMs} ms`);
          }, registerTimeoutMs)
        : undefined;
    timer?.unref();
    session.on('stream', (s) => this.onPeerStream(s));
    session.on('close', (err) => {
      clearTimeout(timer);
      this.transition('closed', err ? err.message : 'session closed');
    });
  }

  get state(): ConnState {
    return this._state;
  }

  /** Open a request stream; the caller must have checked `usable`. */
  openStream(): YamuxStream {
    const s = this.session.openStream();
    this.inflight++;
    let counted = true;
    const done = () => {
      if (!counted) return;
      counted = false;
      if (--this.inflight === 0) this.emit('idle');
    };
    s.once('close', done);
    return s;
  }

  get usable(): boolean {
    return this._state === 'active' && this.session.canOpen;
  }

  /** The connector asked to leave (as opposed to this relay draining). */
  private leaving = false;

  /** Draining because this relay is, but the connector still serves streams. */
  get lastResort(): boolean {
    return this._state === 'draining' && !this.leaving && this.session.canOpen;
  }

  /** Relay is shutting down: GoAway, so the connector moves this connection elsewhere. */
  drain(): void {
    if (this._state === 'closed') return;
    this.session.goAway(GoAwayCode.Normal);
    this.transition('draining', 'relay draining');
  }

  close(): void {
    this.session.close();
  }

  /** Credential no longer valid: tell the connector why (it must not retry), then close. */
  terminate(code: string, message: string): void {
    if (this._state === 'closed') return;
    if (this.control && !this.control.destroyed) this.control.write(encodeControl({ type: 'error', code: code.slice(0, 250), message: message.slice(0, 250) }));
    this.session.goAway(GoAwayCode.Normal);
    // Let the error message flush before the byte stream closes.
    setImmediate(() => this.session.close());
    this.transition('closed', `${code}: ${message}`);
  }

  private onPeerStream(s: YamuxStream): void {
    s.on('error', () => {});
    if (this.control) {
      // Connectors open exactly one stream (control): another is a
      // protocol violation, and a flood of them must cost nothing.
      s.destroy();
      this.hits.hit('connector_streams');
      this.fail('connector opened a stream other than its control stream');
      return;
    }
    this.control = s;
    readControl(s, {
      message: (m) => this.onControl(m),
      bad: (e) => this.fail(`bad control message: ${e.message}`),
    });
    s.on('end', () => {
      if (this._state !== 'closed') this.fail('control stream closed');
    });
  }

  private onControl(m: ControlMessage): void {
    switch (m.type) {
      case 'register':
        if (this._state !== 'registering') return this.fail('register sent twice');
        if (m.connIndex !== this.id.connIndex || m.connectorId !== this.id.connectorId) {
          return this.fail('register does not match the connection headers');
        }
        this.control!.write(
          encodeControl({ type: 'registered', relayId: this.relay.relayId, region: this.relay.region, connectionId: this.id.connectionId }),
        );
        this.transition('active', 'registered');
        return;
      case 'drain':
        // The connector is leaving: no new streams from now on. The echo tells
        // it so; every stream opened before the echo reaches it first (one
        // ordered byte stream), so it can close once those are done.
        this.leaving = true;
        this.transition('draining', 'connector draining');
        this.control?.write(encodeControl({ type: 'drain' }));
        return;
      default:
        // registered/error are relay→connector only.
        return this.fail(`unexpected control message ${m.type}`);
    }
  }

  private fail(reason: string): void {
    if (this._state === 'closed') return;
    this.log.warn({ connectionId: this.id.connectionId, reason }, 'connector connection refused');
    if (this.control && !this.control.destroyed) {
      this.control.write(encodeControl({ type: 'error', code: 'protocol', message: reason.slice(0, 250) }));
    }
    this.session.goAway(GoAwayCode.ProtocolError);
    this.session.close();
    this.transition('closed', reason);
  }

  private transition(next: ConnState, reason: string): void {
    const prev = this._state;
    if (prev === next || prev === 'closed') return;
    if (next === 'active' && prev !== 'registering') return;
    this._state = next;
    this.log.info(
      {
        event: next,
        connectionId: this.id.connectionId,
        tunnelId: this.id.tunnelId,
        connectorId: this.id.connectorId,
        connIndex: this.id.connIndex,
        from: prev,
        reason,
      },
      `connector connection ${next}`,
    );
    if (next === 'closed') {
      this.emit('closed', reason);
    } else if (next === 'active') this.emit('active');
    else if (next === 'draining') this.emit('draining');
  }
}
