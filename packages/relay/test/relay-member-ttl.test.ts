// The relay hands its own membership TTL (three heartbeats of heartbeatMs) to
// its fleet view, so a peer counts as gone after the TTL its fleet publishes
// with: with a 500 ms heartbeat, a peer that stopped beating is dropped after
// 1.5 s, where a fixed 10 s would keep forwarding to it. fleet-view.test.ts shows FleetView honours the TTL it is
// given; this shows the Relay gives it (it once hard-coded 10 s).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { generateSigningKeyPair } from '@tunnel/protocol';
import { Relay } from '../src/relay.js';
import type { FleetView } from '../src/fleet/fleet-view.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';
import { waitFor } from '../../../test/harness/wait.js';

describe('relay: the fleet view uses the membership TTL of heartbeatMs', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('with a 500 ms heartbeat, a peer that beat once is forwarded to, then dropped well before 10 s', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-member-ttl-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const store: Store = await openStore(`file:${dir}`, { watch: false });
    cleanups.push(() => store.close());
    const keys = { ...generateSigningKeyPair(), createdAt: new Date().toISOString() };
    const relay = new Relay(
      { id: 'relay-a', region: 'test', listen: { connect: { host: '127.0.0.1', port: 0 }, peer: { host: '127.0.0.1', port: 0 } }, drainTimeoutMs: 1_000, heartbeatMs: 500 },
      { store, keys, log: pino({ level: 'silent' }) },
    );
    await relay.start();
    cleanups.push(() => relay.stop());
    const fleet = (relay as unknown as { fleet: FleetView }).fleet;
    // One beat of relay-b, written after the start so the relay's start-up time does not eat into its 1.5 s.
    const now = Date.now();
    // The store keeps the records for an hour: only the view's TTL decides freshness (the store stamps lastSeen at the write).
    await store.heartbeatRelay(
      { id: 'relay-b', region: 'x', controlUrl: '', connectUrl: 'ws://127.0.0.1:9', publicUrl: '', peerUrl: 'http://127.0.0.1:9', startedAt: now, lastSeen: now, draining: false },
      3_600_000,
    );
    await store.putPresence('relay-b', [{ connectionId: 'c1', relayId: 'relay-b', tunnelId: 't1', connectorId: 'k1', connIndex: 0, version: '0.1.0', clientIp: '127.0.0.1', connectedAt: now }], 3_600_000);
    await waitFor(() => fleet.peersFor('t1').length === 1, 1_000, { message: 'the fresh peer is forwarded to' });
    await waitFor(() => fleet.peersFor('t1').length === 0, 6_000, { message: 'peer past the 1.5 s membership TTL dropped' });
  });
});
