// Over 500 lines: the Store interface (types.ts) on disk, one short method per store operation; disk I/O (record-files.ts), record shapes (records.ts), the in-memory mirror (directory-mirror.ts) and its events (record-events.ts) are already their own files.
// The embedded store (`file:DIR`): no database server, safe for several relay
// processes on one host sharing one directory.
//
// Layout: one JSON file per record, named by the record's *unique key*, so the
// file system itself enforces uniqueness:
//
//   DIR/store.json                      format marker
//   DIR/accounts/<name>.json            Account          (name unique)
//   DIR/tunnels/<accountId>%0A<name>.json Tunnel         (name unique per account)
//   DIR/routes/<hostname>.json          Route            (hostname unique)
//   DIR/revocations/<tokenId>.json      Revocation
//   DIR/zones/<zone>.json               Zone             (zone unique)
//   DIR/tombstones/<tunnelId>.json      Tombstone of a deleted tunnel (collected once it expires)
//   DIR/logins/<code>.json              pending login session
//   DIR/login-approvals/<code>.json     its approval (created at most once)
//   DIR/relays/<relayId>.json           membership heartbeat {member, expiresAt}
//   DIR/presence/<relayId>.json         {relayId, expiresAt, presences}
//   DIR/access/<key>.json               AccessRecord (access-records.ts)
//
// Every write is crash-safe: write a temp file in the same directory, fsync
// it, then rename (replace) or link (create-if-absent: fails with EEXIST, so
// of two processes exactly one wins), then fsync the directory. A promise
// resolves only after that, so an acknowledged write survives `kill -9`.
//
// Every process keeps an in-memory mirror of the whole directory
// (directory-mirror.ts); subscriber events are derived from its changes here.
// Disk I/O is record-files.ts, the record shapes and file names records.ts.

import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { DEFAULT_REPLAY_CACHE_ENTRIES, MemoryReplayCache } from '../../fleet/replay-cache.js';
import {
  StoreError,
  byKey,
  normalizeHostname,
  silentLogger,
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
  type StoreLogger,
  type Tunnel,
  type Tombstone,
  type NewZone,
  type Zone,
} from '../types.js';
import {
  MirroredStore,
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
import { fileNameForKey, type ApprovalFile, type Collection, type Entry, type LoginFile, type PresenceFile, type Records } from './records.js';
import { RecordFiles } from './record-files.js';
import { FileRelayHistory } from './file-relay-history.js';
import { accessRecordSchema, type AccessRecord } from '../access-records.js';
import { DirectoryMirror } from './directory-mirror.js';
import { mirrorChange } from './record-events.js';
import { MemoryTunnelSlots } from '../tunnel-slots.js';
import { tombstoneExpired } from '../tombstone-lifetime.js';

export { fileNameForKey };

export interface FileStoreOptions {
  logger?: StoreLogger;
  /** Use fs.watch for change detection (default true; falls back to polling if it fails). */
  watch?: boolean;
  /** Rescan interval when not watching (default 500 ms). */
  pollIntervalMs?: number;
  /** Safety rescan interval while watching (default 2000 ms). */
  rescanIntervalMs?: number;
  /** Expired sessions, revocations, heartbeats and presence are deleted this long after expiry (default 60 s). */
  gcGraceMs?: number;
  /** Live relay-to-relay nonces kept in memory (claimNonce); when full, claims are refused (default 200,000). */
  nonceCacheEntries?: number;
  /** Relays the fleet history remembers at once (default HISTORY_LIMITS.relays; 0: no ceiling). */
  relayHistoryEntries?: number;
}

export class FileStore extends MirroredStore implements Store {
  readonly kind = 'file' as const;
  readonly dir: string;
  private readonly files: RecordFiles;
  private readonly disk: DirectoryMirror;
  protected readonly history: FileRelayHistory;

  private constructor(dir: string, opts: FileStoreOptions) {
    super(opts.logger ?? silentLogger, 'file store');
    this.dir = dir;
    this.files = new RecordFiles(dir, this.log);
    this.disk = new DirectoryMirror(
      this.files,
      this.log,
      {
        watch: opts.watch ?? true,
        pollIntervalMs: opts.pollIntervalMs ?? 500,
        rescanIntervalMs: opts.rescanIntervalMs ?? 2000,
        gcGraceMs: opts.gcGraceMs ?? 60_000,
      },
      (coll, prev, next) => this.changed(coll, prev, next),
    );
    this.nonces = new MemoryReplayCache(opts.nonceCacheEntries ?? DEFAULT_REPLAY_CACHE_ENTRIES);
    this.history = new FileRelayHistory(this.dir, this.log, opts.relayHistoryEntries);
  }

  /**
   * Opens (creating if needed) the store in `dir`. Fails with StoreError
   * CORRUPT naming the file when a record or directory cannot be read or
   * parsed; removes temp files left by crashed writers.
   */
  static async open(dir: string, opts: FileStoreOptions = {}): Promise<FileStore> {
    const store = new FileStore(path.resolve(dir), opts);
    try {
      await store.files.init();
      await store.disk.load();
      await store.removeOrphanRoutes();
      store.disk.start();
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  /** Routes whose tunnel is gone (a crash or race during deleteTunnel) are removed at open. */
  private async removeOrphanRoutes(): Promise<void> {
    const orphans = [...this.routes.values()].filter((r) => !this.tunnels.has(r.tunnelId));
    if (orphans.length === 0) return;
    await this.disk.scan('tunnels');
    for (const r of orphans) {
      if (this.tunnels.has(r.tunnelId)) continue;
      const name = fileNameForKey(r.hostname);
      const cur = await this.disk.refresh('routes', name);
      if (cur && cur.tunnelId === r.tunnelId) {
        await this.disk.remove('routes', name);
        this.log.info({ hostname: r.hostname, tunnelId: r.tunnelId }, 'removed route of a deleted tunnel');
      }
    }
  }

  /** A record file changed: update the domain mirror and announce real changes. */
  private changed<C extends Collection>(coll: C, prev: Entry<Records[C]> | undefined, next: Entry<Records[C]> | undefined): void {
    const events = mirrorChange(coll, prev, next, {
      accounts: this.accounts,
      tunnels: this.tunnels,
      routes: this.routes,
      zones: this.zones,
      revocations: this.revocations,
      accessRecords: this.accessRecords,
      buried: (tunnelId) => this.disk.entries.tombstones.has(fileNameForKey(tunnelId)),
    });
    for (const e of events) this.emit(e);
  }

  /** Writes a record (create-if-absent or replace) and mirrors it. */
  private async put<C extends Collection>(coll: C, value: Records[C], mode: 'replace' | 'create'): Promise<boolean> {
    this.check();
    const { name, text, created } = await this.files.put(coll, value, mode);
    if (created) this.disk.applyLocal(coll, name, { sig: '', text, value });
    return created;
  }

  private async del(coll: Collection, key: string): Promise<boolean> {
    this.check();
    return this.disk.remove(coll, fileNameForKey(key));
  }

  // --- access ------------------------------------------------------------------

  async putAccessRecord(record: AccessRecord): Promise<void> {
    await this.put('access', accessRecordSchema.parse(record), 'replace');
  }

  async listAccessRecords(): Promise<AccessRecord[]> {
    this.check();
    await this.disk.scan('access');
    return sortAccessRecords(this.accessRecords.values());
  }

  async deleteAccessRecord(key: string): Promise<boolean> {
    return this.del('access', key);
  }

  // --- accounts ----------------------------------------------------------------

  async createAccount(name: string): Promise<Account> {
    const account: Account = { id: randomUUID(), name, createdAt: Date.now() };
    if (!(await this.put('accounts', account, 'create'))) {
      throw new StoreError('CONFLICT', `an account named ${JSON.stringify(name)} already exists`);
    }
    return account;
  }

  async getAccount(id: string): Promise<Account | undefined> {
    this.check();
    if (!this.accounts.has(id)) await this.disk.scan('accounts');
    return this.accounts.get(id);
  }

  async getAccountByName(name: string): Promise<Account | undefined> {
    this.check();
    return this.disk.refresh('accounts', fileNameForKey(name));
  }

  async listAccounts(): Promise<Account[]> {
    this.check();
    await this.disk.scan('accounts');
    return sortAccounts(this.accounts.values());
  }

  // --- tunnels -------------------------------------------------------------------

  async createTunnel(accountId: string, name: string): Promise<Tunnel> {
    if (!(await this.getAccount(accountId))) throw new StoreError('NOT_FOUND', `no account ${accountId}`);
    const tunnel: Tunnel = { id: randomUUID(), accountId, name, createdAt: Date.now() };
    if (!(await this.put('tunnels', tunnel, 'create'))) {
      throw new StoreError('CONFLICT', `a tunnel named ${JSON.stringify(name)} already exists`);
    }
    return tunnel;
  }

  async getTunnel(id: string): Promise<Tunnel | undefined> {
    this.check();
    const t = this.tunnels.get(id);
    if (t) return t;
    // Miss: it may have been created by another process a moment ago.
    await this.disk.scan('tunnels');
    return this.tunnels.get(id);
  }

  async getTunnelByName(accountId: string, name: string): Promise<Tunnel | undefined> {
    this.check();
    return this.disk.refresh('tunnels', fileNameForKey(`${accountId}\n${name}`));
  }

  async listTunnels(accountId?: string): Promise<Tunnel[]> {
    this.check();
    await this.disk.scan('tunnels');
    return selectTunnels(this.tunnels.values(), accountId);
  }

  /** Reads the tunnel's own file (authoritative, not the mirror). */
  private async tunnelOnDisk(id: string): Promise<Tunnel | undefined> {
    const known = await this.getTunnel(id);
    if (!known) return undefined;
    const cur = await this.disk.refresh('tunnels', fileNameForKey(`${known.accountId}\n${known.name}`));
    return cur?.id === id ? cur : undefined;
  }

  async disconnectTunnel(id: string): Promise<Tunnel> {
    const tunnel = await this.tunnelOnDisk(id);
    if (!tunnel) throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
    // At least 1 ms later than the last one, so a second disconnect is a change (and an event) too.
    const marked: Tunnel = { ...tunnel, disconnectedAt: Math.max(Date.now(), (tunnel.disconnectedAt ?? 0) + 1) };
    await this.put('tunnels', marked, 'replace');
    return marked;
  }

  async deleteTunnel(id: string, keepTombstoneMs: number): Promise<void> {
    this.check();
    const tunnel = await this.tunnelOnDisk(id);
    if (!tunnel) throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
    // Routes first (so a crash never leaves a route to a missing tunnel), then
    // the tunnel, then once more for a route added concurrently (addRoute
    // re-checks the tunnel after linking, so one of the two sees the other).
    await this.deleteRoutesOf(id);
    // The tombstone goes first: whoever sees the tunnel gone sees it deleted.
    const deletedAt = Date.now();
    await this.put('tombstones', { tunnelId: id, accountId: tunnel.accountId, name: tunnel.name, deletedAt, expiresAt: deletedAt + Math.max(0, Math.ceil(keepTombstoneMs)) }, 'replace');
    if (!(await this.del('tunnels', `${tunnel.accountId}\n${tunnel.name}`))) {
      throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
    }
    await this.deleteRoutesOf(id);
  }

  async getTombstone(tunnelId: string): Promise<Tombstone | undefined> {
    this.check();
    const t = await this.disk.refresh('tombstones', fileNameForKey(tunnelId));
    return t && !tombstoneExpired(t, Date.now()) ? t : undefined;
  }

  async countTombstones(accountId: string): Promise<number> {
    this.check();
    await this.disk.scan('tombstones');
    const now = Date.now();
    let n = 0;
    for (const e of this.disk.entries.tombstones.values()) if (e.value.accountId === accountId && !tombstoneExpired(e.value, now)) n++;
    return n;
  }

  private readonly slots = new MemoryTunnelSlots();

  async claimTunnelSlot(group: string, tunnelId: string, max: number, ttlMs: number): Promise<boolean> {
    this.check();
    return this.slots.claim(group, tunnelId, max, ttlMs, (id) => this.tunnels.has(id));
  }

  // --- zones ---------------------------------------------------------------------

  async addZone(input: NewZone): Promise<Zone> {
    this.check();
    const zone = zoneRecord(input);
    if (!(await this.getAccount(zone.accountId))) throw new StoreError('NOT_FOUND', `no account ${zone.accountId}`);
    if (await this.put('zones', zone, 'create')) return zone;
    const existing = await this.disk.refresh('zones', fileNameForKey(zone.zone));
    if (existing && existing.accountId === zone.accountId) return existing;
    throw new StoreError('CONFLICT', `zone ${zone.zone} is held by another account`);
  }


  async listZones(filter: { readonly accountId?: string } = {}): Promise<Zone[]> {
    this.check();
    await this.disk.scan('zones');
    return selectZones(this.zones.values(), filter);
  }

  async deleteZone(zone: string): Promise<void> {
    this.check();
    const z = nameKey(zone);
    if (!(await this.del('zones', z))) throw new StoreError('NOT_FOUND', `nobody holds zone ${z}`);
  }

  private async deleteRoutesOf(tunnelId: string): Promise<void> {
    await this.disk.scan('routes');
    for (const r of [...this.routes.values()]) {
      if (r.tunnelId === tunnelId) await this.del('routes', r.hostname);
    }
  }

  // --- routes --------------------------------------------------------------------

  async addRoute(input: NewRoute): Promise<Route> {
    this.check();
    const hostname = normalizeHostname(input.hostname);
    const tunnel = await this.tunnelOnDisk(input.tunnelId);
    if (!tunnel || tunnel.accountId !== input.accountId) throw new StoreError('NOT_FOUND', `no tunnel ${input.tunnelId}`);
    const route: Route = { hostname, tunnelId: tunnel.id, accountId: tunnel.accountId, createdAt: Date.now() };
    const name = fileNameForKey(hostname);
    for (let attempt = 0; ; attempt++) {
      if (await this.put('routes', route, 'create')) break;
      const existing = await this.disk.refresh('routes', name);
      if (!existing) {
        if (attempt < 3) continue; // deleted meanwhile: try again
        throw new StoreError('CONFLICT', `hostname ${hostname} is being changed concurrently; try again`);
      }
      if (existing.tunnelId === tunnel.id) return existing;
      throw conflictFor(hostname, existing, input.accountId, this.tunnels.get(existing.tunnelId));
    }
    // The tunnel may have been deleted between the check and the link.
    if (!(await this.tunnelOnDisk(tunnel.id))) {
      const cur = await this.disk.refresh('routes', name);
      if (cur?.tunnelId === tunnel.id) await this.del('routes', hostname);
      throw new StoreError('NOT_FOUND', `no tunnel ${input.tunnelId}`);
    }
    return route;
  }


  async listRoutes(filter: RouteFilter = {}): Promise<Route[]> {
    this.check();
    await this.disk.scan('routes');
    return selectRoutes(this.routes.values(), filter);
  }

  async deleteRoute(hostname: string): Promise<void> {
    this.check();
    const h = nameKey(hostname);
    if (!(await this.del('routes', h))) throw new StoreError('NOT_FOUND', `no route for ${h}`);
  }

  // --- revocations ---------------------------------------------------------------

  async revoke(tokenId: string, expiresAtMs: number, effectiveAtMs = Date.now()): Promise<void> {
    const rec = revocationRecord(tokenId, expiresAtMs, effectiveAtMs);
    if (await this.put('revocations', rec, 'create')) return;
    const existing = await this.disk.refresh('revocations', fileNameForKey(tokenId));
    if (existing && existing.expiresAt >= rec.expiresAt && existing.revokedAt <= rec.revokedAt) return;
    await this.put(
      'revocations',
      { tokenId, expiresAt: Math.max(rec.expiresAt, existing?.expiresAt ?? 0), revokedAt: Math.min(rec.revokedAt, existing?.revokedAt ?? rec.revokedAt) },
      'replace',
    );
  }

  async revokeOnce(tokenId: string, expiresAtMs: number): Promise<boolean> {
    // 'create' is an exclusive file creation: one caller wins, across processes.
    if (await this.put('revocations', revocationRecord(tokenId, expiresAtMs, Date.now()), 'create')) return true;
    // Another process won: read its record now rather than wait for the watcher.
    await this.disk.refresh('revocations', fileNameForKey(tokenId));
    return false;
  }


  // --- replay protection -------------------------------------------------------------

  private readonly nonces: MemoryReplayCache;

  async claimNonce(key: string, ttlMs: number): Promise<boolean> {
    return this.nonces.claim(key, ttlMs);
  }

  async listRevocations(): Promise<Revocation[]> {
    this.check();
    await this.disk.scan('revocations');
    return sortRevocations(this.revocations.values());
  }

  // --- login sessions --------------------------------------------------------------

  async createLoginSession(s: NewLoginSession): Promise<PendingLoginSession> {
    const base: LoginFile = { code: s.code, boxPublicKey: s.boxPublicKey, createdAt: s.createdAt ?? Date.now(), expiresAt: s.expiresAt };
    const name = fileNameForKey(s.code);
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await this.put('logins', base, 'create')) return { ...base, state: 'pending' };
      const existing = await this.disk.refresh('logins', name);
      if (existing && existing.expiresAt > Date.now()) break;
      // An expired session holds the code: remove it (approval first) and retry.
      await this.del('login-approvals', s.code);
      if (existing) await this.del('logins', s.code);
    }
    throw new StoreError('CONFLICT', `login code ${s.code} is in use`);
  }

  private async readSession(code: string): Promise<LoginSession | undefined> {
    const name = fileNameForKey(code);
    const base = await this.disk.refresh('logins', name);
    if (!base || base.expiresAt <= Date.now()) return undefined;
    const approval = await this.disk.refresh('login-approvals', name);
    if (approval && approval.createdAt === base.createdAt) {
      if ('deniedAt' in approval) return { ...base, state: 'denied', deniedAt: approval.deniedAt };
      return { ...base, state: 'approved', accountId: approval.accountId, sealedCredential: approval.sealedCredential };
    }
    return { ...base, state: 'pending' };
  }

  async getLoginSession(code: string): Promise<LoginSession | undefined> {
    this.check();
    return this.readSession(code);
  }

  async approveLoginSession(code: string, accountId: string, sealedCredential: string): Promise<ApprovedLoginSession> {
    this.check();
    for (let attempt = 0; attempt < 3; attempt++) {
      const s = await this.readSession(code);
      if (!s) throw new StoreError('NOT_FOUND', `no pending login with code ${code} (unknown or expired)`);
      if (s.state !== 'pending') throw new StoreError('CONFLICT', `login ${code} is already ${s.state}`);
      const approval: ApprovalFile = { code, createdAt: s.createdAt, accountId, sealedCredential, approvedAt: Date.now() };
      if (await this.put('login-approvals', approval, 'create')) {
        const { state: _pending, ...base } = s;
        return { ...base, state: 'approved', accountId, sealedCredential };
      }
      // An approval exists: either of this session (CONFLICT, next round) or a stale one.
      const existing = await this.disk.refresh('login-approvals', fileNameForKey(code));
      if (existing && existing.createdAt !== s.createdAt) await this.del('login-approvals', code);
    }
    throw new StoreError('CONFLICT', `login ${code} is already approved`);
  }

  async denyLoginSession(code: string): Promise<DeniedLoginSession> {
    this.check();
    for (let attempt = 0; attempt < 3; attempt++) {
      const s = await this.readSession(code);
      if (!s) throw new StoreError('NOT_FOUND', `no pending login with code ${code} (unknown or expired)`);
      if (s.state === 'denied') return s;
      if (s.state === 'approved') throw new StoreError('CONFLICT', `login ${code} is already approved`);
      const denial: ApprovalFile = { code, createdAt: s.createdAt, deniedAt: Date.now() };
      if (await this.put('login-approvals', denial, 'create')) return { ...s, state: 'denied', deniedAt: denial.deniedAt };
      // A decision exists: of this session (next round reads it) or a stale one of an earlier session.
      const existing = await this.disk.refresh('login-approvals', fileNameForKey(code));
      if (existing && existing.createdAt !== s.createdAt) await this.del('login-approvals', code);
    }
    throw new StoreError('CONFLICT', `login ${code} was decided concurrently`);
  }

  async deleteLoginSession(code: string): Promise<void> {
    await this.del('login-approvals', code);
    await this.del('logins', code);
  }

  async listLoginSessions(): Promise<PendingLoginSession[]> {
    this.check();
    await this.disk.scan('logins');
    await this.disk.scan('login-approvals');
    const now = Date.now();
    const out: PendingLoginSession[] = [];
    for (const [name, e] of this.disk.entries.logins) {
      if (e.value.expiresAt <= now) continue;
      const approval = this.disk.entries['login-approvals'].get(name);
      if (approval && approval.value.createdAt === e.value.createdAt) continue;
      out.push({ ...e.value, state: 'pending' });
    }
    return sortPending(out);
  }

  // --- membership and presence -----------------------------------------------------------

  async heartbeatRelay(member: RelayMember, ttlMs: number): Promise<void> {
    const now = Date.now();
    await this.put('relays', { member: { ...member, lastSeen: now }, expiresAt: now + ttlMs }, 'replace');
  }

  async removeRelay(id: string): Promise<void> {
    await this.del('relays', id);
    await this.del('presence', id);
  }

  async listRelays(): Promise<RelayMember[]> {
    this.check();
    await this.disk.scan('relays');
    const now = Date.now();
    return [...this.disk.entries.relays.values()]
      .filter((e) => e.value.expiresAt > now)
      .map((e) => e.value.member)
      .sort(byKey((m) => m.id));
  }

  async putPresence(relayId: string, presences: readonly Presence[], ttlMs: number): Promise<void> {
    const rec: PresenceFile = {
      relayId,
      expiresAt: Date.now() + ttlMs,
      presences: presences.map((p) => ({ ...p, relayId })),
    };
    await this.put('presence', rec, 'replace');
  }

  async refreshPresence(relayId: string, ttlMs: number): Promise<boolean> {
    this.check();
    const now = Date.now();
    const e = this.disk.entries.presence.get(fileNameForKey(relayId));
    if (!e || e.value.expiresAt <= now) return false;
    // A file holds one record: a new expiry is a rewrite either way (the set itself is unchanged, so no event).
    await this.put('presence', { ...e.value, expiresAt: now + ttlMs }, 'replace');
    return true;
  }

  /** Served from memory (kept fresh by watching). */
  async listPresence(filter: PresenceFilter = {}): Promise<Presence[]> {
    this.check();
    const now = Date.now();
    const live: Presence[] = [];
    for (const e of this.disk.entries.presence.values()) if (e.value.expiresAt > now) live.push(...e.value.presences);
    return selectPresence(live, filter);
  }

  // --- events and lifecycle ------------------------------------------------------------


  async close(): Promise<void> {
    if (this.closed) return;
    this.markClosed();
    await this.disk.close();
  }
}
