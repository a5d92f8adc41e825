import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { openStore } from '../../packages/relay/src/store/open.js';
import type { Store } from '../../packages/relay/src/store/types.js';
import { createTunnel, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { dashboardSession } from '../harness/dashboard-browser.js';
import { req } from '../harness/http.js';

// The dashboard asks every live member for its stats and sums them. A member
// record in the store can point anywhere, so the answer is hostile input:
// not JSON, negative or fractional counts, another relay's id, a body that
// never ends in size. Each is dropped (the relay is shown without stats), the
// fleet's totals are not touched, and the relay serving the dashboard lives on.

const OPERATOR_KEY = 'dashboard-peer-stats-operator-key-01';

interface State {
  relays: Array<{ id: string; stats: boolean }>;
  tunnels: Array<{ name: string; requests: number }>;
  totals: { requests: number };
}

describe('dashboard: hostile stats from a fleet member', () => {
  const tmp = tempDir('tunnel-dash-peer-');
  let relay: RelayProc;
  let store: Store;
  let evil: http.Server;
  let answer: (res: http.ServerResponse) => void = (res) => res.end('{}');
  let asked = 0;

  beforeAll(async () => {
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const keyFile = path.join(tmp.dir, 'operator-key');
    writeFileSync(keyFile, OPERATOR_KEY + '\n', { mode: 0o600 });
    const url = `file:${path.join(tmp.dir, 'store')}`;
    relay = await startRelay({ dir: tmp.dir, store: url, keys, id: 'honest', extraArgs: ['--operator-key-file', keyFile] });
    await createTunnel({ dir: tmp.dir, store: url, keys, name: 'app', hostnames: ['app.test'], relays: [relay.connectUrl] });
    store = await openStore(url);
    evil = http.createServer((_q, res) => {
      asked++;
      answer(res);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    const port = (evil.address() as { port: number }).port;
    await store.heartbeatRelay(
      { id: 'evil', region: 'x', controlUrl: `http://127.0.0.1:${port}`, connectUrl: '', publicUrl: '', peerUrl: '', startedAt: Date.now(), lastSeen: Date.now(), draining: false },
      600_000,
    );
    // Requests the honest relay served (no connector: 530s), so there are counts to protect.
    for (let i = 0; i < 7; i++) await req(`${relay.publicUrl}/x/${i}`, { host: 'app.test' });
  });
  afterAll(async () => {
    await store?.close();
    await new Promise((r) => evil?.close(r));
    await stopAll();
    tmp.cleanup();
  });

  it.each([
    ['not JSON', (res: http.ServerResponse) => res.end('{"relayId": "evil", ')],
    ['negative counts', (res: http.ServerResponse) => res.end(JSON.stringify({ relayId: 'evil', at: Date.now(), tunnels: { x: { requests: -1e9, errors: 0 } }, connections: {} }))],
    ['fractional counts', (res: http.ServerResponse) => res.end(JSON.stringify({ relayId: 'evil', at: Date.now(), tunnels: { x: { requests: 0.5, errors: 0 } }, connections: {} }))],
    ['another relay\'s id', (res: http.ServerResponse) => res.end(JSON.stringify({ relayId: 'honest', at: Date.now(), tunnels: {}, connections: {} }))],
    ['a 2 MiB body', (res: http.ServerResponse) => res.end(JSON.stringify({ relayId: 'evil', at: Date.now(), tunnels: {}, connections: {}, pad: 'x'.repeat(2 * 1024 * 1024) }))],
    ['a declared 50 MiB body', (res: http.ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(50 * 1024 * 1024) });
      res.write('{"relayId":"evil"');
    }],
  ])('%s: dropped, the relay shown without stats, the totals untouched', async (_what, respond) => {
    answer = respond;
    const { cookie } = await dashboardSession(relay.controlUrl!, OPERATOR_KEY);
    const before = asked;
    const r = await request(`${relay.controlUrl}/dashboard/api/state`, { headers: { cookie } });
    const state = (await r.body.json()) as State;
    expect(r.statusCode).toBe(200);
    expect(asked).toBeGreaterThan(before);
    expect(state.relays.find((x) => x.id === 'evil')).toMatchObject({ stats: false });
    expect(state.relays.find((x) => x.id === 'honest')).toMatchObject({ stats: true });
    expect(state.tunnels.find((t) => t.name === 'app')?.requests).toBe(7);
    expect(state.totals.requests).toBe(7);
    expect(relay.proc.running).toBe(true);
  });
});
