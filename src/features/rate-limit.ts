import { Refusal } from "../errors.js";
import type { RateLimit, RateLimiter, RateLimiters } from "../ports/rate-limiter.js";

export interface LimitOptions extends RateLimit {
  /** What the limit allows, as the refusal tells it: "this device may send 600 messages a minute". */
  allows: string;
}

/**
 * One of the limits on writes, so that a runaway or hostile client cannot flood other users' inboxes or the stores.
 * A request past it is refused as rate-limited (RESOURCE_EXHAUSTED with a `retry-after` in seconds) before anything is
 * stored.
 */
export class Limit {
  private readonly limiter: RateLimiter;

  constructor(
    limiters: RateLimiters,
    private readonly options: LimitOptions,
  ) {
    this.limiter = limiters(options);
  }

  /** Counts the request (`points`: how much of the limit it uses) against the key, or refuses it. */
  async take(key: string, points = 1): Promise<void> {
    const waitMs = await this.limiter.take(key, points);
    if (waitMs === null) return;
    const seconds = Math.max(1, Math.ceil(waitMs / 1000));
    throw new Refusal("rate_limited", `${this.options.allows}: retry in ${seconds} s`, seconds);
  }
}
