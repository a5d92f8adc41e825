// How a changed record file changes the file store's domain mirror, and
// what that announces. A tunnel gone with a tombstone was deleted; gone
// without one, the store lost it (`tunnel-vanished`).

import type { Account, Revocation, Route, StoreEvent, Tunnel, Zone } from '../types.js';
import { accessKey, type AccessRecord } from '../access-records.js';
import type { ApprovalFile, Collection, Entry, LoginFile, PresenceFile, Records, RelayFile } from './records.js';

/** The domain mirror's maps (MirroredStore's), and whether a tunnel has a tombstone. */
export interface DomainMaps {
  accounts: Map<string, Account>;
  tunnels: Map<string, Tunnel>;
  routes: Map<string, Route>;
  zones: Map<string, Zone>;
  revocations: Map<string, Revocation>;
  accessRecords: Map<string, AccessRecord>;
  buried(tunnelId: string): boolean;
}

export function mirrorChange<C extends Collection>(coll: C, prev: Entry<Records[C]> | undefined, next: Entry<Records[C]> | undefined, d: DomainMaps): StoreEvent[] {
    const events: StoreEvent[] = [];
    switch (coll) {
      case 'accounts': {
        const p = prev?.value as Account | undefined;
        const n = next?.value as Account | undefined;
        if (p) d.accounts.delete(p.id);
        if (n) {
          d.accounts.set(n.id, n);
          events.push({ type: 'account', accountId: n.id });
        }
        break;
      }
      case 'tunnels': {
        const p = prev?.value as Tunnel | undefined;
        const n = next?.value as Tunnel | undefined;
        if (p) d.tunnels.delete(p.id);
        if (n) d.tunnels.set(n.id, n);
        if (p && p.id !== n?.id) {
          const buried = d.buried(p.id);
          events.push({ type: buried ? 'tunnel-deleted' : 'tunnel-vanished', tunnelId: p.id, accountId: p.accountId });
        }
        if (n && (n.id !== p?.id || n.disconnectedAt !== p.disconnectedAt)) events.push({ type: 'tunnel', tunnelId: n.id });
        break;
      }
      case 'routes': {
        const p = prev?.value as Route | undefined;
        const n = next?.value as Route | undefined;
        if (p) d.routes.delete(p.hostname);
        if (n) d.routes.set(n.hostname, n);
        events.push({ type: 'route', hostname: (n ?? p)!.hostname });
        break;
      }
      case 'zones': {
        const p = prev?.value as Zone | undefined;
        const n = next?.value as Zone | undefined;
        if (p) d.zones.delete(p.zone);
        if (n) d.zones.set(n.zone, n);
        events.push({ type: 'zone', zone: (n ?? p)!.zone });
        break;
      }
      case 'tombstones':
        break;
      case 'access': {
        const p = prev?.value as AccessRecord | undefined;
        const n = next?.value as AccessRecord | undefined;
        const key = accessKey((n ?? p)!);
        if (n) d.accessRecords.set(key, n);
        else d.accessRecords.delete(key);
        events.push({ type: 'access', key });
        break;
      }
      case 'revocations': {
        const p = prev?.value as Revocation | undefined;
        const n = next?.value as Revocation | undefined;
        if (p) d.revocations.delete(p.tokenId);
        if (n) {
          d.revocations.set(n.tokenId, n);
          if (!p) events.push({ type: 'revoked', tokenId: n.tokenId });
        }
        break;
      }
      case 'logins':
      case 'login-approvals': {
        const v = (next ?? prev)!.value as LoginFile | ApprovalFile;
        events.push({ type: 'login', code: v.code });
        break;
      }
      case 'relays': {
        const p = prev?.value as RelayFile | undefined;
        const n = next?.value as RelayFile | undefined;
        if (!p || !n || p.member.draining !== n.member.draining) {
          events.push({ type: 'relay', relayId: (n ?? p)!.member.id });
        }
        break;
      }
      case 'presence': {
        const p = prev?.value as PresenceFile | undefined;
        const n = next?.value as PresenceFile | undefined;
        if (!p || !n || JSON.stringify(p.presences) !== JSON.stringify(n.presences)) {
          events.push({ type: 'presence', relayId: (n ?? p)!.relayId });
        }
        break;
      }
    }
  return events;
}
