// Over 500 lines: the Store interface (types.ts) on Redis, one short method per store operation; the mirror (redis-mirror.ts) and the Lua scripts (scripts.ts) are already their own files.
// The fleet store on Redis (`redis://…`), for any number of relays.
//
// Keys (all under a configurable prefix, default `tunnel:`):
//   accounts            hash  id → Account JSON
//   account-names       hash  name → id                     (HSETNX: names unique)
//   tunnels             hash  id → Tunnel JSON
//   tunnel-names        hash  "<accountId>\n<name>" → id    (HSETNX: unique per account)
//   routes              hash  hostname → Route JSON         (one tunnel per hostname)
//   tunnel-routes:<id>  set   hostnames of a tunnel         (delete cascade)
//   revocations         hash  tokenId → Revocation JSON; revocation-expiry zset
//                       (tokenId by expiry): each revoke drops a batch of expired ones
//   zones               hash  zone → Zone JSON                (one account per zone)
//   tombstone:<id>      string PX its lifetime: Tombstone JSON (left by deleteTunnel;
//                       Redis expires it, no scan). tombstones-of:<accountId> zset
//                       (tunnel id by expiry) counts them, expiring with the last.
//                       The `tombstones` hash of stores written before tombstones
//                       expired is still read (never written).
//   tunnel-slots:<group> set  tunnel ids (claimTunnelSlot), PX from the last claim
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
//
// Connections, the mirror and command plumbing: redis-mirror.ts; the Lua
// scripts: scripts.ts.

import { randomUUID } from 'node:crypto';
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
  tombstoneSchema,
  tunnelSchema,
  zoneSchema,
  type Account,
  type ApprovedLoginSession,
  type DeniedLoginSession,
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
  type Tunnel,
  type Tombstone,
  type NewZone,
  type Zone,
} from '../types.js';
import {
  conflictFor,
  nameKey,
  revocationRecord,
  selectPresence,
  selectRoutes,
  selectTunnels,
  selectZones,
  sortAccessRecords,
  sortAccounts,
  sortPending,
  sortRevocations,
  zoneRecord,
} from '../mirrored-store.js';
import { REVOCATION_GRACE_MS, RedisMirror, isConnectionError, redisClients, type RedisStoreOptions } from './redis-mirror.js';
import { RedisRelayHistory } from './redis-relay-history.js';
import { accessKey, accessRecordSchema, type AccessRecord } from '../access-records.js';
import type { Redis } from 'ioredis';
import { tombstoneExpired } from '../tombstone-lifetime.js';

export type { RedisStoreOptions };

// Presence is stored per relay without timestamps of its own, so a refresh
// with the same set does not announce a change.
// Tolerant of fields a newer relay adds, like the connections in it (types.ts).
const presenceRecordSchema = z.object({ relayId: z.string().min(1), presences: z.array(presenceSchema) });
type PresenceRecord = z.infer<typeof presenceRecordSchema>;


export class RedisStore extends RedisMirror implements Store {
  readonly kind = 'redis' as const;

  // Last answers, served while Redis is unreachable.
  private lastRelays: RelayMember[] = [];
  private lastPresence: Presence[] = [];
  /** Each relay's presence set as last read, by the sha1 of its JSON: an unchanged set is neither sent nor parsed again. */
  private presenceSets = new Map<string, { readonly sha: string; readonly presences: readonly Presence[] }>();

  protected readonly history: RedisRelayHistory;

  private constructor(client: Redis, sub: Redis, opts: RedisStoreOptions) {
    super(client, sub, opts);
    this.history = new RedisRelayHistory(client, this.prefix, this.log, opts.relayHistoryEntries);
  }

  static async open(url: string, opts: RedisStoreOptions = {}): Promise<RedisStore> {
    const { client, sub } = redisClients(url, opts);
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
    return sortAccounts(all);
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
    return selectTunnels(all, accountId);
  }

  async disconnectTunnel(id: string): Promise<Tunnel> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const json = await this.cmd('disconnectTunnel', () => this.client.hget(this.k('tunnels'), id));
      if (json === null) throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
      const t = this.parse(tunnelSchema, json, `${this.k('tunnels')}[${id}]`);
      // At least 1 ms later than the last one, so a second disconnect is a change too.
      const marked: Tunnel = { ...t, disconnectedAt: Math.max(Date.now(), (t.disconnectedAt ?? 0) + 1) };
      const { value: [status], current } = await this.watched('tunnel', id, () => this.run('casTunnel', [this.k('tunnels')], [id, json, JSON.stringify(marked), this.channel]));
      if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
      if (status === 'OK') {
        if (current) this.tunnels.set(id, marked);
        return marked;
      }
    }
    throw new StoreError('CONFLICT', `tunnel ${id} changed concurrently`);
  }

  async deleteTunnel(id: string, keepTombstoneMs: number): Promise<void> {
    const [status] = await this.run(
      'deleteTunnel',
      [this.k('tunnels'), this.k('tunnel-names'), this.k('routes'), this.k(`tunnel-routes:${id}`), this.k(`tombstone:${id}`)],
      [id, this.channel, Date.now(), Math.max(0, Math.ceil(keepTombstoneMs)), this.k('tombstones-of:')],
    );
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
    this.forgetTunnel(id);
  }

  async getTombstone(tunnelId: string): Promise<Tombstone | undefined> {
    const key = this.k(`tombstone:${tunnelId}`);
    const [json, legacy] = await this.cmd('getTombstone', () => Promise.all([this.client.get(key), this.client.hget(this.k('tombstones'), tunnelId)]));
    const stone = json !== null ? this.parse(tombstoneSchema, json, key) : legacy !== null ? this.parse(tombstoneSchema, legacy, `${this.k('tombstones')}[${tunnelId}]`) : undefined;
    return stone && !tombstoneExpired(stone, Date.now()) ? stone : undefined;
  }

  async countTombstones(accountId: string): Promise<number> {
    return this.cmd('countTombstones', () => this.client.zcount(this.k(`tombstones-of:${accountId}`), `(${Date.now()}`, '+inf'));
  }

  async claimTunnelSlot(group: string, tunnelId: string, max: number, ttlMs: number): Promise<boolean> {
    const [status] = await this.run('claimTunnelSlot', [this.k(`tunnel-slots:${group}`), this.k('tunnels')], [tunnelId, max, Math.max(1, Math.ceil(ttlMs))]);
    return status === 'OK';
  }

  // --- access ------------------------------------------------------------------------

  async putAccessRecord(record: AccessRecord): Promise<void> {
    const r = accessRecordSchema.parse(record);
    const key = accessKey(r);
    const { current } = await this.watched('access', key, () => this.run('putAccess', [this.k('access')], [key, JSON.stringify(r), this.channel]));
    if (current) this.accessRecords.set(key, r);
  }

  async listAccessRecords(): Promise<AccessRecord[]> {
    const all = await this.read(
      'listAccessRecords',
      async () => Object.entries(await this.client.hgetall(this.k('access'))).map(([k, j]) => this.parse(accessRecordSchema, j, `${this.k('access')}[${k}]`)),
      () => [...this.accessRecords.values()],
    );
    return sortAccessRecords(all);
  }

  async deleteAccessRecord(key: string): Promise<boolean> {
    const { value: [status], current } = await this.watched('access', key, () => this.run('deleteAccess', [this.k('access')], [key, this.channel]));
    if (current) this.accessRecords.delete(key);
    return status !== 'NOT_FOUND';
  }

  // --- zones -------------------------------------------------------------------------

  async addZone(input: NewZone): Promise<Zone> {
    const zone = zoneRecord(input);
    const name = zone.zone;
    const { value: [status, payload], current } = await this.watched('zone', name, () => this.run('addZone', [this.k('accounts'), this.k('zones')], [name, zone.accountId, JSON.stringify(zone), this.channel]));
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no account ${zone.accountId}`);
    if (status === 'CONFLICT') throw new StoreError('CONFLICT', `zone ${name} is held by another account`);
    const stored = status === 'EXISTS' ? this.parse(zoneSchema, payload, `${this.k('zones')}[${name}]`) : zone;
    if (current) this.zones.set(name, stored);
    return stored;
  }


  async listZones(filter: { readonly accountId?: string } = {}): Promise<Zone[]> {
    const all = await this.read(
      'listZones',
      async () => Object.entries(await this.client.hgetall(this.k('zones'))).map(([z, j]) => this.parse(zoneSchema, j, `${this.k('zones')}[${z}]`)),
      () => [...this.zones.values()],
    );
    return selectZones(all, filter);
  }

  async deleteZone(zone: string): Promise<void> {
    const z = nameKey(zone);
    const { value: [status], current } = await this.watched('zone', z, () => this.run('deleteZone', [this.k('zones')], [z, this.channel]));
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `nobody holds zone ${z}`);
    if (current) this.zones.delete(z);
  }

  // --- routes ------------------------------------------------------------------------

  async addRoute(input: NewRoute): Promise<Route> {
    const hostname = normalizeHostname(input.hostname);
    const route: Route = { hostname, tunnelId: input.tunnelId, accountId: input.accountId, createdAt: Date.now() };
    const json = JSON.stringify(route);
    const {
      value: [status, payload],
      current,
    } = await this.watched('route', hostname, () =>
      this.run('addRoute', [this.k('tunnels'), this.k('routes'), this.k(`tunnel-routes:${input.tunnelId}`)], [input.tunnelId, input.accountId, hostname, json, this.channel]),
    );
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no tunnel ${input.tunnelId}`);
    if (status === 'CONFLICT') {
      const existing = this.parse(routeSchema, payload, `${this.k('routes')}[${hostname}]`);
      throw conflictFor(hostname, existing, input.accountId, this.tunnels.get(existing.tunnelId));
    }
    const stored = status === 'EXISTS' ? this.parse(routeSchema, payload, `${this.k('routes')}[${hostname}]`) : route;
    if (current) this.routes.set(hostname, stored);
    return stored;
  }


  async listRoutes(filter: RouteFilter = {}): Promise<Route[]> {
    const all = await this.read(
      'listRoutes',
      async () => Object.entries(await this.client.hgetall(this.k('routes'))).map(([h, j]) => this.parse(routeSchema, j, `${this.k('routes')}[${h}]`)),
      () => [...this.routes.values()],
    );
    return selectRoutes(all, filter);
  }

  async deleteRoute(hostname: string): Promise<void> {
    const h = nameKey(hostname);
    const { value: [status], current } = await this.watched('route', h, () => this.run('deleteRoute', [this.k('routes')], [h, this.channel, this.k('tunnel-routes:')]));
    if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no route for ${h}`);
    if (current) this.routes.delete(h);
  }

  // --- revocations -----------------------------------------------------------------

  async revoke(tokenId: string, expiresAtMs: number, effectiveAtMs = Date.now()): Promise<void> {
    const rec = revocationRecord(tokenId, expiresAtMs, effectiveAtMs);
    const {
      value: [, json],
      current,
    } = await this.watched('revoked', tokenId, () =>
      this.run('revoke', [this.k('revocations'), this.k('revocation-expiry')], [tokenId, JSON.stringify(rec), rec.expiresAt, this.channel, rec.revokedAt, Date.now() - REVOCATION_GRACE_MS]),
    );
    if (current) this.mirrorRevocation(this.parse(revocationSchema, json, `${this.k('revocations')}[${tokenId}]`));
  }

  async revokeOnce(tokenId: string, expiresAtMs: number): Promise<boolean> {
    const rec = revocationRecord(tokenId, expiresAtMs, Date.now());
    const {
      value: [status, json],
      current,
    } = await this.watched('revoked', tokenId, () =>
      this.run('revokeOnce', [this.k('revocations'), this.k('revocation-expiry')], [tokenId, JSON.stringify(rec), this.channel, rec.expiresAt, Date.now() - REVOCATION_GRACE_MS]),
    );
    // Either way the record (ours or the winner's) is mirrored now, not when pub/sub catches up.
    if (current) this.mirrorRevocation(this.parse(revocationSchema, json, `${this.k('revocations')}[${tokenId}]`));
    return status === 'OK';
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
    return sortRevocations(all);
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
      if (cur.session.state !== 'pending') throw new StoreError('CONFLICT', `login ${code} is already ${cur.session.state}`);
      const approved: ApprovedLoginSession = { ...cur.session, state: 'approved', accountId, sealedCredential };
      const [status] = await this.run('casLogin', [this.k(`login:${code}`)], [cur.json, JSON.stringify(approved), this.channel, code]);
      if (status === 'OK') return approved;
      if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no pending login with code ${code} (unknown or expired)`);
    }
    throw new StoreError('CONFLICT', `login ${code} is already approved`);
  }

  async denyLoginSession(code: string): Promise<DeniedLoginSession> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const cur = await this.readLogin(code);
      if (!cur) throw new StoreError('NOT_FOUND', `no pending login with code ${code} (unknown or expired)`);
      if (cur.session.state === 'denied') return cur.session;
      if (cur.session.state === 'approved') throw new StoreError('CONFLICT', `login ${code} is already approved`);
      const denied: DeniedLoginSession = { ...cur.session, state: 'denied', deniedAt: Date.now() };
      const [status] = await this.run('casLogin', [this.k(`login:${code}`)], [cur.json, JSON.stringify(denied), this.channel, code]);
      if (status === 'OK') return denied;
      if (status === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `no pending login with code ${code} (unknown or expired)`);
    }
    throw new StoreError('CONFLICT', `login ${code} was decided concurrently`);
  }

  async deleteLoginSession(code: string): Promise<void> {
    await this.run('deleteLogin', [this.k(`login:${code}`), this.k('logins')], [code, this.channel]);
  }

  async listLoginSessions(): Promise<PendingLoginSession[]> {
    const raw = (await this.cmd('listLoginSessions', () => this.script('gather', [this.k('logins')], [this.k('login:')]))) as string[];
    const now = Date.now();
    const pending = raw
      .map((j) => this.parse(loginSessionSchema, j, this.k('login:*')) as LoginSession)
      .filter((s): s is PendingLoginSession => s.state === 'pending' && s.expiresAt > now);
    return sortPending(pending);
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

  async refreshPresence(relayId: string, ttlMs: number): Promise<boolean> {
    const [, extended] = await this.run('refreshPresence', [this.k(`presence:${relayId}`), this.k('presence-relays')], [Math.max(1, Math.round(ttlMs)), relayId]);
    return extended === '1';
  }

  async listPresence(filter: PresenceFilter = {}): Promise<Presence[]> {
    // One relay's set (what a peer re-reads on that relay's presence event) is
    // one key: reading and validating every relay's set instead made each
    // event cost O(fleet connections), which a registration storm of 4,000
    // connections turned into the relays' main work (bench:scale).
    if (filter.relayId !== undefined) {
      const key = this.k(`presence:${filter.relayId}`);
      const own = await this.read(
        'listPresence',
        async () => {
          const j = await this.client.get(key);
          return j === null ? [] : this.parse(presenceRecordSchema, j, key).presences;
        },
        () => this.lastPresence,
      );
      return selectPresence(own, filter);
    }
    const all = await this.read(
      'listPresence',
      async () => {
        const known = [...this.presenceSets].flatMap(([id, set]) => [id, set.sha]);
        const raw = (await this.script('gatherPresence', [this.k('presence-relays')], [this.k('presence:'), ...known])) as string[];
        const sets = new Map<string, { sha: string; presences: readonly Presence[] }>();
        const out: Presence[] = [];
        for (let i = 0; i + 2 < raw.length; i += 3) {
          const [id, sha, json] = [raw[i]!, raw[i + 1]!, raw[i + 2]!];
          const held = this.presenceSets.get(id);
          const presences = json === '' && held?.sha === sha ? held.presences : this.parse(presenceRecordSchema, json, this.k(`presence:${id}`)).presences;
          sets.set(id, { sha, presences });
          out.push(...presences);
        }
        this.presenceSets = sets;
        this.lastPresence = out;
        return out;
      },
      () => this.lastPresence,
    );
    return selectPresence(all, filter);
  }

  // --- lifecycle ---------------------------------------------------------------------------
}
