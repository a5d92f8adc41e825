/**
 * Nonces of signed relay-to-relay requests, remembered for as long as their
 * signature could still verify, so a captured request is accepted once.
 *
 * Two engines: the fleet's Redis (`SET NX PX`, shared by every relay, so a
 * request captured on its way to relay A cannot be replayed to relay B) and,
 * for a one-relay file-store fleet, a bounded in-process map.
 */
export interface ReplayCache {
  /**
   * True the first time `key` is claimed within `ttlMs`; false for a replay.
   * Rejects (ReplayCacheFull, or a store error) when it cannot tell: callers
   * refuse the request then, never let it through unchecked.
   */
  claim(key: string, ttlMs: number): Promise<boolean>;
}

export class ReplayCacheFull extends Error {
  override readonly name = 'ReplayCacheFull';
}

export const DEFAULT_REPLAY_CACHE_ENTRIES = 200_000;

/**
 * A Map from nonce to expiry. Every entry gets the same TTL, so insertion
 * order is expiry order: expired entries are dropped from the front, O(1)
 * amortised per claim. When full of live entries it refuses (fail closed)
 * instead of forgetting a nonce that could then be replayed.
 */
export class MemoryReplayCache implements ReplayCache {
  private readonly seen = new Map<string, number>();

  constructor(readonly maxEntries = DEFAULT_REPLAY_CACHE_ENTRIES) {}

  get size(): number {
    return this.seen.size;
  }

  claim(key: string, ttlMs: number): Promise<boolean> {
    try {
      return Promise.resolve(this.claimSync(key, ttlMs));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  claimSync(key: string, ttlMs: number, now = Date.now()): boolean {
    this.sweep(now);
    const exp = this.seen.get(key);
    if (exp !== undefined && exp > now) return false;
    if (this.seen.size >= this.maxEntries) throw new ReplayCacheFull(`replay cache full (${this.maxEntries} live nonces)`);
    // Re-insert so the Map order stays expiry order.
    this.seen.delete(key);
    this.seen.set(key, now + ttlMs);
    return true;
  }

  private sweep(now: number): void {
    for (const [k, exp] of this.seen) {
      if (exp > now) break;
      this.seen.delete(k);
    }
  }
}
