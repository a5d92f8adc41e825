import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { FleetView } from '../src/fleet/fleet-view.js';
import { FileStore } from '../src/store/file/file-store.js';
import { waitFor } from '../../../test/harness/wait.js';

// The fleet view forwards to a peer as long as its membership is live, with
// the TTL the relays publish (three heartbeats), not a fixed 10 s: a fleet
// run with a slower heartbeat must not see its peers as gone between beats.

describe('FleetView member freshness', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });

  it('a peer is forwarded to while its heartbeat is within the membership TTL, and not after', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-fleet-view-'));
    const store = await FileStore.open(dir, { watch: false });
    const now = Date.now();
    // The store keeps the record for a minute; only the view's TTL (300 ms here) decides freshness.
    await store.heartbeatRelay(
      { id: 'relay-b', region: 'x', controlUrl: '', connectUrl: 'ws://127.0.0.1:1', publicUrl: '', peerUrl: 'http://127.0.0.1:2', startedAt: now, lastSeen: now, draining: false },
      60_000,
    );
    await store.putPresence('relay-b', [{ connectionId: 'c1', relayId: 'relay-b', tunnelId: 't1', connectorId: 'k1', connIndex: 0, version: '0.1.0', clientIp: '127.0.0.1', connectedAt: now }], 60_000);
    const view = new FleetView(store, 'relay-a', pino({ level: 'silent' }), 60_000, 'any', 300);
    await view.start();
    cleanups.push(async () => {
      view.stop();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    });
    expect(view.peersFor('t1').map((m) => m.id)).toEqual(['relay-b']);
    // A fixed 10 s would keep it for 10 s; the 300 ms TTL drops it well within 3 s.
    await waitFor(() => view.peersFor('t1').length === 0, 3_000, { message: 'peer past its membership TTL dropped' });
  });
});
