import { parseDuration, verifyToken, TokenError, TokenKind, CredentialLifetime, type AccountClaims, type TunnelClaims } from '@tunnel/protocol';
import type { Logger } from 'pino';
import type { Store } from '../store/types.js';

/**
 * Credentials issued before credentials expired carry no `exp`. Refusing
 * them outright would silently break every existing install, so a relay
 * accepts them by default — logging each one once, by id, so the operator
 * knows what to rotate — until the operator says `--legacy-credentials
 * refuse` (after rotating: `tunnel token --rotate NAME`, `tunnel login`).
 */
export type LegacyPolicy = 'accept' | 'refuse';

export interface CredentialPolicy {
  /** Lifetime of account credentials issued here (`tunnel login`), seconds. */
  accountSeconds: number;
  /** Lifetime of tunnel tokens issued here, seconds. */
  tunnelSeconds: number;
  legacy: LegacyPolicy;
  legacySeen?: LegacyCredentials;
}

export const DEFAULT_CREDENTIAL_POLICY: CredentialPolicy = {
  accountSeconds: CredentialLifetime.accountSeconds,
  tunnelSeconds: CredentialLifetime.tunnelSeconds,
  legacy: 'accept',
};

/** Why a credential was refused; the CLI prints `message` and the `code`. */
export interface CredentialRefusal {
  status: 401 | 403 | 503;
  code: 'missing_credential' | 'invalid_credential' | 'credential_expired' | 'credential_no_expiry' | 'credential_revoked' | 'tunnel_deleted' | 'tunnel_unknown' | 'account_deleted' | 'store_unavailable';
  message: string;
}

type Verified<T> = { claims: T } | CredentialRefusal;

/** Counts legacy (no `exp`) credentials in use, and names each once in the log. */
export class LegacyCredentials {
  private readonly seen = new Set<string>();
  constructor(
    private readonly log: Logger,
    private readonly maxTracked = 10_000,
  ) {}

  get count(): number {
    return this.seen.size;
  }

  note(kind: 'tunnel' | 'account', jti: string, policy: LegacyPolicy): void {
    const key = `${kind}:${jti}`;
    if (this.seen.has(key) || this.seen.size >= this.maxTracked) return;
    this.seen.add(key);
    this.log.warn(
      { event: 'legacy-credential', kind, tokenId: jti, policy, legacySeen: this.seen.size },
      policy === 'accept'
        ? `a ${kind} credential without an expiry is in use (accepted: rotate it with ${kind === 'tunnel' ? '`tunnel token --rotate NAME`' : '`tunnel login`'})`
        : `a ${kind} credential without an expiry was refused (--legacy-credentials refuse)`,
    );
  }
}

/**
 * What differs between the credentials a relay accepts; the order of the
 * checks (signature and kind, shape, legacy, revocation, subject) does not.
 */
interface CredentialKind<T> {
  kind: 'tunnel' | 'account';
  tokenKind: (typeof TokenKind)[keyof typeof TokenKind];
  /** How a refusal names it: "tunnel credential". */
  what: string;
  missing: string;
  /** How to get a new one, appended to refusals the holder can fix. */
  again: string;
  /** The claims this kind must carry; `lacks` says why when they are not there. */
  hasShape(claims: T): boolean;
  lacks: string;
  revoked: string;
  /** That what the credential is for still exists; a refusal when not. */
  subject(claims: T, store: Store): Promise<CredentialRefusal | null>;
}

const TUNNEL: CredentialKind<TunnelClaims> = {
  kind: 'tunnel',
  tokenKind: TokenKind.Tunnel,
  what: 'tunnel credential',
  missing: 'no tunnel credential (Authorization: Bearer …)',
  again: 'get a new one with `tunnel token --rotate NAME` (or `tunnel token NAME`)',
  hasShape: (c) => typeof c.tunnelId === 'string' && typeof c.jti === 'string' && typeof c.accountId === 'string',
  lacks: 'tunnel credential lacks tunnel, account or id',
  revoked: 'tunnel credential has been revoked',
  async subject(claims, store) {
    const tunnel = await store.getTunnel(claims.tunnelId);
    if (!tunnel && !(await store.getTombstone(claims.tunnelId))) {
      // A valid credential for a tunnel the store has never heard of, and no
      // tombstone saying it was deleted: the store lost its data. Retryable.
      return { status: 503, code: 'tunnel_unknown', message: `the relay's store does not know tunnel ${claims.tunnelId} (store empty or wiped?); retry later` };
    }
    if (!tunnel || tunnel.accountId !== claims.accountId) return { status: 403, code: 'tunnel_deleted', message: `tunnel ${claims.tunnelId} no longer exists` };
    return null;
  },
};

const ACCOUNT: CredentialKind<AccountClaims> = {
  kind: 'account',
  tokenKind: TokenKind.Account,
  what: 'account credential',
  missing: 'no account credential: run `tunnel login` first',
  again: 'run `tunnel login` again',
  hasShape: (c) => typeof c.accountId === 'string' && typeof c.jti === 'string',
  lacks: 'account credential lacks its account',
  revoked: 'this account credential has been revoked: run `tunnel login` again',
  async subject(claims, store) {
    if (await store.getAccount(claims.accountId)) return null;
    return { status: 403, code: 'account_deleted', message: 'the account of this credential no longer exists' };
  },
};

async function checkCredential<T extends { jti: string; exp?: number }>(k: CredentialKind<T>, token: string, publicKey: string, store: Store, policy: CredentialPolicy): Promise<Verified<T>> {
  if (!token) return { status: 401, code: 'missing_credential', message: k.missing };
  let claims: T;
  try {
    claims = verifyToken(k.tokenKind, token, publicKey).claims as unknown as T;
  } catch (e) {
    return signatureRefusal(e, k.what, k.again);
  }
  if (!k.hasShape(claims)) return { status: 401, code: 'invalid_credential', message: k.lacks };
  if (claims.exp === undefined) {
    policy.legacySeen?.note(k.kind, claims.jti, policy.legacy);
    if (policy.legacy === 'refuse') return { status: 401, code: 'credential_no_expiry', message: `this ${k.kind} credential has no expiry and this relay no longer accepts such: ${k.again}` };
  }
  try {
    if (await store.isRevoked(claims.jti)) return { status: 403, code: 'credential_revoked', message: k.revoked };
    return (await k.subject(claims, store)) ?? { claims };
  } catch (e) {
    return { status: 503, code: 'store_unavailable', message: `relay cannot check the credential now: ${(e as Error).message}` };
  }
}

function signatureRefusal(e: unknown, what: string, again: string): CredentialRefusal {
  const why = e instanceof TokenError ? e.code : 'MALFORMED';
  if (why === 'EXPIRED') return { status: 401, code: 'credential_expired', message: `${what} has expired: ${again}` };
  return {
    status: 401,
    code: 'invalid_credential',
    message:
      why === 'BAD_SIGNATURE'
        ? `${what} signature does not verify (tampered, or issued by another fleet)`
        : why === 'WRONG_KIND'
          ? `this is not ${/^[aeiou]/.test(what) ? 'an' : 'a'} ${what}`
          : `${what} is malformed`,
  };
}

/**
 * Every place a tunnel credential is accepted (the connector endpoint, the
 * control API's connector routes, quick tunnel renewal) checks it here:
 * signature, kind, expiry, shape, revocation, and that its tunnel still exists.
 */
export function checkTunnelCredential(token: string, publicKey: string, store: Store, policy: CredentialPolicy): Promise<Verified<TunnelClaims>> {
  return checkCredential(TUNNEL, token, publicKey, store, policy);
}

/** The account credential (cert.json) check of the control API: the same steps, and that the account still exists. */
export function checkAccountCredential(token: string, publicKey: string, store: Store, policy: CredentialPolicy): Promise<Verified<AccountClaims>> {
  return checkCredential(ACCOUNT, token, publicKey, store, policy);
}

/**
 * A credential lifetime → seconds: the duration grammar (`24h`, `1h30m`,
 * `45s`) plus whole days (`90d`; a credential's life is counted in seconds,
 * so a DST day is no ambiguity here). A bare number is refused like every
 * other duration. Throws with a clear reason naming `what`.
 */
export function parseLifetime(s: string, what: string): number {
  const t = String(s).trim();
  if (/^\d+$/.test(t)) throw new RangeError(`${what}: expected a lifetime with a unit, e.g. "${t}s" or "90d", got the bare number ${t}`);
  const days = /^(\d+)d$/.exec(t);
  let seconds: number;
  if (days) {
    seconds = Number(days[1]) * 86400;
  } else {
    try {
      seconds = parseDuration(t) / 1000;
    } catch {
      throw new RangeError(`${what}: ${JSON.stringify(s)} is not a lifetime (e.g. 90d, 24h, 30m, 45s)`);
    }
  }
  if (!Number.isInteger(seconds)) throw new RangeError(`${what}: ${JSON.stringify(s)} is not a whole number of seconds`);
  if (seconds < 1) throw new RangeError(`${what}: must be at least 1 second`);
  return seconds;
}
