// How long a deleted tunnel's tombstone is kept. The tombstone tells a
// token of a deleted tunnel (refused for good: the connector stops) from a
// token the store does not know (a wiped store: the connector retries).
// Once every token of the tunnel has expired that question no longer comes
// up (an expired token is refused before the store is asked), so a
// tombstone needs to outlive only the longest token it answers for; after
// that the store drops it and deleted tunnels cost it nothing.

import type { Tombstone } from './types.js';

/** A tombstone without expiresAt predates expiring ones and is kept. */
export function tombstoneExpired(t: Tombstone, now: number): boolean {
  return t.expiresAt !== undefined && t.expiresAt <= now;
}

/**
 * A tunnel's tokens last at most `tokenSeconds` from their issue, and none is
 * issued after the deletion; a minute on top (or the token lifetime, when
 * that is shorter) covers clocks that differ between relays.
 */
export function tombstoneLifetimeMs(tokenSeconds: number): number {
  const ms = tokenSeconds * 1000;
  return ms + Math.min(CLOCK_SLACK_MS, ms);
}

const CLOCK_SLACK_MS = 60_000;
