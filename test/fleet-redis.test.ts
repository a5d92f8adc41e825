import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { startRedis, type RedisServer } from './harness/redis.js';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type Proc, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { HealthView, startLoad, loadOriginHandler } from './harness/load.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { openStore } from '../packages/relay/src/store/open.js';
import { Redis } from 'ioredis';

// The load harness plays the load balancer, polling /ready every 100 ms; on a
// loaded machine its poll lags past the harness's 200 ms drain delay and it
// sends to a relay already closing its listener. As in production, the drain
// delay must exceed the balancer's worst-case check lag.
const DRAIN_ARGS = ['--drain-delay', '1s'];

// Three relays on one Redis, real connectors, a real origin: forwarding,
// rolling restarts, kill -9, connector replicas and a Redis restart, each
// under a steady bounded load.

const redis = await startRedis({ appendonly: true });

describe.skipIf(!redis)('relay fleet on Redis', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  let store: string;
  let relays: RelayProc[] = [];
  let origin: Origin;
  let token: string;
  let connector: Proc;
  let health: HealthView;

  const registeredRelays = async (): Promise<Map<string, number>> => {
    const s = await openStore(store);
    try {
      const p = await s.listPresence();
      const m = new Map<string, number>();
      for (const x of p) if (x.tunnelId === tunnelId) m.set(x.relayId, (m.get(x.relayId) ?? 0) + 1);
      return m;
    } finally {
      await s.close();
    }
  };
  let tunnelId = '';

  const retired: RelayProc[] = [];
  const restart = async (i: number, how: 'term' | 'kill') => {
    const r = relays[i]!;
    retired.push(r);
    if (how === 'term') await r.proc.stop(20_000);
    else await r.proc.kill9();
    relays[i] = await startRelay({ dir: tmp.dir, store, keys, id: r.id, extraArgs: DRAIN_ARGS, ports: { http: r.http, connect: r.connect, control: r.control, peer: r.peer } });
  };

  beforeAll(async () => {
    store = `${redis!.url}/?prefix=fleet:`;
    generateKeyFile(keys);
    origin = await startOrigin(loadOriginHandler);
    for (const id of ['relay-a', 'relay-b', 'relay-c']) relays.push(await startRelay({ dir: tmp.dir, store, keys, id, extraArgs: DRAIN_ARGS }));
    token = await createTunnel({ dir: tmp.dir, store, keys, name: 'app', hostnames: ['app.test'] });
    tunnelId = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()).tunnelId;
    connector = await startConnector({ token, relays: relays.map((r) => r.connectUrl), url: origin.url });
    health = new HealthView(() => relays);
  });
  afterAll(async () => {
    health?.stop();
    await stopAll();
    await origin?.close();
    await redis?.stop();
    tmp.cleanup();
  });

  it('spreads four connections over at least two relays, and every relay serves (forwarding where it holds none)', async () => {
    const by = await waitFor(async () => {
      const m = await registeredRelays();
      return [...m.values()].reduce((a, b) => a + b, 0) === 4 ? m : null;
    }, 10_000);
    expect(by.size).toBeGreaterThanOrEqual(2);
    // A second tunnel with ONE connection: two of the three relays must forward.
    const t2 = await createTunnel({ dir: tmp.dir, store, keys, name: 'solo', hostnames: ['solo.test'] });
    const solo = await startConnector({ token: t2, relays: [relays[0]!.connectUrl], url: origin.url, ha: 1, extraArgs: ['--no-discover'] });
    for (const r of relays) {
      const res = await waitFor(async () => {
        const x = await req(`${r.publicUrl}/load/1`, { host: 'solo.test' });
        return x.status === 200 ? x : null;
      }, 5_000, { message: `solo.test through ${r.id}` });
      expect(res.text).toBe('get:/load/1');
      expect(res.header('tunnel-request-id')).toBeTruthy();
    }
    // A forwarded WebSocket-free POST streams its body both ways.
    const big = 'y'.repeat(300_000);
    const post = await req(`${relays[2]!.publicUrl}/p`, { host: 'solo.test', method: 'POST', body: big });
    expect(post.text).toBe(`echo:${big}`);
    expect(relays[1]!.proc.countLogs((l) => l.event === 'listening')).toBe(1);
    await solo.stop();
  });

  it('a heartbeat with an unchanged presence set only extends its TTL; a set the store lost is written again', async () => {
    const holder = [...(await registeredRelays()).keys()][0]!;
    const key = `fleet:presence:${holder}`;
    const raw = new Redis(redis!.url);
    const monitor = await raw.monitor();
    const seen: string[] = [];
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (args[1] === key) seen.push(String(args[0]).toLowerCase());
    });
    try {
      // Two heartbeats (2 s apart) with nothing changed: PEXPIRE each time, no SET of the whole set.
      await waitFor(() => seen.filter((c) => c === 'pexpire').length >= 2, 10_000, { message: `two TTL refreshes of ${key}` });
      expect(seen.slice(seen.indexOf('pexpire'))).not.toContain('set');
      const before = await raw.get(key);
      expect(JSON.parse(before!).presences.length).toBeGreaterThan(0);
      // The store loses it (eviction, a flush): the next heartbeat finds nothing to extend and writes it in full.
      await raw.del(key);
      expect(await waitFor(async () => await raw.get(key), 10_000, { message: `${key} written again` })).toBe(before);
    } finally {
      monitor.disconnect();
      raw.disconnect();
    }
  });

  it('rolling restart of every relay under load: zero failed requests', async () => {
    const load = startLoad({ health, host: 'app.test', concurrency: 8, maxMs: 120_000 });
    for (let i = 0; i < relays.length; i++) {
      await restart(i, 'term');
      // Let the connector come back to four connections over two or more relays before the next.
      await waitFor(async () => {
        const m = await registeredRelays();
        return [...m.values()].reduce((a, b) => a + b, 0) >= 4 && m.size >= 2;
      }, 20_000, { message: `connections spread again after restarting relay ${i}` });
    }
    const stats = await load.stop();
    console.log(`rolling restart: ${stats.ok} ok (${JSON.stringify(stats.byMethod)}), ${stats.failures.length} failed`);
    for (const f of stats.failures) {
      const rid = /"requestId":"(\w+)"/.exec(f.body ?? '')?.[1];
      for (const r of [...retired, ...relays]) for (const l of r.proc.logs) if (rid && JSON.stringify(l).includes(rid)) console.log(r.id, r.proc.pid, JSON.stringify(l));
      for (const l of connector.logs) if (rid && JSON.stringify(l).includes(rid)) console.log('connector', JSON.stringify(l));
      const when = [...retired, ...relays].flatMap((r) => r.proc.logs).find((l) => rid && JSON.stringify(l).includes(rid))?.time as number | undefined;
      if (when) {
        for (const r of [...retired, ...relays]) for (const l of r.proc.logs) if (Math.abs((l.time as number) - when) < 300 && l.level !== 20) console.log('  near', r.id, r.proc.pid, JSON.stringify(l).slice(0, 300));
        for (const l of connector.logs) if (Math.abs((l.time as number) - when) < 300) console.log('  near connector', JSON.stringify(l).slice(0, 300));
      }
      const r = relays.find((x) => x.id === f.relay);
      console.log('failure', JSON.stringify(f));

    }
    expect(stats.failures).toEqual([]);
    expect(stats.retries).toEqual([]); // none allowed: a drain must finish what it took
    // Each drain ended when its last request did (events), not at the 30 s drain timeout.
    for (const r of retired) {
      const drained = r.proc.logs.find((l) => l.event === 'drained');
      expect(drained, `${r.id} drained`).toBeDefined();
      expect(drained!.ms as number).toBeLessThan(10_000);
    }
    expect(stats.ok).toBeGreaterThan(50);
    expect(stats.byMethod.POST ?? 0).toBeGreaterThan(10);
  });

  it('kill -9 of a relay under load: GETs never fail, nothing hangs, lost connections replaced at once on other relays, presence expires', async () => {
    await waitFor(async () => (await registeredRelays()).size >= 2, 15_000);
    const victim = relays[0]!;
    const victimHeld = (await registeredRelays()).get(victim.id) ?? 0;
    expect(victimHeld).toBeGreaterThan(0);
    const CONCURRENCY = 8;
    const load = startLoad({ health, host: 'app.test', concurrency: CONCURRENCY, maxMs: 60_000, timeoutMs: 10_000, retryGets: true });
    await waitFor(() => load.stats.ok > 20, 10_000);
    const mark = connector.logs.length;
    await victim.proc.kill9();
    if (victimHeld > 0) {
      // "Replaced at once on another relay" is the connector's decision, seen in its
      // log: each connection lost with the dead relay is followed, for its slot, by
      // one dial to another relay and its registration there, with no backoff and no
      // failed attempt between (a wall-clock bound measured load, not the connector).
      const lost = await waitFor(() => {
        const l = connector.logs.slice(mark).filter((x) => x.event === 'lost' && x.relayId === victim.id);
        return l.length >= victimHeld ? l : null;
      }, 15_000, { message: 'connector logged its connections to the killed relay as lost' });
      for (const l of lost) {
        const from = connector.logs.indexOf(l) + 1;
        const slot = () => connector.logs.slice(from).filter((x) => x.connIndex === l.connIndex && ['dial', 'backoff', 'dial-failed', 'registered'].includes(x.event ?? ''));
        const seq = await waitFor(() => {
          const s = slot();
          return s.some((x) => x.event === 'registered') ? s : null;
        }, 15_000, { message: `connection ${String(l.connIndex)} replaced` });
        const upTo = seq.slice(0, seq.findIndex((x) => x.event === 'registered') + 1);
        expect(upTo.map((x) => x.event), JSON.stringify(upTo)).toEqual(['dial', 'registered']);
        expect(upTo[1]!.relayId).not.toBe(victim.id);
        console.log(`kill -9: connection ${String(l.connIndex)} lost, redialed ${(upTo[0]!.time as number) - (l.time as number)} ms later, registered on ${String(upTo[1]!.relayId)} after ${(upTo[1]!.time as number) - (l.time as number)} ms (connector clock)`);
      }
    }
    // The dead relay's presence expires by TTL.
    await waitFor(async () => !(await registeredRelays()).has(victim.id), 15_000, { message: 'dead relay presence expired' });
    await waitFor(() => load.stats.ok > 100, 20_000);
    const stats = await load.stop();
    const getFailures = stats.failures.filter((f) => f.method === 'GET');
    expect(getFailures).toEqual([]);
    // Only what was in flight through the dead relay at the kill may fail (a
    // POST) or need a retry (a GET): at most one request per load worker
    // (sent to it, or forwarded to it by a peer). Anything more is a relay or
    // connector failing requests after the kill.
    console.log(`kill -9: ${stats.failures.length} POST failure(s), ${stats.retries.length} GET retry(ies), ${stats.ok} ok`);
    for (const f of [...stats.failures, ...stats.retries]) console.log('kill -9 failure', JSON.stringify(f));
    expect(stats.failures.length + stats.retries.length).toBeLessThanOrEqual(CONCURRENCY);
    for (const f of [...stats.failures, ...stats.retries]) expect(f.status === 502 || (f.error ?? '').length > 0, JSON.stringify(f)).toBe(true);
    relays[0] = await startRelay({ dir: tmp.dir, store, keys, id: victim.id, extraArgs: DRAIN_ARGS, ports: { http: victim.http, connect: victim.connect, control: victim.control, peer: victim.peer } });
  });

  it('SIGTERM of one connector replica under load: zero failed requests', async () => {
    const replica = await startConnector({ token, relays: relays.map((r) => r.connectUrl), url: origin.url });
    const load = startLoad({ health, host: 'app.test', concurrency: 8, maxMs: 60_000 });
    await waitFor(() => load.stats.ok > 50, 15_000);
    await connector.stop(30_000);
    expect((await connector.exited).code).toBe(0);
    await waitFor(() => load.stats.ok > 150, 20_000);
    const stats = await load.stop();
    if (stats.failures.length) console.log('replica failures', JSON.stringify(stats.failures, null, 1));
    expect(stats.failures).toEqual([]);
    connector = replica;
  });

  it('Redis restart under load: relays serve from cache, reconnect, and nothing is lost', async () => {
    const load = startLoad({ health, host: 'app.test', concurrency: 4, maxMs: 60_000 });
    await waitFor(() => load.stats.ok > 20, 10_000);
    await redis!.restart(async () => {
      const okBefore = load.stats.ok;
      await waitFor(() => load.stats.ok > okBefore + 50, 15_000, { message: 'requests keep succeeding while Redis is down' });
    });
    // After Redis is back, writes work again and every record survived.
    const t3 = await waitFor(async () => {
      try {
        return await createTunnel({ dir: tmp.dir, store, keys, name: 'after-redis', hostnames: ['after.test'] });
      } catch {
        return null;
      }
    }, 15_000);
    expect(t3).toBeTruthy();
    const s = await openStore(store);
    try {
      const names = (await s.listTunnels()).map((t) => t.name).sort();
      expect(names).toEqual(['after-redis', 'app', 'solo']);
      expect((await s.getRoute('app.test'))?.tunnelId).toBe(tunnelId);
    } finally {
      await s.close();
    }
    const stats = await load.stop();
    expect(stats.failures).toEqual([]);
  });
});
