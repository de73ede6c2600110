import { Code, ConnectError } from "@connectrpc/connect";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectChatClient, grpcChatClient } from "../../src/client/device.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer } from "../support/server.js";

describe.each(testBackends().slice(0, 1))("authentication on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend);
  });
  afterAll(() => server?.close());

  async function codeWith(token: string | null): Promise<Code | "ok"> {
    try {
      await connectChatClient(server.url, token ?? "").listChats({});
      return "ok";
    } catch (error) {
      return ConnectError.from(error).code;
    }
  }

  it("accepts a token minted with the server's secret", async () => {
    expect(await codeWith(await server.token("alice", "phone"))).toBe("ok");
  });

  it("refuses a missing, malformed, expired or wrongly signed token with UNAUTHENTICATED", async () => {
    const wrongKey = await new SignJWT({ device: "phone" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("alice")
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode("not the server's secret, but long enough"));
    expect(await codeWith(null)).toBe(Code.Unauthenticated);
    expect(await codeWith("garbage")).toBe(Code.Unauthenticated);
    expect(await codeWith(await server.token("alice", "phone", { ttl: 60, now: new Date(Date.now() - 3_600_000) }))).toBe(Code.Unauthenticated);
    expect(await codeWith(wrongKey)).toBe(Code.Unauthenticated);
  });

  it("refuses an unauthenticated Connect stream", async () => {
    const stream = grpcChatClient(server.url, "garbage").subscribe({});
    await expect((async () => { for await (const _ of stream) break; })()).rejects.toMatchObject({ code: Code.Unauthenticated });
  });
});
