// Runs the one Store contract against the file store (fs.watch, and the
// polling fallback) and against Redis (a real redis-server from the harness).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { FileStore } from '../src/store/file/file-store.js';
import { fileStoreDir, openStore } from '../src/store/open.js';
import { startRedis } from '../../../test/harness/redis.js';
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
