// The relay writes its membership and connection set one write at a time.
// The 100 ms change timer and the heartbeat both write; overlapping, they can
// land in the store in the other order and leave an older connection set in
// place, which nothing corrects once an unchanged set is only refreshed
// (dashboards showed 2 of 4 connections, a quick tunnel "not connected"). So:
// never two writes at once, and a call that arrives during a write gets one
// more write after it (it may carry a newer set), however many calls arrived.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { generateSigningKeyPair } from '@tunnel/protocol';
import { Relay } from '../src/relay.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';
import { waitFor } from '../../../test/harness/wait.js';

/** The real file store, with each membership write held until the test (or a timer) lets it go; counts writes and their overlap. */
class HeldWrites {
  started = 0;
  inFlight = 0;
  maxInFlight = 0;
  private releases: Array<() => void> = [];
  constructor(private readonly autoReleaseMs: number | null) {}

  wrap(store: Store): Store {
    return new Proxy(store, {
      get: (target, prop, receiver) => {
        if (prop !== 'heartbeatRelay') return Reflect.get(target, prop, receiver) as unknown;
        return async (...args: Parameters<Store['heartbeatRelay']>) => {
          this.started++;
          this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
          try {
            await new Promise<void>((r) => {
              this.releases.push(r);
              if (this.autoReleaseMs !== null) setTimeout(r, this.autoReleaseMs);
            });
            await target.heartbeatRelay(...args);
          } finally {
            this.inFlight--;
          }
        };
      },
    });
  }

  /** Let every held write go on. */
  release(): void {
    for (const r of this.releases.splice(0)) r();
  }
}

describe('relay: membership writes', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function relayOn(held: HeldWrites, heartbeatMs: number) {
    const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-presence-writes-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const store = await openStore(`file:${dir}`, { watch: false });
    cleanups.push(() => store.close());
    const keys = { ...generateSigningKeyPair(), createdAt: new Date().toISOString() };
    const relay = new Relay(
      { id: 'relay-a', region: 'test', listen: { connect: { host: '127.0.0.1', port: 0 } }, drainTimeoutMs: 1_000, heartbeatMs },
      { store: held.wrap(store), keys, log: pino({ level: 'silent' }) },
    );
    const starting = relay.start();
    cleanups.push(async () => {
      held.release();
      await starting.catch(() => {});
      await relay.stop();
    });
    return { relay, starting };
  }

  it('a heartbeat due while a write is slow waits for it: never two writes at once', async () => {
    // Writes take 40 ms, heartbeats come every 10 ms.
    const held = new HeldWrites(40);
    const { starting } = await relayOn(held, 10);
    await starting;
    await waitFor(() => held.started >= 6, 5_000, { message: 'six membership writes' });
    expect(held.maxInFlight).toBe(1);
  });

  it('calls during a write are answered by one more write after it', async () => {
    const held = new HeldWrites(null);
    const { relay, starting } = await relayOn(held, 3_600_000); // no heartbeat in the test's time
    await waitFor(() => held.started === 1, 5_000, { message: 'the start-up write, held' });
    const publish = () => (relay as unknown as { publishMembership(): Promise<void> }).publishMembership();
    const during = [publish(), publish(), publish()];
    expect(held.started).toBe(1);
    held.release();
    // The start-up call waits for that write too: it is one run of writes.
    await waitFor(() => held.started === 2, 5_000, { message: 'one more write after the held one' });
    expect(held.maxInFlight).toBe(1);
    held.release();
    await Promise.all([starting, ...during]);
    expect(held.started).toBe(2);
  });
});
