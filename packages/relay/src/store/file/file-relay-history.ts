// The file store's relay history: DIR/relay-history/<relayId>.json, one per
// relay, and DIR/relay-history-retired.json with the counts of forgotten
// relays. Writes are crash-safe like the rest of the store (temp file, fsync,
// rename, fsync the directory). Forgetting is a read-modify-write of the
// retired file, so it runs under an exclusive lock file: several relay
// processes may share the directory.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  HISTORY_LIMITS,
  addCounts,
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
import { unavailable } from './records.js';
import { syncDir, writeDurably } from './record-files.js';

const LOCK_STALE_MS = 10_000;
const LOCK_WAIT_MS = 3_000;

export class FileRelayHistory implements RelayHistoryStore {
  private readonly dir: string;
  private readonly retiredFile: string;
  private readonly lockFile: string;
  private readonly warned = new Set<string>();

  constructor(
    storeDir: string,
    private readonly log: StoreLogger,
    private readonly maxRelays: number = HISTORY_LIMITS.relays,
  ) {
    this.dir = path.join(storeDir, 'relay-history');
    this.retiredFile = path.join(storeDir, 'relay-history-retired.json');
    this.lockFile = path.join(storeDir, 'relay-history.lock');
  }

  async recordRelayHistory(h: RelayHistory): Promise<RecordOutcome> {
    const text = historyRecord(h);
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 }).catch((e: unknown) => {
      throw unavailable(`creating ${this.dir}`, e);
    });
    const name = `${h.id}.json`;
    if (this.maxRelays > 0) {
      const names = await this.names();
      if (!names.includes(name) && names.length >= this.maxRelays) return 'full';
    }
    await writeDurably(this.dir, name, text, 'replace');
    return 'recorded';
  }

  async listRelayHistory(): Promise<RelayHistory[]> {
    const out: RelayHistory[] = [];
    for (const name of await this.names()) {
      const file = path.join(this.dir, name);
      const text = await readText(file);
      if (text === null) continue;
      const r = parseHistoryRecord(text);
      const id = name.slice(0, -'.json'.length);
      if (!r.ok || r.value.id !== id) {
        this.warnOnce(file, r.ok ? 'record does not match its file name' : r.reason);
        continue;
      }
      out.push(r.value);
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async forgetRelay(id: string): Promise<void> {
    if (!isRelayHistoryId(id)) throw new StoreError('NOT_FOUND', `no relay ${JSON.stringify(id)} in the fleet history`);
    const file = path.join(this.dir, `${id}.json`);
    await this.locked(async () => {
      const text = await readText(file);
      if (text === null) throw new StoreError('NOT_FOUND', `no relay ${id} in the fleet history`);
      const rec = parseHistoryRecord(text);
      // An unreadable record is dropped without its counts: they cannot be known.
      if (rec.ok) {
        const retired = await this.readRetired();
        await writeDurably(path.dirname(this.retiredFile), path.basename(this.retiredFile), JSON.stringify(addCounts(retired, rec.value.counts)), 'replace');
      }
      await fsp.unlink(file).catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw unavailable(`deleting ${file}`, e);
      });
      await syncDir(this.dir);
    });
  }

  async retiredCounts(): Promise<CountsByTunnel> {
    return this.readRetired();
  }

  private async readRetired(): Promise<CountsByTunnel> {
    const r = parseRetired(await readText(this.retiredFile));
    if (r.ok) return r.value;
    throw new StoreError('CORRUPT', `corrupt store record ${this.retiredFile}: ${r.reason}`, { file: this.retiredFile });
  }

  private async names(): Promise<string[]> {
    try {
      return (await fsp.readdir(this.dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.tmp-') && isRelayHistoryId(n.slice(0, -5)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw unavailable(`listing ${this.dir}`, e);
    }
  }

  /** One forget at a time across processes; a lock left by a crashed process is broken after LOCK_STALE_MS. */
  private async locked<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const fh = await fsp.open(this.lockFile, 'wx', 0o600);
        await fh.close();
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw unavailable(`locking ${this.lockFile}`, e);
        const st = await fsp.stat(this.lockFile).catch(() => null);
        if (st && Date.now() - st.mtimeMs > LOCK_STALE_MS) await fsp.unlink(this.lockFile).catch(() => {});
        else if (Date.now() > deadline) throw new StoreError('UNAVAILABLE', `file store: ${this.lockFile} is held by another process`);
        else await new Promise((r) => setTimeout(r, 20));
      }
    }
    try {
      return await fn();
    } finally {
      await fsp.unlink(this.lockFile).catch(() => {});
    }
  }

  private warnOnce(file: string, reason: string): void {
    const tag = `${file}:${reason}`;
    if (this.warned.has(tag)) return;
    this.warned.add(tag);
    this.log.warn({ file, reason }, 'relay history record is unreadable; skipped');
  }
}

async function readText(file: string): Promise<string | null> {
  try {
    const fh = await fsp.open(file, 'r');
    try {
      // Read at most one byte past the ceiling: a huge file is refused, not loaded.
      const buf = Buffer.alloc(HISTORY_LIMITS.recordBytes + 1);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      return buf.subarray(0, bytesRead).toString('utf8');
    } finally {
      await fh.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw unavailable(`reading ${file}`, e);
  }
}

