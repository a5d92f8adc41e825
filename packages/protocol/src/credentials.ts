// The credentials the fleet issues. All are Ed25519-signed tokens (token.ts),
// so any relay verifies them offline; these are their claim shapes.

/** Presented by a connector: lets it serve one tunnel. `tunnel token NAME` prints it. */
export interface TunnelClaims {
  /** Credential id, the handle for revocation. */
  jti: string;
  accountId: string;
  tunnelId: string;
  tunnelName: string;
  /** Relay connector endpoints (ws:// or wss://) the connector dials first. */
  relays: string[];
  /** Relay control API, where the connector learns the live relay list. */
  controlUrl?: string;
  iat: number;
}

/** `cert.json`: the account credential `tunnel login` obtains. */
export interface AccountClaims {
  jti: string;
  accountId: string;
  accountName: string;
  controlUrl: string;
  iat: number;
}

/** A single-use-in-spirit enrollment token an operator hands a user (`--enroll`). */
export interface EnrollClaims {
  jti: string;
  accountId: string;
  iat: number;
  exp: number;
}

export const TokenKind = {
  Tunnel: 'tunnel',
  Account: 'account',
  Enroll: 'enroll',
} as const;

/**
 * Read a token's claims WITHOUT verifying it: the connector uses this to find
 * its relays; only a relay's verification decides whether the token is good.
 */
export function peekClaims(token: string): Record<string, unknown> | null {
  const dot = token.indexOf('.');
  if (dot <= 0) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
