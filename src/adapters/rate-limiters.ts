import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import type { RateLimit, RateLimiter, RateLimiters } from "../ports/rate-limiter.js";
import type { RedisLink } from "./redis/connect.js";

/** Limits counted by this node alone: the single node's, and those of nodeLocal limits. */
export const memoryRateLimiters: RateLimiters = (limit) => flexible(memoryLimiter(limit));

/**
 * Limits counted once across the nodes sharing this Redis (`palaver:limit:{name}:{key}`, expiring with the window).
 * While Redis is unreachable each node counts in memory instead (rate-limiter-flexible's insurance limiter), so the
 * limits still hold per node; the connection's errors are logged and counted where it was opened (connectRedis).
 */
export function redisRateLimiters(redis: RedisLink): RateLimiters {
  return (limit) =>
    flexible(
      limit.nodeLocal
        ? memoryLimiter(limit)
        : new RateLimiterRedis({
            storeClient: redis.limiterStore,
            useRedisPackage: true,
            keyPrefix: `palaver:limit:${limit.name}`,
            points: limit.points,
            duration: limit.windowSeconds,
            // A key past its limit is refused by this node, without asking Redis, for the rest of its window.
            inMemoryBlockOnConsumed: limit.points + 1,
            // The commands connection fails commands at once while it is not connected (connectRedis).
            insuranceLimiter: memoryLimiter(limit),
          }),
    );
}

function memoryLimiter(limit: RateLimit): RateLimiterMemory {
  return new RateLimiterMemory({ keyPrefix: limit.name, points: limit.points, duration: limit.windowSeconds });
}

function flexible(limiter: RateLimiterAbstract): RateLimiter {
  return {
    async take(key, points) {
      try {
        await limiter.consume(key, points);
        return null;
      } catch (rejection) {
        // rate-limiter-flexible rejects with the count when over the limit, and with an Error when it failed.
        if (rejection instanceof RateLimiterRes) return rejection.msBeforeNext;
        throw rejection;
      }
    },
  };
}
