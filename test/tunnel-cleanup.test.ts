// `tunnel cleanup NAME` (README: "Everything else, as in cloudflared"): drop a
// tunnel's stale connection records, those held for relays that died. Here a
// relay that is gone (no membership) left a presence record for the tunnel in
// the store, as a relay killed with -9 leaves it until its TTL: `tunnel info`
// shows that phantom connection and `tunnel delete` is refused because of
// it. After `cleanup` the phantom is gone, delete goes through, and a live
// connector's connections (on a relay that is a member) stay.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { openStore } from '../packages/relay/src/store/open.js';
import { CONNECTOR_CLI, RELAY_CLI, runCli, startConnector, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';

interface Info {
  tunnel: { id: string };
  connectors: Array<{ connectorId: string; connections: Array<{ relayId: string; connIndex: number }> }>;
}

describe('tunnel cleanup NAME', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const storeDir = path.join(tmp.dir, 'store');
  const store = `file:${storeDir}`;
  const home = path.join(tmp.dir, 'erin-home');
  let relay: RelayProc;
  let origin: Origin;
  const tunnel = (args: string[]) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home });
  const info = async (name: string): Promise<Info> => {
    const r = await tunnel(['info', name, '--output', 'json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Info;
  };
  const relaysOf = (i: Info) => i.connectors.flatMap((c) => c.connections.map((k) => k.relayId)).sort();

  beforeAll(async () => {
    generateKeyFile(keys);
    origin = await startOrigin((_q, s) => s.end('ok'));
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-live' });
    const acct = await runCli(RELAY_CLI, ['account', 'create', 'erin', '--store', store, '--keys', keys], {}, tmp.dir);
    expect(acct.code, acct.stderr).toBe(0);
    const login = await tunnel(['login', '--relay', relay.controlUrl!, '--enroll', acct.stdout.trim()]);
    expect(login.code, login.stderr).toBe(0);
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('removes only the records held for dead relays; delete is no longer held up by them', async () => {
    for (const name of ['app', 'other']) expect((await tunnel(['create', name])).code).toBe(0);
    const t = await tunnel(['token', 'app']);
    expect(t.code, t.stderr).toBe(0);
    const c = await startConnector({ token: t.stdout.trim(), relays: [relay.connectUrl], url: origin.url, ha: 2, extraArgs: ['--no-discover'] });
    const app = await info('app');
    const other = await info('other');
    expect(relaysOf(app)).toEqual(['relay-live', 'relay-live']);

    // What a relay killed with -9 leaves behind: presence with time to live, no membership.
    const now = Date.now();
    const stale = (tunnelId: string, connectorId: string) => ({ connectionId: `stale-${connectorId}`, relayId: 'relay-gone', tunnelId, connectorId, connIndex: 3, version: 'old', clientIp: '127.0.0.1', connectedAt: now - 60_000 });
    const leaveBehind = async (...records: ReturnType<typeof stale>[]) => {
      const dead = await openStore(store, { watch: false });
      await dead.putPresence('relay-gone', records, 600_000);
      await dead.close();
    };

    // A tunnel with nothing running but a dead relay's record: delete is refused, until cleanup.
    await leaveBehind(stale(other.tunnel.id, 'other-ghost'));
    expect(relaysOf(await info('other'))).toEqual(['relay-gone']);
    const refused = await tunnel(['delete', 'other']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('tunnel_has_connectors');
    const cleanOther = await tunnel(['cleanup', 'other']);
    expect(cleanOther.code, cleanOther.stderr).toBe(0);
    expect(cleanOther.stdout.trim()).toBe('Removed 1 stale connection record(s) of other');
    expect(relaysOf(await info('other'))).toEqual([]);
    const del = await tunnel(['delete', 'other']);
    expect(del.code, del.stderr).toBe(0);

    // A running tunnel with a phantom: only the phantom goes.
    await leaveBehind(stale(app.tunnel.id, 'ghost'));
    expect(relaysOf(await info('app'))).toEqual(['relay-gone', 'relay-live', 'relay-live']);
    const clean = await tunnel(['cleanup', 'app']);
    expect(clean.code, clean.stderr).toBe(0);
    expect(clean.stdout.trim()).toBe('Removed 1 stale connection record(s) of app');
    expect(relaysOf(await info('app'))).toEqual(['relay-live', 'relay-live']);
    expect(c.running).toBe(true);
    // A second run finds nothing (the live relay's records are not stale).
    expect((await tunnel(['cleanup', 'app'])).stdout.trim()).toBe('Removed 0 stale connection record(s) of app');
    await c.stop();
  });
});
