import { watchFile, unwatchFile, type Stats } from 'node:fs';
import type { Logger } from 'pino';
import { peekClaims } from '@tunnel/protocol';
import { resolveToken, CredentialError, type CredentialFile } from './credentials.js';

/** Where `tunnel run` read its credential: only files can be rotated under it. */
export type CredentialSource = CredentialFile;

/**
 * Watches the token file or credentials file a connector runs from, so
 * `tunnel token --rotate NAME` (or an operator replacing the file) takes
 * effect without a restart. Polling stat (fs.watchFile) rather than
 * fs.watch: the CLI replaces the file by rename, which an inode watch loses.
 * A file that does not parse, is empty, or holds a credential for another
 * tunnel is logged and ignored: the running credential stays.
 */
export function watchCredential(source: CredentialSource, current: string, onNew: (token: string) => void, log: Logger, intervalMs = 500): () => void {
  let token = current;
  const tunnelId = peekClaims(current)?.tunnelId;
  const listener = (now: Stats, prev: Stats) => {
    if (now.mtimeMs === prev.mtimeMs && now.size === prev.size && now.ino === prev.ino) return;
    if (now.nlink === 0) return; // removed (mid-replace): the next change brings the new file
    let next: string;
    try {
      next = resolveToken(source.kind === 'token-file' ? { tokenFile: source.path } : { credentialsFile: source.path }).token;
    } catch (e) {
      log.warn({ event: 'credential-file-rejected', file: source.path, err: e instanceof CredentialError ? e.message : (e as Error).message }, 'credential file changed but cannot be used; keeping the current credential');
      return;
    }
    if (next === token) return;
    const claims = peekClaims(next);
    if (!claims || claims.tunnelId !== tunnelId) {
      log.warn({ event: 'credential-file-rejected', file: source.path }, 'credential file now holds a credential for another tunnel (or none); keeping the current credential');
      return;
    }
    token = next;
    log.info({ event: 'credential-file-changed', file: source.path, exp: typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : null }, 'tunnel credential file changed: rotating');
    onNew(next);
  };
  watchFile(source.path, { interval: intervalMs, persistent: false }, listener);
  return () => unwatchFile(source.path, listener);
}
