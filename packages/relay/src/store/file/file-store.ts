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
//   DIR/tombstones/<tunnelId>.json      Tombstone of a deleted tunnel
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
// Every process keeps an in-memory mirror of the whole directory, kept fresh
// by fs.watch (inotify) plus a periodic rescan (the polling fallback when
// watching is unavailable). Subscriber events are derived from changes to that
// mirror, so changes made by other processes are announced too, and a local
// write that the watcher later sees again is not announced twice.

import { accessKey, accessRecordSchema, type AccessRecord } from '../access-records.js';
import { DEFAULT_REPLAY_CACHE_ENTRIES, MemoryReplayCache } from '../../fleet/replay-cache.js';
import { promises as fsp, watch as fsWatch, type FSWatcher } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import {
  StoreError,
  accountSchema,
  byKey,
  normalizeHostname,
  relayMemberSchema,
  presenceSchema,
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
import { FileRelayHistory } from './file-relay-history.js';
import type { CountsByTunnel, RecordOutcome, RelayHistory } from '../relay-history.js';

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

const FORMAT = 1;
const TMP_PREFIX = '.tmp-';
const STALE_TMP_MS = 10 * 60_000;

// --- record shapes on disk -------------------------------------------------

const loginFileSchema = z.strictObject({
  code: z.string().min(1),
  boxPublicKey: z.string().min(1),
  createdAt: z.number().int().nonnegative(),
  expiresAt: z.number().int().nonnegative(),
});
type LoginFile = z.infer<typeof loginFileSchema>;

const approvalFileSchema = z.strictObject({
  code: z.string().min(1),
  /** The createdAt of the session it approves (binds it to that session, not a later one with the same code). */
  createdAt: z.number().int().nonnegative(),
  accountId: z.string().min(1),
  sealedCredential: z.string().min(1),
  approvedAt: z.number().int().nonnegative(),
});
type ApprovalFile = z.infer<typeof approvalFileSchema>;

const relayFileSchema = z.strictObject({ member: relayMemberSchema, expiresAt: z.number() });
type RelayFile = z.infer<typeof relayFileSchema>;

const presenceFileSchema = z.strictObject({
  relayId: z.string().min(1),
  expiresAt: z.number(),
  presences: z.array(presenceSchema),
});
type PresenceFile = z.infer<typeof presenceFileSchema>;

interface Records {
  accounts: Account;
  zones: Zone;
  tombstones: Tombstone;
  tunnels: Tunnel;
  routes: Route;
  revocations: Revocation;
  logins: LoginFile;
  'login-approvals': ApprovalFile;
  relays: RelayFile;
  presence: PresenceFile;
  access: AccessRecord;
}
type Collection = keyof Records;

// Tombstones before tunnels: a scan that sees a tunnel gone has already seen
// its tombstone, so a deletion is not mistaken for a wiped store.
const COLLECTIONS: readonly Collection[] = [
  'accounts',
  'zones',
  'tombstones',
  'tunnels',
  'routes',
  'revocations',
  'logins',
  'login-approvals',
  'relays',
  'presence',
  'access',
];

const schemas: { [C in Collection]: z.ZodType<Records[C]> } = {
  accounts: accountSchema,
  zones: zoneSchema,
  tombstones: tombstoneSchema,
  tunnels: tunnelSchema,
  routes: routeSchema,
  revocations: revocationSchema,
  logins: loginFileSchema,
  'login-approvals': approvalFileSchema,
  relays: relayFileSchema,
  presence: presenceFileSchema,
  access: accessRecordSchema,
};

/** The unique key a record's file is named by. */
const keyOf: { [C in Collection]: (v: Records[C]) => string } = {
  accounts: (a) => a.name,
  zones: (z) => z.zone,
  tombstones: (t) => t.tunnelId,
  tunnels: (t) => `${t.accountId}\n${t.name}`,
  routes: (r) => r.hostname,
  revocations: (r) => r.tokenId,
  logins: (l) => l.code,
  'login-approvals': (a) => a.code,
  relays: (r) => r.member.id,
  presence: (p) => p.relayId,
  access: accessKey,
};

/** File-name-safe, reversible-enough encoding: [A-Za-z0-9_.-] kept, the rest %XX; never a leading dot. */
function encodeKey(key: string): string {
  let out = '';
  for (const byte of Buffer.from(key, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9_.-]/.test(c) && !(c === '.' && out === '')) out += c;
    else out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

export function fileNameForKey(key: string): string {
  const enc = encodeKey(key);
  if (enc.length <= 200) return `${enc}.json`;
  // Too long for a file name: keep a readable head and make it unique with a hash.
  return `${enc.slice(0, 150)}~${createHash('sha256').update(key).digest('hex').slice(0, 32)}.json`;
}

interface Entry<T> {
  /** ino:size:mtime of the file as last read ('' when written locally and not yet seen by a scan). */
  sig: string;
  text: string;
  value: T;
}

type Mirror = { [C in Collection]: Map<string, Entry<Records[C]>> };

class CorruptRecord extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
  }
}

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function unavailable(what: string, err: unknown): StoreError {
  return new StoreError('UNAVAILABLE', `file store: ${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

export class FileStore implements Store {
  readonly kind = 'file' as const;
  readonly dir: string;

  private readonly log: StoreLogger;
  private readonly opts: Required<Omit<FileStoreOptions, 'logger' | 'nonceCacheEntries' | 'relayHistoryEntries'>>;
  private readonly history: FileRelayHistory;
  private readonly mirror: Mirror = {
    accounts: new Map(),
    zones: new Map(),
    tombstones: new Map(),
    tunnels: new Map(),
    routes: new Map(),
    revocations: new Map(),
    logins: new Map(),
    'login-approvals': new Map(),
    relays: new Map(),
    presence: new Map(),
    access: new Map(),
  };
  // Indexes derived from the mirror.
  private readonly accountsById = new Map<string, Account>();
  private readonly tunnelsById = new Map<string, Tunnel>();
  private readonly routesByHost = new Map<string, Route>();
  private readonly zonesByName = new Map<string, Zone>();
  private readonly revoked = new Map<string, Revocation>();
  private readonly accessByKey = new Map<string, AccessRecord>();

  private readonly listeners = new Set<StoreEventListener>();
  private readonly watchers = new Map<Collection, FSWatcher>();
  private readonly pendingFiles = new Map<Collection, Set<string>>();
  private flushScheduled = false;
  private flushing = false;
  /**
   * Reads of one file may overlap (watch, scans, direct reads). A read that
   * started later sees content at least as new (renames are atomic), so only
   * the newest-started read is applied: `tickets` holds the ticket of what is
   * in the mirror for each `coll/name` (local writes take one when they apply).
   */
  private ticket = 0;
  private readonly tickets = new Map<string, number>();
  private readonly scanRunning = new Map<Collection, Promise<void>>();
  private readonly scanQueued = new Map<Collection, Promise<void>>();
  private readonly warnedCorrupt = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private lastGc = 0;
  private closed = false;

  private constructor(dir: string, opts: FileStoreOptions) {
    this.dir = dir;
    this.log = opts.logger ?? silentLogger;
    this.opts = {
      watch: opts.watch ?? true,
      pollIntervalMs: opts.pollIntervalMs ?? 500,
      rescanIntervalMs: opts.rescanIntervalMs ?? 2000,
      gcGraceMs: opts.gcGraceMs ?? 60_000,
    };
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
      await store.init();
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  private async init(): Promise<void> {
    try {
      await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
      const st = await fsp.stat(this.dir);
      if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    } catch (err) {
      throw new StoreError('CORRUPT', `store directory ${this.dir} is unusable: ${(err as Error).message}`, { cause: err, file: this.dir });
    }
    await this.checkFormat();
    for (const coll of COLLECTIONS) {
      const dirPath = this.collDir(coll);
      try {
        await fsp.mkdir(dirPath, { recursive: true, mode: 0o700 });
      } catch (err) {
        throw new StoreError('CORRUPT', `store directory ${dirPath} is unusable: ${(err as Error).message}`, { cause: err, file: dirPath });
      }
    }
    // Watch before the first scan so nothing written meanwhile is missed.
    if (this.opts.watch) for (const coll of COLLECTIONS) this.startWatch(coll);
    for (const coll of COLLECTIONS) await this.scan(coll, true);
    await this.removeOrphanRoutes();
    this.schedule();
  }

  private async checkFormat(): Promise<void> {
    const file = path.join(this.dir, 'store.json');
    let text: string | undefined;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (err) {
      if (errCode(err) !== 'ENOENT') {
        throw new StoreError('CORRUPT', `cannot read ${file}: ${(err as Error).message}`, { cause: err, file });
      }
    }
    if (text === undefined) {
      await this.writeFile(this.dir, 'store.json', JSON.stringify({ format: FORMAT, createdAt: Date.now() }) + '\n', 'create');
      return;
    }
    let format: unknown;
    try {
      format = (JSON.parse(text) as { format?: unknown }).format;
    } catch {
      throw new StoreError('CORRUPT', `corrupt store file ${file}: not JSON`, { file });
    }
    if (format !== FORMAT) {
      throw new StoreError('CORRUPT', `store file ${file} has format ${JSON.stringify(format)}, this relay reads format ${FORMAT}`, { file });
    }
  }

  // --- low-level file operations -------------------------------------------

  private collDir(coll: Collection): string {
    return path.join(this.dir, coll);
  }

  /**
   * Crash-safe write. 'replace' renames over any existing file; 'create' links
   * and returns false if the file already exists.
   */
  private async writeFile(dirPath: string, name: string, text: string, mode: 'replace' | 'create'): Promise<boolean> {
    const tmp = path.join(dirPath, `${TMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
    const final = path.join(dirPath, name);
    let created = true;
    try {
      const fh = await fsp.open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (mode === 'replace') {
        await fsp.rename(tmp, final);
      } else {
        try {
          await fsp.link(tmp, final);
        } catch (err) {
          if (errCode(err) !== 'EEXIST') throw err;
          created = false;
        }
        await fsp.unlink(tmp);
      }
    } catch (err) {
      await fsp.unlink(tmp).catch(() => {});
      throw unavailable(`writing ${final}`, err);
    }
    if (created) await this.syncDir(dirPath);
    return created;
  }

  private async removeFile(coll: Collection, name: string): Promise<boolean> {
    const dirPath = this.collDir(coll);
    try {
      await fsp.unlink(path.join(dirPath, name));
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false;
      throw unavailable(`deleting ${path.join(dirPath, name)}`, err);
    }
    await this.syncDir(dirPath);
    return true;
  }

  private async syncDir(dirPath: string): Promise<void> {
    try {
      const fh = await fsp.open(dirPath, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw unavailable(`syncing ${dirPath}`, err);
    }
  }

  /** Reads and validates one record file; undefined if it does not exist. */
  private async readRecord<C extends Collection>(coll: C, name: string): Promise<Entry<Records[C]> | undefined> {
    const file = path.join(this.collDir(coll), name);
    let text: string;
    let sig: string;
    try {
      const fh = await fsp.open(file, 'r');
      try {
        const st = await fh.stat();
        sig = `${st.ino}:${st.size}:${st.mtimeMs}`;
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (err) {
      if (errCode(err) === 'ENOENT') return undefined;
      throw new CorruptRecord(file, `unreadable: ${(err as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new CorruptRecord(file, text.length === 0 ? 'empty file' : 'not valid JSON');
    }
    const parsed = schemas[coll].safeParse(json);
    if (!parsed.success) {
      throw new CorruptRecord(file, `not a valid ${coll} record (${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')})`);
    }
    const value = parsed.data;
    if (fileNameForKey(keyOf[coll](value)) !== name) {
      throw new CorruptRecord(file, 'record does not match its file name');
    }
    return { sig, text, value };
  }

  /** Re-reads one file into the mirror (watch path and direct reads). */
  private async refreshFile<C extends Collection>(coll: C, name: string, strict = false): Promise<Records[C] | undefined> {
    const ticket = ++this.ticket;
    let entry: Entry<Records[C]> | undefined;
    try {
      entry = await this.readRecord(coll, name);
    } catch (err) {
      if (!(err instanceof CorruptRecord)) throw err;
      if (strict) throw new StoreError('CORRUPT', `corrupt store record ${err.file}: ${err.reason}`, { file: err.file });
      const tag = `${err.file}:${err.reason}`;
      if (!this.warnedCorrupt.has(tag)) {
        this.warnedCorrupt.add(tag);
        this.log.warn({ file: err.file, reason: err.reason }, 'store record is corrupt; keeping the last good copy');
      }
      return this.mirror[coll].get(name)?.value;
    }
    const key = `${coll}/${name}`;
    if (ticket < (this.tickets.get(key) ?? 0)) {
      // A newer read or a local write got there first; ours is older.
      return this.mirror[coll].get(name)?.value;
    }
    this.tickets.set(key, ticket);
    this.apply(coll, name, entry);
    return entry?.value;
  }

  /** Mirrors a local write (after it is durable). */
  private applyLocal<C extends Collection>(coll: C, name: string, entry: Entry<Records[C]> | undefined): void {
    this.tickets.set(`${coll}/${name}`, ++this.ticket);
    this.apply(coll, name, entry);
  }

  /**
   * Lists one collection directory, re-reads what changed, drops what
   * vanished. Coalesced: a caller that arrives while a scan runs gets the
   * next scan (which starts after its request), shared with other late callers.
   */
  private scan(coll: Collection, strict = false): Promise<void> {
    const queued = this.scanQueued.get(coll);
    if (queued) return queued;
    const start = (): Promise<void> => {
      this.scanQueued.delete(coll);
      const p: Promise<void> = this.doScan(coll, strict).finally(() => {
        if (this.scanRunning.get(coll) === p) this.scanRunning.delete(coll);
      });
      this.scanRunning.set(coll, p);
      return p;
    };
    const running = this.scanRunning.get(coll);
    if (!running) return start();
    const q = running.catch(() => {}).then(start);
    this.scanQueued.set(coll, q);
    return q;
  }

  private async doScan(coll: Collection, strict: boolean): Promise<void> {
    if (this.closed) return;
    const dirPath = this.collDir(coll);
    let names: string[];
    try {
      names = await fsp.readdir(dirPath);
    } catch (err) {
      if (strict) throw new StoreError('CORRUPT', `cannot read store directory ${dirPath}: ${(err as Error).message}`, { cause: err, file: dirPath });
      this.log.warn({ dir: dirPath, err: (err as Error).message }, 'cannot list store directory');
      return;
    }
    const seen = new Set<string>();
    for (const name of names) {
      if (name.startsWith(TMP_PREFIX)) {
        await this.cleanTemp(dirPath, name);
        continue;
      }
      if (!name.endsWith('.json')) continue;
      seen.add(name);
      const known = this.mirror[coll].get(name);
      if (known && known.sig !== '') {
        let sig: string | undefined;
        try {
          const st = await fsp.stat(path.join(dirPath, name));
          sig = `${st.ino}:${st.size}:${st.mtimeMs}`;
        } catch (err) {
          if (errCode(err) !== 'ENOENT') throw unavailable(`stat ${path.join(dirPath, name)}`, err);
        }
        if (sig === known.sig) continue;
      }
      await this.refreshFile(coll, name, strict);
    }
    for (const name of [...this.mirror[coll].keys()]) {
      if (!seen.has(name)) {
        // Confirm before dropping: it may have been created after readdir.
        await this.refreshFile(coll, name, strict);
      }
    }
  }

  /** Removes a temp file whose writer is gone (or that is very old). */
  private async cleanTemp(dirPath: string, name: string): Promise<void> {
    const m = /^\.tmp-(\d+)-/.exec(name);
    const pid = m ? Number(m[1]) : NaN;
    let dead = !Number.isFinite(pid);
    if (!dead && pid !== process.pid) {
      try {
        process.kill(pid, 0);
      } catch (err) {
        dead = errCode(err) === 'ESRCH';
      }
    }
    if (!dead) {
      try {
        const st = await fsp.stat(path.join(dirPath, name));
        dead = Date.now() - st.mtimeMs > STALE_TMP_MS;
      } catch {
        return;
      }
    }
    if (!dead) return;
    try {
      await fsp.unlink(path.join(dirPath, name));
      this.log.info({ file: path.join(dirPath, name) }, 'removed temp file left by a crashed writer');
    } catch {
      /* someone else removed it */
    }
  }

  // --- change detection ------------------------------------------------------

  private startWatch(coll: Collection): void {
    try {
      const w = fsWatch(this.collDir(coll), { persistent: false }, (_event, filename) => {
        if (this.closed) return;
        const name = filename?.toString();
        if (!name) {
          void this.scan(coll).catch((err: unknown) => this.log.warn({ err: String(err) }, 'store rescan failed'));
          return;
        }
        if (name.startsWith('.') || !name.endsWith('.json')) return;
        let set = this.pendingFiles.get(coll);
        if (!set) this.pendingFiles.set(coll, (set = new Set()));
        set.add(name);
        this.scheduleFlush();
      });
      w.on('error', (err) => {
        this.log.warn({ dir: this.collDir(coll), err: err.message }, 'fs.watch failed; polling instead');
        w.close();
        this.watchers.delete(coll);
        this.schedule();
      });
      this.watchers.set(coll, w);
    } catch (err) {
      this.log.warn({ dir: this.collDir(coll), err: (err as Error).message }, 'fs.watch unavailable; polling instead');
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setTimeout(() => {
      this.flushScheduled = false;
      void this.flush();
    }, 2).unref();
  }

  private async flush(): Promise<void> {
    if (this.flushing) return; // the running flush picks up what was added
    this.flushing = true;
    try {
      while (this.pendingFiles.size > 0 && !this.closed) {
        const work = [...this.pendingFiles.entries()];
        this.pendingFiles.clear();
        for (const [coll, names] of work) {
          for (const name of names) {
            if (this.closed) return;
            try {
              await this.refreshFile(coll, name);
            } catch (err) {
              this.log.warn({ coll, name, err: String(err) }, 'store refresh failed');
            }
          }
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    const watchingAll = this.watchers.size === COLLECTIONS.length;
    const interval = watchingAll ? this.opts.rescanIntervalMs : this.opts.pollIntervalMs;
    this.timer = setTimeout(() => void this.tick(), interval);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      for (const coll of COLLECTIONS) {
        if (this.closed) return;
        await this.scan(coll);
      }
      if (Date.now() - this.lastGc >= 1000) {
        this.lastGc = Date.now();
        await this.gc();
      }
    } catch (err) {
      this.log.warn({ err: String(err) }, 'store rescan failed');
    } finally {
      this.schedule();
    }
  }

  /** Deletes records that expired more than gcGraceMs ago. Any process may do it. */
  private async gc(): Promise<void> {
    const cutoff = Date.now() - this.opts.gcGraceMs;
    const victims: [Collection, string][] = [];
    for (const [name, e] of this.mirror.logins) if (e.value.expiresAt < cutoff) victims.push(['logins', name]);
    for (const [name, e] of this.mirror['login-approvals']) {
      const base = this.mirror.logins.get(name);
      if (!base || base.value.createdAt !== e.value.createdAt) victims.push(['login-approvals', name]);
    }
    for (const [name, e] of this.mirror.revocations) if (e.value.expiresAt < cutoff) victims.push(['revocations', name]);
    for (const [name, e] of this.mirror.relays) if (e.value.expiresAt < cutoff) victims.push(['relays', name]);
    for (const [name, e] of this.mirror.presence) if (e.value.expiresAt < cutoff) victims.push(['presence', name]);
    // Approvals before their sessions.
    victims.sort((a, b) => Number(b[0] === 'login-approvals') - Number(a[0] === 'login-approvals'));
    for (const [coll, name] of victims) {
      if (this.closed) return;
      // Re-read first: another process may have just rewritten it.
      const fresh = await this.refreshFile(coll, name);
      if (!fresh) continue;
      let expired: boolean;
      if (coll === 'login-approvals') {
        const base = await this.refreshFile('logins', name);
        expired = !base || base.createdAt !== (fresh as ApprovalFile).createdAt;
      } else {
        expired = (fresh as { expiresAt: number }).expiresAt < cutoff;
      }
      if (!expired) continue;
      await this.removeFile(coll, name).catch(() => {});
      this.applyLocal(coll, name, undefined);
    }
  }

  /** Routes whose tunnel is gone (a crash or race during deleteTunnel) are removed at open. */
  private async removeOrphanRoutes(): Promise<void> {
    const orphans = [...this.routesByHost.values()].filter((r) => !this.tunnelsById.has(r.tunnelId));
    if (orphans.length === 0) return;
    await this.scan('tunnels');
    for (const r of orphans) {
      if (this.tunnelsById.has(r.tunnelId)) continue;
      const name = fileNameForKey(r.hostname);
      const cur = await this.refreshFile('routes', name);
      if (cur && cur.tunnelId === r.tunnelId) {
        await this.removeFile('routes', name);
        this.applyLocal('routes', name, undefined);
        this.log.info({ hostname: r.hostname, tunnelId: r.tunnelId }, 'removed route of a deleted tunnel');
      }
    }
  }

  /** Puts a record into the mirror (or removes it), updates indexes, and announces real changes. */
  private apply<C extends Collection>(coll: C, name: string, next: Entry<Records[C]> | undefined): void {
    const map = this.mirror[coll] as Map<string, Entry<Records[C]>>;
    const prev = map.get(name);
    if (!prev && !next) return;
    if (prev && next && prev.text === next.text) {
      if (next.sig !== '') prev.sig = next.sig;
      return;
    }
    if (next) map.set(name, next);
    else map.delete(name);
    const events: StoreEvent[] = [];
    switch (coll) {
      case 'accounts': {
        const p = prev?.value as Account | undefined;
        const n = next?.value as Account | undefined;
        if (p) this.accountsById.delete(p.id);
        if (n) {
          this.accountsById.set(n.id, n);
          events.push({ type: 'account', accountId: n.id });
        }
        break;
      }
      case 'tunnels': {
        const p = prev?.value as Tunnel | undefined;
        const n = next?.value as Tunnel | undefined;
        if (p) this.tunnelsById.delete(p.id);
        if (n) this.tunnelsById.set(n.id, n);
        if (p && p.id !== n?.id) {
          const buried = this.mirror.tombstones.has(fileNameForKey(p.id));
          events.push({ type: buried ? 'tunnel-deleted' : 'tunnel-vanished', tunnelId: p.id, accountId: p.accountId });
        }
        if (n && n.id !== p?.id) events.push({ type: 'tunnel', tunnelId: n.id });
        break;
      }
      case 'routes': {
        const p = prev?.value as Route | undefined;
        const n = next?.value as Route | undefined;
        if (p) this.routesByHost.delete(p.hostname);
        if (n) this.routesByHost.set(n.hostname, n);
        events.push({ type: 'route', hostname: (n ?? p)!.hostname });
        break;
      }
      case 'zones': {
        const p = prev?.value as Zone | undefined;
        const n = next?.value as Zone | undefined;
        if (p) this.zonesByName.delete(p.zone);
        if (n) this.zonesByName.set(n.zone, n);
        events.push({ type: 'zone', zone: (n ?? p)!.zone });
        break;
      }
      case 'tombstones':
        break;
      case 'access': {
        const p = prev?.value as AccessRecord | undefined;
        const n = next?.value as AccessRecord | undefined;
        const key = accessKey((n ?? p)!);
        if (n) this.accessByKey.set(key, n);
        else this.accessByKey.delete(key);
        events.push({ type: 'access', key });
        break;
      }
      case 'revocations': {
        const p = prev?.value as Revocation | undefined;
        const n = next?.value as Revocation | undefined;
        if (p) this.revoked.delete(p.tokenId);
        if (n) {
          this.revoked.set(n.tokenId, n);
          if (!p) events.push({ type: 'revoked', tokenId: n.tokenId });
        }
        break;
      }
      case 'logins':
      case 'login-approvals': {
        const v = (next ?? prev)!.value as LoginFile | ApprovalFile;
        events.push({ type: 'login', code: v.code });
        break;
      }
      case 'relays': {
        const p = prev?.value as RelayFile | undefined;
        const n = next?.value as RelayFile | undefined;
        if (!p || !n || p.member.draining !== n.member.draining) {
          events.push({ type: 'relay', relayId: (n ?? p)!.member.id });
        }
        break;
      }
      case 'presence': {
        const p = prev?.value as PresenceFile | undefined;
        const n = next?.value as PresenceFile | undefined;
        if (!p || !n || JSON.stringify(p.presences) !== JSON.stringify(n.presences)) {
          events.push({ type: 'presence', relayId: (n ?? p)!.relayId });
        }
        break;
      }
    }
    for (const e of events) this.emit(e);
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

  private check(): void {
    if (this.closed) throw new StoreError('UNAVAILABLE', 'file store is closed');
  }

  /** Writes a record (create-if-absent or replace) and mirrors it. */
  private async put<C extends Collection>(coll: C, value: Records[C], mode: 'replace' | 'create'): Promise<boolean> {
    this.check();
    const name = fileNameForKey(keyOf[coll](value));
    const text = JSON.stringify(value) + '\n';
    const created = await this.writeFile(this.collDir(coll), name, text, mode);
    if (created) this.applyLocal(coll, name, { sig: '', text, value });
    return created;
  }

  private async del(coll: Collection, key: string): Promise<boolean> {
    this.check();
    const name = fileNameForKey(key);
    const removed = await this.removeFile(coll, name);
    this.applyLocal(coll, name, undefined);
    return removed;
  }

  // --- access ------------------------------------------------------------------

  async putAccessRecord(record: AccessRecord): Promise<void> {
    await this.put('access', accessRecordSchema.parse(record), 'replace');
  }

  async getAccessRecord(key: string): Promise<AccessRecord | undefined> {
    return this.accessByKey.get(key);
  }

  async listAccessRecords(): Promise<AccessRecord[]> {
    this.check();
    await this.scan('access');
    return [...this.accessByKey.values()].sort(byKey(accessKey));
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
    if (!this.accountsById.has(id)) await this.scan('accounts');
    return this.accountsById.get(id);
  }

  async getAccountByName(name: string): Promise<Account | undefined> {
    this.check();
    return this.refreshFile('accounts', fileNameForKey(name));
  }

  async listAccounts(): Promise<Account[]> {
    this.check();
    await this.scan('accounts');
    return [...this.accountsById.values()].sort(byKey((a) => a.name));
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
    const t = this.tunnelsById.get(id);
    if (t) return t;
    // Miss: it may have been created by another process a moment ago.
    await this.scan('tunnels');
    return this.tunnelsById.get(id);
  }

  async getTunnelByName(accountId: string, name: string): Promise<Tunnel | undefined> {
    this.check();
    return this.refreshFile('tunnels', fileNameForKey(`${accountId}\n${name}`));
  }

  async listTunnels(accountId?: string): Promise<Tunnel[]> {
    this.check();
    await this.scan('tunnels');
    return [...this.tunnelsById.values()]
      .filter((t) => accountId === undefined || t.accountId === accountId)
      .sort((a, b) => a.createdAt - b.createdAt || byKey<Tunnel>((t) => t.name)(a, b));
  }

  /** Reads the tunnel's own file (authoritative, not the mirror). */
  private async tunnelOnDisk(id: string): Promise<Tunnel | undefined> {
    const known = await this.getTunnel(id);
    if (!known) return undefined;
    const cur = await this.refreshFile('tunnels', fileNameForKey(`${known.accountId}\n${known.name}`));
    return cur?.id === id ? cur : undefined;
  }

  async deleteTunnel(id: string): Promise<void> {
    this.check();
    const tunnel = await this.tunnelOnDisk(id);
    if (!tunnel) throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
    // Routes first (so a crash never leaves a route to a missing tunnel), then
    // the tunnel, then once more for a route added concurrently (addRoute
    // re-checks the tunnel after linking, so one of the two sees the other).
    await this.deleteRoutesOf(id);
    // The tombstone goes first: whoever sees the tunnel gone sees it deleted.
    await this.put('tombstones', { tunnelId: id, accountId: tunnel.accountId, name: tunnel.name, deletedAt: Date.now() }, 'replace');
    if (!(await this.del('tunnels', `${tunnel.accountId}\n${tunnel.name}`))) {
      throw new StoreError('NOT_FOUND', `no tunnel ${id}`);
    }
    await this.deleteRoutesOf(id);
  }

  async getTombstone(tunnelId: string): Promise<Tombstone | undefined> {
    this.check();
    return this.refreshFile('tombstones', fileNameForKey(tunnelId));
  }

  // --- zones ---------------------------------------------------------------------

  async addZone(input: NewZone): Promise<Zone> {
    this.check();
    const zone: Zone = { zone: normalizeHostname(input.zone), accountId: input.accountId, source: input.source, createdAt: Date.now() };
    if (zone.zone.startsWith('*.')) throw new TypeError(`a zone is a plain name, not a wildcard: ${zone.zone}`);
    if (!(await this.getAccount(zone.accountId))) throw new StoreError('NOT_FOUND', `no account ${zone.accountId}`);
    if (await this.put('zones', zone, 'create')) return zone;
    const existing = await this.refreshFile('zones', fileNameForKey(zone.zone));
    if (existing && existing.accountId === zone.accountId) return existing;
    throw new StoreError('CONFLICT', `zone ${zone.zone} is held by another account`);
  }

  async getZone(zone: string): Promise<Zone | undefined> {
    return this.zonesByName.get(zone.toLowerCase());
  }

  async listZones(filter: { readonly accountId?: string } = {}): Promise<Zone[]> {
    this.check();
    await this.scan('zones');
    return [...this.zonesByName.values()].filter((z) => filter.accountId === undefined || z.accountId === filter.accountId).sort(byKey((z) => z.zone));
  }

  async deleteZone(zone: string): Promise<void> {
    this.check();
    const z = zone.trim().toLowerCase().replace(/\.$/, '');
    if (!(await this.del('zones', z))) throw new StoreError('NOT_FOUND', `nobody holds zone ${z}`);
  }

  private async deleteRoutesOf(tunnelId: string): Promise<void> {
    await this.scan('routes');
    for (const r of [...this.routesByHost.values()]) {
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
      const existing = await this.refreshFile('routes', name);
      if (!existing) {
        if (attempt < 3) continue; // deleted meanwhile: try again
        throw new StoreError('CONFLICT', `hostname ${hostname} is being changed concurrently; try again`);
      }
      if (existing.tunnelId === tunnel.id) return existing;
      throw conflictFor(hostname, existing, input.accountId, this.tunnelsById.get(existing.tunnelId));
    }
    // The tunnel may have been deleted between the check and the link.
    if (!(await this.tunnelOnDisk(tunnel.id))) {
      const cur = await this.refreshFile('routes', name);
      if (cur?.tunnelId === tunnel.id) await this.del('routes', hostname);
      throw new StoreError('NOT_FOUND', `no tunnel ${input.tunnelId}`);
    }
    return route;
  }

  async getRoute(hostname: string): Promise<Route | undefined> {
    return this.routesByHost.get(hostname.toLowerCase());
  }

  async listRoutes(filter: RouteFilter = {}): Promise<Route[]> {
    this.check();
    await this.scan('routes');
    return [...this.routesByHost.values()]
      .filter((r) => (filter.accountId === undefined || r.accountId === filter.accountId) && (filter.tunnelId === undefined || r.tunnelId === filter.tunnelId))
      .sort(byKey((r) => r.hostname));
  }

  async deleteRoute(hostname: string): Promise<void> {
    this.check();
    const h = hostname.trim().toLowerCase().replace(/\.$/, '');
    if (!(await this.del('routes', h))) throw new StoreError('NOT_FOUND', `no route for ${h}`);
  }

  // --- revocations ---------------------------------------------------------------

  async revoke(tokenId: string, expiresAtMs: number, effectiveAtMs = Date.now()): Promise<void> {
    const rec: Revocation = { tokenId, expiresAt: Math.max(0, Math.ceil(expiresAtMs)), revokedAt: Math.max(0, Math.ceil(effectiveAtMs)) };
    if (await this.put('revocations', rec, 'create')) return;
    const existing = await this.refreshFile('revocations', fileNameForKey(tokenId));
    if (existing && existing.expiresAt >= rec.expiresAt && existing.revokedAt <= rec.revokedAt) return;
    await this.put(
      'revocations',
      { tokenId, expiresAt: Math.max(rec.expiresAt, existing?.expiresAt ?? 0), revokedAt: Math.min(rec.revokedAt, existing?.revokedAt ?? rec.revokedAt) },
      'replace',
    );
  }

  async revokeOnce(tokenId: string, expiresAtMs: number): Promise<boolean> {
    // 'create' is an exclusive file creation: one caller wins, across processes.
    if (await this.put('revocations', { tokenId, expiresAt: Math.max(0, Math.ceil(expiresAtMs)), revokedAt: Date.now() }, 'create')) return true;
    // Another process won: read its record now rather than wait for the watcher.
    await this.refreshFile('revocations', fileNameForKey(tokenId));
    return false;
  }

  async isRevoked(tokenId: string): Promise<boolean> {
    const r = this.revoked.get(tokenId);
    return r !== undefined && r.revokedAt <= Date.now();
  }

  // --- replay protection -------------------------------------------------------------

  private readonly nonces: MemoryReplayCache;

  async claimNonce(key: string, ttlMs: number): Promise<boolean> {
    return this.nonces.claim(key, ttlMs);
  }

  async listRevocations(): Promise<Revocation[]> {
    this.check();
    await this.scan('revocations');
    return [...this.revoked.values()].sort(byKey((r) => r.tokenId));
  }

  // --- login sessions --------------------------------------------------------------

  async createLoginSession(s: NewLoginSession): Promise<PendingLoginSession> {
    const base: LoginFile = { code: s.code, boxPublicKey: s.boxPublicKey, createdAt: s.createdAt ?? Date.now(), expiresAt: s.expiresAt };
    const name = fileNameForKey(s.code);
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await this.put('logins', base, 'create')) return { ...base, state: 'pending' };
      const existing = await this.refreshFile('logins', name);
      if (existing && existing.expiresAt > Date.now()) break;
      // An expired session holds the code: remove it (approval first) and retry.
      await this.del('login-approvals', s.code);
      if (existing) await this.del('logins', s.code);
    }
    throw new StoreError('CONFLICT', `login code ${s.code} is in use`);
  }

  private async readSession(code: string): Promise<LoginSession | undefined> {
    const name = fileNameForKey(code);
    const base = await this.refreshFile('logins', name);
    if (!base || base.expiresAt <= Date.now()) return undefined;
    const approval = await this.refreshFile('login-approvals', name);
    if (approval && approval.createdAt === base.createdAt) {
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
      if (s.state === 'approved') throw new StoreError('CONFLICT', `login ${code} is already approved`);
      const approval: ApprovalFile = { code, createdAt: s.createdAt, accountId, sealedCredential, approvedAt: Date.now() };
      if (await this.put('login-approvals', approval, 'create')) {
        const { state: _pending, ...base } = s;
        return { ...base, state: 'approved', accountId, sealedCredential };
      }
      // An approval exists: either of this session (CONFLICT, next round) or a stale one.
      const existing = await this.refreshFile('login-approvals', fileNameForKey(code));
      if (existing && existing.createdAt !== s.createdAt) await this.del('login-approvals', code);
    }
    throw new StoreError('CONFLICT', `login ${code} is already approved`);
  }

  async deleteLoginSession(code: string): Promise<void> {
    await this.del('login-approvals', code);
    await this.del('logins', code);
  }

  async listLoginSessions(): Promise<PendingLoginSession[]> {
    this.check();
    await this.scan('logins');
    await this.scan('login-approvals');
    const now = Date.now();
    const out: PendingLoginSession[] = [];
    for (const [name, e] of this.mirror.logins) {
      if (e.value.expiresAt <= now) continue;
      const approval = this.mirror['login-approvals'].get(name);
      if (approval && approval.value.createdAt === e.value.createdAt) continue;
      out.push({ ...e.value, state: 'pending' });
    }
    return out.sort((a, b) => a.createdAt - b.createdAt || byKey<PendingLoginSession>((x) => x.code)(a, b));
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
    await this.scan('relays');
    const now = Date.now();
    return [...this.mirror.relays.values()]
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

  /** Served from memory (kept fresh by watching). */
  async listPresence(filter: PresenceFilter = {}): Promise<Presence[]> {
    this.check();
    const now = Date.now();
    const out: Presence[] = [];
    for (const e of this.mirror.presence.values()) {
      if (e.value.expiresAt <= now) continue;
      if (filter.relayId !== undefined && e.value.relayId !== filter.relayId) continue;
      for (const p of e.value.presences) {
        if (filter.tunnelId === undefined || p.tunnelId === filter.tunnelId) out.push(p);
      }
    }
    return out.sort(byKey((p) => `${p.relayId}\n${p.connectionId}`));
  }

  // --- relay history (file-relay-history.ts) -------------------------------------------

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

  // --- events and lifecycle ------------------------------------------------------------

  subscribe(listener: StoreEventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    this.listeners.clear();
    // Let an in-flight scan finish so nothing touches the directory after close.
    await Promise.allSettled([...this.scanRunning.values(), ...this.scanQueued.values()]);
  }
}

export function conflictFor(hostname: string, existing: Route, accountId: string, owner: Tunnel | undefined): StoreError {
  if (existing.accountId === accountId) {
    const which = owner ? `tunnel ${JSON.stringify(owner.name)} (${owner.id})` : `tunnel ${existing.tunnelId}`;
    return new StoreError('CONFLICT', `hostname ${hostname} is already routed to ${which}`);
  }
  return new StoreError('CONFLICT', `hostname ${hostname} is already routed by another account`);
}
