// The Redis store's connections and its mirror: the client and the pub/sub
// subscriber, reconnects, the snapshot read at start and after each
// reconnect (announcing what changed meanwhile), the change messages applied
// as they arrive, and the plumbing every command goes through.

import { Redis, type RedisOptions } from 'ioredis';
import type { z } from 'zod';
import {
  StoreError,
  accountSchema,
  revocationSchema,
  routeSchema,
  silentLogger,
  tunnelSchema,
  zoneSchema,
  type Revocation,
  type StoreEvent,
  type StoreLogger,
  type Tunnel,
} from '../types.js';
import { MirroredStore } from '../mirrored-store.js';
import { accessRecordSchema } from '../access-records.js';
import { LUA, SHA, type ScriptName } from './scripts.js';

/** A revocation is dropped this long after its token expired (clocks of relays differ a little). */
export const REVOCATION_GRACE_MS = 60_000;

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


export function isConnectionError(err: unknown): boolean {
  return !(err instanceof StoreError) && !(err instanceof Error && err.name === 'ReplyError');
}

/** The command client and the subscriber, not yet connected: commands fail fast while Redis is away, nothing is queued. */
export function redisClients(url: string, opts: RedisStoreOptions): { client: Redis; sub: Redis } {
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
  return {
    client: new Redis(url, { ...options, connectionName: 'tunnel-store' }),
    sub: new Redis(url, { ...options, connectionName: 'tunnel-store-sub', commandTimeout: undefined }),
  };
}

export abstract class RedisMirror extends MirroredStore {
  protected readonly prefix: string;
  protected readonly channel: string;
  protected warmed = false;
  private warmTimer: NodeJS.Timeout | undefined;
  private warming: Promise<void> | undefined;
  private lastErrorLogged = '';
  /** Messages received while a warm-up read is in flight, replayed on top of its snapshot. */
  private warmBuffer: string[] | undefined;
  /** Set once the store has seen its meta record: from then on its absence means data loss. */
  protected sawMeta = false;
  /** This instance's writes in flight, by the key their channel message names (`route\nhost`). */
  private readonly inFlight = new Map<string, Set<{ overtaken: boolean }>>();

  protected constructor(
    protected readonly client: Redis,
    protected readonly sub: Redis,
    opts: RedisStoreOptions,
  ) {
    super(opts.logger ?? silentLogger, 'redis store');
    this.prefix = opts.keyPrefix ?? 'tunnel:';
    this.channel = `${this.prefix}events`;
  }

  /** The client and key prefix, for fleet-wide rate limits kept next to the store's keys. */
  sharedRedis(): { client: Redis; keyPrefix: string } {
    return { client: this.client, keyPrefix: this.prefix };
  }

  protected async connect(timeoutMs: number): Promise<void> {
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

  protected scheduleWarm(delayMs: number): void {
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
    const stale = [...this.revocations.values()].filter((r) => r.expiresAt < Date.now() - REVOCATION_GRACE_MS).map((r) => r.tokenId);
    if (stale.length === 0) return;
    for (const id of stale) this.revocations.delete(id);
    await this.client.hdel(this.k('revocations'), ...stale).catch(() => {});
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
      const ids = gone.map((t) => t.id);
      const [stones, legacy] = await Promise.all([this.client.mget(...ids.map((id) => this.k(`tombstone:${id}`))), this.client.hmget(this.k('tombstones'), ...ids)]);
      gone.forEach((t, i) =>
        events.push({ type: stones[i] === null && legacy[i] === null ? 'tunnel-vanished' : 'tunnel-deleted', tunnelId: t.id, accountId: t.accountId }),
      );
    }
    sync(this.routes, routes, routeSchema, 'routes', (h) => ({ type: 'route', hostname: h }), (h) => ({ type: 'route', hostname: h }));
    sync(this.revocations, revocations, revocationSchema, 'revocations', (id) => ({ type: 'revoked', tokenId: id }), () => undefined);
    sync(this.accessRecords, access, accessRecordSchema, 'access', (key) => ({ type: 'access', key }), (key) => ({ type: 'access', key }));
    // Anything in flight: the snapshot holds its write or something newer.
    this.overtake();
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

  protected k(name: string): string {
    return this.prefix + name;
  }

  /**
   * Runs a write and says whether its reply may still be mirrored. The reply
   * comes on the client connection, the change messages on the subscriber,
   * so another relay's change to the same key, published just after this
   * write's own, can arrive before the reply. A message about the key (or a
   * re-read of the store) that arrives while the write is in flight leaves
   * the mirror with this write's state or a newer one: this write's own
   * message is always published before any later change's, and arrives
   * before it. So then the reply is not mirrored (`current` false).
   */
  protected async watched<T>(kind: 'route' | 'zone' | 'access' | 'tunnel' | 'revoked', key: string, write: () => Promise<T>): Promise<{ value: T; current: boolean }> {
    const id = `${kind}\n${key}`;
    const watch = { overtaken: false };
    let set = this.inFlight.get(id);
    if (!set) this.inFlight.set(id, (set = new Set()));
    set.add(watch);
    try {
      const value = await write();
      return { value, current: !watch.overtaken };
    } finally {
      set.delete(watch);
      if (set.size === 0 && this.inFlight.get(id) === set) this.inFlight.delete(id);
    }
  }

  private overtake(id?: string): void {
    if (id === undefined) {
      for (const set of this.inFlight.values()) for (const w of set) w.overtaken = true;
      return;
    }
    const set = this.inFlight.get(id);
    if (set) for (const w of set) w.overtaken = true;
  }

  /**
   * Mirror a revocation (a reply `watched()` let through, or a message). A
   * token expired past the grace is dropped, as the scripts prune it: the
   * revoke script prunes the very record it wrote when its token is long
   * expired, and the reply must not keep what the store no longer has.
   */
  protected mirrorRevocation(rec: Revocation): void {
    if (rec.expiresAt < Date.now() - REVOCATION_GRACE_MS) this.revocations.delete(rec.tokenId);
    else this.revocations.set(rec.tokenId, rec);
  }

  protected parse<T>(schema: z.ZodType<T>, json: string, where: string): T {
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
    if (this.inFlight.size > 0) this.overtake(`${kind === 'tunnel-deleted' ? 'tunnel' : kind}\n${key}`);
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
          this.forgetTunnel(key);
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
          if (json === '') this.accessRecords.delete(key);
          else this.accessRecords.set(key, this.parse(accessRecordSchema, json, 'event'));
          return emit({ type: 'access', key });
        case 'revoked':
          // Empty: a revocation of a token long expired was dropped (scripts.ts pruneRevocations).
          if (json === '') return void this.revocations.delete(key);
          this.mirrorRevocation(this.parse(revocationSchema, json, 'event'));
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

  // --- command plumbing -------------------------------------------------------

  protected get up(): boolean {
    return this.client.status === 'ready';
  }

  /** Runs Redis commands; connection trouble becomes StoreError UNAVAILABLE. */
  protected async cmd<T>(what: string, fn: () => Promise<T>): Promise<T> {
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
  protected async read<T>(what: string, fn: () => Promise<T>, fallback: () => T): Promise<T> {
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

  protected async script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.client.evalsha(SHA[name], keys.length, ...keys, ...args);
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('NOSCRIPT')) {
        return this.client.eval(LUA[name], keys.length, ...keys, ...args);
      }
      throw err;
    }
  }

  protected async run(name: ScriptName, keys: string[], args: (string | number)[]): Promise<[string, string]> {
    const r = (await this.cmd(name, () => this.script(name, keys, args))) as [string, string];
    return r;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.markClosed();
    if (this.warmTimer) clearTimeout(this.warmTimer);
    await Promise.allSettled([this.client.quit(), this.sub.quit()]);
    this.client.disconnect();
    this.sub.disconnect();
  }
}
