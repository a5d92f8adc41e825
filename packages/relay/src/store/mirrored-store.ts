// What both stores share: the in-memory mirror of the domain records that
// per-request reads are served from (a request never waits on disk or
// Redis), the subscribers and their events, the records' shapes as written,
// and the filters and orders every listing answers with.

import {
  StoreError,
  byKey,
  normalizeHostname,
  type Account,
  type NewZone,
  type Presence,
  type PresenceFilter,
  type Revocation,
  type Route,
  type RouteFilter,
  type StoreEvent,
  type StoreEventListener,
  type StoreLogger,
  type Tunnel,
  type Zone,
} from './types.js';
import { accessKey, type AccessRecord } from './access-records.js';
import type { CountsByTunnel, RecordOutcome, RelayHistory, RelayHistoryStore } from './relay-history.js';

export abstract class MirroredStore {
  // The mirror, each map keyed by the record's id (routes: hostname; zones: zone).
  protected readonly accounts = new Map<string, Account>();
  protected readonly tunnels = new Map<string, Tunnel>();
  protected readonly routes = new Map<string, Route>();
  protected readonly zones = new Map<string, Zone>();
  protected readonly revocations = new Map<string, Revocation>();
  /** Access records by accessKey(). */
  protected readonly accessRecords = new Map<string, AccessRecord>();
  /** Where each store keeps its relay history (file-relay-history.ts, redis-relay-history.ts). */
  protected abstract readonly history: RelayHistoryStore;

  private readonly listeners = new Set<StoreEventListener>();
  protected closed = false;

  protected constructor(
    protected readonly log: StoreLogger,
    /** 'file store', 'redis store': how errors name this store. */
    private readonly what: string,
  ) {}

  subscribe(listener: StoreEventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** A listener that throws is logged; the others are still told. */
  protected emit(event: StoreEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.log.warn({ err: String(err), event }, 'store event listener threw');
      }
    }
  }

  /** Closing: no event reaches a subscriber after this. */
  protected markClosed(): void {
    this.closed = true;
    this.listeners.clear();
  }

  protected check(): void {
    if (this.closed) throw new StoreError('UNAVAILABLE', `${this.what} is closed`);
  }

  async getRoute(hostname: string): Promise<Route | undefined> {
    return this.routes.get(hostname.toLowerCase());
  }

  async getZone(zone: string): Promise<Zone | undefined> {
    return this.zones.get(zone.toLowerCase());
  }

  async isRevoked(tokenId: string): Promise<boolean> {
    const r = this.revocations.get(tokenId);
    return r !== undefined && r.revokedAt <= Date.now();
  }

  async getAccessRecord(key: string): Promise<AccessRecord | undefined> {
    return this.accessRecords.get(key);
  }

  recordRelayHistory(h: RelayHistory): Promise<RecordOutcome> {
    this.check();
    return this.history.recordRelayHistory(h);
  }

  listRelayHistory(): Promise<RelayHistory[]> {
    this.check();
    return this.history.listRelayHistory();
  }

  forgetRelay(id: string): Promise<void> {
    this.check();
    return this.history.forgetRelay(id);
  }

  retiredCounts(): Promise<CountsByTunnel> {
    this.check();
    return this.history.retiredCounts();
  }

  /** The tunnel and its routes leave the mirror (their deletion is announced by the caller). */
  protected forgetTunnel(id: string): void {
    this.tunnels.delete(id);
    for (const [h, r] of this.routes) if (r.tunnelId === id) this.routes.delete(h);
  }
}

// --- records as written ---------------------------------------------------------

/** A zone record for `input`; a wildcard is not a zone. */
export function zoneRecord(input: NewZone): Zone {
  const zone = normalizeHostname(input.zone);
  if (zone.startsWith('*.')) throw new TypeError(`a zone is a plain name, not a wildcard: ${zone}`);
  return { zone, accountId: input.accountId, source: input.source, createdAt: Date.now() };
}

export function revocationRecord(tokenId: string, expiresAtMs: number, effectiveAtMs: number): Revocation {
  return { tokenId, expiresAt: Math.max(0, Math.ceil(expiresAtMs)), revokedAt: Math.max(0, Math.ceil(effectiveAtMs)) };
}

/** The key a hostname or zone is deleted by: as given on a command line, trimmed, lower case, no trailing dot. */
export function nameKey(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

export function conflictFor(hostname: string, existing: Route, accountId: string, owner: Tunnel | undefined): StoreError {
  if (existing.accountId === accountId) {
    const which = owner ? `tunnel ${JSON.stringify(owner.name)} (${owner.id})` : `tunnel ${existing.tunnelId}`;
    return new StoreError('CONFLICT', `hostname ${hostname} is already routed to ${which}`);
  }
  return new StoreError('CONFLICT', `hostname ${hostname} is already routed by another account`);
}

// --- listings: one filter and one order for both stores ---------------------------

export function sortAccounts(all: Iterable<Account>): Account[] {
  return [...all].sort(byKey((a) => a.name));
}

export function selectTunnels(all: Iterable<Tunnel>, accountId: string | undefined): Tunnel[] {
  return [...all].filter((t) => accountId === undefined || t.accountId === accountId).sort((a, b) => a.createdAt - b.createdAt || byKey<Tunnel>((t) => t.name)(a, b));
}

export function selectRoutes(all: Iterable<Route>, filter: RouteFilter): Route[] {
  return [...all]
    .filter((r) => (filter.accountId === undefined || r.accountId === filter.accountId) && (filter.tunnelId === undefined || r.tunnelId === filter.tunnelId))
    .sort(byKey((r) => r.hostname));
}

export function selectZones(all: Iterable<Zone>, filter: { readonly accountId?: string }): Zone[] {
  return [...all].filter((z) => filter.accountId === undefined || z.accountId === filter.accountId).sort(byKey((z) => z.zone));
}

export function sortAccessRecords(all: Iterable<AccessRecord>): AccessRecord[] {
  return [...all].sort(byKey(accessKey));
}

export function sortRevocations(all: Iterable<Revocation>): Revocation[] {
  return [...all].sort(byKey((r) => r.tokenId));
}

export function selectPresence(all: Iterable<Presence>, filter: PresenceFilter): Presence[] {
  return [...all]
    .filter((p) => (filter.relayId === undefined || p.relayId === filter.relayId) && (filter.tunnelId === undefined || p.tunnelId === filter.tunnelId))
    .sort(byKey((p) => `${p.relayId}\n${p.connectionId}`));
}

export function sortPending<T extends { createdAt: number; code: string }>(all: T[]): T[] {
  return all.sort((a, b) => a.createdAt - b.createdAt || byKey<T>((x) => x.code)(a, b));
}
