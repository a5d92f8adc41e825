import type { Store, StoreEvent } from '../store/types.js';
import type { AccessPolicy, AccessRecord, IdentityProvider, ServiceToken } from '../store/access-records.js';

/**
 * Access records answered synchronously on every public request from an
 * in-memory copy kept current by store events (as the route table is): a
 * change made on any relay applies fleet-wide within the store's event
 * delay, and a store outage keeps serving the policies already known.
 */
export class PolicyTable {
  /** hostname (exact, or `*.domain` kept as its `domain`) → its policies, longest path prefix first. */
  private readonly exact = new Map<string, AccessPolicy[]>();
  private readonly wildcard = new Map<string, AccessPolicy[]>();
  private readonly records = new Map<string, AccessRecord>();
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly store: Store) {}

  async load(): Promise<void> {
    const all = await this.store.listAccessRecords();
    this.records.clear();
    for (const r of all) this.records.set(keyOf(r), r);
    this.reindex();
    this.unsubscribe = this.store.subscribe((e) => this.onEvent(e));
  }

  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /** Whether any policy covers `host` (its callback and logout paths are then the relay's). */
  covers(host: string): boolean {
    return this.policiesFor(host) !== undefined;
  }

  /** The policy deciding `path` on `host` (longest prefix), if any. */
  lookup(host: string, path: string): AccessPolicy | undefined {
    const list = this.policiesFor(host);
    if (!list) return undefined;
    for (const p of list) if (underPrefix(path, p.pathPrefix)) return p;
    return undefined;
  }

  serviceToken(clientId: string): ServiceToken | undefined {
    const r = this.records.get(`token:${clientId}`);
    return r?.kind === 'service-token' ? r : undefined;
  }

  identityProvider(accountId: string): IdentityProvider | undefined {
    const r = this.records.get(`idp:${accountId}`);
    return r?.kind === 'idp' ? r : undefined;
  }

  private policiesFor(host: string): AccessPolicy[] | undefined {
    const hit = this.exact.get(host);
    if (hit) return hit;
    let dot = host.indexOf('.');
    while (dot !== -1) {
      const w = this.wildcard.get(host.slice(dot + 1));
      if (w) return w;
      dot = host.indexOf('.', dot + 1);
    }
    return undefined;
  }

  private onEvent(e: StoreEvent): void {
    if (e.type !== 'access') return;
    this.store.getAccessRecord(e.key).then(
      (r) => {
        if (r) this.records.set(e.key, r);
        else this.records.delete(e.key);
        if (e.key.startsWith('policy:')) this.reindex();
      },
      () => {}, // store down: keep what we know
    );
  }

  private reindex(): void {
    this.exact.clear();
    this.wildcard.clear();
    for (const r of this.records.values()) {
      if (r.kind !== 'policy') continue;
      const wild = r.hostname.startsWith('*.');
      const map = wild ? this.wildcard : this.exact;
      const key = wild ? r.hostname.slice(2) : r.hostname;
      let list = map.get(key);
      if (!list) map.set(key, (list = []));
      list.push(r);
    }
    for (const map of [this.exact, this.wildcard]) {
      for (const list of map.values()) list.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length || a.createdAt - b.createdAt);
    }
  }
}

function keyOf(r: AccessRecord): string {
  return r.kind === 'policy' ? `policy:${r.id}` : r.kind === 'service-token' ? `token:${r.clientId}` : `idp:${r.accountId}`;
}

/** `/admin` covers `/admin` and `/admin/x`, not `/administrator`; `/` covers everything. */
export function underPrefix(path: string, prefix: string): boolean {
  if (prefix === '/' || path === prefix) return true;
  const p = prefix.endsWith('/') ? prefix : `${prefix}/`;
  return path.startsWith(p);
}

/**
 * The path a policy is matched against: the query dropped, percent-escapes
 * decoded, dot segments resolved and repeated slashes folded, so that
 * `/%61dmin`, `/x/../admin` and `//admin` all meet the `/admin` policy the
 * origin would serve them under. Undecodable input stays as it is (and so
 * meets only the `/` policy, or none).
 */
export function policyPath(target: string): string {
  const q = target.search(/[?#]/);
  let path = q === -1 ? target : target.slice(0, q);
  try {
    path = decodeURIComponent(path);
  } catch {
    /* keep it raw */
  }
  path = path.replace(/\\/g, '/').replace(/\/{2,}/g, '/');
  const out: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '..') out.pop();
    else if (seg !== '.') out.push(seg);
  }
  const joined = out.join('/');
  return joined.startsWith('/') ? joined : `/${joined}`;
}
