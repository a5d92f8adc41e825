import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { Agent, request } from 'undici';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { startRedis, type RedisServer } from '../harness/redis.js';
import { limitHits, metricsUrl } from '../harness/limit-metrics.js';

// On a Redis fleet store the operator-key throttle is shared: wrong keys
// tried on one relay count on every relay, so a guesser cannot multiply its
// budget by spreading over the fleet.

const OPERATOR_KEY = 'redis-limits-operator-key-0123';
const redis: RedisServer | null = await startRedis();

describe.skipIf(!redis)('security: the operator-key throttle is fleet-wide on Redis', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const relays: RelayProc[] = [];
  const agent = new Agent({ pipelining: 0 });

  beforeAll(async () => {
    generateKeyFile(keys);
    const store = `${redis!.url}/?prefix=limits:`;
    for (const id of ['relay-r0', 'relay-r1']) {
      relays.push(
        await startRelay({ dir: tmp.dir, store, keys, id, extraArgs: ['--metrics', '127.0.0.1:0', '--operator-key-failures', '3'], env: { TUNNEL_RELAY_OPERATOR_KEY: OPERATOR_KEY } }),
      );
    }
  });
  afterAll(async () => {
    await agent.close();
    await stopAll();
    await redis?.stop();
    tmp.cleanup();
  });

  const tryKey = async (r: RelayProc, key: string) => {
    const res = await request(`${r.controlUrl}/v1/operator/logins`, { headers: { authorization: `Bearer ${key}` }, dispatcher: agent });
    await res.body.text();
    return { status: res.statusCode, retryAfter: res.headers['retry-after'] };
  };

  it('three wrong keys spread over two relays: the right key is then a 429 on both', async () => {
    expect((await tryKey(relays[0]!, OPERATOR_KEY)).status).toBe(200);
    const m1 = await metricsUrl(relays[1]!);
    const before = await limitHits(m1);
    expect((await tryKey(relays[0]!, 'wrong-0000000000')).status).toBe(401);
    expect((await tryKey(relays[1]!, 'wrong-1111111111')).status).toBe(401);
    expect((await tryKey(relays[0]!, 'wrong-2222222222')).status).toBe(401);
    for (const r of relays) {
      const right = await tryKey(r, OPERATOR_KEY);
      expect(right.status, r.id).toBe(429);
      expect(Number(right.retryAfter)).toBeGreaterThan(0);
    }
    expect((await limitHits(m1)).operator_key_failures! - before.operator_key_failures!).toBe(1);
  });
});
