import { describe, expect, it } from "vitest";
import { Refusal } from "../../errors.js";
import { SendLimit } from "./send-limit.js";

const device = (deviceKey: string) => ({ userId: "alice", deviceName: `d${deviceKey}`, deviceKey });

describe("SendLimit", () => {
  it("lets a device send its limit in a minute, then refuses it as rate-limited with when to retry", async () => {
    const limit = new SendLimit(3);
    for (let i = 0; i < 3; i++) await limit.take(device("1"));
    const refused = await limit.take(device("1")).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(Refusal);
    const error = refused as Refusal;
    expect(error.kind).toBe("rate_limited");
    expect(error.message).toMatch(/may send 3 messages a minute: retry in \d+ s/);
    expect(error.retryAfterSeconds).toBeGreaterThanOrEqual(59);
    expect(error.retryAfterSeconds).toBeLessThanOrEqual(60);
  });

  it("counts each device on its own", async () => {
    const limit = new SendLimit(1);
    await limit.take(device("1"));
    await expect(limit.take(device("2"))).resolves.toBeUndefined();
    await expect(limit.take(device("1"))).rejects.toMatchObject({ kind: "rate_limited" });
  });
});
