/**
 * A token bucket: `perSecond` tokens a second, holding at most `burst`.
 * `take()` is O(1) and allocation-free, so it can sit on a per-frame path.
 * A rate of 0 (or less) means no limit.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly burst: number;

  constructor(
    private readonly perSecond: number,
    burst = perSecond,
  ) {
    this.burst = Math.max(1, burst);
    this.tokens = this.burst;
    this.last = performance.now();
  }

  get unlimited(): boolean {
    return !(this.perSecond > 0);
  }

  /** True when a token was available (and is now spent). */
  take(): boolean {
    if (!(this.perSecond > 0)) return true;
    const now = performance.now();
    const t = this.tokens + ((now - this.last) * this.perSecond) / 1000;
    this.tokens = t > this.burst ? this.burst : t;
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
