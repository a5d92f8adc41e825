import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { RELAY_CLI, runCli, type Proc } from './harness/procs.js';
import { openStore } from '../packages/relay/src/store/open.js';
import type { Store } from '../packages/relay/src/store/types.js';

// Operator commands on a relay host, reading the store from the relay's
// config file (TUNNEL_RELAY_CONFIG) as the others do, against a live
// two-relay fleet:
// - `tunnel-relay tunnel disconnect NAME` drops the tunnel's connections on
//   every relay; the tunnel and its credential stay and the same connector
//   process reconnects (cloudflared's `tunnel cleanup`).
// - `tunnel-relay relays list|forget`: the relays the dashboard shows, a
//   killed one as down (last seen, since when) until it is forgotten.

describe('operator commands against a live fleet', () => {
  let fleet: Fleet;
  let origin: Origin;
  let connector: Proc;
  let store: Store;
  let config: string;
  const relayCli = (args: string[]) => runCli(RELAY_CLI, args, { TUNNEL_RELAY_CONFIG: config, TUNNEL_RELAY_STORE: undefined, TUNNEL_RELAY_KEYS: undefined });
  const connectionIds = async (tunnelId: string) => (await store.listPresence({ tunnelId })).map((p) => p.connectionId).sort();

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`hello ${q.url}`));
    fleet = await startFleet({ relays: 2 });
    config = path.join(fleet.dir, 'relay.yml');
    writeFileSync(config, `store: ${fleet.store}\nkeys: ${fleet.keys}\n`);
    connector = await fleet.connector({ url: origin.url });
    store = await openStore(fleet.store);
  });
  afterAll(async () => {
    await store?.close();
    await fleet?.close();
    await origin?.close();
  });

  it('`tunnel disconnect NAME` drops its connections on both relays; the same connector reconnects and serves', { timeout: 60_000 }, async () => {
    const tunnel = (await store.listTunnels())[0]!;
    const before = await waitFor(async () => {
      const ids = await connectionIds(tunnel.id);
      return ids.length === 4 && new Set((await store.listPresence({ tunnelId: tunnel.id })).map((p) => p.relayId)).size === 2 ? ids : undefined;
    }, 15_000, { message: 'four connections over both relays' });

    const r = await relayCli(['tunnel', 'disconnect', 'app']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`disconnected tunnel app (${tunnel.id}): 4 connection(s) dropped on every relay; its connectors reconnect\n`);

    // Every old connection ends (on both relays) and four new ones replace them.
    await waitFor(async () => {
      const ids = await connectionIds(tunnel.id);
      return ids.length === 4 && ids.every((id) => !before.includes(id));
    }, 20_000, { message: 'four new connections, none of the old' });
    for (const relay of fleet.relays) {
      await waitFor(() => relay.proc.stdout.includes('"event":"tunnel-disconnected"'), 5_000, { message: `${relay.id} logged the disconnect` });
    }
    expect(connector.running).toBe(true);
    expect(connector.stdout + connector.stderr).toContain('tunnel_disconnected');
    // The tunnel, its route and its credential stay.
    expect((await store.getTunnel(tunnel.id))?.name).toBe('app');
    for (const relay of fleet.relays) {
      const res = await waitFor(async () => {
        const x = await req(`${relay.publicUrl}/after`, { host: fleet.hostname });
        return x.status === 200 ? x : undefined;
      }, 10_000, { message: `served through ${relay.id}` });
      expect(res.text).toBe('hello /after');
    }

    const unknown = await relayCli(['tunnel', 'disconnect', 'nope']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe('tunnel-relay: account default has no tunnel named nope (tunnel_not_found)\n');
  });

  it('`relays list` shows a killed relay as down (last seen, since) until `relays forget ID`; a live one cannot be forgotten', { timeout: 60_000 }, async () => {
    const listed = async () => {
      const r = await relayCli(['relays', 'list', '--output', 'json']);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Array<{ id: string; state: string; lastSeen: number; since: number }>;
    };
    expect((await listed()).map((x) => [x.id, x.state])).toEqual([['relay-0', 'up'], ['relay-1', 'up']]);

    const victim = fleet.relays[1]!;
    await victim.proc.kill9();
    const killedAt = Date.now();
    // Membership lapses three heartbeats after the last one; the history keeps it, down.
    const down = await waitFor(async () => (await listed()).find((x) => x.id === 'relay-1' && x.state === 'down'), 30_000, { message: "relay-1 listed as down" });
    expect(down.lastSeen).toBeLessThanOrEqual(killedAt);
    expect(down.lastSeen).toBeGreaterThan(killedAt - 10_000);
    expect(down.since).toBe(down.lastSeen);

    const table = await relayCli(['relays', 'list']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID +REGION +STATE +LAST SEEN +SINCE$/);
    expect(lines[1]).toMatch(/^relay-0 +local +up +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const iso = new Date(down.lastSeen).toISOString().replace(/\.\d{3}Z$/, 'Z');
    expect(lines[2]).toMatch(new RegExp(`^relay-1 +local +down +${iso} +${iso}$`));

    const alive = await relayCli(['relays', 'forget', 'relay-0']);
    expect(alive.code).toBe(2);
    expect(alive.stderr).toBe('tunnel-relay: relay relay-0 is running: stop it first (only relays that are down or stopped can be forgotten) (relay_alive)\n');
    const unknown = await relayCli(['relays', 'forget', 'relay-9']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe('tunnel-relay: no relay relay-9 in the fleet history (relay_not_found)\n');

    const forget = await relayCli(['relays', 'forget', 'relay-1']);
    expect(forget.stderr).toBe('');
    expect(forget.code).toBe(0);
    expect(forget.stdout).toBe('forgot relay relay-1 (its requests stay in the fleet totals)\n');
    expect((await listed()).map((x) => [x.id, x.state])).toEqual([['relay-0', 'up']]);
  });
});
