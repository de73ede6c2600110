import { describe, expect, it } from "vitest";
import { memoryRateLimiters } from "../adapters/rate-limiters.js";
import { Refusal } from "../errors.js";
import { Limit } from "./rate-limit.js";

const newLimit = (points: number) =>
  new Limit(memoryRateLimiters, {
    name: "test",
    points,
    windowSeconds: 60,
    allows: `this device may send ${points} messages a minute`,
  });

describe("Limit", () => {
  it("lets a key take its limit in a window, then refuses it as rate-limited with when to retry", async () => {
    const limit = newLimit(3);
    for (let i = 0; i < 3; i++) await limit.take("d1");
    const refused = await limit.take("d1").then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(Refusal);
    const error = refused as Refusal;
    expect(error.kind).toBe("rate_limited");
    expect(error.message).toMatch(/^this device may send 3 messages a minute: retry in \d+ s$/);
    expect(error.retryAfterSeconds).toBeGreaterThanOrEqual(59);
    expect(error.retryAfterSeconds).toBeLessThanOrEqual(60);
  });

  it("counts each key on its own, and a request's points together", async () => {
    const limit = newLimit(10);
    await limit.take("d1", 10);
    await expect(limit.take("d2", 10)).resolves.toBeUndefined();
    await expect(limit.take("d1")).rejects.toMatchObject({ kind: "rate_limited" });
  });
});
