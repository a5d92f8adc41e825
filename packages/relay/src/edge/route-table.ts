import type { Store, Route, StoreEvent, Zone } from '../store/types.js';
import { zoneOwner } from '../zones/zone-rules.js';

/**
 * Hostname → route, answered synchronously on every public request from an
 * in-memory copy kept current by store events (so a store outage does not
 * stop serving routes already known).
 *
 * Exact beats wildcard, within one owner: when a zone holds the name, only
 * routes of the zone's account answer for it, so a wildcard (or a route left
 * from before zones) of another account never serves that account's names.
 * A name in no zone (a store not yet adopted) is served as before.
 */
export class RouteTable {
  private readonly exact = new Map<string, Route>();
  private readonly wildcard = new Map<string, Route>(); // key: 'example.com' for '*.example.com'
  private readonly zones = new Map<string, Zone>();
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly store: Store) {}

  async load(): Promise<void> {
    const [routes, zones] = await Promise.all([this.store.listRoutes(), this.store.listZones()]);
    this.exact.clear();
    this.wildcard.clear();
    this.zones.clear();
    for (const r of routes) this.set(r.hostname, r);
    for (const z of zones) this.zones.set(z.zone, z);
    this.unsubscribe = this.store.subscribe((e) => this.onEvent(e));
  }

  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /** `host` is the Host header: case-insensitive, an optional :port. */
  lookup(host: string): Route | undefined {
    const name = normalizeHost(host);
    const owner = zoneOwner(name, this.zones);
    const hit = this.exact.get(name);
    if (hit && (owner === undefined || hit.accountId === owner)) return hit;
    // Walk up the labels: a.b.example.com → *.b.example.com → *.example.com.
    let dot = name.indexOf('.');
    while (dot !== -1) {
      const w = this.wildcard.get(name.slice(dot + 1));
      if (w && (owner === undefined || w.accountId === owner)) return w;
      dot = name.indexOf('.', dot + 1);
    }
    return undefined;
  }

  private set(hostname: string, route: Route | undefined): void {
    const isWild = hostname.startsWith('*.');
    const map = isWild ? this.wildcard : this.exact;
    const key = isWild ? hostname.slice(2) : hostname;
    if (route) map.set(key, route);
    else map.delete(key);
  }

  private onEvent(e: StoreEvent): void {
    if (e.type === 'route') {
      this.store.getRoute(e.hostname).then(
        (r) => this.set(e.hostname, r),
        () => {}, // store down: keep serving what we know
      );
    } else if (e.type === 'zone') {
      this.store.getZone(e.zone).then(
        (z) => (z ? this.zones.set(e.zone, z) : this.zones.delete(e.zone)),
        () => {},
      );
    } else if (e.type === 'tunnel-deleted') {
      // Not on `tunnel-vanished` (store data lost, no tombstone): routes lost
      // with it announce themselves as `route` events, and routes kept must
      // serve again once the tunnel's record is restored (no event would
      // bring them back here).
      for (const map of [this.exact, this.wildcard]) {
        for (const [k, r] of map) if (r.tunnelId === e.tunnelId) map.delete(k);
      }
    }
  }
}

export function normalizeHost(host: string): string {
  let h = host;
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    h = end === -1 ? h : h.slice(0, end + 1);
  } else {
    const colon = h.indexOf(':');
    if (colon !== -1) h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h.toLowerCase();
}
