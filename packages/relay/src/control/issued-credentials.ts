import { randomInt } from 'node:crypto';
import { randomId, sealTo, signToken, TokenKind, type AccountClaims, type EnrollClaims } from '@tunnel/protocol';
import { StoreError, type Store } from '../store/types.js';
import type { FleetKeys } from './keys.js';
import { ApiError } from './api-error.js';
import { DEFAULT_CREDENTIAL_POLICY, type CredentialPolicy } from '../connectors/credential-check.js';
import { ensureAccount } from './provisioning.js';

/** What issuing a credential needs of the control API's dependencies. */
export interface Issuer {
  store: Store;
  keys: FleetKeys;
  /** This relay's own control URL (goes into credentials). */
  controlUrl(): string;
  /** Credential lifetimes and what to do with legacy (no `exp`) credentials. */
  policy?: CredentialPolicy;
}

const CODE_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789'; // no 0/O, 1/I

export function loginCode(): string {
  let s = '';
  for (let i = 0; i < 8; i++) s += CODE_ALPHABET[randomInt(CODE_ALPHABET.length)];
  return `${s.slice(0, 4)}-${s.slice(4)}`;
}

export function normalizeCode(c: string): string {
  const s = c.toUpperCase().replace(/[^A-Z0-9]/g, '');
  return s.length === 8 ? `${s.slice(0, 4)}-${s.slice(4)}` : c.toUpperCase();
}

export function policyOf(d: Pick<Issuer, 'policy'>): CredentialPolicy {
  return d.policy ?? DEFAULT_CREDENTIAL_POLICY;
}

/** A revocation record outlives the token it revokes: its expiry, or ten years for a legacy one. */
export function expiryMs(exp: number | undefined): number {
  return typeof exp === 'number' ? exp * 1000 : Date.now() + 10 * 365 * 24 * 3600 * 1000;
}

export function issueAccountCredential(d: Pick<Issuer, 'keys' | 'controlUrl' | 'policy'>, accountId: string, accountName: string): string {
  const now = Math.floor(Date.now() / 1000);
  const claims: AccountClaims = { jti: randomId(12), accountId, accountName, controlUrl: d.controlUrl(), fleetKey: d.keys.publicKey, iat: now, exp: now + policyOf(d).accountSeconds };
  return signToken(TokenKind.Account, claims, d.keys.secretKey);
}

export function issueEnrollToken(keys: FleetKeys, accountId: string, ttlSeconds = 24 * 3600, reusable = false): string {
  const now = Math.floor(Date.now() / 1000);
  const claims: EnrollClaims = { jti: randomId(12), accountId, iat: now, exp: now + ttlSeconds, ...(reusable ? { reusable: true } : {}) };
  return signToken(TokenKind.Enroll, claims, keys.secretKey);
}

/** Approve a pending login: the account credential is sealed to the CLI's box key. */
export async function approveLogin(d: Issuer, rawCode: string, accountName: string) {
  const code = normalizeCode(rawCode);
  const session = await d.store.getLoginSession(code);
  if (!session) throw new ApiError(404, 'login_not_found', `no pending login with code ${code} (unknown or expired)`);
  if (session.state !== 'pending') throw new ApiError(409, `login_already_${session.state}`, `login ${code} is already ${session.state}`);
  const account = await ensureAccount(d.store, accountName);
  const credential = issueAccountCredential(d, account.id, account.name);
  await d.store.approveLoginSession(code, account.id, sealTo(session.boxPublicKey, credential));
  return { approved: code, account: account.name, accountId: account.id };
}

/**
 * Deny a pending login: the waiting `tunnel login` is told the operator
 * denied it (a deleted session would read as "unknown or expired").
 */
export async function denyLogin(d: Pick<Issuer, 'store'>, rawCode: string): Promise<{ denied: string }> {
  const code = normalizeCode(rawCode);
  const session = await d.store.getLoginSession(code);
  if (!session) throw new ApiError(404, 'login_not_found', `no pending login with code ${code} (unknown or expired)`);
  if (session.state === 'approved') throw new ApiError(409, 'login_already_approved', `login ${code} is already approved`);
  try {
    await d.store.denyLoginSession(code);
  } catch (e) {
    if (e instanceof StoreError && e.code === 'NOT_FOUND') throw new ApiError(404, 'login_not_found', `no pending login with code ${code} (unknown or expired)`);
    if (e instanceof StoreError && e.code === 'CONFLICT') throw new ApiError(409, 'login_already_approved', `login ${code} is already approved`);
    throw e;
  }
  return { denied: code };
}
