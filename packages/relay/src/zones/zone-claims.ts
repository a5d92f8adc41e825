// Self-service zone claims (DESIGN §12): the account publishes a TXT record
// `_tunnel-challenge.<zone>` holding a token only this fleet can compute for
// that account and zone; the relay resolves it and grants the zone. The token
// is derived (HMAC with the fleet key), so there is no challenge state to keep.

import { createHmac } from 'node:crypto';
import { Resolver } from 'node:dns/promises';

export const CHALLENGE_LABEL = '_tunnel-challenge';

export interface ZoneClaimOptions {
  /** DNS server to ask, `HOST:PORT` or `HOST` (default: the system's resolvers). */
  readonly resolver?: string;
  /** Per-query timeout (default 3000 ms). */
  readonly timeoutMs?: number;
  /** Ceiling on DNS checks in flight on this relay (every account together). */
  readonly checks: ClaimChecks;
}

/**
 * Each `--verify` makes the relay send DNS queries on an account's behalf, so
 * the checks in flight are capped (a flood gets 429s, not a queue of lookups).
 * Counted in /metrics.
 */
export class ClaimChecks {
  inFlight = 0;
  refused = 0;
  constructor(readonly max: number) {}

  /** Runs `fn` if under the ceiling; undefined (and counted) when full. */
  async run<T>(fn: () => Promise<T>): Promise<T | undefined> {
    if (this.inFlight >= this.max) {
      this.refused++;
      return undefined;
    }
    this.inFlight++;
    try {
      return await fn();
    } finally {
      this.inFlight--;
    }
  }
}

export function challengeRecord(zone: string): string {
  return `${CHALLENGE_LABEL}.${zone}`;
}

export function challengeToken(fleetSecretKey: string, accountId: string, zone: string): string {
  const mac = createHmac('sha256', Buffer.from(fleetSecretKey, 'base64')).update(`tunnel zone claim v1\n${accountId}\n${zone}`).digest('base64url');
  return `tunnel-zone-claim=${mac.slice(0, 43)}`;
}

export type ClaimCheck = { readonly found: true } | { readonly found: false; readonly reason: string };

/** Resolves the challenge record and looks for `expected` among its TXT strings. */
export async function checkClaim(zone: string, expected: string, o: Omit<ZoneClaimOptions, 'checks'> = {}): Promise<ClaimCheck> {
  const resolver = new Resolver({ timeout: o.timeoutMs ?? 3000, tries: 2 });
  if (o.resolver) resolver.setServers([o.resolver]);
  const name = challengeRecord(zone);
  let records: string[][];
  try {
    records = await resolver.resolveTxt(name);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'ERROR';
    return { found: false, reason: code === 'ENOTFOUND' || code === 'ENODATA' ? `no TXT record at ${name}` : `cannot resolve ${name} (${code})` };
  }
  // A long TXT value arrives split in 255-byte strings: join each record.
  const values = records.map((chunks) => chunks.join(''));
  if (values.includes(expected)) return { found: true };
  return { found: false, reason: `the TXT record at ${name} does not hold this account's token (found ${values.length} other value(s))` };
}
