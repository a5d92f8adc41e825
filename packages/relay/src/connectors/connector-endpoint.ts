import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { WebSocketServer } from 'ws';
import type { Logger } from 'pino';
import { MAX_CONN_INDEX, Session, TUNNEL_WS_OPTIONS, wsTransport } from '@tunnel/protocol';
import { checkTunnelCredential, type CredentialPolicy } from './credential-check.js';
import { ConnectorConnection } from './connector-connection.js';
import type { TunnelConnections } from './tunnel-connections.js';
import type { Store } from '../store/types.js';
import { NO_LIMIT_HITS, type LimitHits, type RelayLimits } from '../relay-limits.js';
import { RegistrationGate } from './registration-gate.js';

/** Why a connector was refused before the upgrade; printed by the CLI as is. */
export interface Refusal {
  status: 400 | 401 | 403 | 429 | 503;
  code: string;
  message: string;
  /** Seconds for a Retry-After header (429 without one says 5). */
  retryAfter?: number;
}

export interface EndpointDeps {
  relayId: string;
  region: string;
  publicKey: string;
  store: Store;
  connections: TunnelConnections;
  log: Logger;
  policy: CredentialPolicy;
  isDraining(): boolean;
  limits?: Pick<RelayLimits, 'sessionsPerToken' | 'sessionsPerConnector' | 'sessionMaxQueuedBytes' | 'sessionStallTimeoutMs' | 'sessionPingRate' | 'sessionRefusalRate' | 'registerTimeoutMs' | 'pendingRegistrations'>;
  hits?: LimitHits;
}

export const CONNECT_PATH = '/v1/connect';

/**
 * The `/v1/connect` upgrade: a connector's credential is checked before the
 * WebSocket handshake, so a refusal is a plain HTTP 401/403 with a JSON
 * reason (never an upgrade followed by a close the client can't explain).
 */
export class ConnectorEndpoint {
  private readonly wss = new WebSocketServer({
    noServer: true,
    ...TUNNEL_WS_OPTIONS,
  });

  /** Live sessions (from admission to socket close) per tunnel token and per tunnel+connector id. */
  private readonly perToken = new Map<string, number>();
  private readonly perConnector = new Map<string, number>();

  readonly registrations: RegistrationGate;

  constructor(private readonly deps: EndpointDeps) {
    this.registrations = new RegistrationGate(deps.limits?.pendingRegistrations ?? 0, deps.hits ?? NO_LIMIT_HITS);
  }

  async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {});
    const url = req.url ?? '';
    if (url !== CONNECT_PATH && !url.startsWith(CONNECT_PATH + '?')) {
      return refuse(socket, { status: 400, code: 'bad_path', message: `connect to ${CONNECT_PATH}` });
    }
    if (this.deps.isDraining()) {
      return refuse(socket, { status: 503, code: 'relay_draining', message: 'this relay is shutting down; use another relay' });
    }
    // Before the credential check: that check (a store read) is part of the work the ceiling bounds.
    const slot = this.registrations.enter();
    if ('retryAfterSeconds' in slot) {
      this.deps.log.debug({ code: 'relay_busy', ip: req.socket.remoteAddress }, 'connector upgrade refused: too many registrations in progress');
      return refuse(socket, { status: 503, code: 'relay_busy', message: 'this relay is registering too many connections; retry after the Retry-After delay', retryAfter: slot.retryAfterSeconds });
    }
    socket.once('close', slot.release);
    const result = await this.authenticate(req);
    if ('code' in result) {
      slot.release();
      this.deps.log.warn({ code: result.code, ip: req.socket.remoteAddress }, `connector refused: ${result.message}`);
      return refuse(socket, result);
    }
    if (socket.destroyed) return slot.release();
    const admitted = this.admit(result, socket);
    if (admitted !== true) {
      slot.release();
      this.deps.log.warn({ code: admitted.code, ip: req.socket.remoteAddress, tunnelId: result.tunnelId, connectorId: result.connectorId }, `connector refused: ${admitted.message}`);
      return refuse(socket, admitted);
    }
    const l = this.deps.limits;
    const hits = this.deps.hits ?? NO_LIMIT_HITS;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const session = new Session(wsTransport(ws), {
        client: false,
        maxOutboundQueued: l?.sessionMaxQueuedBytes,
        outboundStallMs: l?.sessionStallTimeoutMs,
        pingAnswersPerSecond: l?.sessionPingRate,
        refusalsPerSecond: l?.sessionRefusalRate,
        onLimit: (limit) => hits.hit(`session_${limit}`),
      });
      const conn = new ConnectorConnection(session, result, { relayId: this.deps.relayId, region: this.deps.region }, this.deps.log, hits, l?.registerTimeoutMs);
      conn.once('active', () => {
        slot.release();
        this.deps.connections.add(conn);
      });
      conn.on('draining', () => this.deps.connections.changed());
    });
  }

  /**
   * Count the session against its token and connector id until its socket
   * closes; a refusal past either ceiling. Synchronous after the (async)
   * credential check, so concurrent upgrades cannot overshoot.
   */
  private admit(id: { tokenId: string; tunnelId: string; connectorId: string }, socket: Duplex): true | Refusal {
    const maxToken = this.deps.limits?.sessionsPerToken ?? 0;
    const maxConnector = this.deps.limits?.sessionsPerConnector ?? 0;
    const connectorKey = `${id.tunnelId}\0${id.connectorId}`;
    const byToken = this.perToken.get(id.tokenId) ?? 0;
    const byConnector = this.perConnector.get(connectorKey) ?? 0;
    if (maxToken > 0 && byToken >= maxToken) {
      this.deps.hits?.hit('sessions_per_token');
      return { status: 429, code: 'too_many_sessions', message: `this tunnel token already has ${byToken} connections to this relay (limit ${maxToken})` };
    }
    if (maxConnector > 0 && byConnector >= maxConnector) {
      this.deps.hits?.hit('sessions_per_connector');
      return { status: 429, code: 'too_many_sessions', message: `connector ${id.connectorId} already has ${byConnector} connections to this relay (limit ${maxConnector})` };
    }
    this.perToken.set(id.tokenId, byToken + 1);
    this.perConnector.set(connectorKey, byConnector + 1);
    socket.once('close', () => {
      release(this.perToken, id.tokenId);
      release(this.perConnector, connectorKey);
    });
    return true;
  }

  private async authenticate(req: IncomingMessage): Promise<ConstructorParameters<typeof ConnectorConnection>[1] | Refusal> {
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7).trim() : '';
    const checked = await checkTunnelCredential(token, this.deps.publicKey, this.deps.store, this.deps.policy);
    if ('code' in checked) {
      if (checked.code === 'tunnel_unknown') this.warnWiped();
      return checked;
    }
    const { claims } = checked;
    const connectorId = header(req, 'tunnel-connector-id') ?? '';
    const idx = Number(header(req, 'tunnel-conn-index'));
    // Informational only (the dashboard shows it): dropped unless it looks like a host name.
    const host = header(req, 'tunnel-connector-host') ?? '';
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(connectorId) || !Number.isInteger(idx) || idx < 0 || idx > MAX_CONN_INDEX) {
      return { status: 400, code: 'bad_headers', message: `Tunnel-Connector-Id and Tunnel-Conn-Index (0..${MAX_CONN_INDEX}) are required` };
    }
    // A quick tunnel has one connector: its token works for no other.
    if (claims.quick !== undefined && claims.quick.connectorId !== connectorId) {
      return { status: 403, code: 'quick_wrong_connector', message: 'this quick tunnel token belongs to another connector' };
    }
    return {
      connectionId: randomUUID(),
      tunnelId: claims.tunnelId,
      accountId: claims.accountId,
      tokenId: claims.jti,
      ...(typeof claims.exp === 'number' ? { tokenExpiresAt: claims.exp * 1000 } : {}),
      connectorId,
      connIndex: idx,
      version: (header(req, 'tunnel-version') ?? 'unknown').slice(0, 64),
      clientIp: req.socket.remoteAddress ?? '',
      ...(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/.test(host) ? { host } : {}),
    };
  }

  private lastWipeWarning = 0;

  private warnWiped(): void {
    const now = Date.now();
    if (now - this.lastWipeWarning < 5_000) return;
    this.lastWipeWarning = now;
    this.deps.log.warn(
      { event: 'store-wiped' },
      'store looks empty or wiped: a valid credential names a tunnel the store does not know and that was never deleted; refusing with tunnel_unknown (retryable). Restore the store (Redis: appendonly yes)',
    );
  }

  close(): void {
    this.wss.close();
  }
}

function release(m: Map<string, number>, key: string): void {
  const n = (m.get(key) ?? 1) - 1;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function refuse(socket: Duplex, r: Refusal): void {
  if (socket.destroyed) return;
  const body = JSON.stringify({ error: { code: r.code, message: r.message } });
  const text = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 429: 'Too Many Requests', 503: 'Service Unavailable' }[r.status];
  const retryAfter = r.retryAfter ?? (r.status === 429 ? 5 : undefined);
  socket.end(
    `HTTP/1.1 ${r.status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${retryAfter !== undefined ? `Retry-After: ${retryAfter}\r\n` : ''}Connection: close\r\n\r\n${body}`,
  );
}
