// Runs the one Store contract against the file store (fs.watch, and the
// polling fallback) and against Redis (a real redis-server from the harness).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { FileStore } from '../src/store/file/file-store.js';
import { fileStoreDir, openStore } from '../src/store/open.js';
import { startRedis } from '../../../test/harness/redis.js';
import { waitFor } from '../../../test/harness/wait.js';
import type { Store, StoreEvent } from '../src/store/types.js';
import { startSlowLink, type SlowLink } from '../../../test/harness/slow-link.js';
import { storeContract, type StoreEnv } from './store-contract.js';

async function fileEnv(opts: { watch: boolean; viaUrl: boolean }): Promise<StoreEnv> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-store-'));
  return {
    open: () => (opts.viaUrl ? openStore(`file:${dir}`, { watch: opts.watch }) : FileStore.open(dir, { watch: opts.watch, pollIntervalMs: 200 })),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

storeContract('file (fs.watch)', () => fileEnv({ watch: true, viaUrl: true }));
storeContract('file (polling fallback)', () => fileEnv({ watch: false, viaUrl: false }));

const redis = await startRedis();
afterAll(async () => {
  await redis?.stop();
});

let n = 0;
describe.skipIf(!redis)(redis ? 'redis' : 'redis (skipped: redis-server is not installed)', () => {
  storeContract('redis', async () => {
    const prefix = `contract-${process.pid}-${++n}:`;
    return {
      open: () => openStore(redis!.url, { keyPrefix: prefix }),
      cleanup: async () => {},
    };
  });
});

describe.skipIf(!redis)(redis ? 'redis mirror of revocations' : 'redis mirror of revocations (skipped: redis-server is not installed)', () => {
  // A script's reply and the channel message of the same change come on two
  // connections, in either order; what the mirror ends with must not depend on it.
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
  });
  const prefix = `revocation-mirror-${process.pid}:`;
  const open = async (): Promise<Store> => {
    const s = await openStore(redis!.url, { keyPrefix: prefix });
    stores.push(s);
    return s;
  };

  it('a revocation of a long-expired token, pruned by its own script, is not put back by the reply', async () => {
    const a = await open();
    const b = await open();
    const longAgo = Date.now() - 10 * 60_000;
    for (let i = 0; i < 10; i++) {
      await a.revoke(`dead-${i}`, longAgo);
      expect(await a.isRevoked(`dead-${i}`), `dead-${i} right after revoke`).toBe(false);
    }
    expect(await a.revokeOnce('dead-once', longAgo)).toBe(true);
    expect(await a.isRevoked('dead-once')).toBe(false);
    // Messages on the channel keep their order: once b's marker reached a, every earlier one has too.
    await b.revoke('marker', Date.now() + 3_600_000);
    await waitFor(() => a.isRevoked('marker'), 2_000, { message: "b's marker reaches a" });
    for (let i = 0; i < 10; i++) expect(await a.isRevoked(`dead-${i}`), `dead-${i} after every message`).toBe(false);
    expect(await a.isRevoked('dead-once')).toBe(false);
  });
});

describe.skipIf(!redis)(redis ? 'redis mirror: a write reply overtaken by a newer change' : 'redis mirror: overtaken replies (skipped: redis-server is not installed)', () => {
  // Instance a talks to Redis over a slow link that holds its script replies
  // 400 ms; its subscriber and instance b are not held. So b's change to the
  // same key, made after a's write, reaches a's mirror by message before a's
  // reply does, deterministically. The reply must not undo it.
  const stores: Store[] = [];
  let link: SlowLink;
  const prefix = `overtaken-${process.pid}:`;
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await link?.close();
  });
  const pair = async () => {
    link ??= await startSlowLink({ host: '127.0.0.1', port: redis!.port });
    const a = await openStore(`redis://127.0.0.1:${link.port}`, { keyPrefix: prefix });
    const b = await openStore(redis!.url, { keyPrefix: prefix });
    stores.push(a, b);
    const events: StoreEvent[] = [];
    a.subscribe((e) => events.push(e));
    const acme = await b.createAccount(`acme-${stores.length}`);
    const t = await b.createTunnel(acme.id, 'app');
    await waitFor(async () => (await a.getTunnel(t.id)) !== undefined, 5_000, { message: 'a sees the tunnel' });
    /** Runs `write` on a with its reply held, and `overtake` on b as soon as b has seen a's change. */
    const race = async <T>(write: () => Promise<T>, seen: () => Promise<boolean>, overtake: () => Promise<unknown>, arrived: (e: StoreEvent) => boolean): Promise<T> => {
      const before = events.filter(arrived).length;
      link.delay(400, /eval/i);
      try {
        const pending = write();
        await waitFor(seen, 5_000, { message: "b sees a's write" });
        await overtake();
        // a's own message, then b's: both reached a's mirror while a's reply is still held.
        await waitFor(() => events.filter(arrived).length >= before + 2, 5_000, { message: 'both messages reach a' });
        return await pending;
      } finally {
        link.delay(0, /eval/i);
      }
    };
    return { a, b, acme, t, race };
  };

  it('a route a adds and b deletes at once is gone from a; one a deletes and b adds back is there', async () => {
    const { a, b, acme, t, race } = await pair();
    const h = 'race.example.com';
    const isRoute = (e: StoreEvent) => e.type === 'route' && e.hostname === h;
    const added = await race(
      () => a.addRoute({ hostname: h, tunnelId: t.id, accountId: acme.id }),
      async () => (await b.getRoute(h)) !== undefined,
      () => b.deleteRoute(h),
      isRoute,
    );
    expect(added.hostname).toBe(h);
    expect(await b.getRoute(h)).toBeUndefined();
    expect(await a.getRoute(h), "a's late reply put the deleted route back").toBeUndefined();

    await b.addRoute({ hostname: h, tunnelId: t.id, accountId: acme.id });
    await waitFor(async () => (await a.getRoute(h)) !== undefined, 5_000, { message: 'a sees the route' });
    await race(
      () => a.deleteRoute(h),
      async () => (await b.getRoute(h)) === undefined,
      () => b.addRoute({ hostname: h, tunnelId: t.id, accountId: acme.id }),
      isRoute,
    );
    expect(await a.getRoute(h), "a's late reply dropped the route b added back").toMatchObject({ hostname: h, tunnelId: t.id });
  });

  it('a deferred revocation a makes while b revokes the token at once: a holds the immediate one (its late reply is the older state)', async () => {
    const { a, b, race } = await pair();
    const tok = `tok-race-${stores.length}`;
    const exp = Date.now() + 3_600_000;
    await race(
      () => a.revoke(tok, exp, Date.now() + 3_600_000),
      async () => (await b.listRevocations()).some((r) => r.tokenId === tok),
      () => b.revoke(tok, exp),
      (e) => e.type === 'revoked' && e.tokenId === tok,
    );
    expect(await b.isRevoked(tok)).toBe(true);
    expect(await a.isRevoked(tok), "a's late reply put the deferred state back").toBe(true);
  });

  it('a zone a deletes and b takes at once stays with b on a', async () => {
    const { a, b, acme, race } = await pair();
    const other = await b.createAccount(`other-${stores.length}`);
    const z = 'zone-race.example.com';
    await b.addZone({ zone: z, accountId: acme.id, source: 'operator' });
    await waitFor(async () => (await a.getZone(z)) !== undefined, 5_000, { message: 'a sees the zone' });
    await race(
      () => a.deleteZone(z),
      async () => (await b.getZone(z)) === undefined,
      () => b.addZone({ zone: z, accountId: other.id, source: 'operator' }),
      (e) => e.type === 'zone' && e.zone === z,
    );
    expect(await a.getZone(z)).toMatchObject({ zone: z, accountId: other.id });
  });
});

describe('openStore picks the implementation from the URL', () => {
  it('file:DIR, file:relative and file:///abs', async () => {
    expect(fileStoreDir('file:/var/lib/relay')).toBe('/var/lib/relay');
    expect(fileStoreDir('file:./relay-data')).toBe('./relay-data');
    expect(fileStoreDir('file:///var/lib/relay')).toBe('/var/lib/relay');
    expect(fileStoreDir('redis://127.0.0.1:6379')).toBeUndefined();
    const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-store-url-'));
    try {
      const s = await openStore(pathToFileURL(dir).href);
      expect(s.kind).toBe('file');
      expect((s as FileStore).dir).toBe(dir);
      await s.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses other schemes and an empty directory', async () => {
    await expect(openStore('postgres://localhost/db')).rejects.toThrow(/unsupported store URL/);
    await expect(openStore('file:')).rejects.toThrow(/names no directory/);
  });

  it.skipIf(!redis)('redis://…?prefix=P sets the key prefix', async () => {
    const a = await openStore(`${redis!.url}/0?prefix=url-prefix:`);
    const b = await openStore(redis!.url, { keyPrefix: 'url-prefix:' });
    const c = await openStore(redis!.url, { keyPrefix: 'other-prefix:' });
    try {
      expect(a.kind).toBe('redis');
      const acc = await a.createAccount('via-url');
      expect(await b.getAccount(acc.id)).toEqual(acc);
      expect(await c.getAccount(acc.id)).toBeUndefined();
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
    }
  });

  it.skipIf(!redis)('an unreachable Redis fails open with UNAVAILABLE', async () => {
    const { freePort } = await import('../../../test/harness/ports.js');
    const port = await freePort();
    const t0 = Date.now();
    await expect(openStore(`redis://127.0.0.1:${port}`, { connectTimeoutMs: 500 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(Date.now() - t0).toBeLessThan(3_000);
  });
});
