import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startRedis } from '../harness/redis.js';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { createTunnel, RELAY_CLI, runCli, startConnector, startRelay, stopAll, tempDir, type Proc, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

// Issue 10: a Redis that came back empty made relays tell every connector
// "tunnel … was deleted", and the connectors exited 3 (which systemd does
// not restart). Store loss is not deletion: here a real Redis is wiped
// (FLUSHALL) under running connectors; they must stay up and keep retrying,
// the relay must say the store looks wiped, and restoring the data (Redis
// restarted from a dump saved before the wipe) must bring them back without
// a restart. A tunnel that is really deleted still ends its connector (exit 3).

const redis = await startRedis();

describe.skipIf(!redis)('store loss is not deletion (Redis wiped under running connectors)', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  let store: string;
  let relay: RelayProc;
  let origin: Origin;
  let app: Proc;
  let doomed: Proc;
  let raw: Redis;

  beforeAll(async () => {
    store = redis!.url;
    generateKeyFile(keys);
    origin = await startOrigin((_q, s) => s.end('origin'));
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-wipe' });
    const appToken = await createTunnel({ dir: tmp.dir, store, keys, name: 'app', hostnames: ['app.wipe.test'], relays: [relay.connectUrl] });
    const doomedToken = await createTunnel({ dir: tmp.dir, store, keys, name: 'doomed', hostnames: ['doomed.wipe.test'], relays: [relay.connectUrl] });
    app = await startConnector({ token: appToken, relays: [relay.connectUrl], url: origin.url, ha: 2, extraArgs: ['--no-discover'] });
    doomed = await startConnector({ token: doomedToken, relays: [relay.connectUrl], url: origin.url, ha: 1, extraArgs: ['--no-discover'] });
    raw = new Redis(redis!.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await raw.connect();
  });
  afterAll(async () => {
    raw?.disconnect();
    await stopAll();
    await origin?.close();
    await redis?.stop();
    tmp.cleanup();
  });

  it('FLUSHALL: connectors stay up and retry, the relay warns; restoring the data reconnects them without a restart', async () => {
    expect((await req(`${relay.publicUrl}/`, { host: 'app.wipe.test' })).text).toBe('origin');
    expect(await raw.save()).toBe('OK'); // the operator's last good dump
    await raw.flushall();

    // The relay notices (its heartbeat finds the store's meta record gone) and says so.
    await relay.proc.waitForLog((l) => l.event === 'store-wiped', 10_000, 'relay: store looks empty or wiped');
    expect(relay.proc.logs.some((l) => String(l.msg).includes('store looks empty or wiped'))).toBe(true);
    // Connectors are refused with the retryable tunnel_unknown, and keep trying.
    await waitFor(() => relay.proc.countLogs((l) => l.code === 'tunnel_unknown') >= 3, 20_000, { message: 'three tunnel_unknown refusals' });
    expect(relay.proc.countLogs((l) => l.code === 'tunnel_deleted')).toBe(0);
    expect(app.running).toBe(true);
    expect(doomed.running).toBe(true);
    expect(app.countLogs((l) => l.event === 'refused')).toBe(0);
    expect(app.stderr).not.toMatch(/tunnel_deleted/);

    // Restore: Redis restarts from the dump saved before the wipe.
    const before = app.countLogs((l) => l.event === 'registered');
    await redis!.restart();
    await waitFor(() => app.countLogs((l) => l.event === 'registered') >= before + 2, 40_000, { message: 'app reconnected (2 connections)' });
    await waitFor(async () => (await req(`${relay.publicUrl}/`, { host: 'app.wipe.test' })).text === 'origin', 10_000, { message: 'route served again' });
    expect(app.running).toBe(true);
  });

  it('a tunnel that is really deleted still ends its connector with exit 3', async () => {
    await waitFor(() => doomed.countLogs((l) => l.event === 'registered') >= 2, 40_000, { message: 'doomed reconnected after the restore' });
    const acct = await runCli(RELAY_CLI, ['account', 'create', 'default', '--store', store, '--keys', keys], {}, tmp.dir);
    expect(acct.code, acct.stderr).toBe(0);
    const enroll = await request(`${relay.controlUrl}/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: acct.stdout.trim() }) });
    const { credential } = (await enroll.body.json()) as { credential: string };
    const del = await request(`${relay.controlUrl}/v1/tunnels/doomed?force=true`, { method: 'DELETE', headers: { authorization: `Bearer ${credential}` } });
    expect(del.statusCode).toBe(200);
    await del.body.dump();
    const { code } = await doomed.exited;
    expect(code).toBe(3);
    expect(doomed.stderr).toMatch(/tunnel_deleted/);
    expect(app.running).toBe(true);
  });
});
