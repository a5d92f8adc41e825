// The file store's table of record kinds (store/file/record-events.ts): what a
// changed record file does to the domain mirror and what it announces, one
// case per kind. The real file store runs these through store.test.ts; here
// each kind's rule is pinned on its own, with no disk.
import { describe, expect, it } from 'vitest';
import { mirrorChange, type DomainMaps } from '../src/store/file/record-events.js';
import type { Collection, Entry, Records } from '../src/store/file/records.js';

function maps(buried: string[] = []): DomainMaps {
  return {
    accounts: new Map(),
    tunnels: new Map(),
    routes: new Map(),
    zones: new Map(),
    revocations: new Map(),
    accessRecords: new Map(),
    buried: (id) => buried.includes(id),
  };
}

// mirrorChange reads only the fields its rule needs; the records are cut to those.
const entry = <C extends Collection>(_c: C, value: Partial<Records[C]>): Entry<Records[C]> => ({ sig: '', text: '', value: value as Records[C] });
const change = <C extends Collection>(c: C, prev: Partial<Records[C]> | undefined, next: Partial<Records[C]> | undefined, d: DomainMaps) =>
  mirrorChange(c, prev && entry(c, prev), next && entry(c, next), d);

describe('record-events: one rule per record kind', () => {
  it('accounts: mirrored by id; a new or changed one is announced, a removed one is not', () => {
    const d = maps();
    expect(change('accounts', undefined, { id: 'a1', name: 'acme' }, d)).toEqual([{ type: 'account', accountId: 'a1' }]);
    expect(d.accounts.get('a1')).toMatchObject({ name: 'acme' });
    expect(change('accounts', { id: 'a1' }, undefined, d)).toEqual([]);
    expect(d.accounts.size).toBe(0);
  });

  it('tunnels: a new one and a change of disconnectedAt are news, a rewrite is not; gone with a tombstone is deleted, without one vanished', () => {
    const d = maps(['t-buried']);
    const t = { id: 't1', accountId: 'a1', name: 'web' };
    expect(change('tunnels', undefined, t, d)).toEqual([{ type: 'tunnel', tunnelId: 't1' }]);
    expect(change('tunnels', t, { ...t }, d)).toEqual([]);
    expect(change('tunnels', t, { ...t, disconnectedAt: 5 }, d)).toEqual([{ type: 'tunnel', tunnelId: 't1' }]);
    expect(change('tunnels', t, undefined, d)).toEqual([{ type: 'tunnel-vanished', tunnelId: 't1', accountId: 'a1' }]);
    expect(d.tunnels.size).toBe(0);
    const b = { id: 't-buried', accountId: 'a1', name: 'old' };
    change('tunnels', undefined, b, d);
    expect(change('tunnels', b, undefined, d)).toEqual([{ type: 'tunnel-deleted', tunnelId: 't-buried', accountId: 'a1' }]);
    // The same file now holding another tunnel (deleted, then created again under its name): both are said.
    const again = { ...t, id: 't2' };
    change('tunnels', undefined, t, d);
    expect(change('tunnels', t, again, d)).toEqual([
      { type: 'tunnel-vanished', tunnelId: 't1', accountId: 'a1' },
      { type: 'tunnel', tunnelId: 't2' },
    ]);
    expect([...d.tunnels.keys()]).toEqual(['t2']);
  });

  it('routes and zones: mirrored by hostname and zone; every change is announced, removal included', () => {
    const d = maps();
    expect(change('routes', undefined, { hostname: 'a.example.com', tunnelId: 't1' }, d)).toEqual([{ type: 'route', hostname: 'a.example.com' }]);
    expect(d.routes.get('a.example.com')).toMatchObject({ tunnelId: 't1' });
    expect(change('routes', { hostname: 'a.example.com' }, undefined, d)).toEqual([{ type: 'route', hostname: 'a.example.com' }]);
    expect(d.routes.size).toBe(0);
    expect(change('zones', undefined, { zone: 'example.com', accountId: 'a1' }, d)).toEqual([{ type: 'zone', zone: 'example.com' }]);
    expect(d.zones.has('example.com')).toBe(true);
    expect(change('zones', { zone: 'example.com' }, undefined, d)).toEqual([{ type: 'zone', zone: 'example.com' }]);
    expect(d.zones.size).toBe(0);
  });

  it('access records: mirrored under their access key, every change announced', () => {
    const d = maps();
    const policy = { kind: 'policy' as const, id: 'p1' };
    expect(change('access', undefined, policy, d)).toEqual([{ type: 'access', key: 'policy:p1' }]);
    expect(d.accessRecords.has('policy:p1')).toBe(true);
    expect(change('access', policy, undefined, d)).toEqual([{ type: 'access', key: 'policy:p1' }]);
    expect(d.accessRecords.size).toBe(0);
  });

  it('revocations: a new one is announced; a pruned one (of a long-expired token) leaves the mirror quietly', () => {
    const d = maps();
    expect(change('revocations', undefined, { tokenId: 'j1', expiresAt: 10 }, d)).toEqual([{ type: 'revoked', tokenId: 'j1' }]);
    expect(change('revocations', { tokenId: 'j1' }, { tokenId: 'j1', expiresAt: 11 }, d)).toEqual([]);
    expect(change('revocations', { tokenId: 'j1' }, undefined, d)).toEqual([]);
    expect(d.revocations.size).toBe(0);
  });

  it('tombstones say nothing; logins and their decisions are announced by code', () => {
    const d = maps();
    expect(change('tombstones', undefined, { tunnelId: 't1' }, d)).toEqual([]);
    expect(change('logins', undefined, { code: 'c1' }, d)).toEqual([{ type: 'login', code: 'c1' }]);
    expect(change('login-approvals', undefined, { code: 'c1' }, d)).toEqual([{ type: 'login', code: 'c1' }]);
    expect(change('logins', { code: 'c2' }, undefined, d)).toEqual([{ type: 'login', code: 'c2' }]);
  });

  it('relays and presence: a heartbeat that rewrites the same state is not news; a join, a leave, draining or a new presence list is', () => {
    const d = maps();
    const member = { id: 'r1', draining: false } as Records['relays']['member'];
    expect(change('relays', undefined, { member, expiresAt: 1 }, d)).toEqual([{ type: 'relay', relayId: 'r1' }]);
    expect(change('relays', { member, expiresAt: 1 }, { member, expiresAt: 2 }, d)).toEqual([]);
    expect(change('relays', { member, expiresAt: 2 }, { member: { ...member, draining: true }, expiresAt: 3 }, d)).toEqual([{ type: 'relay', relayId: 'r1' }]);
    expect(change('relays', { member, expiresAt: 3 }, undefined, d)).toEqual([{ type: 'relay', relayId: 'r1' }]);
    const p = { relayId: 'r1', presences: [{ tunnelId: 't1' }] as Records['presence']['presences'] };
    expect(change('presence', undefined, { ...p, expiresAt: 1 }, d)).toEqual([{ type: 'presence', relayId: 'r1' }]);
    expect(change('presence', { ...p, expiresAt: 1 }, { ...p, expiresAt: 2 }, d)).toEqual([]);
    expect(change('presence', { ...p, expiresAt: 2 }, { ...p, presences: [] }, d)).toEqual([{ type: 'presence', relayId: 'r1' }]);
  });
});
