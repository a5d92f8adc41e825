import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import { constantTimeEqual } from '@tunnel/protocol';
import type { LimitHits } from '../relay-limits.js';
import { fleetRateLimiter, type SharedRedis } from '../rate-limiter.js';

export type KeyCheck = { ok: true } | { ok: false; status: 401; reason: 'missing' | 'wrong' } | { ok: false; status: 429; retryAfterS: number };

/**
 * The one throttle on operator-key guesses, shared by every path that takes
 * the key (control API Bearer, dashboard form, relay stats): `failures`
 * wrong keys per client IP per window; past that every try from the IP is
 * refused (429 with Retry-After), a right key included, until the window
 * ends. With a Redis fleet store the counts live in Redis, so a guesser
 * cannot multiply its budget by the number of relays.
 */
export class OperatorKeyGuard {
  private readonly limiter: RateLimiterAbstract;

  constructor(
    private readonly operatorKey: string,
    private readonly o: { failures: number; windowMs: number; hits: LimitHits; redis?: SharedRedis },
  ) {
    this.limiter = fleetRateLimiter({ points: o.failures, durationS: o.windowMs / 1000, keyPrefix: 'operator-key-failures', redis: o.redis });
  }

  async check(ip: string, presented: string | undefined): Promise<KeyCheck> {
    if (this.o.failures > 0) {
      const used = await this.limiter.get(ip);
      if (used && used.consumedPoints >= this.o.failures) {
        this.o.hits.hit('operator_key_failures');
        return { ok: false, status: 429, retryAfterS: Math.max(1, Math.ceil(used.msBeforeNext / 1000)) };
      }
    }
    if (presented && constantTimeEqual(presented, this.operatorKey)) return { ok: true };
    if (this.o.failures > 0) await this.limiter.consume(ip).catch(() => {});
    return { ok: false, status: 401, reason: presented ? 'wrong' : 'missing' };
  }
}
