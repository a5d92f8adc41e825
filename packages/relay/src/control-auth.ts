import { verifyToken, TokenError, TokenKind, constantTimeEqual, type AccountClaims } from '@tunnel/protocol';
import type { Store } from './store/types.js';
import { ApiError } from './api-error.js';

/** Verify an account credential (cert.json) offline, then check it is not revoked. */
export async function authenticateAccount(store: Store, publicKey: string, authorization: string | undefined): Promise<AccountClaims> {
  const token = bearer(authorization);
  if (!token) throw new ApiError(401, 'missing_credential', 'no account credential: run `tunnel login` first');
  let claims: AccountClaims;
  try {
    claims = verifyToken(TokenKind.Account, token, publicKey).claims as unknown as AccountClaims;
  } catch (e) {
    const code = e instanceof TokenError ? e.code : 'MALFORMED';
    throw new ApiError(401, 'invalid_credential', code === 'WRONG_KIND' ? 'that is not an account credential' : `account credential rejected (${code.toLowerCase()}): run \`tunnel login\` again`);
  }
  if (typeof claims.accountId !== 'string' || typeof claims.jti !== 'string') throw new ApiError(401, 'invalid_credential', 'account credential lacks its account');
  if (await store.isRevoked(claims.jti)) throw new ApiError(403, 'credential_revoked', 'this account credential has been revoked: run `tunnel login` again');
  if (!(await store.getAccount(claims.accountId))) throw new ApiError(403, 'account_deleted', 'the account of this credential no longer exists');
  return claims;
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
