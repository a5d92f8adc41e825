// Picks the store implementation from a URL:
//   file:DIR, file:./relative/dir, file:///abs/dir  → embedded file store
//   redis://[user:pass@]host:port[/db][?prefix=P]   → Redis store (also rediss://)

import { fileURLToPath } from 'node:url';
import { FileStore, type FileStoreOptions } from './file/file-store.js';
import type { RedisStoreOptions } from './redis/redis-store.js';
import type { Store, StoreLogger } from './types.js';

export interface OpenStoreOptions extends Omit<FileStoreOptions, 'logger'>, Omit<RedisStoreOptions, 'logger'> {
  logger?: StoreLogger;
}

/** Where a `file:` URL points, or undefined for other schemes. */
export function fileStoreDir(url: string): string | undefined {
  if (url.startsWith('file://')) return fileURLToPath(url);
  if (url.startsWith('file:')) return url.slice('file:'.length);
  return undefined;
}

export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<Store> {
  const dir = fileStoreDir(url);
  if (dir !== undefined) {
    if (dir === '') throw new TypeError(`store URL ${JSON.stringify(url)} names no directory (use file:DIR)`);
    return FileStore.open(dir, opts);
  }
  if (/^rediss?:\/\//.test(url)) {
    // `?prefix=` is ours, not ioredis's: take it out of the URL.
    const u = new URL(url);
    const prefix = u.searchParams.get('prefix');
    u.searchParams.delete('prefix');
    const keyPrefix = opts.keyPrefix ?? prefix ?? undefined;
    // Loaded only for Redis: ioredis costs ~20 MB of RSS a file-store relay never needs.
    const { RedisStore } = await import('./redis/redis-store.js');
    return RedisStore.open(u.toString(), { ...opts, ...(keyPrefix !== undefined ? { keyPrefix } : {}) });
  }
  throw new TypeError(`unsupported store URL ${JSON.stringify(url)}: use file:DIR or redis://HOST:PORT`);
}
