import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PlainHttpServer, rawRequest, servePlainHttp } from "../../test/support/plain-http.js";
import { createTokenVerifier } from "../auth/tokens.js";
import { createDevTokenHandler } from "./dev-token.js";

describe("POST /dev/token", () => {
  const secret = randomBytes(32);
  let server: PlainHttpServer;
  const post = (body: string, headers: Record<string, string> = { "content-type": "application/json" }) =>
    rawRequest(server.port, "/dev/token", { method: "POST", headers, body });

  beforeAll(async () => {
    server = await servePlainHttp([createDevTokenHandler(secret)]);
  });
  afterAll(() => server.close());

  it("mints a token the server accepts for that user and device", async () => {
    const res = await post(JSON.stringify({ user: "alice", device: "laptop-1" }));
    expect(res.status).toBe(200);
    expect(res.headers["cache-control"]).toBe("no-store");
    const { token, user, device } = JSON.parse(res.body);
    expect({ user, device }).toEqual({ user: "alice", device: "laptop-1" });
    expect(await createTokenVerifier({ secret })(token)).toMatchObject({ userId: "alice", deviceName: "laptop-1" });
  });

  it.each([
    [{ user: "../alice", device: "d" }, "user must"],
    [{ user: "alice" }, "device must"],
    [{ user: "alice", device: "" }, "device must"],
    [{ user: "a".repeat(129), device: "d" }, "user must"],
    [{ user: 7, device: "d" }, "user must"],
    [["alice", "d"], "user must"],
  ])("refuses %j with 400", async (body, message) => {
    const res = await post(JSON.stringify(body));
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).error).toContain(message);
  });

  it("refuses a body that is not JSON", async () => {
    const res = await post("user=alice");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).error).toBe("the body is not valid JSON");
  });

  it("takes only JSON, only POST, only small bodies", async () => {
    expect((await post('{"user":"a","device":"b"}', { "content-type": "text/plain" })).status).toBe(415);
    expect((await rawRequest(server.port, "/dev/token")).status).toBe(405);
    expect((await post(JSON.stringify({ user: "a", device: "b", pad: "x".repeat(5000) }))).status).toBe(413);
  });

  it("leaves other paths to the next handler", async () => {
    expect((await rawRequest(server.port, "/dev/tokens", { method: "POST" })).body).toBe("next");
  });
});
