// Connection (presence) records are written by every relay of a fleet, and
// during a rolling upgrade a newer relay writes fields an older one does not
// know (as `host` was once new). A reader must take such a record, keeping the
// fields it knows, instead of calling it corrupt and losing the connections:
// against both stores, a record with fields from the future is listed.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/store/open.js';
import type { Presence, Store } from '../src/store/types.js';
import { startRedis } from '../../../test/harness/redis.js';

const known: Presence = {
  connectionId: 'c-1',
  relayId: 'relay-new',
  tunnelId: 't-1',
  connectorId: 'k-1',
  connIndex: 2,
  version: '9.9.9',
  clientIp: '127.0.0.1',
  connectedAt: 1_700_000_000_000,
  host: 'origin-host',
};
// What a newer relay might write: an extra field in the connection and in the record around it.
const fromTheFuture = (expiresAt: number) => ({
  relayId: 'relay-new',
  expiresAt,
  region: 'eu-2',
  presences: [{ ...known, transport: 'quic', labels: { rack: 'a' } }],
});

interface Env {
  /** Writes the raw record where the store keeps relay-new's presence, then opens a store. */
  openWith(record: object): Promise<Store>;
  cleanup(): Promise<void>;
}

let n = 0;
const redis = await startRedis();
afterAll(async () => {
  await redis?.stop();
});

const envs: Array<[string, () => Promise<Env>]> = [
  [
    'file',
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-presence-compat-'));
      return {
        async openWith(record) {
          await mkdir(path.join(dir, 'presence'), { recursive: true });
          await writeFile(path.join(dir, 'presence', 'relay-new.json'), JSON.stringify(record));
          return openStore(`file:${dir}`);
        },
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  ],
];
if (redis) {
  envs.push([
    'redis',
    async () => {
      const prefix = `presence-compat-${process.pid}-${++n}:`;
      const raw = new Redis(redis.url);
      return {
        async openWith(record) {
          await raw.set(`${prefix}presence:relay-new`, JSON.stringify(record), 'PX', 60_000);
          await raw.sadd(`${prefix}presence-relays`, 'relay-new');
          return openStore(redis.url, { keyPrefix: prefix });
        },
        cleanup: async () => void raw.disconnect(),
      };
    },
  ]);
} else {
  console.log('[skip] presence forward compatibility on redis: redis-server is not installed');
}

describe.each(envs)('presence records from a newer relay: %s store', (_name, makeEnv) => {
  it('a connection record with unknown fields is listed with the fields this relay knows', async () => {
    const env = await makeEnv();
    const store = await env.openWith(fromTheFuture(Date.now() + 60_000));
    try {
      expect(await store.listPresence({ tunnelId: 't-1' })).toEqual([known]);
    } finally {
      await store.close();
      await env.cleanup();
    }
  });

  it('a known field of the wrong type is still refused as corrupt (tolerant of additions only)', async () => {
    const env = await makeEnv();
    const good = fromTheFuture(Date.now() + 60_000);
    const bad = { ...good, presences: [{ ...good.presences[0], connIndex: 'two' }] };
    try {
      // The file store refuses it when it reads the directory, Redis when it lists.
      const listed = env.openWith(bad).then(async (store) => {
        try {
          return await store.listPresence();
        } finally {
          await store.close();
        }
      });
      await expect(listed).rejects.toThrow(/corrupt/);
    } finally {
      await env.cleanup();
    }
  });
});
