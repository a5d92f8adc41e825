// How a changed record file changes the file store's domain mirror, and
// what that announces: one entry per record kind (a collection of records.ts),
// so a new kind is a compile error here until it says what it mirrors and
// announces. A tunnel gone with a tombstone was deleted; gone without one,
// the store lost it (`tunnel-vanished`).

import type { StoreEvent } from '../types.js';
import { accessKey } from '../access-records.js';
import type { Collection, Entry, Records } from './records.js';

/** The domain mirror's maps (MirroredStore's), and whether a tunnel has a tombstone. */
export interface DomainMaps {
  accounts: Map<string, Records['accounts']>;
  tunnels: Map<string, Records['tunnels']>;
  routes: Map<string, Records['routes']>;
  zones: Map<string, Records['zones']>;
  revocations: Map<string, Records['revocations']>;
  accessRecords: Map<string, Records['access']>;
  buried(tunnelId: string): boolean;
}

/** A record's change: the value before and after (undefined: no file), never both undefined. */
type Change<T> = { prev: T; next: T | undefined } | { prev: T | undefined; next: T };

/** What one kind's change does to the mirror, and the events it announces. */
type OnChange<T> = (c: Change<T>, d: DomainMaps) => StoreEvent[];

/** The common kind: kept in one domain map under a key, announced by `announce` (none: nothing to say). */
function mirrored<T>(map: (d: DomainMaps) => Map<string, T>, key: (v: T) => string, announce: (c: Change<T>) => StoreEvent | undefined): OnChange<T> {
  return (c, d) => {
    const m = map(d);
    if (c.prev !== undefined) m.delete(key(c.prev));
    if (c.next !== undefined) m.set(key(c.next), c.next);
    const e = announce(c);
    return e ? [e] : [];
  };
}

/** Either side: the record that is or was. */
const either = <T>(c: Change<T>): T => (c.next ?? c.prev)!;

const ON_CHANGE: { readonly [C in Collection]: OnChange<Records[C]> } = {
  accounts: mirrored(
    (d) => d.accounts,
    (a) => a.id,
    ({ next }) => (next ? { type: 'account', accountId: next.id } : undefined),
  ),
  tunnels: ({ prev: p, next: n }, d) => {
    const events: StoreEvent[] = [];
    if (p) d.tunnels.delete(p.id);
    if (n) d.tunnels.set(n.id, n);
    if (p && p.id !== n?.id) events.push({ type: d.buried(p.id) ? 'tunnel-deleted' : 'tunnel-vanished', tunnelId: p.id, accountId: p.accountId });
    if (n && (n.id !== p?.id || n.disconnectedAt !== p.disconnectedAt)) events.push({ type: 'tunnel', tunnelId: n.id });
    return events;
  },
  routes: mirrored(
    (d) => d.routes,
    (r) => r.hostname,
    (c) => ({ type: 'route', hostname: either(c).hostname }),
  ),
  zones: mirrored(
    (d) => d.zones,
    (z) => z.zone,
    (c) => ({ type: 'zone', zone: either(c).zone }),
  ),
  // Read through the disk mirror (DomainMaps.buried): nothing of its own to mirror or say.
  tombstones: () => [],
  access: mirrored(
    (d) => d.accessRecords,
    accessKey,
    (c) => ({ type: 'access', key: accessKey(either(c)) }),
  ),
  // Only a new revocation is news; a pruned one (of a long-expired token) goes quietly.
  revocations: mirrored(
    (d) => d.revocations,
    (r) => r.tokenId,
    ({ prev, next }) => (next && !prev ? { type: 'revoked', tokenId: next.tokenId } : undefined),
  ),
  logins: (c) => [{ type: 'login', code: either(c).code }],
  'login-approvals': (c) => [{ type: 'login', code: either(c).code }],
  // A heartbeat rewrites the file; only a join, a leave or a change of draining is news.
  relays: ({ prev: p, next: n }) => (!p || !n || p.member.draining !== n.member.draining ? [{ type: 'relay', relayId: (n ?? p)!.member.id }] : []),
  presence: ({ prev: p, next: n }) => (!p || !n || JSON.stringify(p.presences) !== JSON.stringify(n.presences) ? [{ type: 'presence', relayId: (n ?? p)!.relayId }] : []),
};

export function mirrorChange<C extends Collection>(coll: C, prev: Entry<Records[C]> | undefined, next: Entry<Records[C]> | undefined, d: DomainMaps): StoreEvent[] {
  if (prev === undefined && next === undefined) return [];
  return (ON_CHANGE[coll] as OnChange<Records[C]>)({ prev: prev?.value, next: next?.value } as Change<Records[C]>, d);
}
