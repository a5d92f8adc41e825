// Over 500 lines: the one Store contract every implementation must meet; split, a store could be run against one half and never told of the other.
// The one Store contract, run against every implementation (store.test.ts).
// `makeEnv` gives a fresh, empty shared backing (a temp dir, a key prefix);
// `env.open()` may be called more than once to get several store instances
// on the same state, as several relay processes would have.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreError, type ApprovedLoginSession, type Presence, type RelayMember, type Store, type StoreEvent } from '../src/store/types.js';
import { waitFor } from '../../../test/harness/wait.js';
import type { AccessRecord } from '../src/store/access-records.js';

export interface StoreEnv {
  open(): Promise<Store>;
  cleanup(): Promise<void>;
}

async function expectStoreError(p: Promise<unknown>, code: StoreError['code']): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe(code);
    return err as StoreError;
  }
  throw new Error(`expected StoreError ${code}, but the call succeeded`);
}

function member(id: string, over: Partial<RelayMember> = {}): RelayMember {
  return {
    id,
    region: 'local',
    controlUrl: `http://127.0.0.1:7000/${id}`,
    connectUrl: `ws://127.0.0.1:7844/${id}`,
    publicUrl: `http://127.0.0.1:8080/${id}`,
    peerUrl: `http://127.0.0.1:7001/${id}`,
    startedAt: 1_700_000_000_000,
    lastSeen: 0,
    draining: false,
    ...over,
  };
}

function presence(relayId: string, tunnelId: string, n: number): Presence {
  return {
    connectionId: `${relayId}-c${n}`,
    relayId,
    tunnelId,
    connectorId: 'connector-1',
    connIndex: n % 4,
    version: '0.1.0',
    clientIp: '10.0.0.1',
    connectedAt: 1_700_000_000_000 + n,
  };
}

export function storeContract(name: string, makeEnv: () => Promise<StoreEnv>): void {
  describe(`Store contract: ${name}`, () => {
    let env: StoreEnv;
    const opened: Store[] = [];
    const open = async (): Promise<Store> => {
      const s = await env.open();
      opened.push(s);
      return s;
    };

    beforeEach(async () => {
      env = await makeEnv();
    });
    afterEach(async () => {
      await Promise.allSettled(opened.splice(0).map((s) => s.close()));
      await env.cleanup();
    });

    it('accounts: create, get by id and name, list; names are unique', async () => {
      const s = await open();
      const a = await s.createAccount('acme');
      expect(a.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(a.name).toBe('acme');
      expect(Math.abs(a.createdAt - Date.now())).toBeLessThan(5_000);
      const b = await s.createAccount('beta');
      expect(await s.getAccount(a.id)).toEqual(a);
      expect(await s.getAccountByName('beta')).toEqual(b);
      expect(await s.getAccount('nope')).toBeUndefined();
      expect(await s.getAccountByName('nope')).toBeUndefined();
      expect(await s.listAccounts()).toEqual([a, b]);
      await expectStoreError(s.createAccount('acme'), 'CONFLICT');
      expect(await s.listAccounts()).toHaveLength(2);
    });

    it('tunnels: create, get, get by name, list; names unique per account; unknown account', async () => {
      const s = await open();
      const acme = await s.createAccount('acme');
      const beta = await s.createAccount('beta');
      const t1 = await s.createTunnel(acme.id, 'app');
      expect(t1).toMatchObject({ accountId: acme.id, name: 'app' });
      expect(t1.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      const t2 = await s.createTunnel(acme.id, 'api');
      const t3 = await s.createTunnel(beta.id, 'app'); // same name, other account: fine
      expect(await s.getTunnel(t1.id)).toEqual(t1);
      expect(await s.getTunnel('00000000-0000-4000-8000-000000000000')).toBeUndefined();
      expect(await s.getTunnelByName(acme.id, 'api')).toEqual(t2);
      expect(await s.getTunnelByName(beta.id, 'app')).toEqual(t3);
      expect(await s.getTunnelByName(beta.id, 'api')).toBeUndefined();
      expect((await s.listTunnels(acme.id)).map((t) => t.id).sort()).toEqual([t1.id, t2.id].sort());
      expect(await s.listTunnels(beta.id)).toEqual([t3]);
      expect(await s.listTunnels()).toHaveLength(3);
      const dup = await expectStoreError(s.createTunnel(acme.id, 'app'), 'CONFLICT');
      expect(dup.message).toContain('app');
      await expectStoreError(s.createTunnel('no-such-account', 'x'), 'NOT_FOUND');
    });

    it('routes: one tunnel per hostname, idempotent re-add, owner hidden from other accounts', async () => {
      const s = await open();
      const acme = await s.createAccount('acme');
      const beta = await s.createAccount('beta');
      const app = await s.createTunnel(acme.id, 'web-frontend');
      const api = await s.createTunnel(acme.id, 'api');
      const other = await s.createTunnel(beta.id, 'other');

      const r = await s.addRoute({ hostname: 'App.Example.COM', tunnelId: app.id, accountId: acme.id });
      expect(r).toMatchObject({ hostname: 'app.example.com', tunnelId: app.id, accountId: acme.id });
      expect(await s.getRoute('app.example.com')).toEqual(r);
      expect(await s.getRoute('APP.example.com')).toEqual(r);
      expect(await s.getRoute('example.com')).toBeUndefined();

      // Same tunnel again: ok, unchanged.
      expect(await s.addRoute({ hostname: 'app.example.com', tunnelId: app.id, accountId: acme.id })).toEqual(r);

      // Another tunnel of the same account: conflict naming the owner.
      const own = await expectStoreError(s.addRoute({ hostname: 'app.example.com', tunnelId: api.id, accountId: acme.id }), 'CONFLICT');
      expect(own.message).toContain(app.id);

      // Another account: conflict that reveals nothing about the owner.
      const foreign = await expectStoreError(s.addRoute({ hostname: 'app.example.com', tunnelId: other.id, accountId: beta.id }), 'CONFLICT');
      for (const secret of [app.id, app.name, acme.id, acme.name]) expect(foreign.message).not.toContain(secret);

      // A tunnel that does not exist or is not yours.
      await expectStoreError(s.addRoute({ hostname: 'x.example.com', tunnelId: 'nope', accountId: acme.id }), 'NOT_FOUND');
      await expectStoreError(s.addRoute({ hostname: 'x.example.com', tunnelId: other.id, accountId: acme.id }), 'NOT_FOUND');
      expect(await s.getRoute('x.example.com')).toBeUndefined();

      // Wildcards are stored as such; bad hostnames are refused.
      const w = await s.addRoute({ hostname: '*.dev.example.com', tunnelId: api.id, accountId: acme.id });
      expect(w.hostname).toBe('*.dev.example.com');
      expect(await s.getRoute('*.dev.example.com')).toEqual(w);
      await expect(s.addRoute({ hostname: 'bad host!', tunnelId: api.id, accountId: acme.id })).rejects.toBeInstanceOf(TypeError);
      await expect(s.addRoute({ hostname: 'a.*.example.com', tunnelId: api.id, accountId: acme.id })).rejects.toBeInstanceOf(TypeError);

      const o = await s.addRoute({ hostname: 'other.example.net', tunnelId: other.id, accountId: beta.id });
      expect((await s.listRoutes()).map((x) => x.hostname)).toEqual(['*.dev.example.com', 'app.example.com', 'other.example.net']);
      expect(await s.listRoutes({ accountId: beta.id })).toEqual([o]);
      expect(await s.listRoutes({ tunnelId: api.id })).toEqual([w]);
      expect(await s.listRoutes({ accountId: acme.id, tunnelId: other.id })).toEqual([]);

      await s.deleteRoute('APP.example.com');
      expect(await s.getRoute('app.example.com')).toBeUndefined();
      await expectStoreError(s.deleteRoute('app.example.com'), 'NOT_FOUND');
      // Free again: another tunnel can take it.
      expect((await s.addRoute({ hostname: 'app.example.com', tunnelId: other.id, accountId: beta.id })).tunnelId).toBe(other.id);
    });

    it('deleteTunnel removes its routes (only its routes), frees the name, and announces it', async () => {
      const s = await open();
      const events: StoreEvent[] = [];
      s.subscribe((e) => events.push(e));
      const acme = await s.createAccount('acme');
      const app = await s.createTunnel(acme.id, 'app');
      const keep = await s.createTunnel(acme.id, 'keep');
      await s.addRoute({ hostname: 'a.example.com', tunnelId: app.id, accountId: acme.id });
      await s.addRoute({ hostname: '*.a.example.com', tunnelId: app.id, accountId: acme.id });
      await s.addRoute({ hostname: 'k.example.com', tunnelId: keep.id, accountId: acme.id });

      await s.deleteTunnel(app.id, 60_000);
      expect(await s.getTunnel(app.id)).toBeUndefined();
      expect(await s.getTunnelByName(acme.id, 'app')).toBeUndefined();
      expect(await s.getRoute('a.example.com')).toBeUndefined();
      expect(await s.getRoute('*.a.example.com')).toBeUndefined();
      expect((await s.listRoutes()).map((r) => r.hostname)).toEqual(['k.example.com']);
      expect(await s.listTunnels()).toEqual([keep]);
      await expectStoreError(s.deleteTunnel(app.id, 60_000), 'NOT_FOUND');

      await waitFor(
        () =>
          events.some((e) => e.type === 'tunnel-deleted' && e.tunnelId === app.id && e.accountId === acme.id) &&
          events.some((e) => e.type === 'route' && e.hostname === 'a.example.com') &&
          events.some((e) => e.type === 'route' && e.hostname === '*.a.example.com'),
        1_000,
        { message: 'tunnel-deleted and route events' },
      );

      // The name and the hostnames are free again.
      const again = await s.createTunnel(acme.id, 'app');
      expect(again.id).not.toBe(app.id);
      await s.addRoute({ hostname: 'a.example.com', tunnelId: again.id, accountId: acme.id });
      expect((await s.getRoute('a.example.com'))?.tunnelId).toBe(again.id);
    });

    it('deleteTunnel leaves a tombstone; another instance hears tunnel-deleted, never tunnel-vanished', async () => {
      const a = await open();
      const b = await open();
      const events: StoreEvent[] = [];
      b.subscribe((e) => events.push(e));
      const acme = await a.createAccount('acme');
      const t = await a.createTunnel(acme.id, 'app');
      await waitFor(async () => (await b.getTunnel(t.id)) !== undefined, 5_000, { message: 'b sees the tunnel' });
      expect(await a.getTombstone(t.id)).toBeUndefined();
      await a.deleteTunnel(t.id, 60_000);
      const stone = await b.getTombstone(t.id);
      expect(stone).toMatchObject({ tunnelId: t.id, accountId: acme.id, name: 'app' });
      expect(Math.abs(stone!.deletedAt - Date.now())).toBeLessThan(5_000);
      await waitFor(() => events.some((e) => e.type === 'tunnel-deleted' && e.tunnelId === t.id), 5_000, { message: 'tunnel-deleted on b' });
      expect(events.some((e) => e.type === 'tunnel-vanished')).toBe(false);
      expect(await b.getTombstone('00000000-0000-4000-8000-000000000000')).toBeUndefined();
    });

    it('a tombstone lives its lifetime (read and counted meanwhile, by every instance), then it is gone', async () => {
      const a = await open();
      const b = await open();
      const acme = await a.createAccount('acme');
      const other = await a.createAccount('other');
      const t = await a.createTunnel(acme.id, 'short');
      const u = await a.createTunnel(other.id, 'long');
      await a.deleteTunnel(t.id, 800);
      await a.deleteTunnel(u.id, 60_000);
      expect(await b.getTombstone(t.id)).toMatchObject({ tunnelId: t.id, accountId: acme.id });
      expect((await b.getTombstone(t.id))!.expiresAt! - (await b.getTombstone(t.id))!.deletedAt).toBe(800);
      expect(await b.countTombstones(acme.id)).toBe(1);
      expect(await b.countTombstones(other.id)).toBe(1);
      await waitFor(async () => (await b.getTombstone(t.id)) === undefined, 3_000, { message: 'short tombstone expired' });
      expect(await a.getTombstone(t.id)).toBeUndefined();
      expect(await a.countTombstones(acme.id)).toBe(0);
      expect(await a.getTombstone(u.id)).toMatchObject({ tunnelId: u.id });
      expect(await a.countTombstones(other.id)).toBe(1);
    });

    it('claimTunnelSlot: at most max live tunnels per group; a deleted tunnel frees its slot; groups are apart', async () => {
      const s = await open();
      const acme = await s.createAccount('acme');
      const [t1, t2, t3] = await Promise.all(['t1', 't2', 't3'].map((n) => s.createTunnel(acme.id, n)));
      expect(await s.claimTunnelSlot('ip:10.0.0.1', t1!.id, 2, 60_000)).toBe(true);
      expect(await s.claimTunnelSlot('ip:10.0.0.1', t2!.id, 2, 60_000)).toBe(true);
      expect(await s.claimTunnelSlot('ip:10.0.0.1', t3!.id, 2, 60_000)).toBe(false);
      // Claiming again for a tunnel already counted is no new slot.
      expect(await s.claimTunnelSlot('ip:10.0.0.1', t2!.id, 2, 60_000)).toBe(true);
      expect(await s.claimTunnelSlot('ip:10.0.0.2', t3!.id, 2, 60_000)).toBe(true);
      await s.deleteTunnel(t1!.id, 60_000);
      expect(await s.claimTunnelSlot('ip:10.0.0.1', t3!.id, 2, 60_000)).toBe(true);
    });

    it('zones: add is idempotent per account, one account per zone, get/list/delete, announced to other instances', async () => {
      const a = await open();
      const b = await open();
      const events: StoreEvent[] = [];
      b.subscribe((e) => events.push(e));
      const alice = await a.createAccount('alice');
      const bob = await a.createAccount('bob');
      const z = await a.addZone({ zone: 'Alice.Example.COM.', accountId: alice.id, source: 'operator' });
      expect(z).toMatchObject({ zone: 'alice.example.com', accountId: alice.id, source: 'operator' });
      expect(await a.addZone({ zone: 'alice.example.com', accountId: alice.id, source: 'dns' })).toEqual(z);
      const taken = await expectStoreError(b.addZone({ zone: 'alice.example.com', accountId: bob.id, source: 'operator' }), 'CONFLICT');
      expect(taken.message).not.toContain(alice.id);
      await expectStoreError(a.addZone({ zone: 'x.example.com', accountId: 'no-such-account', source: 'operator' }), 'NOT_FOUND');
      await expect(a.addZone({ zone: '*.example.com', accountId: alice.id, source: 'operator' })).rejects.toThrow(/wildcard/);
      await waitFor(async () => (await b.getZone('alice.example.com'))?.accountId === alice.id, 5_000, { message: 'b mirrors the zone' });
      expect(events.some((e) => e.type === 'zone' && e.zone === 'alice.example.com')).toBe(true);
      const bz = await b.addZone({ zone: 'bob.example.com', accountId: bob.id, source: 'adopt' });
      expect((await a.listZones()).map((x) => x.zone)).toEqual(['alice.example.com', 'bob.example.com']);
      expect(await a.listZones({ accountId: bob.id })).toEqual([bz]);
      await a.deleteZone('alice.example.com');
      await expectStoreError(a.deleteZone('alice.example.com'), 'NOT_FOUND');
      await waitFor(async () => (await b.getZone('alice.example.com')) === undefined, 5_000, { message: 'b drops the zone' });
      // Freed: another account may now hold it.
      expect((await b.addZone({ zone: 'alice.example.com', accountId: bob.id, source: 'operator' })).accountId).toBe(bob.id);
      await a.close();
      const c = await open();
      expect((await c.listZones()).map((x) => `${x.zone}:${x.source}`)).toEqual(['alice.example.com:operator', 'bob.example.com:adopt']);
    });

    it('revocations: revoke is idempotent, isRevoked, list', async () => {
      const s = await open();
      const exp = Date.now() + 3_600_000;
      expect(await s.isRevoked('tok-1')).toBe(false);
      await s.revoke('tok-1', exp);
      await s.revoke('tok-1', exp);
      await s.revoke('tok-2', exp + 1);
      expect(await s.isRevoked('tok-1')).toBe(true);
      expect(await s.isRevoked('tok-2')).toBe(true);
      expect(await s.isRevoked('tok-3')).toBe(false);
      const list = await s.listRevocations();
      expect(list.map((r) => r.tokenId)).toEqual(['tok-1', 'tok-2']);
      expect(list[0]).toMatchObject({ tokenId: 'tok-1', expiresAt: exp });
    });

    it('revocations: a deferred one (rotation grace) takes effect at its time; an earlier one wins; across instances', async () => {
      const a = await open();
      const b = await open();
      const exp = Date.now() + 3_600_000;
      await a.revoke('tok-later', exp, Date.now() + 600);
      expect(await a.isRevoked('tok-later')).toBe(false);
      await waitFor(async () => (await b.listRevocations()).some((r) => r.tokenId === 'tok-later'), 2_000);
      expect(await b.isRevoked('tok-later')).toBe(false);
      await waitFor(async () => (await a.isRevoked('tok-later')) && (await b.isRevoked('tok-later')), 3_000);
      // An immediate revocation cuts a pending grace short; a later grace never extends one.
      await a.revoke('tok-grace', exp, Date.now() + 3_600_000);
      expect(await a.isRevoked('tok-grace')).toBe(false);
      await a.revoke('tok-grace', exp);
      expect(await a.isRevoked('tok-grace')).toBe(true);
      await a.revoke('tok-grace', exp + 5, Date.now() + 3_600_000);
      expect(await a.isRevoked('tok-grace')).toBe(true);
      expect((await a.listRevocations()).find((r) => r.tokenId === 'tok-grace')).toMatchObject({ expiresAt: exp + 5 });
    });

    it('revocations of tokens expired past the grace leave the store while revoking goes on; live ones stay (every instance)', async () => {
      const a = await open();
      const b = await open();
      const longAgo = Date.now() - 10 * 60_000;
      for (let i = 0; i < 3; i++) await a.revoke(`tok-dead-${i}`, longAgo);
      await a.revokeOnce('tok-dead-once', longAgo);
      const later = Date.now() + 3_600_000;
      await a.revoke('tok-alive', later);
      const ids = async (s: Store) => (await s.listRevocations()).map((r) => r.tokenId).sort();
      await waitFor(async () => (await ids(a)).join() === 'tok-alive', 5_000, { message: 'expired revocations dropped' });
      await waitFor(async () => (await ids(b)).join() === 'tok-alive', 5_000, { message: 'and gone for another instance' });
      // Out of every instance's memory too (isRevoked is served from it).
      await waitFor(async () => !(await b.isRevoked('tok-dead-0')) && !(await a.isRevoked('tok-dead-once')), 5_000, { message: 'dropped from the mirrors' });
      expect(await b.isRevoked('tok-alive')).toBe(true);
    });

    it('revokeOnce: of parallel claims from two instances exactly one wins', async () => {
      const a = await open();
      const b = await open();
      const exp = Date.now() + 3_600_000;
      const wins = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).revokeOnce('enroll-1', exp)));
      expect(wins.filter(Boolean)).toHaveLength(1);
      expect(await a.isRevoked('enroll-1')).toBe(true);
      expect(await a.revokeOnce('enroll-1', exp)).toBe(false);
    });

    it('claimNonce: first claim wins, a repeat is refused until the TTL passes', async () => {
      const a = await open();
      expect(await a.claimNonce('relay-a\nn1', 300)).toBe(true);
      expect(await a.claimNonce('relay-a\nn1', 300)).toBe(false);
      expect(await a.claimNonce('relay-a\nn2', 300)).toBe(true);
      await waitFor(async () => a.claimNonce('relay-a\nn1', 300), 3_000);
    });

    it('login sessions: create, approve once, list pending, delete', async () => {
      const s = await open();
      const acme = await s.createAccount('acme');
      const expiresAt = Date.now() + 60_000;
      const p = await s.createLoginSession({ code: 'ABCD-1234', boxPublicKey: 'cGs=', expiresAt });
      expect(p).toMatchObject({ code: 'ABCD-1234', boxPublicKey: 'cGs=', expiresAt, state: 'pending' });
      await expectStoreError(s.createLoginSession({ code: 'ABCD-1234', boxPublicKey: 'eA==', expiresAt }), 'CONFLICT');
      await s.createLoginSession({ code: 'WXYZ-0000', boxPublicKey: 'cGs=', expiresAt });
      expect(await s.getLoginSession('ABCD-1234')).toEqual(p);
      expect((await s.listLoginSessions()).map((x) => x.code)).toEqual(['ABCD-1234', 'WXYZ-0000']);

      const approved = await s.approveLoginSession('ABCD-1234', acme.id, 'sealed-credential');
      expect(approved).toEqual({ ...p, state: 'approved', accountId: acme.id, sealedCredential: 'sealed-credential' });
      expect(await s.getLoginSession('ABCD-1234')).toEqual(approved);
      await expectStoreError(s.approveLoginSession('ABCD-1234', acme.id, 'again'), 'CONFLICT');
      await expectStoreError(s.approveLoginSession('NOPE-0000', acme.id, 'x'), 'NOT_FOUND');
      expect((await s.listLoginSessions()).map((x) => x.code)).toEqual(['WXYZ-0000']);

      await s.deleteLoginSession('ABCD-1234');
      await s.deleteLoginSession('ABCD-1234'); // idempotent
      expect(await s.getLoginSession('ABCD-1234')).toBeUndefined();
      // The code is free again, and a new session with it starts pending.
      const again = await s.createLoginSession({ code: 'ABCD-1234', boxPublicKey: 'bmV3', expiresAt });
      expect((await s.getLoginSession('ABCD-1234'))?.state).toBe('pending');
      expect(again.boxPublicKey).toBe('bmV3');
    });

    it('login sessions can be denied: the state says so, not approvable, off the pending list', async () => {
      const s = await open();
      const acme = await s.createAccount('acme');
      const expiresAt = Date.now() + 60_000;
      const p = await s.createLoginSession({ code: 'DENY-0001', boxPublicKey: 'cGs=', expiresAt });
      await s.createLoginSession({ code: 'KEEP-0001', boxPublicKey: 'cGs=', expiresAt });
      const before = Date.now();
      const denied = await s.denyLoginSession('DENY-0001');
      expect(denied).toMatchObject({ ...p, state: 'denied' });
      expect(denied.deniedAt).toBeGreaterThanOrEqual(before);
      expect(await s.getLoginSession('DENY-0001')).toEqual(denied);
      expect(await s.denyLoginSession('DENY-0001')).toEqual(denied); // idempotent
      await expectStoreError(s.approveLoginSession('DENY-0001', acme.id, 'sealed'), 'CONFLICT');
      expect((await s.listLoginSessions()).map((x) => x.code)).toEqual(['KEEP-0001']);
      await expectStoreError(s.denyLoginSession('NOPE-0000'), 'NOT_FOUND');
      // Approved first: a denial is refused, the approval stands.
      await s.approveLoginSession('KEEP-0001', acme.id, 'sealed');
      await expectStoreError(s.denyLoginSession('KEEP-0001'), 'CONFLICT');
      expect((await s.getLoginSession('KEEP-0001'))?.state).toBe('approved');
      // Deleted, the code starts a fresh pending session (the old denial does not stick to it).
      await s.deleteLoginSession('DENY-0001');
      await s.createLoginSession({ code: 'DENY-0001', boxPublicKey: 'bmV3', expiresAt });
      expect((await s.getLoginSession('DENY-0001'))?.state).toBe('pending');
    });

    it('login sessions expire: hidden, not approvable, code reusable', async () => {
      const s = await open();
      const acme = await s.createAccount('acme');
      await s.createLoginSession({ code: 'SOON-0001', boxPublicKey: 'cGs=', expiresAt: Date.now() + 300 });
      expect((await s.getLoginSession('SOON-0001'))?.state).toBe('pending');
      await waitFor(async () => (await s.getLoginSession('SOON-0001')) === undefined, 3_000, { message: 'login session to expire' });
      expect(await s.listLoginSessions()).toEqual([]);
      await expectStoreError(s.approveLoginSession('SOON-0001', acme.id, 'x'), 'NOT_FOUND');
      const fresh = await s.createLoginSession({ code: 'SOON-0001', boxPublicKey: 'bmV3', expiresAt: Date.now() + 60_000 });
      expect(await s.getLoginSession('SOON-0001')).toEqual(fresh);
    });

    it('membership: heartbeat, draining flag, remove, expiry by TTL', async () => {
      const s = await open();
      const before = Date.now();
      await s.heartbeatRelay(member('relay-a'), 60_000);
      await s.heartbeatRelay(member('relay-b'), 60_000);
      const list = await s.listRelays();
      expect(list.map((m) => m.id)).toEqual(['relay-a', 'relay-b']);
      expect(list[0]).toMatchObject({ region: 'local', peerUrl: 'http://127.0.0.1:7001/relay-a', draining: false });
      expect(list[0]!.lastSeen).toBeGreaterThanOrEqual(before);

      await s.heartbeatRelay(member('relay-a', { draining: true }), 60_000);
      expect((await s.listRelays()).find((m) => m.id === 'relay-a')?.draining).toBe(true);

      await s.removeRelay('relay-b');
      await s.removeRelay('relay-b'); // idempotent
      expect((await s.listRelays()).map((m) => m.id)).toEqual(['relay-a']);

      await s.heartbeatRelay(member('relay-short'), 300);
      expect((await s.listRelays()).map((m) => m.id)).toContain('relay-short');
      await waitFor(async () => !(await s.listRelays()).some((m) => m.id === 'relay-short'), 3_000, { message: 'relay membership to expire' });
      expect((await s.listRelays()).map((m) => m.id)).toEqual(['relay-a']);
    });

    it('presence: put replaces the relay set, filters, expiry by TTL, removeRelay drops it', async () => {
      const s = await open();
      await s.putPresence('r1', [presence('r1', 't1', 0), presence('r1', 't2', 1)], 60_000);
      await s.putPresence('r2', [presence('r2', 't1', 2)], 60_000);
      expect(await s.listPresence()).toHaveLength(3);
      expect((await s.listPresence({ tunnelId: 't1' })).map((p) => p.connectionId)).toEqual(['r1-c0', 'r2-c2']);
      expect((await s.listPresence({ relayId: 'r1' })).map((p) => p.connectionId)).toEqual(['r1-c0', 'r1-c1']);
      expect(await s.listPresence({ relayId: 'r2', tunnelId: 't2' })).toEqual([]);

      // Replace: r1 now holds only its second connection.
      await s.putPresence('r1', [presence('r1', 't2', 1)], 60_000);
      expect((await s.listPresence({ relayId: 'r1' })).map((p) => p.connectionId)).toEqual(['r1-c1']);
      // … and so does a read of the whole fleet that saw the old set (redis sends only sets it has not seen).
      expect((await s.listPresence({ tunnelId: 't1' })).map((p) => p.connectionId)).toEqual(['r2-c2']);
      expect((await s.listPresence()).map((p) => p.connectionId).sort()).toEqual(['r1-c1', 'r2-c2']);
      // The relay id is the relay's own, whatever the entries say.
      await s.putPresence('r3', [{ ...presence('elsewhere', 't3', 5) }], 60_000);
      expect((await s.listPresence({ tunnelId: 't3' }))[0]?.relayId).toBe('r3');
      // Empty set.
      await s.putPresence('r3', [], 60_000);
      expect(await s.listPresence({ relayId: 'r3' })).toEqual([]);

      // A relay that stops refreshing disappears by itself.
      await s.putPresence('r2', [presence('r2', 't1', 2)], 300);
      await waitFor(async () => (await s.listPresence({ relayId: 'r2' })).length === 0, 3_000, { message: 'presence to expire' });

      await s.heartbeatRelay(member('r1'), 60_000);
      await s.removeRelay('r1');
      expect(await s.listPresence({ relayId: 'r1' })).toEqual([]);
    });

    it('presence: refresh sets a new TTL on the set as written, and says false when there is none', async () => {
      const s = await open();
      expect(await s.refreshPresence('nobody', 60_000)).toBe(false);
      await s.putPresence('r1', [presence('r1', 't1', 0)], 60_000);
      // The new TTL replaces the old one (shorter here, so expiry shows it was applied) and the set stays as written.
      expect(await s.refreshPresence('r1', 300)).toBe(true);
      expect((await s.listPresence({ relayId: 'r1' })).map((p) => p.connectionId)).toEqual(['r1-c0']);
      await waitFor(async () => (await s.listPresence({ relayId: 'r1' })).length === 0, 3_000, { message: 'refreshed presence to expire' });
      expect(await s.refreshPresence('r1', 60_000)).toBe(false);
      await s.putPresence('r2', [presence('r2', 't1', 1)], 60_000);
      await s.removeRelay('r2');
      expect(await s.refreshPresence('r2', 60_000)).toBe(false);
    });

    it('disconnectTunnel marks the tunnel (later each time), keeps it and its routes, and another instance sees it with an event', async () => {
      const a = await open();
      const b = await open();
      const acme = await a.createAccount('acme');
      const t = await a.createTunnel(acme.id, 'app');
      await a.addZone({ zone: 'example.com', accountId: acme.id, source: 'operator' });
      await a.addRoute({ hostname: 'app.example.com', tunnelId: t.id, accountId: acme.id });
      await waitFor(async () => (await b.getTunnel(t.id)) !== undefined, 2_000, { message: 'tunnel to reach b' });
      const events: StoreEvent[] = [];
      const off = b.subscribe((e) => events.push(e));
      const before = Date.now();
      const first = await a.disconnectTunnel(t.id);
      expect(first).toMatchObject({ id: t.id, name: 'app', accountId: acme.id, createdAt: t.createdAt });
      expect(first.disconnectedAt).toBeGreaterThanOrEqual(before);
      await waitFor(() => events.some((e) => e.type === 'tunnel' && e.tunnelId === t.id), 3_000, { message: 'tunnel event at b' });
      expect((await b.getTunnel(t.id))?.disconnectedAt).toBe(first.disconnectedAt);
      events.length = 0;
      const second = await b.disconnectTunnel(t.id);
      expect(second.disconnectedAt).toBeGreaterThan(first.disconnectedAt!);
      await waitFor(async () => (await a.getTunnel(t.id))?.disconnectedAt === second.disconnectedAt, 3_000, { message: 'second disconnect at a' });
      off();
      expect((await a.getRoute('app.example.com'))?.tunnelId).toBe(t.id);
      expect((await a.listTunnels()).map((x) => x.id)).toEqual([t.id]);
      await expectStoreError(a.disconnectTunnel('00000000-0000-4000-8000-000000000000'), 'NOT_FOUND');
    });

    it('getTunnel finds a tunnel created by another instance a moment ago', async () => {
      const a = await open();
      const b = await open();
      const acme = await b.createAccount('acme');
      // The account made by b is usable through a at once (create checks it).
      const t = await a.createTunnel(acme.id, 'app');
      const u = await b.createTunnel(acme.id, 'api');
      expect(await a.getTunnel(u.id)).toEqual(u);
      expect(await b.getTunnel(t.id)).toEqual(t);
      expect(await a.getTunnelByName(acme.id, 'api')).toEqual(u);
    });

    it("another instance's changes reach subscribers and cached reads within 1 s", async () => {
      const a = await open();
      const b = await open();
      const events: StoreEvent[] = [];
      const unsubscribe = a.subscribe((e) => events.push(e));
      const seen = async (what: string, pred: (e: StoreEvent) => boolean): Promise<void> => {
        const t0 = Date.now();
        await waitFor(() => events.some(pred), 5_000, { intervalMs: 5, message: `${what} event from the other instance` });
        expect(Date.now() - t0).toBeLessThan(1_000);
      };

      const acme = await b.createAccount('acme');
      await seen('account', (e) => e.type === 'account' && e.accountId === acme.id);
      const t = await b.createTunnel(acme.id, 'app');
      await seen('tunnel', (e) => e.type === 'tunnel' && e.tunnelId === t.id);
      await b.addRoute({ hostname: 'app.example.com', tunnelId: t.id, accountId: acme.id });
      await seen('route', (e) => e.type === 'route' && e.hostname === 'app.example.com');
      expect((await a.getRoute('app.example.com'))?.tunnelId).toBe(t.id);
      await b.revoke('tok-9', Date.now() + 60_000);
      await seen('revoked', (e) => e.type === 'revoked' && e.tokenId === 'tok-9');
      expect(await a.isRevoked('tok-9')).toBe(true);
      await b.createLoginSession({ code: 'CODE-0001', boxPublicKey: 'cGs=', expiresAt: Date.now() + 60_000 });
      await seen('login', (e) => e.type === 'login' && e.code === 'CODE-0001');
      events.length = 0;
      await b.approveLoginSession('CODE-0001', acme.id, 'sealed');
      await seen('login approval', (e) => e.type === 'login' && e.code === 'CODE-0001');
      expect((await a.getLoginSession('CODE-0001'))?.state).toBe('approved');
      await b.createLoginSession({ code: 'CODE-0002', boxPublicKey: 'cGs=', expiresAt: Date.now() + 60_000 });
      await seen('login 2', (e) => e.type === 'login' && e.code === 'CODE-0002');
      events.length = 0;
      await b.denyLoginSession('CODE-0002');
      await seen('login denial', (e) => e.type === 'login' && e.code === 'CODE-0002');
      expect((await a.getLoginSession('CODE-0002'))?.state).toBe('denied');
      await b.heartbeatRelay(member('relay-b'), 60_000);
      await seen('relay', (e) => e.type === 'relay' && e.relayId === 'relay-b');
      await b.putPresence('relay-b', [presence('relay-b', t.id, 0)], 60_000);
      await seen('presence', (e) => e.type === 'presence' && e.relayId === 'relay-b');
      expect((await a.listPresence({ tunnelId: t.id })).map((p) => p.connectionId)).toEqual(['relay-b-c0']);
      events.length = 0;
      await b.deleteRoute('app.example.com');
      await seen('route deletion', (e) => e.type === 'route' && e.hostname === 'app.example.com');
      expect(await a.getRoute('app.example.com')).toBeUndefined();
      await b.addRoute({ hostname: 'gone.example.com', tunnelId: t.id, accountId: acme.id });
      await waitFor(async () => (await a.getRoute('gone.example.com')) !== undefined, 5_000, { message: 'route to reach a' });
      await b.deleteTunnel(t.id, 60_000);
      await seen('tunnel-deleted', (e) => e.type === 'tunnel-deleted' && e.tunnelId === t.id);
      await waitFor(async () => (await a.getRoute('gone.example.com')) === undefined, 5_000, { message: 'cascade to reach a' });
      expect(await a.getTunnel(t.id)).toBeUndefined();

      // Local changes are announced too; unsubscribing stops delivery.
      const local: StoreEvent[] = [];
      const off = a.subscribe((e) => local.push(e));
      await a.revoke('tok-local', Date.now() + 60_000);
      await waitFor(() => local.some((e) => e.type === 'revoked' && e.tokenId === 'tok-local'), 5_000);
      off();
      unsubscribe();
      const count = local.length;
      events.length = 0;
      await a.revoke('tok-after', Date.now() + 60_000);
      await b.revoke('tok-after-b', Date.now() + 60_000);
      await waitFor(async () => a.isRevoked('tok-after-b'), 5_000);
      expect(local.length).toBe(count);
      expect(events).toEqual([]);
    });

    it('concurrency: of 20 parallel claims of one hostname from two instances exactly one wins', async () => {
      const a = await open();
      const b = await open();
      const acme = await a.createAccount('acme');
      const tunnels = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).createTunnel(acme.id, `t${i}`)));
      const results = await Promise.allSettled(
        tunnels.map((t, i) => (i % 2 ? a : b).addRoute({ hostname: 'contested.example.com', tunnelId: t.id, accountId: acme.id })),
      );
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      for (const l of lost) expect((l.reason as StoreError).code).toBe('CONFLICT');
      const winner = (won[0] as PromiseFulfilledResult<{ tunnelId: string }>).value.tunnelId;
      await waitFor(async () => (await a.getRoute('contested.example.com'))?.tunnelId === winner, 5_000);
      await waitFor(async () => (await b.getRoute('contested.example.com'))?.tunnelId === winner, 5_000);
      expect(await a.listRoutes()).toHaveLength(1);
    });

    it('concurrency: account names, tunnel names and approvals have exactly one winner', async () => {
      const a = await open();
      const b = await open();
      const accs = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).createAccount('same')));
      expect(accs.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const acme = (await a.getAccountByName('same'))!;
      const tuns = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).createTunnel(acme.id, 'one')));
      expect(tuns.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect(await b.listTunnels(acme.id)).toHaveLength(1);
      await a.createLoginSession({ code: 'RACE-0001', boxPublicKey: 'cGs=', expiresAt: Date.now() + 60_000 });
      const apps = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).approveLoginSession('RACE-0001', acme.id, `cred-${i}`)));
      const ok = apps.filter((r): r is PromiseFulfilledResult<ApprovedLoginSession> => r.status === 'fulfilled');
      expect(ok).toHaveLength(1);
      for (const r of apps) if (r.status === 'rejected') expect((r.reason as StoreError).code).toBe('CONFLICT');
      const stored = await b.getLoginSession('RACE-0001');
      expect(stored?.state === 'approved' && stored.sealedCredential).toBe(ok[0]!.value.sealedCredential);
    });

    it('access records: put replaces, get/list, delete, and another instance mirrors and announces each change', async () => {
      const a = await open();
      const b = await open();
      const events: StoreEvent[] = [];
      b.subscribe((e) => events.push(e));
      const policy: AccessRecord = {
        kind: 'policy',
        id: 'p1',
        accountId: 'acc-1',
        hostname: 'app.example.com',
        pathPrefix: '/',
        decision: 'allow',
        include: { emails: ['alice@example.com'], domains: [], groups: [], serviceTokens: ['ci'] },
        audTag: 'aud-1',
        sessionSeconds: 3600,
        createdAt: 1,
      };
      const token: AccessRecord = { kind: 'service-token', clientId: 'cid.access', accountId: 'acc-1', name: 'ci', secretSha256: 'ab'.repeat(32), createdAt: 2 };
      await a.putAccessRecord(policy);
      await a.putAccessRecord(token);
      expect(await a.getAccessRecord('policy:p1')).toEqual(policy);
      expect(await a.listAccessRecords()).toEqual([policy, token]);
      await waitFor(async () => (await b.getAccessRecord('token:cid.access')) !== undefined, 2_000, { message: 'b mirrors the token' });
      expect(events).toContainEqual({ type: 'access', key: 'token:cid.access' });
      const denied = { ...policy, decision: 'deny' as const };
      await a.putAccessRecord(denied);
      await waitFor(async () => {
        const r = await b.getAccessRecord('policy:p1');
        return r?.kind === 'policy' && r.decision === 'deny';
      }, 2_000, { message: 'b sees the replacement' });
      expect(await a.deleteAccessRecord('token:cid.access')).toBe(true);
      expect(await a.deleteAccessRecord('token:cid.access')).toBe(false);
      await waitFor(async () => (await b.getAccessRecord('token:cid.access')) === undefined, 2_000, { message: 'b drops the revoked token' });
      expect(await b.listAccessRecords()).toEqual([denied]);
      await expect(a.putAccessRecord({ ...token, secretSha256: 'not-a-hash' } as AccessRecord)).rejects.toThrow();
    });

    it('state survives close and reopen', async () => {
      const a = await open();
      const acme = await a.createAccount('acme');
      const t = await a.createTunnel(acme.id, 'app');
      const r = await a.addRoute({ hostname: 'app.example.com', tunnelId: t.id, accountId: acme.id });
      await a.revoke('tok-1', Date.now() + 60_000);
      await a.close();
      const c = await open();
      expect(await c.getAccount(acme.id)).toEqual(acme);
      expect(await c.getTunnel(t.id)).toEqual(t);
      expect(await c.getRoute('app.example.com')).toEqual(r);
      expect(await c.isRevoked('tok-1')).toBe(true);
      await expectStoreError(a.createAccount('late'), 'UNAVAILABLE');
    });
  });
}
