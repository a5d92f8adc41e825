import { readFileSync } from 'node:fs';
import { peekClaims } from '@tunnel/protocol';

export class CredentialError extends Error {}

/** `<TUNNEL-ID>.json` in TUNNEL_HOME: what `tunnel create` writes and `tunnel run NAME` reads. */
export interface TunnelCredentialsFile {
  accountId: string;
  tunnelId: string;
  tunnelName: string;
  /** The fleet-signed tunnel credential (the same string `tunnel token` prints). */
  token: string;
  relays: string[];
  controlUrl?: string;
  /** Fleet public key that signs relay lists. */
  fleetKey?: string;
}

/** A file the credential came from (watched for rotation). */
export type CredentialFile = { kind: 'token-file' | 'credentials-file'; path: string };

/** Seconds since the epoch at which the token expires, if it says. */
export function tokenExpiry(token: string): number | undefined {
  const exp = peekClaims(token)?.exp;
  return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
}

export interface TokenSources {
  token?: string;
  tokenFile?: string;
  credentialsFile?: string;
}

/**
 * Where the credential comes from, in cloudflared's order: --token (or
 * TUNNEL_TOKEN), --token-file, then a credentials file. --token-file and the
 * environment keep the secret out of `ps`.
 */
export function resolveToken(s: TokenSources): { token: string; source: string; file?: TunnelCredentialsFile; watch?: CredentialFile } {
  if (s.token) return { token: s.token.trim(), source: '--token' };
  if (s.tokenFile) {
    let t: string;
    try {
      t = readFileSync(s.tokenFile, 'utf8').trim();
    } catch (e) {
      throw new CredentialError(`cannot read token file ${s.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!t) throw new CredentialError(`token file ${s.tokenFile} is empty`);
    return { token: t, source: s.tokenFile, watch: { kind: 'token-file', path: s.tokenFile } };
  }
  if (s.credentialsFile) {
    const file = readCredentialsFile(s.credentialsFile);
    return { token: file.token, source: s.credentialsFile, file, watch: { kind: 'credentials-file', path: s.credentialsFile } };
  }
  throw new CredentialError('no tunnel credential: pass --token, set TUNNEL_TOKEN, use --token-file, or name a tunnel created with `tunnel create`');
}

export function readCredentialsFile(path: string): TunnelCredentialsFile {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CredentialError(code ? `cannot read credentials file ${path}: ${code}` : `credentials file ${path} is not valid JSON`);
  }
  const f = v as Partial<TunnelCredentialsFile>;
  if (typeof f.token !== 'string' || typeof f.tunnelId !== 'string') {
    throw new CredentialError(`credentials file ${path} lacks token/tunnelId; recreate it with \`tunnel create\` or \`tunnel token NAME\``);
  }
  return {
    accountId: String(f.accountId ?? ''),
    tunnelId: f.tunnelId,
    tunnelName: String(f.tunnelName ?? ''),
    token: f.token,
    relays: Array.isArray(f.relays) ? f.relays.map(String) : [],
    ...(f.controlUrl ? { controlUrl: String(f.controlUrl) } : {}),
    ...(typeof f.fleetKey === 'string' ? { fleetKey: f.fleetKey } : {}),
  };
}

/** Relays to dial: given on the command line / config, else the ones in the credential. */
export function relaysFor(token: string, given: readonly string[]): string[] {
  const list = given.length > 0 ? [...given] : tokenRelays(token);
  return list.map(toConnectUrl);
}

export function tokenRelays(token: string): string[] {
  const c = peekClaims(token);
  return Array.isArray(c?.relays) ? (c.relays as unknown[]).filter((x): x is string => typeof x === 'string') : [];
}

/** Accept http(s):// spellings of a relay's connector endpoint too. */
export function toConnectUrl(u: string): string {
  if (u.startsWith('http://')) return 'ws://' + u.slice(7);
  if (u.startsWith('https://')) return 'wss://' + u.slice(8);
  return u;
}
