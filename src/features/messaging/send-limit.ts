import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";

/**
 * How many messages one device may send a minute, so that a runaway or hostile client cannot flood its chats' inboxes.
 * Counted on the node that takes the send: a device's stream stays on one node, and a browser's unary calls mostly ride
 * one connection. Past the limit a send is refused with RESOURCE_EXHAUSTED and a `retry-after` (seconds) header or
 * trailer, before anything is stored.
 */
export class SendLimit {
  private readonly limiter: RateLimiterMemory;

  constructor(private readonly perMinute: number) {
    this.limiter = new RateLimiterMemory({ points: perMinute, duration: 60 });
  }

  async take(caller: Caller): Promise<void> {
    try {
      await this.limiter.consume(caller.deviceKey);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
      const seconds = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
      throw new Refusal(
        "rate_limited",
        `this device may send ${this.perMinute} messages a minute: retry in ${seconds} s`,
        seconds,
      );
    }
  }
}
