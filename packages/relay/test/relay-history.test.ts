// The fleet's relay history (store/relay-history.ts) against both stores: a
// relay stays remembered until forgotten, forgetting keeps its counts in the
// retired totals, the ceiling on remembered relays holds, and records that
// someone wrote into the store by hand are bounded and validated (one bad
// record is skipped, never the listing).

import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/store/open.js';
import { HISTORY_LIMITS, historyRecord, parseHistoryRecord, parseRetired, type RelayHistory } from '../src/store/relay-history.js';
import { StoreError, type Store } from '../src/store/types.js';
import { startRedis } from '../../../test/harness/redis.js';

function hist(id: string, over: Partial<RelayHistory> = {}): RelayHistory {
  return {
    id,
    region: 'eu',
    publicUrl: `http://127.0.0.1:8080/${id}`,
    controlUrl: `http://127.0.0.1:7000/${id}`,
    startedAt: 1_700_000_000_000,
    firstSeen: 1_700_000_000_000,
    lastSeen: 1_700_000_001_000,
    draining: false,
    counts: {},
    ...over,
  };
}

interface Env {
  open(o?: { relayHistoryEntries?: number }): Promise<Store>;
  /** Writes raw text where the store keeps relay `id`'s record (a hostile or broken writer). */
  writeRaw(id: string, text: string): Promise<void>;
  writeRetired(text: string): Promise<void>;
  cleanup(): Promise<void>;
}

const redis = await startRedis();
afterAll(async () => {
  await redis?.stop();
});

let n = 0;
const envs: Array<[string, () => Promise<Env>]> = [
  [
    'file',
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-history-'));
      return {
        open: (o = {}) => openStore(`file:${dir}`, o),
        async writeRaw(id, text) {
          await mkdir(path.join(dir, 'relay-history'), { recursive: true });
          await writeFile(path.join(dir, 'relay-history', `${id}.json`), text);
        },
        writeRetired: (text) => writeFile(path.join(dir, 'relay-history-retired.json'), text),
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  ],
];
if (redis) {
  envs.push([
    'redis',
    async () => {
      const prefix = `history-${process.pid}-${++n}:`;
      const raw = new Redis(redis.url);
      return {
        open: (o = {}) => openStore(redis.url, { keyPrefix: prefix, ...o }),
        writeRaw: async (id, text) => void (await raw.hset(`${prefix}relay-history`, id, text)),
        writeRetired: async (text) => void (await raw.set(`${prefix}relay-history-retired`, text)),
        cleanup: async () => void raw.disconnect(),
      };
    },
  ]);
} else {
  console.log('[skip] relay history on redis: redis-server is not installed');
}

describe.each(envs)('relay history: %s store', (_name, makeEnv) => {
  async function withStores(fn: (a: Store, b: Store, env: Env) => Promise<void>, o: { relayHistoryEntries?: number } = {}): Promise<void> {
    const env = await makeEnv();
    const a = await env.open(o);
    const b = await env.open(o);
    try {
      await fn(a, b, env);
    } finally {
      await a.close();
      await b.close();
      await env.cleanup();
    }
  }

  it('remembers a relay after its membership is gone, refreshes it, and another instance reads it', () =>
    withStores(async (a, b) => {
      expect(await a.listRelayHistory()).toEqual([]);
      expect(await a.recordRelayHistory(hist('r1', { counts: { t1: { requests: 5, errors: 1 } } }))).toBe('recorded');
      expect(await a.recordRelayHistory(hist('r0'))).toBe('recorded');
      await a.recordRelayHistory(hist('r1', { lastSeen: 1_700_000_009_000, draining: true, counts: { t1: { requests: 7, errors: 1 }, '': { requests: 2, errors: 0 } } }));
      const list = await b.listRelayHistory();
      expect(list.map((h) => h.id)).toEqual(['r0', 'r1']);
      expect(list[1]).toEqual(hist('r1', { lastSeen: 1_700_000_009_000, draining: true, counts: { t1: { requests: 7, errors: 1 }, '': { requests: 2, errors: 0 } } }));
      // Membership knows nothing of it: history is not membership.
      expect(await b.listRelays()).toEqual([]);
    }));

  it('forgetting a relay drops it and adds its counts to the retired totals; unknown is NOT_FOUND', () =>
    withStores(async (a, b) => {
      await a.recordRelayHistory(hist('r1', { counts: { t1: { requests: 5, errors: 1 } } }));
      await a.recordRelayHistory(hist('r2', { counts: { t1: { requests: 3, errors: 0 }, t2: { requests: 4, errors: 4 } } }));
      expect(await a.retiredCounts()).toEqual({});
      await b.forgetRelay('r1');
      await a.forgetRelay('r2');
      expect(await a.listRelayHistory()).toEqual([]);
      expect(await b.retiredCounts()).toEqual({ t1: { requests: 8, errors: 1 }, t2: { requests: 4, errors: 4 } });
      await expect(a.forgetRelay('r1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await expect(a.forgetRelay('../../etc/passwd')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    }));

  it('two instances forgetting different relays at once lose no count', () =>
    withStores(async (a, b) => {
      for (let i = 0; i < 6; i++) await a.recordRelayHistory(hist(`r${i}`, { counts: { t: { requests: 10, errors: 1 } } }));
      await Promise.all([0, 1, 2, 3, 4, 5].map((i) => (i % 2 ? a : b).forgetRelay(`r${i}`)));
      expect(await a.retiredCounts()).toEqual({ t: { requests: 60, errors: 6 } });
    }));

  it('holds at most --max-relay-history relays: a new one is refused (full), a known one still refreshes', () =>
    withStores(
      async (a) => {
        expect(await a.recordRelayHistory(hist('r1'))).toBe('recorded');
        expect(await a.recordRelayHistory(hist('r2'))).toBe('recorded');
        expect(await a.recordRelayHistory(hist('r3'))).toBe('full');
        expect(await a.recordRelayHistory(hist('r2', { lastSeen: 1_700_000_005_000 }))).toBe('recorded');
        expect((await a.listRelayHistory()).map((h) => h.id)).toEqual(['r1', 'r2']);
        await a.forgetRelay('r1');
        expect(await a.recordRelayHistory(hist('r3'))).toBe('recorded');
      },
      { relayHistoryEntries: 2 },
    ));

  it('skips records that are not JSON, not valid, oversized or under another id; a corrupt retired record is CORRUPT', () =>
    withStores(async (a, _b, env) => {
      await a.recordRelayHistory(hist('good', { counts: { t: { requests: 1, errors: 0 } } }));
      await env.writeRaw('garbage', '{not json');
      await env.writeRaw('negative', JSON.stringify(hist('negative', { counts: { t: { requests: -5, errors: 0 } } })));
      await env.writeRaw('extra', JSON.stringify({ ...hist('extra'), admin: true }));
      await env.writeRaw('liar', JSON.stringify(hist('someone-else')));
      await env.writeRaw('huge', JSON.stringify(hist('huge', { region: 'x'.repeat(HISTORY_LIMITS.recordBytes) })));
      const many: Record<string, { requests: number; errors: number }> = {};
      for (let i = 0; i <= HISTORY_LIMITS.tunnelsPerRelay; i++) many[`t${i}`] = { requests: 1, errors: 0 };
      await env.writeRaw('wide', JSON.stringify(hist('wide', { counts: many })));
      expect((await a.listRelayHistory()).map((h) => h.id)).toEqual(['good']);
      // A broken record can still be forgotten (its counts are unknowable and dropped).
      await a.forgetRelay('garbage');
      expect(await a.retiredCounts()).toEqual({});
      await env.writeRetired('[1,2');
      const err = await a.retiredCounts().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StoreError);
      expect((err as StoreError).code).toBe('CORRUPT');
    }));
});

describe('historyRecord', () => {
  it('keeps the most-used tunnels when a relay counts more than the ceiling, and refuses a bad record', () => {
    const counts: Record<string, { requests: number; errors: number }> = {};
    for (let i = 0; i < HISTORY_LIMITS.tunnelsPerRelay + 10; i++) counts[`t${i}`] = { requests: i, errors: 0 };
    const rec = JSON.parse(historyRecord(hist('r', { counts }))) as RelayHistory;
    expect(Object.keys(rec.counts)).toHaveLength(HISTORY_LIMITS.tunnelsPerRelay);
    expect(rec.counts.t0).toBeUndefined();
    expect(rec.counts[`t${HISTORY_LIMITS.tunnelsPerRelay + 9}`]).toEqual({ requests: HISTORY_LIMITS.tunnelsPerRelay + 9, errors: 0 });
    expect(() => historyRecord(hist('bad/id'))).toThrow(TypeError);
  });
});

describe('relay history records read back (both stores parse through these)', () => {
  it('each refusal says why: oversized before parsing, not JSON, wrong shape; no retired record is none retired', () => {
    // Valid JSON once parsed: only the size cap refuses it.
    const padded = ' '.repeat(HISTORY_LIMITS.recordBytes) + '{}';
    for (const parse of [parseHistoryRecord, (t: string) => parseRetired(t)]) {
      expect(parse(padded)).toEqual({ ok: false, reason: `over ${HISTORY_LIMITS.recordBytes} bytes` });
      expect(parse('{')).toEqual({ ok: false, reason: 'not valid JSON' });
    }
    expect(parseRetired('{"t1": 5}')).toMatchObject({ ok: false, reason: expect.stringMatching(/^t1: /) });
    expect(parseHistoryRecord('{"id": "r1"}')).toMatchObject({ ok: false, reason: expect.stringMatching(/region/) });
    expect(parseRetired(null)).toEqual({ ok: true, value: {} });
    expect(parseHistoryRecord(JSON.stringify(hist('r1')))).toEqual({ ok: true, value: hist('r1') });
  });
});
