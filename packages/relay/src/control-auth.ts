import { constantTimeEqual, type AccountClaims } from '@tunnel/protocol';
import { checkAccountCredential, type CredentialPolicy } from './credential-check.js';
import type { Store } from './store/types.js';
import { ApiError } from './api-error.js';

/** Verify an account credential (cert.json) offline, then check it is not revoked. */
export async function authenticateAccount(store: Store, publicKey: string, authorization: string | undefined, policy: CredentialPolicy): Promise<AccountClaims> {
  const r = await checkAccountCredential(bearer(authorization), publicKey, store, policy);
  if ('code' in r) throw new ApiError(r.status, r.code, r.message);
  return r.claims;
}

/** Operator actions: the operator key, compared in constant time. */
export function authenticateOperator(operatorKey: string | undefined, authorization: string | undefined): void {
  const given = bearer(authorization);
  if (!operatorKey) throw new ApiError(403, 'operator_disabled', 'this relay has no operator key configured');
  if (!given || !constantTimeEqual(given, operatorKey)) throw new ApiError(401, 'invalid_operator_key', 'operator key rejected');
}

export function bearer(h: string | undefined): string {
  return h && h.startsWith('Bearer ') ? h.slice(7).trim() : '';
}
