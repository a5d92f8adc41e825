import { afterAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
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
});
