// The relay history publisher against a real file store: what a relay
// records (URLs, draining, cumulative counts), that a relay restarted under
// the same id carries on from its recorded counts (so the fleet's totals
// never go back), that a deleted tunnel's counts are dropped, and that a full
// history is a counted limit hit with one warning, not an error.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';
import { RelayHistoryPublisher } from '../src/dashboard/relay-history-publisher.js';
import type { LimitName } from '../src/relay-limits.js';

const dirs: string[] = [];
const stores: Store[] = [];
afterEach(async () => {
  await Promise.allSettled(stores.splice(0).map((s) => s.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function store(o: { relayHistoryEntries?: number } = {}): Promise<{ store: Store; dir: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-publisher-'));
  dirs.push(dir);
  const s = await openStore(`file:${dir}`, o);
  stores.push(s);
  return { store: s, dir };
}

function publisher(s: Store, relayId: string, traffic: Array<{ tunnelId: string; total: number; errors: number }>, hits: LimitName[] = [], draining = false) {
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const p = new RelayHistoryPublisher({
    store: s,
    log,
    hits: { hit: (n) => void hits.push(n) },
    relayId,
    region: 'eu',
    startedAt: 1_700_000_000_000,
    urls: () => ({ publicUrl: 'http://127.0.0.1:8080', controlUrl: 'http://127.0.0.1:7000' }),
    draining: () => draining,
    traffic: () => traffic,
    everyMs: 60_000,
  });
  return { p, lines };
}

describe('RelayHistoryPublisher', () => {
  it('records the relay and its counts; a restart under the same id carries on; deleted tunnels are dropped', async () => {
    const { store: s } = await store();
    const account = await s.createAccount('a');
    const kept = await s.createTunnel(account.id, 'kept');
    const doomed = await s.createTunnel(account.id, 'doomed');
    const later = await s.createTunnel(account.id, 'later');
    const first = publisher(s, 'r1', [
      { tunnelId: kept.id, total: 10, errors: 2 },
      { tunnelId: doomed.id, total: 5, errors: 0 },
      { tunnelId: later.id, total: 7, errors: 0 },
      { tunnelId: '', total: 3, errors: 0 },
    ]);
    await first.p.start();
    first.p.stop();
    const [h] = await s.listRelayHistory();
    expect(h).toMatchObject({ id: 'r1', region: 'eu', publicUrl: 'http://127.0.0.1:8080', controlUrl: 'http://127.0.0.1:7000', draining: false });
    expect(h!.counts).toEqual({ [kept.id]: { requests: 10, errors: 2 }, [doomed.id]: { requests: 5, errors: 0 }, [later.id]: { requests: 7, errors: 0 }, '': { requests: 3, errors: 0 } });

    await s.deleteTunnel(doomed.id, 60_000);
    // The same id again (a restart): 4 more requests on top of the 10 recorded.
    const traffic = [{ tunnelId: kept.id, total: 4, errors: 1 }];
    const second = publisher(s, 'r1', traffic);
    await second.p.start();
    expect(second.p.counts()).toEqual({ [kept.id]: { requests: 14, errors: 3 }, [later.id]: { requests: 7, errors: 0 }, '': { requests: 3, errors: 0 } });
    // Deleted while this relay runs: dropped at once.
    await s.deleteTunnel(later.id, 60_000);
    expect(second.p.counts()).toEqual({ [kept.id]: { requests: 14, errors: 3 }, '': { requests: 3, errors: 0 } });
    traffic[0]!.total = 6;
    await second.p.markStopping();
    second.p.stop();
    const [again] = await s.listRelayHistory();
    expect(again!.firstSeen).toBe(h!.firstSeen);
    expect(again!.draining).toBe(true);
    expect(again!.counts).toEqual({ [kept.id]: { requests: 16, errors: 3 }, '': { requests: 3, errors: 0 } });
  });

  it('a full history: not recorded, the relay_history limit counted, one warning', async () => {
    const { store: s } = await store({ relayHistoryEntries: 1 });
    const a = publisher(s, 'first', []);
    await a.p.start();
    a.p.stop();
    const hits: LimitName[] = [];
    const b = publisher(s, 'second', [], hits);
    await b.p.start();
    await b.p.publish();
    b.p.stop();
    expect((await s.listRelayHistory()).map((h) => h.id)).toEqual(['first']);
    expect(hits).toEqual(['relay_history', 'relay_history']);
    expect(b.lines.filter((l) => l.includes('relay-history-full'))).toHaveLength(1);
  });
});
