// Anonymous clients creating and closing quick tunnels must not grow the
// fleet store forever (issue 14): a deleted quick tunnel leaves a tombstone
// that still refuses its old token as deleted while it lives, and the store
// drops it one quick token lifetime later (file store: its GC pass; Redis:
// the key's own TTL). Run on both stores with a short --quick-token-ttl; the
// relay's /metrics counts the live and deleted quick records.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { startRedis } from '../harness/redis.js';
import { stopAll } from '../harness/procs.js';
import { waitFor } from '../harness/wait.js';
import { metricsUrl, scrape } from '../harness/limit-metrics.js';
import { connectRaw } from '../harness/evil-connector.js';
import { postQuick, startQuickRelays, type QuickFleet } from '../harness/quick.js';

const redis = await startRedis();
// The server is this file's, for both describe blocks: stopped once, after them.
afterAll(async () => {
  await redis?.stop();
});
const PREFIX = 'growth:';
const CREATIONS = 20;
/** Made and never deleted: their clients vanished without Ctrl-C. */
const ABANDONED = 3;
// Long enough that create → delete never outlives a token on a loaded machine.
const TOKEN_TTL = ['--quick-token-ttl', '5s'];

/** Records in a file store: every record file under its directory. */
function fileStoreFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...fileStoreFiles(p));
    else if (name.endsWith('.json') && !name.startsWith('.')) out.push(p);
  }
  return out;
}

/** Records in the Redis store: keys under its prefix, each counted by its members (hash fields, set members…). */
async function redisStoreSize(client: Redis): Promise<number> {
  let n = 0;
  for (const key of await client.keys(`${PREFIX}*`)) {
    const type = await client.type(key);
    n += type === 'hash' ? await client.hlen(key) : type === 'set' ? await client.scard(key) : type === 'zset' ? await client.zcard(key) : type === 'none' ? 0 : 1;
  }
  return n;
}

const stores = [
  { name: 'file store', redis: false },
  { name: 'Redis store', redis: true },
] as const;

describe.each(stores)('quick tunnels leave the $name as they found it', ({ redis: onRedis }) => {
  const skip = onRedis && !redis;
  let fleet: QuickFleet;
  let client: Redis | undefined;
  let metrics = '';
  const size = async (): Promise<number> => (client ? redisStoreSize(client) : fileStoreFiles(fleet.store.slice('file:'.length)).length);
  const records = async (): Promise<Map<string, number>> => scrape(metrics, 'tunnel_relay_quick_tunnel_records');

  beforeAll(async () => {
    if (skip) return;
    fleet = await startQuickRelays({
      ...(onRedis ? { store: `${redis!.url}/?prefix=${PREFIX}` } : {}),
      // The idle expiry off: an abandoned quick tunnel still ends, once its tokens have.
      relayArgs: [...TOKEN_TTL, '--quick-idle-expiry', '0', '--metrics', '127.0.0.1:0', '--max-quick-tunnels-per-ip', '0', '--max-live-quick-tunnels-per-ip', '0'],
    });
    if (onRedis) client = new Redis(redis!.url);
    metrics = await metricsUrl(fleet.relays[0]!);
  });
  afterAll(async () => {
    await stopAll();
    client?.disconnect();
    fleet?.cleanup();
  });

  it.skipIf(skip)(`create and delete ${CREATIONS} quick tunnels, abandon ${ABANDONED}: tombstones refuse the old tokens, then the store is back to its size`, async () => {
    const control = fleet.relays[0]!.controlUrl!;
    // The relay's own records first (its history is published a moment after start): the baseline is a relay with no quick tunnel.
    await waitFor(async () => (client ? (await client.hexists(`${PREFIX}relay-history`, 'relay-0')) === 1 : fileStoreFiles(fleet.store.slice('file:'.length)).some((f) => f.includes('relay-history'))), 10_000, { message: 'relay history published' });
    const baseline = await size();
    let last = { token: '', connectorId: '' };
    for (let i = 0; i < CREATIONS; i++) {
      const connectorId = `growth-${i}`;
      const q = await postQuick(control, connectorId);
      expect(q.status).toBe(201);
      const del = await fetch(`${control}/v1/quick`, { method: 'DELETE', headers: { authorization: `Bearer ${q.body.token}` } });
      expect(del.status).toBe(200);
      last = { token: q.body.token, connectorId };
    }
    for (let i = 0; i < ABANDONED; i++) expect((await postQuick(control, `abandoned-${i}`)).status).toBe(201);
    // While the tombstone lives the old token is refused as deleted (the connector stops), not as unknown (it would retry).
    const refused = await connectRaw(fleet.relays[0]!.connectUrl, last.token, last.connectorId);
    expect(refused.ok).toBe(false);
    if (!refused.ok) {
      expect(refused.status).toBe(403);
      expect(refused.body).toMatch(/tunnel_deleted/);
    }
    const live = await records();
    expect(live.get('state=live')).toBe(ABANDONED);
    expect(live.get('state=deleted')).toBeGreaterThan(0);
    expect(await size()).toBeGreaterThan(baseline);
    // Abandoned ones end a token lifetime (5 s) after they were made; every tombstone lives
    // 5 s + as much clock slack, then goes by the GC pass (file) or the key TTL (Redis).
    await waitFor(
      async () => {
        const now = await size();
        if (now !== baseline) throw new Error(`${now} records, baseline ${baseline}${client ? '' : `: ${fileStoreFiles(fleet.store.slice('file:'.length)).join(' ')}`}`);
        return true;
      },
      45_000,
      { message: 'store back to its baseline size', intervalMs: 200 },
    );
    const after = await records();
    expect([after.get('state=live'), after.get('state=deleted')]).toEqual([0, 0]);
    // Once the tombstone is gone the token has expired too: it is still refused, for good.
    const later = await connectRaw(fleet.relays[0]!.connectUrl, last.token, last.connectorId);
    expect(later.ok).toBe(false);
    if (!later.ok) {
      expect(later.status).toBe(401);
      expect(later.body).toMatch(/credential_expired/);
    }
  }, 90_000);
});
