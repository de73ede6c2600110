/**
 * Counting writes against the limits on them: how many points (requests, or bytes) one key (a device, a user) may take
 * in a fixed window. In memory each node counts alone; on Redis every node shares one count per key.
 */

export interface RateLimit {
  /** Names the count, one name per limit (on Redis, the prefix of its keys). */
  name: string;
  points: number;
  windowSeconds: number;
  /**
   * Counted by this node alone even when nodes share a store: for keys only one node ever takes (a device's stream is
   * held by one node), where a shared count would cost a round trip per take and count nothing more.
   */
  nodeLocal?: boolean;
}

export interface RateLimiter {
  /**
   * Takes `points` from the key's count in the current window: null when they fit, else the milliseconds until the
   * window ends and the count starts over. Points past the limit are counted too, so hammering does not help.
   */
  take(key: string, points: number): Promise<number | null>;
}

/** Makes the limiter of one limit. */
export type RateLimiters = (limit: RateLimit) => RateLimiter;
