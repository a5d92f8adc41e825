import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { request } from 'undici';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type Proc, type RelayProc } from './harness/procs.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/wait.js';

// The connector's /ready follows its connections: 503 before any relay is
// up, 200 once one connection registers, 503 again when every relay is gone,
// and 200 when one comes back. /healthcheck answers throughout.

interface Ready {
  code: number;
  body: { status: number; readyConnections: number; connectorId: string };
}

describe('connector /ready and /healthcheck', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  let connector: Proc;
  let base: string;
  let ports: Array<{ connect: number; http: number; control: number; peer: number }>;
  let relays: RelayProc[] = [];

  const ready = async (): Promise<Ready> => {
    const r = await request(`${base}/ready`);
    expect(r.headers['content-type']).toContain('application/json');
    return { code: r.statusCode, body: (await r.body.json()) as Ready['body'] };
  };
  const startRelays = async () => {
    relays = [];
    for (let i = 0; i < ports.length; i++) relays.push(await startRelay({ dir: tmp.dir, store, keys, id: `ready-relay-${i}`, ports: ports[i] }));
  };

  beforeAll(async () => {
    generateKeyFile(keys);
    ports = [];
    for (let i = 0; i < 2; i++) ports.push({ connect: await freePort(), http: await freePort(), control: await freePort(), peer: await freePort() });
    const relayUrls = ports.map((p) => `ws://127.0.0.1:${p.connect}`);
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'ready', hostnames: ['ready.test'], relays: relayUrls });
    // The connector starts first: every relay it knows is still down.
    connector = await startConnector({ token, relays: relayUrls, url: 'http://127.0.0.1:9', waitRegistered: 0, extraArgs: ['--metrics', '127.0.0.1:0', '--no-discover'] });
    const l = await connector.waitForLog((x) => x.event === 'metrics');
    base = `http://127.0.0.1:${l.port as number}`;
  });
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });

  it('is 503 with no relay reachable, and /healthcheck is 200', async () => {
    // Some dials have failed by now: the connector is really without a connection.
    await connector.waitForLog((x) => x.event === 'backoff');
    const r = await ready();
    expect(r.code).toBe(503);
    expect(r.body).toEqual({ status: 503, readyConnections: 0, connectorId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    const h = await request(`${base}/healthcheck`);
    expect(h.statusCode).toBe(200);
    expect(await h.body.text()).toBe('OK\n');
  });

  it('turns 200 once a connection registers, with the count and the connector id', async () => {
    await startRelays();
    const r = await waitFor(async () => {
      const x = await ready();
      return x.code === 200 ? x : null;
    }, 20_000, { message: '/ready 200' });
    expect(r.body.status).toBe(200);
    expect(r.body.readyConnections).toBeGreaterThanOrEqual(1);
    const id = connector.logs.find((x) => x.event === 'starting')?.connectorId;
    expect(r.body.connectorId).toBe(id);
    const all = await waitFor(async () => {
      const x = await ready();
      return x.body.readyConnections === 4 ? x : null;
    }, 20_000, { message: 'four connections' });
    expect(all.code).toBe(200);
  });

  it('goes back to 503 when every relay dies, and to 200 when one returns', async () => {
    await Promise.all(relays.map((r) => r.proc.kill9()));
    const down = await waitFor(async () => {
      const x = await ready();
      return x.code === 503 ? x : null;
    }, 10_000, { message: '/ready 503 after the relays died' });
    expect(down.body).toMatchObject({ status: 503, readyConnections: 0 });
    expect((await request(`${base}/healthcheck`)).statusCode).toBe(200);

    relays = [await startRelay({ dir: tmp.dir, store, keys, id: 'ready-relay-0b', ports: ports[0] })];
    const up = await waitFor(async () => {
      const x = await ready();
      return x.code === 200 ? x : null;
    }, 30_000, { message: '/ready 200 after a relay returned' });
    expect(up.body.readyConnections).toBeGreaterThanOrEqual(1);
  });
});
