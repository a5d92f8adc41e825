import type { Socket } from 'node:net';
import { Registry, Counter, Gauge, collectDefaultMetrics, type Metric } from 'prom-client';
import { PlainHistogram } from '@tunnel/host';
import type { HAManager, ConnectionEvent } from './ha/ha-manager.js';
import type { OriginProxyHooks } from './origin/origin-proxy.js';
import type { RelayConnection } from './ha/relay-connection.js';

const CLASS_LABELS = ['other', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/**
 * The connector's Prometheus metrics, on a registry of its own. The request
 * path bumps plain numbers (per status class) and one cached histogram
 * child; everything about connections is read from the HA manager at scrape
 * time.
 */
export class ConnectorMetrics {
  readonly registry = new Registry();
  /** OriginProxy hooks (pass as ConnectorOptions.hooks). */
  readonly originHooks: OriginProxyHooks;
  private readonly byClass = [0, 0, 0, 0, 0, 0];
  private readonly reconnects = new Map<string, number>();
  private readonly events = new Map<string, number>();
  private readonly sockets = new Set<Socket>();
  private closedIn = 0;
  private closedOut = 0;
  private ha: HAManager | null = null;
  private discovery: { outcomes: ReadonlyMap<string, number> } | null = null;

  constructor(o: { connectorId: string; tunnelId: string; version: string; defaultMetrics?: boolean }) {
    const registers = [this.registry];
    if (o.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    const self = this;

    new Gauge({ name: 'tunnel_info', help: 'Always 1; labels say which connector and tunnel this is.', labelNames: ['connector_id', 'tunnel', 'version'], registers })
      .labels(o.connectorId, o.tunnelId, o.version)
      .set(1);
    new Gauge({
      name: 'tunnel_ha_connections',
      help: 'Registered connections to relays (like cloudflared_tunnel_ha_connections).',
      registers,
      collect() {
        this.set(self.ha?.readyConnections ?? 0);
      },
    });
    new Gauge({
      name: 'tunnel_connections',
      help: 'Connections to relays by relay (its id once registered, else its URL) and state (dialing, registering, registered, draining).',
      labelNames: ['relay', 'state'],
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, number>();
        for (const c of self.ha?.connections() ?? []) {
          const key = `${c.relayId || c.relayUrl}\n${c.state}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        for (const [key, n] of counts) {
          const [relay, state] = key.split('\n') as [string, string];
          this.labels(relay, state).set(n);
        }
      },
    });
    new Gauge({
      name: 'tunnel_active_streams',
      help: 'Request streams open on the connections to relays.',
      registers,
      collect() {
        let n = 0;
        for (const c of self.ha?.connections() ?? []) n += c.streams;
        this.set(n);
      },
    });
    new Counter({
      name: 'tunnel_relay_lists_total',
      help: 'Relay lists fetched for discovery, by result: followed, or why not (unsigned, bad-signature, expired, stale, malformed).',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        for (const [result, n] of self.discovery?.outcomes ?? []) this.inc({ result }, n);
      },
    });
    new Counter({
      name: 'tunnel_requests_total',
      help: 'Requests answered to the relays (origin responses and connector errors), by tunnel and status class.',
      labelNames: ['tunnel', 'status_class'],
      registers,
      collect() {
        this.reset();
        for (let i = 0; i < 6; i++) if (self.byClass[i]! > 0) this.inc({ tunnel: o.tunnelId, status_class: CLASS_LABELS[i]! }, self.byClass[i]!);
      },
    });
    // Observed once per request: plain numbers, read by prom-client at scrape time.
    const origin = new PlainHistogram(
      'tunnel_origin_response_seconds',
      "Time from a request stream arriving to the origin's response head (connector errors included).",
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.registry.registerMetric(origin as unknown as Metric);
    new Counter({
      name: 'tunnel_bytes_total',
      help: 'Bytes on the wire to and from the relays (direction in = received, out = sent).',
      labelNames: ['direction'],
      registers,
      collect() {
        let inn = self.closedIn;
        let out = self.closedOut;
        for (const s of self.sockets) {
          inn += s.bytesRead;
          out += s.bytesWritten;
        }
        this.reset();
        this.inc({ direction: 'in' }, inn);
        this.inc({ direction: 'out' }, out);
      },
    });
    new Counter({
      name: 'tunnel_reconnects_total',
      help: 'Connections dialed again, by why the previous one ended (network, relay-unavailable, goaway, local).',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of self.reconnects) this.inc({ reason }, n);
      },
    });
    new Counter({
      name: 'tunnel_connection_events_total',
      help: 'Connection events, as logged: dial, registered, goaway, lost, dial-failed, backoff, drained, refused.',
      labelNames: ['event'],
      registers,
      collect() {
        this.reset();
        for (const [event, n] of self.events) this.inc({ event }, n);
      },
    });

    const byClass = this.byClass;
    this.originHooks = {
      onResponse(status: number, startedAt: bigint): void {
        const cls = (status / 100) | 0;
        byClass[cls >= 1 && cls <= 5 ? cls : 0]!++;
        origin.observe(Number(process.hrtime.bigint() - startedAt) / 1e9);
      },
    };
  }

  /** Follow the HA manager: connection gauges, events, reconnect reasons, wire bytes. */
  /** Relay discovery, for the lists it followed and refused. */
  attachDiscovery(discovery: { outcomes: ReadonlyMap<string, number> } | null): void {
    this.discovery = discovery;
  }

  attach(ha: HAManager): void {
    this.ha = ha;
    ha.on('connection', (e: ConnectionEvent) => {
      this.events.set(e.event, (this.events.get(e.event) ?? 0) + 1);
      if (e.event === 'lost' || e.event === 'dial-failed' || e.event === 'goaway') {
        const r = e.reason ?? 'unknown';
        this.reconnects.set(r, (this.reconnects.get(r) ?? 0) + 1);
      }
      if (e.event === 'registered') this.track(e.conn);
    });
  }

  private track(conn: RelayConnection): void {
    const sock = socketOf(conn);
    if (!sock || this.sockets.has(sock)) return;
    this.sockets.add(sock);
    sock.once('close', () => {
      this.sockets.delete(sock);
      this.closedIn += sock.bytesRead;
      this.closedOut += sock.bytesWritten;
    });
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/**
 * The TCP socket under a relay connection's WebSocket. RelayConnection keeps
 * its `ws` private; `ws` keeps the socket as `_socket` (stable across ws 8).
 */
function socketOf(conn: RelayConnection): Socket | undefined {
  const ws = (conn as unknown as { ws?: { _socket?: Socket | null } }).ws;
  return ws?._socket ?? undefined;
}
