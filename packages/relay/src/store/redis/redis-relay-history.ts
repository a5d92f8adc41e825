// The Redis store's relay history: hash `relay-history` (relay id → record
// JSON, no TTL: a relay stays until forgotten) and string
// `relay-history-retired` (counts of forgotten relays). Recording checks the
// ceiling and writes in one script; forgetting folds the counts into the
// retired totals and deletes the record in one script, so two operators
// forgetting at once cannot lose or double a count.

import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  HISTORY_LIMITS,
  historyRecord,
  isRelayHistoryId,
  parseHistoryRecord,
  parseRetired,
  type CountsByTunnel,
  type RecordOutcome,
  type RelayHistory,
  type RelayHistoryStore,
} from '../relay-history.js';
import { StoreError, type StoreLogger } from '../types.js';

const LUA = {
  // KEYS: relay-history. ARGV: id, json, max (0: no ceiling)
  record: `
local max = tonumber(ARGV[3])
if max > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= max then return 'FULL' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'OK'`,
  // KEYS: relay-history, relay-history-retired. ARGV: id
  // Every decode is guarded and every check runs before the first write (a
  // script error does not roll back what it already wrote).
  forget: `
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return 'NOT_FOUND' end
local retired = {}
local r = redis.call('GET', KEYS[2])
if r then
  local ok, dec = pcall(cjson.decode, r)
  if not ok or type(dec) ~= 'table' then return 'CORRUPT' end
  retired = dec
end
local ok, rec = pcall(cjson.decode, e)
if ok and type(rec) == 'table' and type(rec.counts) == 'table' then
  for k, v in pairs(rec.counts) do
    if type(v) == 'table' and type(v.requests) == 'number' and type(v.errors) == 'number' then
      local cur = retired[k]
      local req, err = 0, 0
      if type(cur) == 'table' then req = tonumber(cur.requests) or 0; err = tonumber(cur.errors) or 0 end
      retired[k] = { requests = req + v.requests, errors = err + v.errors }
    end
  end
  redis.call('SET', KEYS[2], cjson.encode(retired))
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 'OK'`,
} as const;

const SHA = Object.fromEntries(Object.entries(LUA).map(([k, v]) => [k, createHash('sha1').update(v).digest('hex')])) as Record<keyof typeof LUA, string>;

export class RedisRelayHistory implements RelayHistoryStore {
  private last: RelayHistory[] = [];
  private readonly warned = new Set<string>();

  constructor(
    private readonly client: Redis,
    private readonly prefix: string,
    private readonly log: StoreLogger,
    private readonly maxRelays: number = HISTORY_LIMITS.relays,
  ) {}

  async recordRelayHistory(h: RelayHistory): Promise<RecordOutcome> {
    const text = historyRecord(h);
    const r = await this.cmd('recordRelayHistory', () => this.script('record', [this.k('relay-history')], [h.id, text, this.maxRelays]));
    return r === 'FULL' ? 'full' : 'recorded';
  }

  async listRelayHistory(): Promise<RelayHistory[]> {
    if (this.client.status !== 'ready') return [...this.last];
    let raw: Record<string, string>;
    try {
      raw = await this.client.hgetall(this.k('relay-history'));
    } catch {
      // Unreachable: the last answer, as the store's other listings do.
      return [...this.last];
    }
    const out: RelayHistory[] = [];
    for (const [id, text] of Object.entries(raw)) {
      const r = parseHistoryRecord(text);
      if (!r.ok || r.value.id !== id) {
        this.warnOnce(id, r.ok ? 'record does not match its field' : r.reason);
        continue;
      }
      out.push(r.value);
    }
    out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.last = out;
    return [...out];
  }

  async forgetRelay(id: string): Promise<void> {
    if (!isRelayHistoryId(id)) throw new StoreError('NOT_FOUND', `no relay ${JSON.stringify(id)} in the fleet history`);
    const r = await this.cmd('forgetRelay', () => this.script('forget', [this.k('relay-history'), this.k('relay-history-retired')], [id]));
    if (r === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no relay ${id} in the fleet history`);
    if (r === 'CORRUPT') throw new StoreError('CORRUPT', `corrupt redis value at ${this.k('relay-history-retired')}: not valid JSON`, { file: this.k('relay-history-retired') });
    this.last = this.last.filter((h) => h.id !== id);
  }

  async retiredCounts(): Promise<CountsByTunnel> {
    const text = await this.cmd('retiredCounts', () => this.client.get(this.k('relay-history-retired')));
    const r = parseRetired(text);
    if (r.ok) return r.value;
    throw new StoreError('CORRUPT', `corrupt redis value at ${this.k('relay-history-retired')}: ${r.reason}`, { file: this.k('relay-history-retired') });
  }

  private k(name: string): string {
    return this.prefix + name;
  }

  private async cmd<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.client.status !== 'ready') throw new StoreError('UNAVAILABLE', `redis store: ${what}: redis is unreachable (${this.client.status})`);
    try {
      return await fn();
    } catch (e) {
      if (e instanceof StoreError) throw e;
      throw new StoreError('UNAVAILABLE', `redis store: ${what}: ${(e as Error).message}`, { cause: e });
    }
  }

  private async script(name: keyof typeof LUA, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.client.evalsha(SHA[name], keys.length, ...keys, ...args);
    } catch (e) {
      if (e instanceof Error && e.message.startsWith('NOSCRIPT')) return this.client.eval(LUA[name], keys.length, ...keys, ...args);
      throw e;
    }
  }

  private warnOnce(id: string, reason: string): void {
    const tag = `${id}:${reason}`;
    if (this.warned.has(tag)) return;
    this.warned.add(tag);
    this.log.warn({ key: this.k('relay-history'), field: id, reason }, 'relay history record is unreadable; skipped');
  }
}
