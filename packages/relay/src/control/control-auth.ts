import type { AccountClaims } from '@tunnel/protocol';
import { checkAccountCredential, type CredentialPolicy } from '../connectors/credential-check.js';
import type { OperatorKeyGuard } from './operator-key-guard.js';
import type { Store } from '../store/types.js';
import { ApiError } from './api-error.js';

/** Verify an account credential (cert.json) offline, then check it is not revoked. */
export async function authenticateAccount(store: Store, publicKey: string, authorization: string | undefined, policy: CredentialPolicy): Promise<AccountClaims> {
  const r = await checkAccountCredential(bearer(authorization), publicKey, store, policy);
  if ('code' in r) throw new ApiError(r.status, r.code, r.message);
  return r.claims;
}

/** Operator actions: the operator key (Bearer), through the per-IP guess throttle. */
export async function authenticateOperator(guard: OperatorKeyGuard | undefined, ip: string, authorization: string | undefined): Promise<void> {
  if (!guard) throw new ApiError(403, 'operator_disabled', 'this relay has no operator key configured');
  const r = await guard.check(ip, bearer(authorization));
  if (r.ok) return;
  if (r.status === 429) throw tooManyKeyFailures(r.retryAfterS);
  throw new ApiError(401, 'invalid_operator_key', 'operator key rejected');
}

export function tooManyKeyFailures(retryAfterS: number): ApiError {
  return new ApiError(429, 'too_many_key_failures', `too many wrong operator keys from your address: retry in ${retryAfterS} s`, retryAfterS);
}

export function bearer(h: string | undefined): string {
  return h && h.startsWith('Bearer ') ? h.slice(7).trim() : '';
}
