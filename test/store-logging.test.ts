import { afterAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { generateKeyFile, loadKeyFile } from '../packages/relay/src/control/keys.js';
import { issueAccountCredential } from '../packages/relay/src/control/issued-credentials.js';
import { openStore } from '../packages/relay/src/store/open.js';
import { createTunnel, startRelay, stopAll, tempDir } from './harness/procs.js';
import { startRedis } from './harness/redis.js';

// The production relay hands its logger to the store: warnings the store
// raises while running (a record corrupted on disk, a Redis connection lost)
// reach the relay's JSON log instead of going nowhere.

const redis = await startRedis();

describe('store warnings reach the relay log', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  generateKeyFile(keys);

  afterAll(async () => {
    await stopAll();
    await redis?.stop();
    tmp.cleanup();
  });

  it('file store: a record corrupted while the relay runs is logged with its file', async () => {
    const dir = path.join(tmp.dir, 'store');
    const store = `file:${dir}`;
    await createTunnel({ dir: tmp.dir, store, keys, name: 'app', hostnames: ['app.log.test'] });
    const relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-file', control: false });
    const record = path.join(dir, 'tunnels', readdirSync(path.join(dir, 'tunnels')).find((f) => f.endsWith('.json'))!);
    const good = readFileSync(record);
    writeFileSync(record, good.subarray(0, Math.floor(good.length / 2))); // torn, as no rename could leave it
    const line = await relay.proc.waitForLog((l) => l.msg === 'store record is corrupt; keeping the last good copy', 15_000, 'corrupt-record warning');
    expect(line.file).toBe(record);
    expect(line.level).toBe(40);
    expect(relay.proc.running).toBe(true);
    await relay.proc.stop();
  });

  it.skipIf(!redis)('redis store: a Redis restart is logged as a lost connection and a reconnect', async () => {
    const store = `${redis!.url}?prefix=log-test:`;
    const relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-redis', control: false });
    // While Redis is down the store's reconnect attempts are refused: that warning must show.
    await redis!.restart(async () => {
      await relay.proc.waitForLog((l) => l.msg === 'redis store connection error' && l.component === 'store' && l.level === 40, 15_000, 'redis connection warning');
    });
    await relay.proc.waitForLog((l) => l.msg === 'redis store reconnected', 20_000, 'redis reconnect');
    expect(relay.proc.running).toBe(true);
    await relay.proc.stop();
  });

  // Where the control API's 503 store_unavailable comes from with an account
  // credential: the credential check, when the store cannot say whether the
  // account exists (Redis answers the read with an error), and the route, when
  // a write finds Redis stopped. Reads the relay holds in memory still answer.
  it.skipIf(!redis)('redis store: an account request answers 503 store_unavailable when Redis refuses the credential check or is stopped for a write; reads answer from memory', async () => {
    const store = `${redis!.url}?prefix=unavailable-test:`;
    const s = await openStore(store);
    const account = await s.createAccount('alice');
    await s.close();
    const relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-unavailable' });
    const credential = issueAccountCredential({ keys: loadKeyFile(keys), controlUrl: () => relay.controlUrl! }, account.id, 'alice');
    const call = async (method: string, body?: unknown) => {
      const r = await fetch(`${relay.controlUrl}/v1/tunnels`, { method, headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      const j = (await r.json()) as { error?: { code: string; message: string } };
      return { status: r.status, code: j.error?.code, message: j.error?.message };
    };
    expect((await call('GET')).status).toBe(200);

    // Redis up but refusing the account lookup (its ACL takes HGET from the relay's user).
    const admin = new Redis(redis!.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    await admin.connect();
    try {
      await admin.call('ACL', 'SETUSER', 'default', '-hget');
      const refused = await call('GET');
      expect(refused).toMatchObject({ status: 503, code: 'store_unavailable' });
      expect(refused.message).toMatch(/^relay cannot check the credential now: .*NOPERM/);
    } finally {
      await admin.call('ACL', 'SETUSER', 'default', '+hget');
      admin.disconnect();
    }
    expect((await call('GET')).status).toBe(200);

    // Redis stopped: a write cannot be made; the tunnel list is served from the relay's memory.
    await redis!.restart(async () => {
      await relay.proc.waitForLog((l) => l.msg === 'redis store connection error' && l.component === 'store', 15_000, 'redis connection warning');
      const write = await call('POST', { name: 'while-down' });
      expect(write).toMatchObject({ status: 503, code: 'store_unavailable' });
      expect(write.message).toMatch(/^the fleet store is unavailable: /);
      expect((await call('GET')).status).toBe(200);
    });
    expect(relay.proc.running).toBe(true);
    await relay.proc.stop();
  });
});
