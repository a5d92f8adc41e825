// The fleet as the dashboard shows it, built from the store and the relays'
// own stats. What the store says decides what exists: live members, the
// relay history (so a relay that died is shown down, with when it was last
// seen, until an operator forgets it), tunnels, routes, connections, login
// codes, accounts and zones. Request totals are the relay history's counts
// (plus forgotten relays' retired counts), refreshed by the stats of the
// relays that answer: a relay that dies takes none of its requests with it.

import type { Account, Presence, RelayMember, Tunnel, Route, Zone, PendingLoginSession } from '../store/types.js';
import type { CountsByTunnel, RelayHistory, TunnelCounts } from '../store/relay-history.js';
import type { RelayStats } from './relay-stats.js';
import type { QuickTunnelInfo } from '../quick/quick-tunnels.js';
import type { AcmeSummary } from '../tls/certificate-manager.js';

export type RelayHealth = 'healthy' | 'draining' | 'stale' | 'down' | 'stopped';

export interface RelayView {
  id: string;
  region: string;
  health: RelayHealth;
  /** Its last heartbeat (epoch ms): for a down relay, when it went silent. */
  lastSeenAt: number;
  lastSeenAgoMs: number;
  startedAt: number;
  publicUrl: string;
  controlUrl: string;
  connections: number;
  /** Whether its live stats (streams, fresh counts) were read this tick. */
  stats: boolean;
  /** Requests it served, all time (its history record, or its live stats when fresher). */
  requests: number;
  /** A live relay the history does not hold (its ceiling is reached): it will vanish when it dies. */
  unrecorded: boolean;
}

export interface ConnectorView {
  connectorId: string;
  host: string;
  version: string;
  clientIp: string;
  connections: Array<{ connIndex: number; relayId: string; connectionId: string; connectedAt: number; streams: number | null; state: string }>;
}

export interface DashboardState {
  at: number;
  self: { relayId: string; region: string };
  relays: RelayView[];
  tunnels: Array<{
    id: string;
    name: string;
    account: string;
    hostnames: string[];
    requests: number;
    errors: number;
    rps: number;
    eps: number;
    connectors: ConnectorView[];
  }>;
  /** Quick tunnels (`tunnel --url`), their own group: they are not in `tunnels`. */
  quick: Array<{ tunnelId: string; hostname: string; createdAt: number; clientIps: string[]; connections: number; requests: number; rps: number }>;
  unrouted: { requests: number; rps: number };
  logins: Array<{ code: string; createdAt: number; expiresAt: number }>;
  accounts: Array<{ id: string; name: string; createdAt: number; tunnels: number; zones: string[] }>;
  zones: Array<{ zone: string; account: string; source: string; createdAt: number }>;
  totals: { rps: number; eps: number; connectors: number; connections: number; requests: number; errors: number; relaysUp: number; relaysDown: number };
  /** The ACME certificates of the relay serving the dashboard (null: no ACME configured). */
  acme: AcmeSummary | null;
}

export interface FleetInputs {
  now: number;
  self: { relayId: string; region: string };
  members: RelayMember[];
  history: RelayHistory[];
  retired: CountsByTunnel;
  accounts: Account[];
  tunnels: Tunnel[];
  routes: Route[];
  zones: Zone[];
  presence: Presence[];
  logins: PendingLoginSession[];
  /** Live quick tunnels (empty when the relay has none or they are off). */
  quick: QuickTunnelInfo[];
  /** Stats read this tick, by relay id. */
  stats: ReadonlyMap<string, RelayStats>;
  acme: AcmeSummary | null;
  /** A member whose heartbeat is older than this is stale. */
  staleAfterMs: number;
}

/**
 * Request and error rates per tunnel, from the change in each relay's
 * counts between two ticks (summed over relays).
 */
export class RateTracker {
  private prev = new Map<string, { at: number; requests: number; errors: number }>();
  /** When each relay's stats were last read: a tunnel new in its counts had 0 then. */
  private relayAt = new Map<string, number>();

  update(stats: Iterable<RelayStats>, now: number): Map<string, { rps: number; eps: number }> {
    const next = new Map<string, { at: number; requests: number; errors: number }>();
    const rates = new Map<string, { rps: number; eps: number }>();
    for (const s of stats) {
      const seenAt = this.relayAt.get(s.relayId);
      this.relayAt.set(s.relayId, s.at);
      for (const [tunnelId, c] of Object.entries(s.tunnels)) {
        const key = `${s.relayId}\n${tunnelId}`;
        const p = this.prev.get(key) ?? (seenAt !== undefined ? { at: seenAt, requests: 0, errors: 0 } : undefined);
        next.set(key, { at: s.at, requests: c.requests, errors: c.errors });
        if (!p || s.at <= p.at) continue;
        const dt = (s.at - p.at) / 1000;
        // Counts only grow for a relay id; a smaller one is a relay that lost its history: count from 0.
        const dr = c.requests >= p.requests ? c.requests - p.requests : c.requests;
        const de = c.errors >= p.errors ? c.errors - p.errors : c.errors;
        const r = rates.get(tunnelId) ?? { rps: 0, eps: 0 };
        r.rps += dr / dt;
        r.eps += de / dt;
        rates.set(tunnelId, r);
      }
    }
    // A relay that missed this tick keeps its previous counts for the next one.
    for (const [k, v] of this.prev) if (!next.has(k) && now - v.at < 60_000) next.set(k, v);
    for (const [id, at] of this.relayAt) if (now - at >= 60_000) this.relayAt.delete(id);
    this.prev = next;
    return rates;
  }
}

export function buildFleetState(x: FleetInputs, rates: ReadonlyMap<string, { rps: number; eps: number }>): DashboardState {
  const { now } = x;
  const live = new Map(x.members.map((m) => [m.id, m]));
  const recorded = new Map(x.history.map((h) => [h.id, h]));

  // Each relay's counts: its live stats when read this tick (fresher), else its history record.
  const countsOf = new Map<string, CountsByTunnel>();
  for (const h of x.history) countsOf.set(h.id, h.counts);
  for (const [id, s] of x.stats) countsOf.set(id, s.tunnels);
  const totals = new Map<string, TunnelCounts>(Object.entries(x.retired));
  for (const counts of countsOf.values()) {
    for (const [tunnelId, c] of Object.entries(counts)) {
      const t = totals.get(tunnelId);
      totals.set(tunnelId, t ? { requests: t.requests + c.requests, errors: t.errors + c.errors } : c);
    }
  }
  const sum = (counts: CountsByTunnel | undefined): number => Object.values(counts ?? {}).reduce((n, c) => n + c.requests, 0);

  const connsByRelay = new Map<string, number>();
  for (const p of x.presence) connsByRelay.set(p.relayId, (connsByRelay.get(p.relayId) ?? 0) + 1);

  const relays: RelayView[] = [];
  for (const m of x.members) {
    relays.push({
      id: m.id,
      region: m.region,
      health: m.draining ? 'draining' : now - m.lastSeen > x.staleAfterMs ? 'stale' : 'healthy',
      lastSeenAt: m.lastSeen,
      lastSeenAgoMs: Math.max(0, now - m.lastSeen),
      startedAt: m.startedAt,
      publicUrl: m.publicUrl,
      controlUrl: m.controlUrl,
      connections: connsByRelay.get(m.id) ?? 0,
      stats: x.stats.has(m.id),
      requests: sum(countsOf.get(m.id)),
      unrecorded: !recorded.has(m.id),
    });
  }
  for (const h of x.history) {
    if (live.has(h.id)) continue;
    relays.push({
      id: h.id,
      region: h.region,
      // Its last heartbeat said it was draining: it shut down on purpose.
      health: h.draining ? 'stopped' : 'down',
      lastSeenAt: h.lastSeen,
      lastSeenAgoMs: Math.max(0, now - h.lastSeen),
      startedAt: h.startedAt,
      publicUrl: h.publicUrl,
      controlUrl: h.controlUrl,
      connections: 0,
      stats: false,
      requests: sum(h.counts),
      unrecorded: false,
    });
  }
  relays.sort((a, b) => a.id.localeCompare(b.id));

  const streamsOf = (p: Presence): { streams: number | null; state: string } => {
    const s = x.stats.get(p.relayId)?.connections[p.connectionId];
    return s ? { streams: s.streams, state: s.state } : { streams: null, state: 'active' };
  };
  const accountName = new Map(x.accounts.map((a) => [a.id, a.name]));
  const hostnames = groupBy(x.routes, (r) => r.tunnelId);
  const byTunnel = groupBy(x.presence, (p) => p.tunnelId);
  let trps = 0;
  let teps = 0;
  for (const r of rates.values()) {
    trps += r.rps;
    teps += r.eps;
  }
  // The fleet's total is its tunnels' (and unrouted requests'): a deleted tunnel's counts go with it.
  let allRequests = 0;
  let allErrors = 0;
  for (const id of ['', ...x.tunnels.map((t) => t.id)]) {
    const c = totals.get(id);
    allRequests += c?.requests ?? 0;
    allErrors += c?.errors ?? 0;
  }
  const quickIds = new Set(x.quick.map((q) => q.tunnelId));
  const tunnelsOf = groupBy(x.tunnels, (t) => t.accountId);
  const zonesOf = groupBy(x.zones, (z) => z.accountId);

  return {
    at: now,
    self: x.self,
    relays,
    tunnels: x.tunnels
      .filter((t) => !quickIds.has(t.id))
      .map((t) => {
        const connectors = new Map<string, ConnectorView>();
        for (const p of byTunnel.get(t.id) ?? []) {
          let c = connectors.get(p.connectorId);
          if (!c) connectors.set(p.connectorId, (c = { connectorId: p.connectorId, host: p.host ?? '', version: p.version, clientIp: p.clientIp, connections: [] }));
          c.connections.push({ connIndex: p.connIndex, relayId: p.relayId, connectionId: p.connectionId, connectedAt: p.connectedAt, ...streamsOf(p) });
        }
        for (const c of connectors.values()) c.connections.sort((a, b) => a.connIndex - b.connIndex);
        const tot = totals.get(t.id) ?? { requests: 0, errors: 0 };
        const rate = rates.get(t.id) ?? { rps: 0, eps: 0 };
        return {
          id: t.id,
          name: t.name,
          account: accountName.get(t.accountId) ?? t.accountId,
          hostnames: (hostnames.get(t.id) ?? []).map((r) => r.hostname).sort(),
          requests: tot.requests,
          errors: tot.errors,
          rps: round(rate.rps),
          eps: round(rate.eps),
          connectors: [...connectors.values()],
        };
      })
      .sort((a, b) => a.account.localeCompare(b.account) || a.name.localeCompare(b.name)),
    quick: x.quick
      .map((q) => ({
        tunnelId: q.tunnelId,
        hostname: q.hostname,
        createdAt: q.createdAt,
        clientIps: q.clientIps,
        connections: q.connections,
        requests: totals.get(q.tunnelId)?.requests ?? 0,
        rps: round(rates.get(q.tunnelId)?.rps ?? 0),
      }))
      .sort((a, b) => a.createdAt - b.createdAt),
    unrouted: { requests: totals.get('')?.requests ?? 0, rps: round(rates.get('')?.rps ?? 0) },
    logins: x.logins.map((l) => ({ code: l.code, createdAt: l.createdAt, expiresAt: l.expiresAt })).sort((a, b) => a.createdAt - b.createdAt),
    accounts: x.accounts.map((a) => ({ id: a.id, name: a.name, createdAt: a.createdAt, tunnels: tunnelsOf.get(a.id)?.length ?? 0, zones: (zonesOf.get(a.id) ?? []).map((z) => z.zone).sort() })),
    zones: x.zones.map((z) => ({ zone: z.zone, account: accountName.get(z.accountId) ?? z.accountId, source: z.source, createdAt: z.createdAt })),
    totals: {
      rps: round(trps),
      eps: round(teps),
      connectors: new Set(x.presence.map((p) => `${p.tunnelId}\n${p.connectorId}`)).size,
      connections: x.presence.length,
      requests: allRequests,
      errors: allErrors,
      relaysUp: relays.filter((r) => r.health === 'healthy').length,
      relaysDown: relays.filter((r) => r.health === 'down').length,
    },
    acme: x.acme,
  };
}

function groupBy<T>(items: readonly T[], key: (v: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const v of items) {
    const k = key(v);
    const list = m.get(k);
    if (list) list.push(v);
    else m.set(k, [v]);
  }
  return m;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
