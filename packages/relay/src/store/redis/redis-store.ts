// The fleet store on Redis (`redis://…`), for any number of relays.
//
// Keys (all under a configurable prefix, default `tunnel:`):
//   accounts            hash  id → Account JSON
//   account-names       hash  name → id                     (HSETNX: names unique)
//   tunnels             hash  id → Tunnel JSON
//   tunnel-names        hash  "<accountId>\n<name>" → id    (HSETNX: unique per account)
//   routes              hash  hostname → Route JSON         (one tunnel per hostname)
//   tunnel-routes:<id>  set   hostnames of a tunnel         (delete cascade)
//   revocations         hash  tokenId → Revocation JSON
//   zones               hash  zone → Zone JSON                (one account per zone)
//   tombstones          hash  tunnelId → Tombstone JSON     (left by deleteTunnel)
//   access              hash  key → AccessRecord JSON       (access-records.ts)
//   meta                string the store's birth record: its absence on a
//                       store that had it means Redis lost its data
//   login:<code>        string PX until expiry; logins (set) indexes the codes
//   relay:<id>          string PX ttl;          relays (set) indexes the ids
//   presence:<relayId>  string PX ttl;          presence-relays (set) indexes them
//   events              pub/sub channel: "<kind>\n<key>\n<record JSON or empty>"
//
// Every multi-key change is one Lua script that also PUBLISHes, so messages
// arrive in the order the changes were made and carry the new record. Each
// process mirrors accounts, tunnels, routes and revocations in memory: the
// per-request reads (getRoute, getTunnel, isRevoked) never touch Redis, and
// keep answering while Redis is down. Writes fail fast with UNAVAILABLE then
// (no offline queue); ioredis reconnects by itself, re-subscribes, and the
// mirror is re-read from Redis (announcing what changed meanwhile).

import { createHash, randomUUID } from 'node:crypto';
import { accessKey, accessRecordSchema, type AccessRecord } from '../access-records.js';
import { Redis, type RedisOptions } from 'ioredis';
import { z } from 'zod';
import {
  StoreError,
  accountSchema,
  byKey,
  loginSessionSchema,
  normalizeHostname,
  presenceSchema,
  relayMemberSchema,
  revocationSchema,
  routeSchema,
  silentLogger,
  tombstoneSchema,
  tunnelSchema,
  zoneSchema,
  type Account,
  type ApprovedLoginSession,
  type LoginSession,
  type NewLoginSession,
  type NewRoute,
  type PendingLoginSession,
  type Presence,
  type PresenceFilter,
  type RelayMember,
  type Revocation,
  type Route,
  type RouteFilter,
  type Store,
  type StoreEvent,
  type StoreEventListener,
  type StoreLogger,
  type Tunnel,
  type Tombstone,
  type NewZone,
  type Zone,
} from '../types.js';
import { conflictFor } from '../file/file-store.js';
import { RedisRelayHistory } from './redis-relay-history.js';
import type { CountsByTunnel, RecordOutcome, RelayHistory } from '../relay-history.js';

export interface RedisStoreOptions {
  logger?: StoreLogger;
  /** Prefix of every key and of the channel (default `tunnel:`). */
  keyPrefix?: string;
  /** How long `open` waits for Redis (default 5000 ms). */
  connectTimeoutMs?: number;
  /** A command that gets no answer in this time fails with UNAVAILABLE (default 2000 ms). */
  commandTimeoutMs?: number;
  /** Longest pause between reconnect attempts (default 1000 ms). */
  maxReconnectDelayMs?: number;
  /** Relays the fleet history remembers at once (default HISTORY_LIMITS.relays; 0: no ceiling). */
  relayHistoryEntries?: number;
}

// --- Lua --------------------------------------------------------------------

const LUA = {
  // KEYS: accounts, account-names. ARGV: id, name, json, channel
  createAccount: `
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return {'CONFLICT', ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'account\\n' .. ARGV[1] .. '\\n' .. ARGV[3])
return {'OK', ARGV[3]}`,
  // KEYS: accounts, tunnels, tunnel-names. ARGV: accountId, id, nameKey, json, channel
  createTunnel: `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {'NOT_FOUND', ''} end
if redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[2]) == 0 then return {'CONFLICT', ''} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], 'tunnel\\n' .. ARGV[2] .. '\\n' .. ARGV[4])
return {'OK', ARGV[4]}`,
  // KEYS: tunnels, tunnel-names, routes, tunnel-routes:<id>, tombstones. ARGV: id, channel, deletedAt
  deleteTunnel: `
local t = redis.call('HGET', KEYS[1], ARGV[1])
if not t then return {'NOT_FOUND', ''} end
local obj = cjson.decode(t)
redis.call('HSET', KEYS[5], ARGV[1], '{"tunnelId":' .. cjson.encode(ARGV[1]) .. ',"accountId":' .. cjson.encode(obj.accountId) .. ',"name":' .. cjson.encode(obj.name) .. ',"deletedAt":' .. ARGV[3] .. '}')
if redis.call('HGET', KEYS[2], obj.accountId .. '\\n' .. obj.name) == ARGV[1] then
  redis.call('HDEL', KEYS[2], obj.accountId .. '\\n' .. obj.name)
end
local hosts = redis.call('SMEMBERS', KEYS[4])
for _, h in ipairs(hosts) do
  local r = redis.call('HGET', KEYS[3], h)
  if r and cjson.decode(r).tunnelId == ARGV[1] then
    redis.call('HDEL', KEYS[3], h)
    redis.call('PUBLISH', ARGV[2], 'route\\n' .. h .. '\\n')
  end
end
redis.call('DEL', KEYS[4])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'tunnel-deleted\\n' .. ARGV[1] .. '\\n' .. t)
return {'OK', t}`,
  // KEYS: tunnels, routes, tunnel-routes:<tunnelId>. ARGV: tunnelId, accountId, hostname, json, channel
  addRoute: `
local t = redis.call('HGET', KEYS[1], ARGV[1])
if not t or cjson.decode(t).accountId ~= ARGV[2] then return {'NOT_FOUND', ''} end
local e = redis.call('HGET', KEYS[2], ARGV[3])
if e then
  local eo = cjson.decode(e)
  if eo.tunnelId == ARGV[1] then return {'EXISTS', e} end
  return {'CONFLICT', e}
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[5], 'route\\n' .. ARGV[3] .. '\\n' .. ARGV[4])
return {'OK', ARGV[4]}`,
  // KEYS: routes. ARGV: hostname, channel, tunnel-routes key prefix
  deleteRoute: `
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return {'NOT_FOUND', ''} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', ARGV[3] .. cjson.decode(e).tunnelId, ARGV[1])
redis.call('PUBLISH', ARGV[2], 'route\\n' .. ARGV[1] .. '\\n')
return {'OK', e}`,
  // KEYS: accounts, zones. ARGV: zone, accountId, json, channel
  addZone: `
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return {'NOT_FOUND', ''} end
local e = redis.call('HGET', KEYS[2], ARGV[1])
if e then
  if cjson.decode(e).accountId == ARGV[2] then return {'EXISTS', e} end
  return {'CONFLICT', ''}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'zone\\n' .. ARGV[1] .. '\\n' .. ARGV[3])
return {'OK', ARGV[3]}`,
  // KEYS: access. ARGV: key, json, channel
  putAccess: `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'access\\n' .. ARGV[1] .. '\\n' .. ARGV[2])
return {'OK', ''}`,
  // KEYS: access. ARGV: key, channel
  deleteAccess: `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {'NOT_FOUND', ''} end
redis.call('PUBLISH', ARGV[2], 'access\\n' .. ARGV[1] .. '\\n')
return {'OK', ''}`,
  // KEYS: zones. ARGV: zone, channel
  deleteZone: `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {'NOT_FOUND', ''} end
redis.call('PUBLISH', ARGV[2], 'zone\\n' .. ARGV[1] .. '\\n')
return {'OK', ''}`,
  // KEYS: revocations. ARGV: tokenId, json, expiresAt, channel
  // KEYS: revocations. ARGV: tokenId, json, expiresAt, channel, effectiveAt.
  // Of two revocations the earlier effective time and the later expiry win.
  revoke: `
local e = redis.call('HGET', KEYS[1], ARGV[1])
local json = ARGV[2]
if e then
  local old = cjson.decode(e)
  local exp = math.max(tonumber(old.expiresAt), tonumber(ARGV[3]))
  local eff = math.min(tonumber(old.revokedAt), tonumber(ARGV[5]))
  if exp == tonumber(old.expiresAt) and eff == tonumber(old.revokedAt) then return {'OK', e} end
  json = '{"tokenId":' .. cjson.encode(ARGV[1]) .. ',"expiresAt":' .. string.format('%d', exp) .. ',"revokedAt":' .. string.format('%d', eff) .. '}'
end
redis.call('HSET', KEYS[1], ARGV[1], json)
redis.call('PUBLISH', ARGV[4], 'revoked\\n' .. ARGV[1] .. '\\n' .. json)
return {'OK', json}`,
  // KEYS: revocations. ARGV: tokenId, json, channel
  revokeOnce: `
local e = redis.call('HGET', KEYS[1], ARGV[1])
if e then return {'EXISTS', e} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'revoked\\n' .. ARGV[1] .. '\\n' .. ARGV[2])
return {'OK', ARGV[2]}`,
  // KEYS: login:<code>, logins. ARGV: json, px, code, channel
  createLogin: `
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'CONFLICT', ''} end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'login\\n' .. ARGV[3] .. '\\n')
return {'OK', ARGV[1]}`,
  // Compare-and-set of a login session. KEYS: login:<code>. ARGV: old json, new json, channel, code
  casLogin: `
local cur = redis.call('GET', KEYS[1])
if not cur then return {'NOT_FOUND', ''} end
if cur ~= ARGV[1] then return {'CHANGED', cur} end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('PUBLISH', ARGV[3], 'login\\n' .. ARGV[4] .. '\\n')
return {'OK', ARGV[2]}`,
  // KEYS: login:<code>, logins. ARGV: code, channel
  deleteLogin: `
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('PUBLISH', ARGV[2], 'login\\n' .. ARGV[1] .. '\\n') end
return {'OK', ''}`,
  // Values of an indexed family of keys with TTL; prunes index entries whose key expired.
  // KEYS: index set. ARGV: key prefix
  gather: `
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then table.insert(out, v) else redis.call('SREM', KEYS[1], id) end
end
return out`,
  // KEYS: presence:<relayId>, presence-relays. ARGV: json, px, relayId, channel
  // Announces only a changed set.
  putPresence: `
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if old ~= ARGV[1] then redis.call('PUBLISH', ARGV[4], 'presence\\n' .. ARGV[3] .. '\\n') end
return {'OK', ''}`,
  // KEYS: relay:<id>, relays, meta. ARGV: json, px, id, channel
  // Announces a new member or a changed draining flag (not every heartbeat).
  // Answers whether the store's meta record is still there: a wipe check that
  // costs nothing extra, as relays heartbeat every few seconds anyway.
  heartbeat: `
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if not old or cjson.decode(old).draining ~= cjson.decode(ARGV[1]).draining then
  redis.call('PUBLISH', ARGV[4], 'relay\\n' .. ARGV[3] .. '\\n')
end
return {'OK', tostring(redis.call('EXISTS', KEYS[3]))}`,
  // KEYS: relay:<id>, relays, presence:<id>, presence-relays. ARGV: id, channel
  removeRelay: `
local a = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
local b = redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
if a > 0 then redis.call('PUBLISH', ARGV[2], 'relay\\n' .. ARGV[1] .. '\\n') end
if b > 0 then redis.call('PUBLISH', ARGV[2], 'presence\\n' .. ARGV[1] .. '\\n') end
return {'OK', ''}`,
} as const;

type ScriptName = keyof typeof LUA;
const SHA: Record<ScriptName, string> = Object.fromEntries(
  Object.entries(LUA).map(([k, v]) => [k, createHash('sha1').update(v).digest('hex')]),
) as Record<ScriptName, string>;

// Presence is stored per relay without timestamps of its own, so a refresh
// with the same set does not announce a change.
const presenceRecordSchema = z.strictObject({ relayId: z.string().min(1), presences: z.array(presenceSchema) });
type PresenceRecord = z.infer<typeof presenceRecordSchema>;

function isConnectionError(err: unknown): boolean {
  return !(err instanceof StoreError) && !(err instanceof Error && err.name === 'ReplyError');
}

export class RedisStore implements Store {
  readonly kind = 'redis' as const;

  private readonly log: StoreLogger;
  private readonly prefix: string;
  private readonly channel: string;
  private readonly listeners = new Set<StoreEventListener>();
  private closed = false;
  private warmed = false;
  private warmTimer: NodeJS.Timeout | undefined;
  private warming: Promise<void> | undefined;
  private lastErrorLogged = '';
  /** Messages received while a warm-up read is in flight, replayed on top of its snapshot. */
  private warmBuffer: string[] | undefined;

  // The mirror.
  private readonly accounts = new Map<string, Account>();
  private readonly tunnels = new Map<string, Tunnel>();
  private readonly routes = new Map<string, Route>();
  private readonly revocations = new Map<string, Revocation>();
  private readonly zones = new Map<string, Zone>();
  private readonly access = new Map<string, AccessRecord>();
  /** Set once the store has seen its meta record: from then on its absence means data loss. */
  private sawMeta = false;
  // Last answers, served while Redis is unreachable.
  private lastRelays: RelayMember[] = [];
  private lastPresence: Presence[] = [];

  private constructor(
    private readonly client: Redis,
    private readonly sub: Redis,
    opts: RedisStoreOptions,
  ) {
    this.log = opts.logger ?? silentLogger;
    this.prefix = opts.keyPrefix ?? 'tunnel:';
    this.channel = `${this.prefix}events`;
    this.history = new RedisRelayHistory(client, this.prefix, this.log, opts.relayHistoryEntries);
  }

  private readonly history: RedisRelayHistory;

  /** The client and key prefix, for fleet-wide rate limits kept next to the store's keys. */
  sharedRedis(): { client: Redis; keyPrefix: string } {
    return { client: this.client, keyPrefix: this.prefix };
  }

  static async open(url: string, opts: RedisStoreOptions = {}): Promise<RedisStore> {
    const maxDelay = opts.maxReconnectDelayMs ?? 1000;
    const options: RedisOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: true,
      maxRetriesPerRequest: 0,
      connectTimeout: opts.connectTimeoutMs ?? 5000,
      commandTimeout: opts.commandTimeoutMs ?? 2000,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), maxDelay),
    };
    const client = new Redis(url, { ...options, connectionName: 'tunnel-store' });
    const sub = new Redis(url, { ...options, connectionName: 'tunnel-store-sub', commandTimeout: undefined });
    const store = new RedisStore(client, sub, opts);
    try {
      await store.connect(opts.connectTimeoutMs ?? 5000);
    } catch (err) {
      client.disconnect();
      sub.disconnect();
      throw err instanceof StoreError ? err : new StoreError('UNAVAILABLE', `redis store: cannot connect: ${(err as Error).message}`, { cause: err });
    }
    return store;
  }

  private async connect(timeoutMs: number): Promise<void> {
    for (const [conn, name] of [
      [this.client, 'client'],
      [this.sub, 'subscriber'],
    ] as const) {
      conn.on('error', (err: Error) => this.logConnError(name, err));
      conn.on('ready', () => {
        if (this.warmed) {
          this.log.info({ conn: name }, 'redis store reconnected');
          this.lastErrorLogged = '';
          this.scheduleWarm(50);
        }
      });
      conn.on('end', () => {
        if (!this.closed) this.log.warn({ conn: name }, 'redis store connection ended');
      });
    }
    this.sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.onMessage(message);
    });
    const ready = (conn: Redis) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new StoreError('UNAVAILABLE', `redis store: no connection within ${timeoutMs} ms`)), timeoutMs);
        conn.once('ready', () => {
          clearTimeout(t);
          resolve();
        });
        conn.connect().catch(() => {
          /* retried by retryStrategy; the timeout decides */
        });
      });
    await Promise.all([ready(this.client), ready(this.sub)]);
    await this.sub.subscribe(this.channel);
    await this.warm();
    this.warmed = true;
  }

  private logConnError(conn: string, err: Error): void {
    const msg = `${conn}:${err.message}`;
    if (msg === this.lastErrorLogged || this.closed) return;
    this.lastErrorLogged = msg;
    this.log.warn({ conn, err: err.message }, 'redis store connection error');
  }

  private scheduleWarm(delayMs: number): void {
    if (this.closed || this.warmTimer) return;
    this.warmTimer = setTimeout(() => {
      this.warmTimer = undefined;
      this.warm().catch((err: unknown) => {
        this.log.warn({ err: (err as Error).message }, 'redis store: re-reading state failed; retrying');
        this.scheduleWarm(500);
      });
    }, delayMs);
    this.warmTimer.unref();
  }

  /** Re-reads the mirrored collections, announcing what changed. */
  private warm(): Promise<void> {
    this.warming ??= this.doWarm().finally(() => {
      this.warming = undefined;
    });
    return this.warming;
  }

  private async doWarm(): Promise<void> {
    this.warmBuffer = [];
    try {
      await this.installSnapshot();
      // A message may have overtaken the snapshot reply (two connections):
      // replaying them in publish order on top of it is always correct.
      for (const m of this.warmBuffer) this.applyMessage(m, false);
    } finally {
      this.warmBuffer = undefined;
    }
    // Drop revocations of tokens that have expired anyway (best effort).
    const stale = [...this.revocations.values()].filter((r) => r.expiresAt < Date.now() - 60_000).map((r) => r.tokenId);
    if (stale.length > 0) await this.client.hdel(this.k('revocations'), ...stale).catch(() => {});
  }

  private async installSnapshot(): Promise<void> {
    const res = await this.client
      .multi()
      .hgetall(this.k('accounts'))
      .hgetall(this.k('tunnels'))
      .hgetall(this.k('routes'))
      .hgetall(this.k('revocations'))
      .hgetall(this.k('zones'))
      .hgetall(this.k('access'))
      .get(this.k('meta'))
      .exec();
    if (!res) throw new Error('transaction aborted');
    const values = res.map(([err, v]) => {
      if (err) throw err;
      return v;
    });
    const [accounts, tunnels, routes, revocations, zones, access, meta] = values as [
      Record<string, string>,
      Record<string, string>,
      Record<string, string>,
      Record<string, string>,
      Record<string, string>,
      Record<string, string>,
      string | null,
    ];
    await this.checkMeta(meta !== null);
    const announce = this.warmed;
    const events: StoreEvent[] = [];
    const sync = <T>(
      map: Map<string, T>,
      raw: Record<string, string>,
      schema: z.ZodType<T>,
      hash: string,
      onAdd: (key: string, v: T) => StoreEvent | undefined,
      onRemove: (key: string, v: T) => StoreEvent | undefined,
    ) => {
      const next = new Map<string, T>();
      for (const [key, json] of Object.entries(raw)) next.set(key, this.parse(schema, json, `${this.k(hash)}[${key}]`));
      for (const [key, v] of map) {
        if (!next.has(key)) {
          const e = onRemove(key, v);
          if (e) events.push(e);
        }
      }
      for (const [key, v] of next) {
        if (!map.has(key) || JSON.stringify(map.get(key)) !== JSON.stringify(v)) {
          const e = onAdd(key, v);
          if (e) events.push(e);
        }
      }
      map.clear();
      for (const [key, v] of next) map.set(key, v);
    };
    sync(this.accounts, accounts, accountSchema, 'accounts', (id) => ({ type: 'account', accountId: id }), () => undefined);
    const gone: Tunnel[] = [];
    sync(
      this.tunnels,
      tunnels,
      tunnelSchema,
      'tunnels',
      (id) => ({ type: 'tunnel', tunnelId: id }),
      (_id, t) => void gone.push(t),
    );
    sync(this.zones, zones, zoneSchema, 'zones', (z) => ({ type: 'zone', zone: z }), (z) => ({ type: 'zone', zone: z }));
    if (gone.length > 0) {
      // Gone while we were not listening: deleted (tombstone) or lost with the data.
      const stones = await this.client.hmget(this.k('tombstones'), ...gone.map((t) => t.id));
      gone.forEach((t, i) =>
        events.push({ type: stones[i] === null ? 'tunnel-vanished' : 'tunnel-deleted', tunnelId: t.id, accountId: t.accountId }),
      );
    }
    sync(this.routes, routes, routeSchema, 'routes', (h) => ({ type: 'route', hostname: h }), (h) => ({ type: 'route', hostname: h }));
    sync(this.revocations, revocations, revocationSchema, 'revocations', (id) => ({ type: 'revoked', tokenId: id }), () => undefined);
    sync(this.access, access, accessRecordSchema, 'access', (key) => ({ type: 'access', key }), (key) => ({ type: 'access', key }));
    if (announce) for (const e of events) this.emit(e);
  }

  /**
   * The meta record is written when the store is first used. A store that
   * has seen it and then finds it missing has lost its data (Redis restarted
   * without persistence, or was flushed): say so loudly, write it again, and
   * re-read everything (tunnels gone without a tombstone are announced as
   * vanished, never as deleted).
   */
  private async checkMeta(present: boolean): Promise<void> {
    if (present) {
      this.sawMeta = true;
      return;
    }
    if (this.sawMeta) {
      this.log.warn(
        { event: 'store-wiped', keyPrefix: this.prefix },
        'redis store: store looks empty or wiped (its meta record is gone: Redis restarted without persistence, or was flushed); tunnels it no longer knows are refused as tunnel_unknown, not deleted; restore the data or run Redis with appendonly yes',
      );
    }
    await this.client.set(this.k('meta'), JSON.stringify({ format: 1, createdAt: Date.now() }), 'NX');
    this.sawMeta = true;
  }

  private k(name: string): string {
    return this.prefix + name;
  }

  private parse<T>(schema: z.ZodType<T>, json: string, where: string): T {
    let v: unknown;
    try {
      v = JSON.parse(json);
    } catch {
      throw new StoreError('CORRUPT', `corrupt redis value at ${where}: not valid JSON`, { file: where });
    }
    const r = schema.safeParse(v);
    if (!r.success) throw new StoreError('CORRUPT', `corrupt redis value at ${where}: ${r.error.issues.map((i) => i.message).join('; ')}`, { file: where });
    return r.data;
  }

  // --- events ---------------------------------------------------------------

  private onMessage(message: string): void {
    this.warmBuffer?.push(message);
    this.applyMessage(message, true);
  }

  /** Applies a change message to the mirror and (optionally) announces it. */
  private applyMessage(message: string, announce: boolean): void {
    const emit = (e: StoreEvent): void => {
      if (announce) this.emit(e);
    };
    const nl1 = message.indexOf('\n');
    const nl2 = message.indexOf('\n', nl1 + 1);
    if (nl1 < 0 || nl2 < 0) return;
    const kind = message.slice(0, nl1);
    const key = message.slice(nl1 + 1, nl2);
    const json = message.slice(nl2 + 1);
    try {
      switch (kind) {
        case 'account':
          this.accounts.set(key, this.parse(accountSchema, json, 'event'));
          return emit({ type: 'account', accountId: key });
        case 'tunnel':
          this.tunnels.set(key, this.parse(tunnelSchema, json, 'event'));
          return emit({ type: 'tunnel', tunnelId: key });
        case 'tunnel-deleted': {
          const t = this.parse(tunnelSchema, json, 'event');
          this.tunnels.delete(key);
          for (const [h, r] of this.routes) if (r.tunnelId === key) this.routes.delete(h);
          return emit({ type: 'tunnel-deleted', tunnelId: key, accountId: t.accountId });
        }
        case 'route':
          if (json === '') this.routes.delete(key);
          else this.routes.set(key, this.parse(routeSchema, json, 'event'));
          return emit({ type: 'route', hostname: key });
        case 'zone':
          if (json === '') this.zones.delete(key);
          else this.zones.set(key, this.parse(zoneSchema, json, 'event'));
          return emit({ type: 'zone', zone: key });
        case 'access':
          if (json === '') this.access.delete(key);
          else this.access.set(key, this.parse(accessRecordSchema, json, 'event'));
          return emit({ type: 'access', key });
        case 'revoked':
          this.revocations.set(key, this.parse(revocationSchema, json, 'event'));
          return emit({ type: 'revoked', tokenId: key });
        case 'login':
          return emit({ type: 'login', code: key });
        case 'relay':
          return emit({ type: 'relay', relayId: key });
        case 'presence':
          return emit({ type: 'presence', relayId: key });
        default:
          return;
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message, kind, key }, 'redis store: bad event message');
    }
  }

  private emit(event: StoreEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.log.warn({ err: String(err), event }, 'store event listener threw');
      }
    }
  }

  subscribe(listener: StoreEventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  // --- command plumbing -------------------------------------------------------

  private check(): void {
    if (this.closed) throw new StoreError('UNAVAILABLE', 'redis store is closed');
  }

  private get up(): boolean {
    return this.client.status === 'ready';
  }

  /** Runs Redis commands; connection trouble becomes StoreError UNAVAILABLE. */
  private async cmd<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.check();
    if (!this.up) throw new StoreError('UNAVAILABLE', `redis store: ${what}: redis is unreachable (${this.client.status})`);
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError('UNAVAILABLE', `redis store: ${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** A read that falls back to the mirror while Redis is unreachable. */
  private async read<T>(what: string, fn: () => Promise<T>, fallback: () => T): Promise<T> {
    this.check();
    if (!this.up) return fallback();
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      if (isConnectionError(err)) {
        this.log.debug({ what, err: (err as Error).message }, 'redis store: read served from memory');
        return fallback();
      }
      throw new StoreError('UNAVAILABLE', `redis store: ${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.client.evalsha(SHA[name], keys.length, ...keys, ...args);
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('NOSCRIPT')) {
        return this.client.eval(LUA[name], keys.length, ...keys, ...args);
      }
      throw err;
    }
  }

  private async run(name: ScriptName, keys: string[], args: (string | number)[]): Promise<[string, string]> {
    const r = (await this.cmd(name, () => this.script(name, keys, args))) as [string, string];
    return r;
  }

  // --- accounts ------------------------------------------------------------------

  async createAccount(name: string): Promise<Account> {
    const account: Account = { id: randomUUID(), name, createdAt: Date.now() };
    const json = JSON.stringify(account);
    const [status] = await this.run('createAccount', [this.k('accounts'), this.k('account-names')], [account.id, name, json, this.channel]);
    if (status === 'CONFLICT') throw new StoreError('CONFLICT', `an account named ${JSON.stringify(name)} already exists`);
    this.accounts.set(account.id, account);
    return account;
  }

  async getAccount(id: string): Promise<Account | undefined> {
    return this.read(
      'getAccount',
      async () => {
        const json = await this.client.hget(this.k('accounts'), id);
        return json === null ? undefined : this.parse(accountSchema, json, `${this.k('accounts')}[${id}]`);
      },
      () => this.accounts.get(id),
    );
  }

  async getAccountByName(name: string): Promise<Account | undefined> {
    return this.read(
      'getAccountByName',
      async () => {
        const id = await this.client.hget(this.k('account-names'), name);
        return id === null ? undefined : this.getAccount(id);
      },
      () => [...this.accounts.values()].find((a) => a.name === name),
    );
  }

  async listAccounts(): Promise<Account[]> {
    const all = await this.read(
      'listAccounts',
      async () => Object.entries(await this.client.hgetall(this.k('accounts'))).map(([id, j]) => this.parse(accountSchema, j, `${this.k('accounts')}[${id}]`)),
      () => [...this.accounts.values()],
    );
    return all.sort(byKey((a) => a.name));
  }

  // --- tunnels ---------------------------------------------------------------------

  async createTunnel(accountId: string, name: string): Promise<Tunnel> {
    const tunnel: Tunnel = { id: randomUUID(), accountId, name, createdAt: Date.now() };
    const json = JSON.stringify(tunnel);
    const [status] = await this.run(
      'createTunnel',
      [this.k('accounts'), this.k('tunnels'), this.k('tunnel-names')],
      [accountId, tunnel.id, `${accountId}\n${name}`, json, this.channel],
    );
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no account ${accountId}`);
    if (status === 'CONFLICT') throw new StoreError('CONFLICT', `a tunnel named ${JSON.stringify(name)} already exists`);
    this.tunnels.set(tunnel.id, tunnel);
    return tunnel;
  }

  async getTunnel(id: string): Promise<Tunnel | undefined> {
    this.check();
    const t = this.tunnels.get(id);
    if (t || !this.up) return t;
    // Miss: it may have been created elsewhere a moment ago.
    try {
      const json = await this.client.hget(this.k('tunnels'), id);
      if (json === null) return undefined;
      const fresh = this.parse(tunnelSchema, json, `${this.k('tunnels')}[${id}]`);
      this.tunnels.set(id, fresh);
      return fresh;
    } catch (err) {
      if (err instanceof StoreError) throw err;
      if (isConnectionError(err)) return undefined;
      throw new StoreError('UNAVAILABLE', `redis store: getTunnel: ${(err as Error).message}`, { cause: err });
    }
  }

  async getTunnelByName(accountId: string, name: string): Promise<Tunnel | undefined> {
    return this.read(
      'getTunnelByName',
      async () => {
        const id = await this.client.hget(this.k('tunnel-names'), `${accountId}\n${name}`);
        if (id === null) return undefined;
        const json = await this.client.hget(this.k('tunnels'), id);
        return json === null ? undefined : this.parse(tunnelSchema, json, `${this.k('tunnels')}[${id}]`);
      },
      () => [...this.tunnels.values()].find((t) => t.accountId === accountId && t.name === name),
    );
  }

  async listTunnels(accountId?: string): Promise<Tunnel[]> {
    const all = await this.read(
      'listTunnels',
      async () => Object.entries(await this.client.hgetall(this.k('tunnels'))).map(([id, j]) => this.parse(tunnelSchema, j, `${this.k('tunnels')}[${id}]`)),
      () => [...this.tunnels.values()],
    );
    return all
      .filter((t) => accountId === undefined || t.accountId === accountId)
      .sort((a, b) => a.createdAt - b.createdAt || byKey<Tunnel>((t) => t.name)(a, b));
  }

  async deleteTunnel(id: string): Promise<void> {
    const [status] = await this.run(
      'deleteTunnel',
      [this.k('tunnels'), this.k('tunnel-names'), this.k('routes'), this.k(`tunnel-routes:${id}`), this.k('tombstones')],
      [id, this.channel, Date.now()],
    );
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
    this.tunnels.delete(id);
    for (const [h, r] of this.routes) if (r.tunnelId === id) this.routes.delete(h);
  }

  async getTombstone(tunnelId: string): Promise<Tombstone | undefined> {
    const json = await this.cmd('getTombstone', () => this.client.hget(this.k('tombstones'), tunnelId));
    return json === null ? undefined : this.parse(tombstoneSchema, json, `${this.k('tombstones')}[${tunnelId}]`);
  }

  // --- access ------------------------------------------------------------------------

  async putAccessRecord(record: AccessRecord): Promise<void> {
    const r = accessRecordSchema.parse(record);
    const key = accessKey(r);
    await this.run('putAccess', [this.k('access')], [key, JSON.stringify(r), this.channel]);
    this.access.set(key, r);
  }

  async getAccessRecord(key: string): Promise<AccessRecord | undefined> {
    return this.access.get(key);
  }

  async listAccessRecords(): Promise<AccessRecord[]> {
    const all = await this.read(
      'listAccessRecords',
      async () => Object.entries(await this.client.hgetall(this.k('access'))).map(([k, j]) => this.parse(accessRecordSchema, j, `${this.k('access')}[${k}]`)),
      () => [...this.access.values()],
    );
    return all.sort(byKey(accessKey));
  }

  async deleteAccessRecord(key: string): Promise<boolean> {
    const [status] = await this.run('deleteAccess', [this.k('access')], [key, this.channel]);
    this.access.delete(key);
    return status !== 'NOT_FOUND';
  }

  // --- zones -------------------------------------------------------------------------

  async addZone(input: NewZone): Promise<Zone> {
    const name = normalizeHostname(input.zone);
    if (name.startsWith('*.')) throw new TypeError(`a zone is a plain name, not a wildcard: ${name}`);
    const zone: Zone = { zone: name, accountId: input.accountId, source: input.source, createdAt: Date.now() };
    const [status, payload] = await this.run('addZone', [this.k('accounts'), this.k('zones')], [name, zone.accountId, JSON.stringify(zone), this.channel]);
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no account ${zone.accountId}`);
    if (status === 'CONFLICT') throw new StoreError('CONFLICT', `zone ${name} is held by another account`);
    const stored = status === 'EXISTS' ? this.parse(zoneSchema, payload, `${this.k('zones')}[${name}]`) : zone;
    this.zones.set(name, stored);
    return stored;
  }

  async getZone(zone: string): Promise<Zone | undefined> {
    return this.zones.get(zone.toLowerCase());
  }

  async listZones(filter: { readonly accountId?: string } = {}): Promise<Zone[]> {
    const all = await this.read(
      'listZones',
      async () => Object.entries(await this.client.hgetall(this.k('zones'))).map(([z, j]) => this.parse(zoneSchema, j, `${this.k('zones')}[${z}]`)),
      () => [...this.zones.values()],
    );
    return all.filter((z) => filter.accountId === undefined || z.accountId === filter.accountId).sort(byKey((z) => z.zone));
  }

  async deleteZone(zone: string): Promise<void> {
    const z = zone.trim().toLowerCase().replace(/\.$/, '');
    const [status] = await this.run('deleteZone', [this.k('zones')], [z, this.channel]);
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `nobody holds zone ${z}`);
    this.zones.delete(z);
  }

  // --- routes ------------------------------------------------------------------------

  async addRoute(input: NewRoute): Promise<Route> {
    const hostname = normalizeHostname(input.hostname);
    const route: Route = { hostname, tunnelId: input.tunnelId, accountId: input.accountId, createdAt: Date.now() };
    const json = JSON.stringify(route);
    const [status, payload] = await this.run(
      'addRoute',
      [this.k('tunnels'), this.k('routes'), this.k(`tunnel-routes:${input.tunnelId}`)],
      [input.tunnelId, input.accountId, hostname, json, this.channel],
    );
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no tunnel ${input.tunnelId}`);
    if (status === 'CONFLICT') {
      const existing = this.parse(routeSchema, payload, `${this.k('routes')}[${hostname}]`);
      throw conflictFor(hostname, existing, input.accountId, this.tunnels.get(existing.tunnelId));
    }
    const stored = status === 'EXISTS' ? this.parse(routeSchema, payload, `${this.k('routes')}[${hostname}]`) : route;
    this.routes.set(hostname, stored);
    return stored;
  }

  async getRoute(hostname: string): Promise<Route | undefined> {
    return this.routes.get(hostname.toLowerCase());
  }

  async listRoutes(filter: RouteFilter = {}): Promise<Route[]> {
    const all = await this.read(
      'listRoutes',
      async () => Object.entries(await this.client.hgetall(this.k('routes'))).map(([h, j]) => this.parse(routeSchema, j, `${this.k('routes')}[${h}]`)),
      () => [...this.routes.values()],
    );
    return all
      .filter((r) => (filter.accountId === undefined || r.accountId === filter.accountId) && (filter.tunnelId === undefined || r.tunnelId === filter.tunnelId))
      .sort(byKey((r) => r.hostname));
  }

  async deleteRoute(hostname: string): Promise<void> {
    const h = hostname.trim().toLowerCase().replace(/\.$/, '');
    const [status] = await this.run('deleteRoute', [this.k('routes')], [h, this.channel, this.k('tunnel-routes:')]);
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no route for ${h}`);
    this.routes.delete(h);
  }

  // --- revocations -----------------------------------------------------------------

  async revoke(tokenId: string, expiresAtMs: number, effectiveAtMs = Date.now()): Promise<void> {
    const rec: Revocation = { tokenId, expiresAt: Math.max(0, Math.ceil(expiresAtMs)), revokedAt: Math.max(0, Math.ceil(effectiveAtMs)) };
    const [, json] = await this.run('revoke', [this.k('revocations')], [tokenId, JSON.stringify(rec), rec.expiresAt, this.channel, rec.revokedAt]);
    this.revocations.set(tokenId, this.parse(revocationSchema, json, `${this.k('revocations')}[${tokenId}]`));
  }

  async revokeOnce(tokenId: string, expiresAtMs: number): Promise<boolean> {
    const rec: Revocation = { tokenId, expiresAt: Math.max(0, Math.ceil(expiresAtMs)), revokedAt: Date.now() };
    const [status, json] = await this.run('revokeOnce', [this.k('revocations')], [tokenId, JSON.stringify(rec), this.channel]);
    // Either way the record (ours or the winner's) is mirrored now, not when pub/sub catches up.
    this.revocations.set(tokenId, this.parse(revocationSchema, json, `${this.k('revocations')}[${tokenId}]`));
    return status === 'OK';
  }

  async isRevoked(tokenId: string): Promise<boolean> {
    const r = this.revocations.get(tokenId);
    return r !== undefined && r.revokedAt <= Date.now();
  }

  async claimNonce(key: string, ttlMs: number): Promise<boolean> {
    const r = await this.cmd('claimNonce', () => this.client.set(this.k(`nonce:${key}`), '1', 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX'));
    return r === 'OK';
  }

  async listRevocations(): Promise<Revocation[]> {
    const all = await this.read(
      'listRevocations',
      async () =>
        Object.entries(await this.client.hgetall(this.k('revocations'))).map(([id, j]) => this.parse(revocationSchema, j, `${this.k('revocations')}[${id}]`)),
      () => [...this.revocations.values()],
    );
    return all.sort(byKey((r) => r.tokenId));
  }

  // --- login sessions ------------------------------------------------------------------

  async createLoginSession(s: NewLoginSession): Promise<PendingLoginSession> {
    const session: PendingLoginSession = {
      code: s.code,
      boxPublicKey: s.boxPublicKey,
      createdAt: s.createdAt ?? Date.now(),
      expiresAt: s.expiresAt,
      state: 'pending',
    };
    const px = Math.max(1, session.expiresAt - Date.now());
    const [status] = await this.run('createLogin', [this.k(`login:${s.code}`), this.k('logins')], [JSON.stringify(session), px, s.code, this.channel]);
    if (status === 'CONFLICT') throw new StoreError('CONFLICT', `login code ${s.code} is in use`);
    return session;
  }

  private async readLogin(code: string): Promise<{ json: string; session: LoginSession } | undefined> {
    const json = await this.cmd('getLoginSession', () => this.client.get(this.k(`login:${code}`)));
    if (json === null) return undefined;
    const session = this.parse(loginSessionSchema, json, this.k(`login:${code}`)) as LoginSession;
    if (session.expiresAt <= Date.now()) return undefined;
    return { json, session };
  }

  async getLoginSession(code: string): Promise<LoginSession | undefined> {
    return (await this.readLogin(code))?.session;
  }

  async approveLoginSession(code: string, accountId: string, sealedCredential: string): Promise<ApprovedLoginSession> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const cur = await this.readLogin(code);
      if (!cur) throw new StoreError('NOT_FOUND', `no pending login with code ${code} (unknown or expired)`);
      if (cur.session.state === 'approved') throw new StoreError('CONFLICT', `login ${code} is already approved`);
      const approved: ApprovedLoginSession = { ...cur.session, state: 'approved', accountId, sealedCredential };
      const [status] = await this.run('casLogin', [this.k(`login:${code}`)], [cur.json, JSON.stringify(approved), this.channel, code]);
      if (status === 'OK') return approved;
      if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no pending login with code ${code} (unknown or expired)`);
    }
    throw new StoreError('CONFLICT', `login ${code} is already approved`);
  }

  async deleteLoginSession(code: string): Promise<void> {
    await this.run('deleteLogin', [this.k(`login:${code}`), this.k('logins')], [code, this.channel]);
  }

  async listLoginSessions(): Promise<PendingLoginSession[]> {
    const raw = (await this.cmd('listLoginSessions', () => this.script('gather', [this.k('logins')], [this.k('login:')]))) as string[];
    const now = Date.now();
    return raw
      .map((j) => this.parse(loginSessionSchema, j, this.k('login:*')) as LoginSession)
      .filter((s): s is PendingLoginSession => s.state === 'pending' && s.expiresAt > now)
      .sort((a, b) => a.createdAt - b.createdAt || byKey<PendingLoginSession>((x) => x.code)(a, b));
  }

  // --- membership and presence -------------------------------------------------------

  async heartbeatRelay(member: RelayMember, ttlMs: number): Promise<void> {
    const rec: RelayMember = { ...member, lastSeen: Date.now() };
    const [, metaExists] = await this.run(
      'heartbeat',
      [this.k(`relay:${member.id}`), this.k('relays'), this.k('meta')],
      [JSON.stringify(rec), Math.max(1, Math.round(ttlMs)), member.id, this.channel],
    );
    // FLUSHALL under a running fleet: no reconnect tells us, the heartbeat does.
    if (metaExists === '0' && this.sawMeta && this.warmed) this.scheduleWarm(0);
  }

  async removeRelay(id: string): Promise<void> {
    await this.run(
      'removeRelay',
      [this.k(`relay:${id}`), this.k('relays'), this.k(`presence:${id}`), this.k('presence-relays')],
      [id, this.channel],
    );
  }

  async listRelays(): Promise<RelayMember[]> {
    const list = await this.read(
      'listRelays',
      async () => {
        const raw = (await this.script('gather', [this.k('relays')], [this.k('relay:')])) as string[];
        const members = raw.map((j) => this.parse(relayMemberSchema, j, this.k('relay:*'))).sort(byKey((m) => m.id));
        this.lastRelays = members;
        return members;
      },
      () => this.lastRelays,
    );
    return [...list];
  }

  async putPresence(relayId: string, presences: readonly Presence[], ttlMs: number): Promise<void> {
    const rec: PresenceRecord = { relayId, presences: presences.map((p) => ({ ...p, relayId })) };
    await this.run(
      'putPresence',
      [this.k(`presence:${relayId}`), this.k('presence-relays')],
      [JSON.stringify(rec), Math.max(1, Math.round(ttlMs)), relayId, this.channel],
    );
  }

  async listPresence(filter: PresenceFilter = {}): Promise<Presence[]> {
    const all = await this.read(
      'listPresence',
      async () => {
        const raw = (await this.script('gather', [this.k('presence-relays')], [this.k('presence:')])) as string[];
        const out: Presence[] = [];
        for (const j of raw) {
          const rec = this.parse(presenceRecordSchema, j, this.k('presence:*'));
          out.push(...rec.presences);
        }
        out.sort(byKey((p) => `${p.relayId}\n${p.connectionId}`));
        this.lastPresence = out;
        return out;
      },
      () => this.lastPresence,
    );
    return all.filter((p) => (filter.relayId === undefined || p.relayId === filter.relayId) && (filter.tunnelId === undefined || p.tunnelId === filter.tunnelId));
  }

  // --- relay history (redis-relay-history.ts) ---------------------------------------------

  recordRelayHistory(h: RelayHistory): Promise<RecordOutcome> {
    this.check();
    return this.history.recordRelayHistory(h);
  }
  listRelayHistory(): Promise<RelayHistory[]> {
    this.check();
    return this.history.listRelayHistory();
  }
  forgetRelay(id: string): Promise<void> {
    this.check();
    return this.history.forgetRelay(id);
  }
  retiredCounts(): Promise<CountsByTunnel> {
    this.check();
    return this.history.retiredCounts();
  }

  // --- lifecycle ---------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.warmTimer) clearTimeout(this.warmTimer);
    this.listeners.clear();
    await Promise.allSettled([this.client.quit(), this.sub.quit()]);
    this.client.disconnect();
    this.sub.disconnect();
  }
}
