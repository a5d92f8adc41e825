// Quick tunnels in a fleet (issue 14): on Redis, a quick tunnel made through
// one relay is served by every relay within a second, and it lives through a
// rolling restart of the relays under load with zero failed requests; on the
// file store, a relay restart keeps a live quick tunnel.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { startRedis } from './harness/redis.js';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { HealthView, startLoad, loadOriginHandler } from './harness/load.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { openStore } from '../packages/relay/src/store/open.js';
import { QUICK_ZONE, startQuickConnector, type QuickConnector } from './harness/quick.js';

const redis = await startRedis({ appendonly: true });
// The load runs far past a quick tunnel's default request rate: this file is about the fleet, not the limits.
// --drain-delay 1s: the load harness plays the load balancer, polling /ready every
// 100 ms; on a loaded machine its poll lags past the harness's 200 ms default
// and it sends to a relay already closing its listener (reset connections).
// As in production, the delay must exceed the balancer's worst-case check lag.
const QUICK_ARGS = ['--quick-zone', QUICK_ZONE, '--quick-request-rate', '0', '--max-quick-streams', '0', '--max-quick-tunnels-per-ip', '0', '--drain-delay', '1s'];

describe.skipIf(!redis)('quick tunnels on a Redis fleet', () => {
  const tmp = tempDir('tunnel-quick-fleet-');
  const keys = path.join(tmp.dir, 'fleet-key.json');
  let store: string;
  const relays: RelayProc[] = [];
  let origin: Origin;
  let quick: QuickConnector;
  let health: HealthView;

  beforeAll(async () => {
    store = `${redis!.url}/?prefix=quick:`;
    generateKeyFile(keys);
    origin = await startOrigin(loadOriginHandler);
    for (const id of ['relay-a', 'relay-b', 'relay-c']) relays.push(await startRelay({ dir: tmp.dir, store, keys, id, extraArgs: QUICK_ARGS }));
    health = new HealthView(() => relays);
  });
  afterAll(async () => {
    health?.stop();
    await stopAll();
    await origin?.close();
    await redis?.stop();
    tmp.cleanup();
  });

  it('made through relay A, served by every relay within a second of its first connection', async () => {
    quick = await startQuickConnector({ relay: relays[0]!.controlUrl!, url: origin.url, ha: 4, registered: 1 });
    const t0 = Date.now();
    for (const r of relays) {
      await waitFor(async () => (await req(`${r.publicUrl}/load/7`, { host: quick.hostname })).text === 'get:/load/7', 1_000, { message: `${quick.hostname} through ${r.id}` });
    }
    expect(Date.now() - t0).toBeLessThan(3_000);
  });

  it('rolling restart of every relay under load: zero failed requests to the quick tunnel', async () => {
    await waitFor(() => quick.proc.countLogs((l) => l.event === 'registered') >= 4, 10_000, { message: 'four connections' });
    const load = startLoad({ health, host: quick.hostname, concurrency: 6, maxMs: 150_000 });
    for (let i = 0; i < relays.length; i++) {
      const r = relays[i]!;
      await r.proc.stop(20_000);
      relays[i] = await startRelay({ dir: tmp.dir, store, keys, id: r.id, extraArgs: QUICK_ARGS, ports: { http: r.http, connect: r.connect, control: r.control, peer: r.peer } });
      // Back on its feet before the next: four connections over two or more relays again (as for named tunnels).
      await waitFor(async () => {
        const s = await openStore(store);
        try {
          const p = (await s.listPresence()).filter((x) => x.tunnelId === quick.tunnelId);
          return p.length >= 4 && new Set(p.map((x) => x.relayId)).size >= 2;
        } finally {
          await s.close();
        }
      }, 20_000, { message: `connections spread again after restarting ${r.id}` });
    }
    const stats = await load.stop();
    console.log(`quick rolling restart: ${stats.ok} ok, failures ${JSON.stringify(stats.failures)}`);
    expect(stats.failures).toEqual([]);
    expect(stats.ok).toBeGreaterThan(50);
    expect(quick.proc.running).toBe(true);
  });
});

describe('quick tunnels on the file store: a relay restart', () => {
  const tmp = tempDir('tunnel-quick-restart-');
  let origin: Origin;

  beforeAll(async () => {
    origin = await startOrigin((_q, s) => s.end('still here'));
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('keeps a live quick tunnel: the connector reconnects with its token and the hostname answers again', async () => {
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    const first = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-solo', extraArgs: QUICK_ARGS });
    const q = await startQuickConnector({ relay: first.controlUrl!, url: origin.url, ha: 2 });
    expect((await req(`${first.publicUrl}/`, { host: q.hostname })).text).toBe('still here');
    await first.proc.stop(20_000);
    const again = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-solo', extraArgs: QUICK_ARGS, ports: { http: first.http, connect: first.connect, control: first.control, peer: first.peer } });
    await waitFor(async () => (await req(`${again.publicUrl}/`, { host: q.hostname })).text === 'still here', 15_000, { message: 'quick hostname served after the restart' });
    expect(q.proc.running).toBe(true);
  });
});
