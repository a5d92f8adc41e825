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
  /**
   * The fleet's Ed25519 public key (base64url): the connector verifies signed
   * relay lists with it. Absent in tokens issued before signed lists; such a
   * connector keeps to the relays its token names.
   */
  fleetKey?: string;
  iat: number;
  /**
   * Seconds since the epoch. Absent only from credentials issued before
   * credentials expired (a relay's `--legacy-credentials` decides on those).
   */
  exp?: number;
  /**
   * Set only on a quick tunnel's token (`tunnel --url`): the one hostname it
   * was issued for and the one connector that may use it. Relays refuse it
   * from any other connector id; it is never an account credential.
   */
  quick?: QuickBinding;
}

export interface QuickBinding {
  hostname: string;
  connectorId: string;
}

/** `cert.json`: the account credential `tunnel login` obtains. */
export interface AccountClaims {
  jti: string;
  accountId: string;
  accountName: string;
  controlUrl: string;
  /** The fleet's public key, as in TunnelClaims. */
  fleetKey?: string;
  iat: number;
  /** Seconds since the epoch; absent only from legacy credentials. */
  exp?: number;
}

/** One relay of a signed relay list (`GET /v1/relays`). */
export interface RelayListEntry {
  id: string;
  region: string;
  connectUrl: string;
  controlUrl: string;
  publicUrl: string;
  draining: boolean;
}

/**
 * `GET /v1/relays` answers `{relays, signed}`: `signed` is a RelayList token
 * over the same list, valid for a short while, so a connector follows only
 * relays the fleet vouches for, however it fetched the list.
 */
export interface RelayListClaims {
  /** Only what a connector acts on, so a list of ~80 relays still fits in MAX_TOKEN_LENGTH. */
  relays: Array<Pick<RelayListEntry, 'id' | 'connectUrl' | 'controlUrl' | 'draining'>>;
  iat: number;
  exp: number;
}

/** How long a signed relay list stays valid: a replayed old list cannot outlive this. */
export const RELAY_LIST_TTL_SECONDS = 120;

/** An enrollment token an operator hands a user (`--enroll`): single-use unless `reusable`. */
export interface EnrollClaims {
  jti: string;
  accountId: string;
  iat: number;
  exp: number;
  reusable?: boolean;
}

/** Default lifetimes of what a relay issues (configurable on the relay). */
export const CredentialLifetime = {
  accountSeconds: 90 * 24 * 3600,
  tunnelSeconds: 365 * 24 * 3600,
} as const;

export const TokenKind = {
  Tunnel: 'tunnel',
  Account: 'account',
  Enroll: 'enroll',
  RelayList: 'relay-list',
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
