import { RateLimiterMemory, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Redis } from 'ioredis';

/** The fleet's Redis connection, when the store is Redis (RedisStore.sharedRedis()). */
export interface SharedRedis {
  client: Redis;
  keyPrefix: string;
}

/** The Redis connection a store shares for fleet-wide counters, if it is a Redis store. */
export function sharedRedisOf(store: object): SharedRedis | undefined {
  return (store as { sharedRedis?: () => SharedRedis }).sharedRedis?.();
}

/**
 * A rate limiter of `points` per `durationS` seconds per key: counted in
 * Redis when the fleet shares one (so N relays do not multiply a budget by
 * N), else in this process. Redis unreachable: counted here meanwhile rather
 * than failing the request.
 */
export function fleetRateLimiter(o: { points: number; durationS: number; keyPrefix: string; redis?: SharedRedis }): RateLimiterAbstract {
  const opts = { points: Math.max(1, o.points), duration: Math.max(1, Math.ceil(o.durationS)) };
  return o.redis
    ? new RateLimiterRedis({
        ...opts,
        storeClient: o.redis.client,
        keyPrefix: `${o.redis.keyPrefix}${o.keyPrefix}`,
        insuranceLimiter: new RateLimiterMemory({ ...opts, keyPrefix: o.keyPrefix }),
      })
    : new RateLimiterMemory({ ...opts, keyPrefix: o.keyPrefix });
}
