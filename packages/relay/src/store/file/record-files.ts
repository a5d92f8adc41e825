// Disk I/O of the file store: crash-safe writes and removals, validated
// reads, and the clean-up of temp files left by crashed writers.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { StoreError, type StoreLogger } from '../types.js';
import {
  COLLECTIONS,
  CorruptRecord,
  FORMAT,
  STALE_TMP_MS,
  TMP_PREFIX,
  errCode,
  fileNameForKey,
  keyOf,
  schemas,
  unavailable,
  type Collection,
  type Entry,
  type Records,
} from './records.js';

export class RecordFiles {
  constructor(
    readonly dir: string,
    private readonly log: StoreLogger,
  ) {}

  /** Creates the directory tree if needed and checks the format marker. */
  async init(): Promise<void> {
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
      await this.write(this.dir, 'store.json', JSON.stringify({ format: FORMAT, createdAt: Date.now() }) + '\n', 'create');
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

  collDir(coll: Collection): string {
    return path.join(this.dir, coll);
  }

  /** Writes a record (create-if-absent or replace); false when 'create' found one there. */
  put<C extends Collection>(coll: C, value: Records[C], mode: 'replace' | 'create'): Promise<{ name: string; text: string; created: boolean }> {
    const name = fileNameForKey(keyOf[coll](value));
    const text = JSON.stringify(value) + '\n';
    return this.write(this.collDir(coll), name, text, mode).then((created) => ({ name, text, created }));
  }

  /** Crash-safe write (see writeDurably). */
  write(dirPath: string, name: string, text: string, mode: 'replace' | 'create'): Promise<boolean> {
    return writeDurably(dirPath, name, text, mode);
  }

  async remove(coll: Collection, name: string): Promise<boolean> {
    const dirPath = this.collDir(coll);
    try {
      await fsp.unlink(path.join(dirPath, name));
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false;
      throw unavailable(`deleting ${path.join(dirPath, name)}`, err);
    }
    await syncDir(dirPath);
    return true;
  }

  /** Reads and validates one record file; undefined if it does not exist. */
  async read<C extends Collection>(coll: C, name: string): Promise<Entry<Records[C]> | undefined> {
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

  /** ino:size:mtime of a record file, undefined when it is gone: whether it changed since it was read. */
  async sig(coll: Collection, name: string): Promise<string | undefined> {
    const file = path.join(this.collDir(coll), name);
    try {
      const st = await fsp.stat(file);
      return `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch (err) {
      if (errCode(err) !== 'ENOENT') throw unavailable(`stat ${file}`, err);
      return undefined;
    }
  }

  /** Removes a temp file whose writer is gone (or that is very old). */
  async cleanTemp(dirPath: string, name: string): Promise<void> {
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
}

/**
 * Crash-safe write. 'replace' renames over any existing file; 'create' links
 * and returns false if the file already exists.
 */
export async function writeDurably(dirPath: string, name: string, text: string, mode: 'replace' | 'create'): Promise<boolean> {
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
  if (created) await syncDir(dirPath);
  return created;
}

/** fsync a directory, so a rename or link in it survives a crash. */
export async function syncDir(dirPath: string): Promise<void> {
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
