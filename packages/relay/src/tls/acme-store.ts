import { promises as fsp, mkdirSync, watch, type FSWatcher } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { fileStoreDir } from '../store/open.js';

/**
 * Where ACME state lives so every relay of a fleet serves the same
 * certificates and only one orders each: the account key, the certificates
 * (key + chain), pending challenges (any relay may be the one the CA
 * validates against) and short order locks. Beside the fleet store, on the
 * same `--store` URL: files under `DIR/acme/`, or `acme:*` keys in Redis.
 */
export interface AcmeAccountRecord {
  directory: string;
  keyPem: string;
  url?: string;
}

export interface StoredCertificate {
  /** The hostname it was ordered for (first SAN). */
  name: string;
  /** Leaf first, then the chain. */
  certPem: string;
  keyPem: string;
  notBefore: number;
  notAfter: number;
  /** Relay that ordered it. */
  orderedBy: string;
}

export type ChallengeRecord =
  | { type: 'http-01'; token: string; keyAuthorization: string; expiresAt: number }
  | { type: 'tls-alpn-01'; name: string; keyAuthorization: string; expiresAt: number };

export type AcmeStoreEvent = { kind: 'certificate'; name: string } | { kind: 'challenge'; record: ChallengeRecord };

export interface AcmeStore {
  getAccount(directory: string): Promise<AcmeAccountRecord | undefined>;
  putAccount(rec: AcmeAccountRecord): Promise<void>;
  getCertificate(name: string): Promise<StoredCertificate | undefined>;
  putCertificate(rec: StoredCertificate): Promise<void>;
  listCertificates(): Promise<StoredCertificate[]>;
  putChallenge(rec: ChallengeRecord): Promise<void>;
  getHttpChallenge(token: string): Promise<string | undefined>;
  getAlpnChallenge(name: string): Promise<string | undefined>;
  deleteChallenge(rec: ChallengeRecord): Promise<void>;
  /** A lock held until released or `ttlMs` passes; null when another holder has it. */
  lock(key: string, ttlMs: number): Promise<(() => Promise<void>) | null>;
  /** Certificates and challenges written by other relays (best effort: callers also re-read). */
  subscribe(fn: (e: AcmeStoreEvent) => void): () => void;
  close(): Promise<void>;
}

/** Hostnames and tokens become file names and keys only in this checked shape. */
const NAME = /^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

export function checkedName(name: string): string {
  if (name.length > 253 || !NAME.test(name)) throw new Error(`not a hostname: ${JSON.stringify(name.slice(0, 80))}`);
  return name;
}
function checkedToken(token: string): string {
  if (!TOKEN.test(token)) throw new Error('not an ACME token');
  return token;
}
const nameKey = (name: string) => checkedName(name).replace(/^\*\./, '_wildcard.');
const accountKey = (directory: string) => createHash('sha256').update(directory).digest('hex').slice(0, 32);

/** Beside the fleet store: its Redis connection and key prefix, or `DIR/acme/` of a file store. */
export async function openAcmeStore(url: string, store: object, owner: string): Promise<AcmeStore> {
  const shared = (store as { sharedRedis?: () => { client: import('ioredis').Redis; keyPrefix: string } }).sharedRedis;
  if (typeof shared === 'function') {
    const { RedisAcmeStore } = await import('./acme-store-redis.js');
    return RedisAcmeStore.open(shared.call(store), owner);
  }
  const dir = fileStoreDir(url);
  if (dir === undefined) throw new Error(`ACME: store ${url} keeps no certificates (use file:DIR or redis://)`);
  return new FileAcmeStore(path.join(dir, 'acme'), owner);
}

/**
 * The embedded store's ACME files: one JSON file per record, written to a
 * temporary name and renamed (a crash never leaves half a key). Locks are
 * files created exclusively, holding their expiry; an expired one is taken over.
 */
class FileAcmeStore implements AcmeStore {
  private watcher: FSWatcher | null = null;
  private readonly listeners = new Set<(e: AcmeStoreEvent) => void>();

  constructor(
    private readonly dir: string,
    private readonly owner: string,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(kind: string, key: string): string {
    return path.join(this.dir, `${kind}-${key}.json`);
  }
  private async read<T>(file: string): Promise<T | undefined> {
    try {
      return JSON.parse(await fsp.readFile(file, 'utf8')) as T;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`ACME store: cannot read ${file}: ${(e as Error).message}`);
    }
  }
  private async write(file: string, value: unknown): Promise<void> {
    const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
    await fsp.writeFile(tmp, JSON.stringify(value), { mode: 0o600 });
    await fsp.rename(tmp, file);
  }

  getAccount(directory: string) {
    return this.read<AcmeAccountRecord>(this.file('account', accountKey(directory)));
  }
  putAccount(rec: AcmeAccountRecord) {
    return this.write(this.file('account', accountKey(rec.directory)), rec);
  }
  getCertificate(name: string) {
    return this.read<StoredCertificate>(this.file('cert', nameKey(name)));
  }
  async putCertificate(rec: StoredCertificate) {
    await this.write(this.file('cert', nameKey(rec.name)), rec);
  }
  async listCertificates() {
    const out: StoredCertificate[] = [];
    for (const f of await fsp.readdir(this.dir)) {
      if (!f.startsWith('cert-') || !f.endsWith('.json')) continue;
      const c = await this.read<StoredCertificate>(path.join(this.dir, f)).catch(() => undefined);
      if (c) out.push(c);
    }
    return out;
  }
  putChallenge(rec: ChallengeRecord) {
    return rec.type === 'http-01' ? this.write(this.file('http01', checkedToken(rec.token)), rec) : this.write(this.file('alpn01', nameKey(rec.name)), rec);
  }
  async getHttpChallenge(token: string) {
    if (!TOKEN.test(token)) return undefined;
    const r = await this.read<ChallengeRecord>(this.file('http01', token));
    return r && r.expiresAt > Date.now() ? r.keyAuthorization : undefined;
  }
  async getAlpnChallenge(name: string) {
    const r = await this.read<ChallengeRecord>(this.file('alpn01', nameKey(name)));
    return r && r.expiresAt > Date.now() ? r.keyAuthorization : undefined;
  }
  async deleteChallenge(rec: ChallengeRecord) {
    const f = rec.type === 'http-01' ? this.file('http01', checkedToken(rec.token)) : this.file('alpn01', nameKey(rec.name));
    await fsp.rm(f, { force: true });
  }
  async lock(key: string, ttlMs: number) {
    const file = path.join(this.dir, `lock-${createHash('sha256').update(key).digest('hex').slice(0, 32)}`);
    const mine = `${this.owner} ${randomBytes(8).toString('hex')}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await fsp.writeFile(file, JSON.stringify({ holder: mine, expiresAt: Date.now() + ttlMs }), { flag: 'wx', mode: 0o600 });
        return async () => {
          const cur = await this.read<{ holder: string }>(file).catch(() => undefined);
          if (cur?.holder === mine) await fsp.rm(file, { force: true });
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const cur = await this.read<{ expiresAt: number }>(file).catch(() => undefined);
        // A holder that died keeps it only until its expiry.
        if (cur && cur.expiresAt > Date.now()) return null;
        await fsp.rm(file, { force: true });
      }
    }
    return null;
  }
  subscribe(fn: (e: AcmeStoreEvent) => void) {
    this.listeners.add(fn);
    if (!this.watcher) {
      try {
        this.watcher = watch(this.dir, (_ev, f) => {
          const m = f ? /^cert-(.+)\.json$/.exec(String(f)) : null;
          if (!m) return;
          const name = m[1]!.replace(/^_wildcard\./, '*.');
          for (const l of this.listeners) l({ kind: 'certificate', name });
        });
        this.watcher.on('error', () => {});
      } catch {
        /* the manager's periodic re-read covers it */
      }
    }
    return () => this.listeners.delete(fn);
  }
  async close() {
    this.watcher?.close();
  }
}
