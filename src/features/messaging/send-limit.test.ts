import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { retryAfterSeconds, SendLimit } from "./send-limit.js";

const device = (deviceKey: string) => ({ userId: "alice", deviceName: `d${deviceKey}`, deviceKey });

describe("SendLimit", () => {
  it("lets a device send its limit in a minute, then refuses with RESOURCE_EXHAUSTED and when to retry", async () => {
    const limit = new SendLimit(3);
    for (let i = 0; i < 3; i++) await limit.take(device("1"));
    const refused = await limit.take(device("1")).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ConnectError);
    const error = refused as ConnectError;
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(error.rawMessage).toMatch(/may send 3 messages a minute: retry in \d+ s/);
    const retryAfter = retryAfterSeconds(error);
    expect(retryAfter).toBeGreaterThanOrEqual(59);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(error.metadata.get("retry-after")).toBe(String(retryAfter));
  });

  it("counts each device on its own", async () => {
    const limit = new SendLimit(1);
    await limit.take(device("1"));
    await expect(limit.take(device("2"))).resolves.toBeUndefined();
    await expect(limit.take(device("1"))).rejects.toMatchObject({ code: Code.ResourceExhausted });
  });
});

describe("retryAfterSeconds", () => {
  it("reads a positive whole number of seconds, and nothing else", () => {
    const withHeader = (value?: string) =>
      new ConnectError("x", Code.ResourceExhausted, value === undefined ? undefined : { "retry-after": value });
    expect(retryAfterSeconds(withHeader("7"))).toBe(7);
    for (const value of [undefined, "", "0", "-3", "1.5", "soon"]) expect(retryAfterSeconds(withHeader(value))).toBeUndefined();
  });
});
