import type { Socket } from 'node:net';
import { Registry, Counter, Gauge, collectDefaultMetrics, type Metric } from 'prom-client';
import { PlainHistogram } from '@tunnel/host';
import type { Route, Store } from './store/types.js';
import type { ProxyHooks } from './edge/exchange.js';
import type { TunnelConnections } from './connectors/tunnel-connections.js';
import type { ConnectorConnection } from './connectors/connector-connection.js';
import type { RelayCertificate } from './edge/listener-tls.js';
import { LIMIT_NAMES, type LimitHits, type LimitName } from './relay-limits.js';
import { scrapeCounter, scrapeGauge } from './scrape-metrics.js';
import type { AcmeStats } from './tls/certificate-manager.js';
import { H2_REFUSAL_REASONS, noRefusedStreams, type H2RefusedStreams } from './edge/h2-refused-streams.js';

/** Requests one tunnel has seen on this relay, by status class (index 1..5 = 1xx..5xx, 0 = other). */
export interface TunnelTraffic {
  readonly tunnelId: string;
  readonly byClass: number[];
  total: number;
  /** 5xx answers (the relay's own error pages included). */
  errors: number;
}

export interface LimitGaugeSources {
  publicConnections: () => number;
  pendingLogins: () => number;
  accessPendingLogins: () => number;
  pendingRegistrations: () => number;
}

const CLASS_LABELS = ['other', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/**
 * The relay's Prometheus metrics, on a registry of its own. The request path
 * only bumps plain numbers in a per-tunnel record (no label objects, no
 * hashing); prom-client reads them at scrape time through `collect()`.
 * Gauges about connections are computed at scrape time from the live set.
 */
export class RelayMetrics implements LimitHits {
  readonly registry = new Registry();
  private readonly traffic = new Map<string, TunnelTraffic>();
  private readonly forwarded = new Map<string, number>();
  private readonly peerRefused = new Map<string, number>();
  private legacyCredentials: () => number = () => 0;
  private readonly storeErrors = new Map<string, number>();
  private readonly disconnects = new Map<string, number>();
  private registrations = 0;
  private readonly limitHits = new Map<LimitName, number>(LIMIT_NAMES.map((n) => [n, 0]));
  private gaugeSources: LimitGaugeSources = { publicConnections: () => 0, pendingLogins: () => 0, accessPendingLogins: () => 0, pendingRegistrations: () => 0 };
  private readonly accessOutcomes = new Map<string, number>();
  private readonly duration: PlainHistogram;
  private readonly bytes = {
    public: { live: new Set<Socket>(), closedIn: 0, closedOut: 0 },
    connector: { live: new Set<Socket>(), closedIn: 0, closedOut: 0 },
  };
  private connections: TunnelConnections | null = null;
  private certificate: RelayCertificate | null = null;
  private publicInFlight: () => number = () => 0;
  private claimChecks: { inFlight: number; max: number; refused: number } | null = null;
  private h2: { sessions: number; streams: number } = { sessions: 0, streams: 0 };
  private h2Refused: H2RefusedStreams = noRefusedStreams();
  private acme: AcmeStats | null = null;

  /** Hooks for the request path (RequestProxy, LocalDispatch, the peer endpoint). */
  readonly hooks: ProxyHooks;

  constructor(o: { relayId: string; region: string; version: string; defaultMetrics?: boolean }) {
    const registers = [this.registry];
    if (o.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });

    new Gauge({
      name: 'tunnel_relay_info',
      help: 'Always 1; labels say which relay this is.',
      labelNames: ['relay', 'region', 'version'],
      registers,
    })
      .labels(o.relayId, o.region, o.version)
      .set(1);

    const self = this;
    new Gauge({
      name: 'tunnel_relay_connector_connections',
      help: 'Connector connections held by this relay, by state (active: takes requests; draining: finishing in-flight streams).',
      labelNames: ['relay', 'state'],
      registers,
      collect() {
        const counts: Record<string, number> = { active: 0, draining: 0 };
        for (const c of self.connections?.list() ?? []) counts[c.state] = (counts[c.state] ?? 0) + 1;
        this.reset();
        for (const [state, n] of Object.entries(counts)) if (state !== 'closed') this.labels(o.relayId, state).set(n);
      },
    });
    const r = this.registry;
    const each = <K,>(list: Iterable<K>, f: (k: K) => number) => {
      let n = 0;
      for (const k of list) n += f(k);
      return n;
    };
    const live = () => self.connections?.list() ?? [];
    scrapeGauge(r, 'tunnel_relay_tunnels_connected', 'Tunnels with at least one usable connector connection on this relay.', () => new Set(live().filter((c) => c.usable).map((c) => c.id.tunnelId)).size);
    scrapeGauge(r, 'tunnel_relay_active_streams', 'Request streams open on this relay\'s connector connections.', () => each(live(), (c) => c.inflight));
    scrapeGauge(r, 'tunnel_relay_public_requests_in_flight', 'Public requests accepted and not yet finished (forwarded ones included).', () => self.publicInFlight());
    scrapeGauge(
      r,
      'tunnel_relay_tls_certificate_expiry_timestamp_seconds',
      'When the certificate the TLS listeners serve expires (Unix time); absent without TLS. Alert well before it.',
      () => (self.certificate ? Math.floor(self.certificate.expiresAt / 1000) : undefined),
    );
    scrapeCounter(r, 'tunnel_relay_tls_reloads_total', 'Certificate reloads (file change or SIGHUP): ok swapped in a new pair, failed kept the running one.', 'result', () =>
      self.certificate ? [['ok', self.certificate.reloads.ok], ['failed', self.certificate.reloads.failed]] : [],
    );
    scrapeCounter(r, 'tunnel_relay_connector_registrations_total', 'Connector connections that registered on this relay.', () => self.registrations);
    scrapeCounter(r, 'tunnel_relay_connector_disconnects_total', 'Registered connector connections that ended, by reason.', 'reason', () => self.disconnects);
    new Counter({
      name: 'tunnel_relay_requests_total',
      help: 'Public requests answered, by tunnel (empty: no route for the hostname) and status class.',
      labelNames: ['tunnel', 'status_class'],
      registers,
      collect() {
        this.reset();
        for (const t of self.traffic.values()) {
          for (let i = 0; i < 6; i++) if (t.byClass[i]! > 0) this.inc({ tunnel: t.tunnelId, status_class: CLASS_LABELS[i]! }, t.byClass[i]!);
        }
      },
    });
    // Observed once per request: plain numbers, read by prom-client at scrape time.
    this.duration = new PlainHistogram(
      'tunnel_relay_request_duration_seconds',
      'End-to-end time of a public request at the relay, from arrival to the last response byte.',
      [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    );
    this.registry.registerMetric(this.duration as unknown as Metric);
    new Counter({
      name: 'tunnel_relay_bytes_total',
      help: 'Bytes on the wire: side="public" (clients), side="connector" (connector connections); direction in = received, out = sent.',
      labelNames: ['side', 'direction'],
      registers,
      collect() {
        this.reset();
        for (const side of ['public', 'connector'] as const) {
          const b = self.bytes[side];
          this.inc({ side, direction: 'in' }, b.closedIn + each(b.live, (s) => s.bytesRead));
          this.inc({ side, direction: 'out' }, b.closedOut + each(b.live, (s) => s.bytesWritten));
        }
      },
    });
    scrapeCounter(r, 'tunnel_relay_forwarded_requests_total', 'Public requests forwarded to a peer relay that holds the tunnel\'s connection, by peer.', 'peer', () => self.forwarded);
    scrapeGauge(r, 'tunnel_relay_zone_claim_checks_in_flight', 'Zone-claim DNS checks running now (ceiling: tunnel_relay_zone_claim_checks_max).', () => self.claimChecks?.inFlight ?? 0);
    scrapeGauge(r, 'tunnel_relay_zone_claim_checks_max', 'Ceiling on zone-claim DNS checks in flight (--zone-claim-checks; 0 when claims are off).', () => self.claimChecks?.max ?? 0);
    scrapeCounter(r, 'tunnel_relay_zone_claim_checks_refused_total', 'Zone-claim checks refused with 429 because the ceiling was reached.', () => self.claimChecks?.refused ?? 0);
    scrapeCounter(
      r,
      'tunnel_relay_peer_refused_total',
      'Relay-to-relay requests this relay refused, by reason (signature, stale, replay, body, replay_check_unavailable, malformed).',
      'reason',
      () => self.peerRefused,
    );
    scrapeGauge(r, 'tunnel_relay_legacy_credentials', 'Distinct credentials without an expiry (issued before credentials expired) presented to this relay since it started.', () => self.legacyCredentials());
    scrapeCounter(r, 'tunnel_relay_limit_hits_total', 'Times a ceiling refused or cut something, by limit (see the README table "Limits and defaults").', 'limit', () => self.limitHits);
    scrapeGauge(r, 'tunnel_relay_public_connections', 'Open public (client) connections on this relay.', () => self.gaugeSources.publicConnections());
    scrapeGauge(r, 'tunnel_relay_acme_certificates', 'ACME certificates this relay serves by SNI.', () => self.acme?.certificates() ?? 0);
    scrapeCounter(
      r,
      'tunnel_relay_acme_orders_total',
      'ACME orders this relay placed, by result (ok, failed; rate_limited: refused by the fleet-wide --acme-orders-per-hour before reaching the CA).',
      'result',
      () => {
        const o = self.acme?.orders ?? { ok: 0, failed: 0, rateLimited: 0 };
        return [['ok', o.ok], ['failed', o.failed], ['rate_limited', o.rateLimited]];
      },
    );
    scrapeGauge(r, 'tunnel_relay_acme_backoff_names', 'Hostnames whose last ACME order failed and that are not retried before their back-off ends.', () => self.acme?.backoffNames() ?? 0);
    scrapeGauge(r, 'tunnel_relay_acme_soonest_expiry_seconds', 'Expiry (Unix seconds) of the ACME certificate that expires first; 0 when there is none.', () =>
      Math.floor((self.acme?.soonestExpiry() ?? 0) / 1000),
    );
    scrapeGauge(r, 'tunnel_relay_h2_sessions', 'Open HTTP/2 connections on the public HTTPS listener.', () => self.h2.sessions);
    scrapeGauge(r, 'tunnel_relay_h2_streams', 'Open HTTP/2 streams on the public HTTPS listener (each connection holds at most --h2-max-concurrent-streams).', () => self.h2.streams);
    scrapeCounter(
      r,
      'tunnel_relay_h2_refused_streams_total',
      'HTTP/2 streams the public listener ended unserved, by reason: concurrent_streams (a stream past the acknowledged SETTINGS_MAX_CONCURRENT_STREAMS, and the ones open beside it: the connection is closed), rapid_reset (open when the reset guard closed the connection), goaway (open when the relay stopped after its drain deadline). REFUSED_STREAM answers nghttp2 gives before the client acknowledged SETTINGS are not seen by the relay.',
      'reason',
      () => H2_REFUSAL_REASONS.map((reason) => [reason, self.h2Refused[reason]] as const),
    );
    scrapeGauge(r, 'tunnel_relay_pending_logins', 'Pending `tunnel login` sessions created through this relay and not yet expired or collected.', () => self.gaugeSources.pendingLogins());
    scrapeGauge(r, 'tunnel_relay_pending_registrations', 'Connector registrations in progress on this relay (ceiling: --max-pending-registrations).', () => self.gaugeSources.pendingRegistrations());
    scrapeGauge(r, 'tunnel_relay_access_pending_logins', 'Access logins waiting on an identity provider on this relay.', () => self.gaugeSources.accessPendingLogins());
    scrapeCounter(
      r,
      'tunnel_relay_access_decisions_total',
      'Access decisions on public requests under a policy, by outcome (allow, deny, login, token_refused, error, busy).',
      'outcome',
      () => self.accessOutcomes,
    );
    scrapeCounter(r, 'tunnel_relay_store_errors_total', 'Fleet store operations that failed, by operation.', 'op', () => self.storeErrors);

    const traffic = this.traffic;
    const duration = this.duration;
    this.hooks = {
      onResponse(route: Route | undefined, status: number, startedAt: bigint): void {
        const id = route ? route.tunnelId : '';
        let t = traffic.get(id);
        if (t === undefined) {
          t = { tunnelId: id, byClass: [0, 0, 0, 0, 0, 0], total: 0, errors: 0 };
          traffic.set(id, t);
        }
        const cls = (status / 100) | 0;
        t.byClass[cls >= 1 && cls <= 5 ? cls : 0]!++;
        t.total++;
        if (status >= 500) t.errors++;
        duration.observe(Number(process.hrtime.bigint() - startedAt) / 1e9);
      },
      onForward: (peerId: string): void => {
        this.forwarded.set(peerId, (this.forwarded.get(peerId) ?? 0) + 1);
      },
      onPeerRefused: (reason: string): void => {
        this.peerRefused.set(reason, (this.peerRefused.get(reason) ?? 0) + 1);
      },
    };
  }

  /** Where the legacy-credential gauge reads its count. */
  attachLegacyCredentials(count: () => number): void {
    this.legacyCredentials = count;
  }

  /** Per-tunnel request counts (for the dashboard). */
  trafficByTunnel(): ReadonlyMap<string, Readonly<TunnelTraffic>> {
    return this.traffic;
  }

  forgetTunnel(tunnelId: string): void {
    this.traffic.delete(tunnelId);
  }

  /** Count wire bytes of a socket (public client or connector connection). */
  trackSocket(side: 'public' | 'connector', socket: Socket): void {
    const b = this.bytes[side];
    b.live.add(socket);
    socket.once('close', () => {
      b.live.delete(socket);
      b.closedIn += socket.bytesRead;
      b.closedOut += socket.bytesWritten;
    });
  }

  /** Follow the relay's connection set: registrations and disconnect reasons. */
  /** The relay's certificate, for its expiry and reload counts. */
  attachCertificate(certificate: RelayCertificate): void {
    this.certificate = certificate;
  }

  attachConnections(connections: TunnelConnections, publicInFlight: () => number): void {
    this.connections = connections;
    this.publicInFlight = publicInFlight;
    const seen = new WeakSet<ConnectorConnection>();
    connections.onChange(() => {
      for (const c of connections.list()) {
        if (seen.has(c)) continue;
        seen.add(c);
        this.registrations++;
        c.once('closed', (reason) => {
          const r = disconnectReason(reason);
          this.disconnects.set(r, (this.disconnects.get(r) ?? 0) + 1);
        });
      }
    });
  }

  accessOutcome(outcome: string): void {
    this.accessOutcomes.set(outcome, (this.accessOutcomes.get(outcome) ?? 0) + 1);
  }

  hit(limit: LimitName): void {
    this.limitHits.set(limit, this.limitHits.get(limit)! + 1);
  }

  /** Where the ceiling gauges read their current values. */
  attachLimitGauges(sources: Partial<LimitGaugeSources>): void {
    this.gaugeSources = { ...this.gaugeSources, ...sources };
  }

  /** ACME certificate counts and order results. */
  attachAcme(stats: AcmeStats): void {
    this.acme = stats;
  }

  /** The public HTTPS listener's live HTTP/2 counts. */
  attachH2(open: { sessions: number; streams: number }, refused: H2RefusedStreams): void {
    this.h2 = open;
    this.h2Refused = refused;
  }

  /** Zone-claim DNS checks: in flight, ceiling, refusals. */
  attachZoneClaims(checks: { inFlight: number; max: number; refused: number }): void {
    this.claimChecks = checks;
  }

  storeError(op: string): void {
    this.storeErrors.set(op, (this.storeErrors.get(op) ?? 0) + 1);
  }

  /**
   * The store, with every failed call counted in tunnel_relay_store_errors_total
   * (by method name). Behaviour is otherwise unchanged.
   */
  instrumentStore(store: Store): Store {
    const cache = new Map<PropertyKey, unknown>();
    return new Proxy(store, {
      get: (target, prop, receiver) => {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function' || prop === 'subscribe' || prop === 'close' || prop === 'constructor') {
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        }
        let wrapped = cache.get(prop);
        if (!wrapped) {
          const fn = v as (...a: unknown[]) => unknown;
          const op = String(prop);
          wrapped = (...args: unknown[]): unknown => {
            let r: unknown;
            try {
              r = fn.apply(target, args);
            } catch (e) {
              this.storeError(op);
              throw e;
            }
            if (r instanceof Promise) {
              return r.catch((e: unknown) => {
                if (!isExpected(e)) this.storeError(op);
                throw e;
              });
            }
            return r;
          };
          cache.set(prop, wrapped);
        }
        return wrapped;
      },
    });
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** CONFLICT/NOT_FOUND are answers, not failures of the store. */
function isExpected(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return (e as { name?: unknown } | null)?.name === 'StoreError' && (code === 'CONFLICT' || code === 'NOT_FOUND');
}

/** A bounded set of labels for why a connector connection ended. */
export function disconnectReason(reason: string): string {
  if (reason.startsWith('tunnel_deleted')) return 'tunnel_deleted';
  if (reason.startsWith('credential_revoked')) return 'credential_revoked';
  if (reason.startsWith('tunnel_unknown')) return 'tunnel_unknown';
  if (reason.startsWith('tunnel_disconnected')) return 'tunnel_disconnected';
  if (/keepalive|ping/i.test(reason)) return 'keepalive_timeout';
  if (/session closed|websocket closed with 100[01]|GOAWAY|goaway/i.test(reason)) return 'closed';
  if (/register|control|protocol/i.test(reason)) return 'protocol_error';
  return 'network_error';
}
