import { randomBytes, createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { checkedName, type AcmeAccountRecord, type AcmeStore, type AcmeStoreEvent, type ChallengeRecord, type StoredCertificate } from './acme-store.js';

const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;
// Delete the lock only if it is still ours (it may have expired and been taken).
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/**
 * ACME records in the fleet's Redis, next to the store's keys (same prefix):
 * `acme:account:*`, `acme:cert:NAME`, `acme:http01:TOKEN` / `acme:alpn01:NAME`
 * (with a TTL), `acme:lock:*` (SET NX PX). New certificates and challenges
 * are published so the other relays load them before a client asks.
 */
export class RedisAcmeStore implements AcmeStore {
  private sub: Redis | null = null;
  private readonly listeners = new Set<(e: AcmeStoreEvent) => void>();
  private readonly channel: string;

  private constructor(
    private readonly client: Redis,
    private readonly prefix: string,
    private readonly owner: string,
  ) {
    this.channel = `${prefix}acme:events`;
  }

  static open(shared: { client: Redis; keyPrefix: string }, owner: string): RedisAcmeStore {
    return new RedisAcmeStore(shared.client, shared.keyPrefix, owner);
  }

  private k(...parts: string[]): string {
    return `${this.prefix}acme:${parts.join(':')}`;
  }
  private async get<T>(key: string): Promise<T | undefined> {
    const v = await this.client.get(key);
    return v === null ? undefined : (JSON.parse(v) as T);
  }

  getAccount(directory: string) {
    return this.get<AcmeAccountRecord>(this.k('account', createHash('sha256').update(directory).digest('hex').slice(0, 32)));
  }
  async putAccount(rec: AcmeAccountRecord) {
    await this.client.set(this.k('account', createHash('sha256').update(rec.directory).digest('hex').slice(0, 32)), JSON.stringify(rec));
  }
  getCertificate(name: string) {
    return this.get<StoredCertificate>(this.k('cert', checkedName(name)));
  }
  async putCertificate(rec: StoredCertificate) {
    await this.client.set(this.k('cert', checkedName(rec.name)), JSON.stringify(rec));
    await this.publish({ kind: 'certificate', name: rec.name });
  }
  async listCertificates() {
    const out: StoredCertificate[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.client.scan(cursor, 'MATCH', this.k('cert', '*'), 'COUNT', 200);
      cursor = next;
      for (const key of keys) {
        const c = await this.get<StoredCertificate>(key).catch(() => undefined);
        if (c) out.push(c);
      }
    } while (cursor !== '0');
    return out;
  }
  async putChallenge(rec: ChallengeRecord) {
    const ttl = Math.max(1_000, rec.expiresAt - Date.now());
    const key = rec.type === 'http-01' ? this.k('http01', checkToken(rec.token)) : this.k('alpn01', checkedName(rec.name));
    await this.client.set(key, rec.keyAuthorization, 'PX', ttl);
    await this.publish({ kind: 'challenge', record: rec });
  }
  async getHttpChallenge(token: string) {
    if (!TOKEN.test(token)) return undefined;
    return (await this.client.get(this.k('http01', token))) ?? undefined;
  }
  async getAlpnChallenge(name: string) {
    return (await this.client.get(this.k('alpn01', checkedName(name)))) ?? undefined;
  }
  async deleteChallenge(rec: ChallengeRecord) {
    await this.client.del(rec.type === 'http-01' ? this.k('http01', checkToken(rec.token)) : this.k('alpn01', checkedName(rec.name)));
  }
  async lock(key: string, ttlMs: number) {
    const k = this.k('lock', createHash('sha256').update(key).digest('hex').slice(0, 32));
    const mine = `${this.owner} ${randomBytes(8).toString('hex')}`;
    const ok = await this.client.set(k, mine, 'PX', ttlMs, 'NX');
    if (ok !== 'OK') return null;
    return async () => {
      await this.client.eval(RELEASE, 1, k, mine);
    };
  }
  private async publish(e: AcmeStoreEvent): Promise<void> {
    await this.client.publish(this.channel, JSON.stringify({ from: this.owner, e }));
  }
  subscribe(fn: (e: AcmeStoreEvent) => void) {
    this.listeners.add(fn);
    if (!this.sub) {
      const sub = this.client.duplicate({ connectionName: 'tunnel-acme-sub', commandTimeout: undefined, enableOfflineQueue: true, lazyConnect: false });
      this.sub = sub;
      sub.on('error', () => {});
      void sub.subscribe(this.channel).catch(() => {});
      sub.on('message', (_ch: string, msg: string) => {
        let parsed: { from?: string; e?: AcmeStoreEvent };
        try {
          parsed = JSON.parse(msg) as typeof parsed;
        } catch {
          return;
        }
        if (parsed.from === this.owner || !parsed.e) return;
        for (const l of this.listeners) l(parsed.e);
      });
    }
    return () => this.listeners.delete(fn);
  }
  async close() {
    this.sub?.disconnect();
  }
}

function checkToken(token: string): string {
  if (!TOKEN.test(token)) throw new Error('not an ACME token');
  return token;
}
