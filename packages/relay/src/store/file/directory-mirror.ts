// The file store's picture of its directory: every record file as last
// read, kept fresh by fs.watch (inotify) plus a periodic rescan (the polling
// fallback when watching is unavailable), and expired records collected.
// Each real change is handed to the store (`changed`), which keeps the
// domain mirror and announces it: changes made by other processes are
// announced too, and a local write the watcher sees again is not announced twice.

import { promises as fsp, watch as fsWatch, type FSWatcher } from 'node:fs';
import { StoreError, type StoreLogger, type Tombstone } from '../types.js';
import { tombstoneExpired } from '../tombstone-lifetime.js';
import { COLLECTIONS, CorruptRecord, TMP_PREFIX, type ApprovalFile, type Collection, type Entry, type Mirror, type Records } from './records.js';
import type { RecordFiles } from './record-files.js';

export interface DirectoryMirrorOptions {
  watch: boolean;
  pollIntervalMs: number;
  rescanIntervalMs: number;
  gcGraceMs: number;
}

/** Told of each record that changed (added, replaced with other content, or removed). */
export type RecordChange = <C extends Collection>(coll: C, prev: Entry<Records[C]> | undefined, next: Entry<Records[C]> | undefined) => void;

export class DirectoryMirror {
  readonly entries: Mirror = {
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

  constructor(
    private readonly files: RecordFiles,
    private readonly log: StoreLogger,
    private readonly opts: DirectoryMirrorOptions,
    private readonly changed: RecordChange,
  ) {}

  /** Reads the whole directory (a corrupt record fails it, naming the file); watching starts first so nothing written meanwhile is missed. */
  async load(): Promise<void> {
    if (this.opts.watch) for (const coll of COLLECTIONS) this.startWatch(coll);
    for (const coll of COLLECTIONS) await this.scan(coll, true);
  }

  /** Starts the periodic rescan and collection of expired records. */
  start(): void {
    this.schedule();
  }

  /** Re-reads one file into the mirror (watch path and direct reads). */
  async refresh<C extends Collection>(coll: C, name: string, strict = false): Promise<Records[C] | undefined> {
    const ticket = ++this.ticket;
    let entry: Entry<Records[C]> | undefined;
    try {
      entry = await this.files.read(coll, name);
    } catch (err) {
      if (!(err instanceof CorruptRecord)) throw err;
      if (strict) throw new StoreError('CORRUPT', `corrupt store record ${err.file}: ${err.reason}`, { file: err.file });
      const tag = `${err.file}:${err.reason}`;
      if (!this.warnedCorrupt.has(tag)) {
        this.warnedCorrupt.add(tag);
        this.log.warn({ file: err.file, reason: err.reason }, 'store record is corrupt; keeping the last good copy');
      }
      return this.entries[coll].get(name)?.value;
    }
    const key = `${coll}/${name}`;
    if (ticket < (this.tickets.get(key) ?? 0)) {
      // A newer read or a local write got there first; ours is older.
      return this.entries[coll].get(name)?.value;
    }
    this.tickets.set(key, ticket);
    this.apply(coll, name, entry);
    return entry?.value;
  }

  /** Mirrors a local write (after it is durable). */
  applyLocal<C extends Collection>(coll: C, name: string, entry: Entry<Records[C]> | undefined): void {
    this.tickets.set(`${coll}/${name}`, ++this.ticket);
    this.apply(coll, name, entry);
  }

  /** Removes a record file and mirrors its absence. */
  async remove(coll: Collection, name: string): Promise<boolean> {
    const removed = await this.files.remove(coll, name);
    this.applyLocal(coll, name, undefined);
    return removed;
  }

  private apply<C extends Collection>(coll: C, name: string, next: Entry<Records[C]> | undefined): void {
    const map = this.entries[coll] as Map<string, Entry<Records[C]>>;
    const prev = map.get(name);
    if (!prev && !next) return;
    if (prev && next && prev.text === next.text) {
      if (next.sig !== '') prev.sig = next.sig;
      return;
    }
    if (next) map.set(name, next);
    else map.delete(name);
    this.changed(coll, prev, next);
  }

  /**
   * Lists one collection directory, re-reads what changed, drops what
   * vanished. Coalesced: a caller that arrives while a scan runs gets the
   * next scan (which starts after its request), shared with other late callers.
   */
  scan(coll: Collection, strict = false): Promise<void> {
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
    const dirPath = this.files.collDir(coll);
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
        await this.files.cleanTemp(dirPath, name);
        continue;
      }
      if (!name.endsWith('.json')) continue;
      seen.add(name);
      const known = this.entries[coll].get(name);
      if (known && known.sig !== '' && (await this.files.sig(coll, name)) === known.sig) continue;
      await this.refresh(coll, name, strict);
    }
    for (const name of [...this.entries[coll].keys()]) {
      if (!seen.has(name)) {
        // Confirm before dropping: it may have been created after readdir.
        await this.refresh(coll, name, strict);
      }
    }
  }

  private startWatch(coll: Collection): void {
    try {
      const w = fsWatch(this.files.collDir(coll), { persistent: false }, (_event, filename) => {
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
        this.log.warn({ dir: this.files.collDir(coll), err: err.message }, 'fs.watch failed; polling instead');
        w.close();
        this.watchers.delete(coll);
        this.schedule();
      });
      this.watchers.set(coll, w);
    } catch (err) {
      this.log.warn({ dir: this.files.collDir(coll), err: (err as Error).message }, 'fs.watch unavailable; polling instead');
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
              await this.refresh(coll, name);
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
    const now = Date.now();
    const cutoff = now - this.opts.gcGraceMs;
    const m = this.entries;
    const victims: [Collection, string][] = [];
    for (const [name, e] of m.logins) if (e.value.expiresAt < cutoff) victims.push(['logins', name]);
    for (const [name, e] of m['login-approvals']) {
      const base = m.logins.get(name);
      if (!base || base.value.createdAt !== e.value.createdAt) victims.push(['login-approvals', name]);
    }
    for (const [name, e] of m.revocations) if (e.value.expiresAt < cutoff) victims.push(['revocations', name]);
    // A tombstone's lifetime already covers every token it answers for: no grace on top.
    for (const [name, e] of m.tombstones) if (tombstoneExpired(e.value, now)) victims.push(['tombstones', name]);
    for (const [name, e] of m.relays) if (e.value.expiresAt < cutoff) victims.push(['relays', name]);
    for (const [name, e] of m.presence) if (e.value.expiresAt < cutoff) victims.push(['presence', name]);
    // Approvals before their sessions.
    victims.sort((a, b) => Number(b[0] === 'login-approvals') - Number(a[0] === 'login-approvals'));
    for (const [coll, name] of victims) {
      if (this.closed) return;
      // Re-read first: another process may have just rewritten it.
      const fresh = await this.refresh(coll, name);
      if (!fresh) continue;
      let expired: boolean;
      if (coll === 'login-approvals') {
        const base = await this.refresh('logins', name);
        expired = !base || base.createdAt !== (fresh as ApprovalFile).createdAt;
      } else if (coll === 'tombstones') {
        expired = tombstoneExpired(fresh as Tombstone, now);
      } else {
        expired = (fresh as { expiresAt: number }).expiresAt < cutoff;
      }
      if (!expired) continue;
      await this.files.remove(coll, name).catch(() => {});
      this.applyLocal(coll, name, undefined);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    // Let an in-flight scan finish so nothing touches the directory after close.
    await Promise.allSettled([...this.scanRunning.values(), ...this.scanQueued.values()]);
  }
}
