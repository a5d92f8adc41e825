// RouteTable.lookup: the relay's per-request Host → route answer. Exact first,
// then the nearest `*.` wildcard walking up the labels; case, a :port, an
// IPv6 literal and a trailing dot do not change the answer. Routes come from a
// real file store and follow its events (added, deleted, tunnel deleted).
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RouteTable, normalizeHost } from '../src/edge/route-table.js';
import { openStore } from '../src/store/open.js';
import type { Store, StoreEvent } from '../src/store/types.js';
import { waitFor } from '../../../test/harness/wait.js';

/** The test's name for the tunnel that `host` routes to, or undefined. */
function tunnelName(table: RouteTable, tunnels: Record<string, string>, host: string): string | undefined {
  const r = table.lookup(host);
  return r ? Object.entries(tunnels).find(([, id]) => id === r.tunnelId)![0] : undefined;
}

/**
 * A RouteTable over a fresh, watched file store that `seed` fills first (it
 * names each tunnel it creates in `tunnels`), set up and torn down around the
 * calling describe.
 */
function routeTableOnFileStore(prefix: string, seed: (store: Store, tunnels: Record<string, string>) => Promise<void>) {
  const t = { dir: '', store: undefined as unknown as Store, table: undefined as unknown as RouteTable, tunnels: {} as Record<string, string> };
  beforeAll(async () => {
    t.dir = await mkdtemp(path.join(tmpdir(), prefix));
    t.store = await openStore(`file:${t.dir}`, { watch: true });
    await seed(t.store, t.tunnels);
    t.table = new RouteTable(t.store);
    await t.table.load();
  });
  afterAll(async () => {
    t.table?.close();
    await t.store?.close();
    await rm(t.dir, { recursive: true, force: true });
  });
  return t;
}

describe('RouteTable.lookup', () => {
  const t = routeTableOnFileStore('tunnel-routes-', async (store, tunnels) => {
    const acct = await store.createAccount('alice');
    for (const name of ['exact', 'wild', 'deepwild', 'other']) tunnels[name] = (await store.createTunnel(acct.id, name)).id;
    const route = (hostname: string, name: string) => store.addRoute({ hostname, tunnelId: tunnels[name]!, accountId: acct.id });
    await route('a.x.test', 'exact');
    await route('*.x.test', 'wild');
    await route('*.b.x.test', 'deepwild');
    await route('x.test', 'other');
  });

  const who = (host: string) => tunnelName(t.table, t.tunnels, host);

  it('an exact route wins over a wildcard that also matches', () => {
    expect(who('a.x.test')).toBe('exact');
  });

  it('a wildcard matches any name under its domain, at any depth', () => {
    expect(who('b.x.test')).toBe('wild');
    expect(who('zz.x.test')).toBe('wild');
    expect(who('q.r.s.x.test')).toBe('wild');
    // Deeper names under an exact route still fall to the wildcard.
    expect(who('sub.a.x.test')).toBe('wild');
  });

  it('the nearest wildcard wins (walking up the labels)', () => {
    expect(who('c.b.x.test')).toBe('deepwild');
    expect(who('d.c.b.x.test')).toBe('deepwild');
    // `*.b.x.test` does not cover b.x.test itself: that falls to `*.x.test`.
    expect(who('b.x.test')).toBe('wild');
  });

  it('a wildcard does not match its bare domain, nor other domains', () => {
    expect(who('x.test')).toBe('other'); // exact route for the apex
    expect(who('y.test')).toBeUndefined();
    expect(who('xx.test')).toBeUndefined();
    expect(who('a.xx.test')).toBeUndefined();
    expect(who('test')).toBeUndefined();
    expect(who('')).toBeUndefined();
    expect(who('.')).toBeUndefined();
  });

  it('Host header forms: case, :port and a trailing dot are ignored', () => {
    expect(who('A.X.TEST')).toBe('exact');
    expect(who('a.x.test:8080')).toBe('exact');
    expect(who('a.x.test.')).toBe('exact');
    expect(who('B.x.Test.:443')).toBe('wild');
    expect(normalizeHost('[::1]:80')).toBe('[::1]');
    expect(normalizeHost('[::1]')).toBe('[::1]');
    expect(normalizeHost('Host.Example.:1')).toBe('host.example');
    expect(who('[::1]:80')).toBeUndefined();
  });

  it('follows the store: a new wildcard serves, a deleted one stops, a deleted tunnel takes its routes', async () => {
    const { store, table, tunnels } = t;
    const acct = (await store.getAccountByName('alice'))!;
    const late = (await store.createTunnel(acct.id, 'late')).id;
    await store.addRoute({ hostname: '*.late.test', tunnelId: late, accountId: acct.id });
    await waitFor(() => table.lookup('p.late.test')?.tunnelId === late, 5_000, { message: 'new wildcard route served' });
    await store.deleteRoute('*.late.test');
    await waitFor(() => table.lookup('p.late.test') === undefined, 5_000, { message: 'deleted wildcard route gone' });
    await store.deleteTunnel(tunnels.deepwild!, 60_000);
    await waitFor(() => table.lookup('c.b.x.test')?.tunnelId === tunnels.wild, 5_000, { message: 'deleted tunnel’s wildcard gone; the outer one serves' });
  });

  it('a tunnel the store lost (record gone, no tombstone, routes kept) is served again once its record is restored', async () => {
    const { store, table, dir } = t;
    const acct = (await store.getAccountByName('alice'))!;
    const lost = await store.createTunnel(acct.id, 'lost');
    await store.addRoute({ hostname: 'lost.test', tunnelId: lost.id, accountId: acct.id });
    await waitFor(() => table.lookup('lost.test')?.tunnelId === lost.id, 5_000, { message: 'route served' });
    const seen: StoreEvent[] = [];
    const off = store.subscribe((e) => seen.push(e));
    try {
      // The file store keeps one file per tunnel under tunnels/.
      let file = '';
      let record = Buffer.alloc(0);
      for (const f of await readdir(path.join(dir, 'tunnels'))) {
        const body = await readFile(path.join(dir, 'tunnels', f));
        if (body.includes(lost.id)) [file, record] = [path.join(dir, 'tunnels', f), body];
      }
      expect(file).not.toBe('');
      await rm(file);
      await waitFor(() => seen.some((e) => e.type === 'tunnel-vanished' && e.tunnelId === lost.id), 5_000, { message: 'tunnel-vanished' });
      await writeFile(file, record);
      await waitFor(() => seen.some((e) => e.type === 'tunnel' && e.tunnelId === lost.id), 5_000, { message: 'tunnel restored' });
      expect(table.lookup('lost.test')?.tunnelId).toBe(lost.id);
    } finally {
      off();
    }
  });
});

// Exact beats wildcard only within one owner: once an account holds a zone,
// routes of another account under it (left from before zones) stop serving,
// and the owner's nearest route answers instead. The zone comes and goes by
// store events, after the table has loaded.
describe('RouteTable.lookup within a zone', () => {
  let alice = '';
  const t = routeTableOnFileStore('tunnel-zone-routes-', async (store, tunnels) => {
    alice = (await store.createAccount('alice')).id;
    const bob = (await store.createAccount('bob')).id;
    const add = async (hostname: string, name: string, accountId: string) => {
      tunnels[name] = (await store.createTunnel(accountId, name)).id;
      await store.addRoute({ hostname, tunnelId: tunnels[name]!, accountId });
    };
    await add('*.z.test', 'alice-wild', alice);
    await add('own.z.test', 'alice-exact', alice);
    await add('app.z.test', 'bob-exact', bob);
    await add('*.in.z.test', 'bob-wild', bob);
  });

  const who = (host: string) => tunnelName(t.table, t.tunnels, host);
  const answers = () => ({ app: who('app.z.test'), in: who('p.in.z.test'), own: who('own.z.test'), other: who('other.z.test') });

  it('in no zone every route serves; a zone held by one account hides the other account’s exact and wildcard routes under it; removing the zone restores them', async () => {
    const { store } = t;
    const open = { app: 'bob-exact', in: 'bob-wild', own: 'alice-exact', other: 'alice-wild' };
    expect(answers()).toEqual(open);

    await store.addZone({ zone: 'z.test', accountId: alice, source: 'operator' });
    await waitFor(() => who('app.z.test') !== 'bob-exact', 5_000, { message: 'zone applied' });
    expect(answers()).toEqual({ app: 'alice-wild', in: 'alice-wild', own: 'alice-exact', other: 'alice-wild' });

    await store.deleteZone('z.test');
    await waitFor(() => who('app.z.test') === 'bob-exact', 5_000, { message: 'zone removed' });
    expect(answers()).toEqual(open);
  });
});
