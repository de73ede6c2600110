import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { type CryptoKey, SignJWT, UnsecuredJWT, decodeJwt, exportJWK, generateKeyPair } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { DependencyUnavailableError, Refusal } from "../errors.js";
import { createTokenVerifier, mintToken, parseTtl } from "./tokens.js";

const secret = new TextEncoder().encode("a test secret that is long enough for HS256");
const alice = { userId: "alice", deviceName: "phone" };

async function rejection(promise: Promise<unknown>): Promise<Refusal> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(Refusal);
  expect((error as Refusal).kind).toBe("unauthenticated");
  return error as Refusal;
}

describe("mintToken", () => {
  it("mints a token the verifier accepts, which says when it was issued and when it expires", async () => {
    const verify = createTokenVerifier({ secret });
    const token = await mintToken(secret, alice, { ttl: "1h" });
    const { iat, exp } = decodeJwt(token);
    expect(await verify(token)).toEqual({ ...alice, issuedAt: new Date(iat! * 1000), expiresAt: new Date(exp! * 1000) });
  });

  it("puts the user in sub, the device in device, and expires in 30 days by default", async () => {
    const now = new Date("2030-01-01T00:00:00Z");
    const claims = decodeJwt(await mintToken(secret, alice, { now }));
    expect(claims).toEqual({ sub: "alice", device: "phone", iat: now.getTime() / 1000, exp: now.getTime() / 1000 + 30 * 86_400 });
  });

  it("takes a lifetime in seconds or as a span", async () => {
    const claims = decodeJwt(await mintToken(secret, alice, { ttl: "12h" }));
    expect(claims.exp! - claims.iat!).toBe(12 * 3600);
    const short = decodeJwt(await mintToken(secret, alice, { ttl: 90 }));
    expect(short.exp! - short.iat!).toBe(90);
  });

  it("refuses ids the API would refuse, and nonsense lifetimes", async () => {
    await expect(mintToken(secret, { userId: "al ice", deviceName: "phone" })).rejects.toThrow("user id must match");
    await expect(mintToken(secret, { userId: "alice", deviceName: "" })).rejects.toThrow("device name must match");
    await expect(mintToken(secret, alice, { ttl: "forever" })).rejects.toThrow("ttl must look like 30d");
    await expect(mintToken(secret, alice, { ttl: 0 })).rejects.toThrow("ttl must be a positive");
  });
});

describe("parseTtl", () => {
  it.each([
    ["3600s", 3600],
    ["90m", 5400],
    ["12h", 43_200],
    ["30d", 2_592_000],
    ["2w", 1_209_600],
  ])("reads %s", (text, seconds) => {
    expect(parseTtl(text)).toBe(seconds);
  });
});

describe("createTokenVerifier", () => {
  const verify = createTokenVerifier({ secret });
  afterEach(() => vi.useRealTimers());

  it("refuses garbage, expired, wrongly signed, unsigned and claim-less tokens as UNAUTHENTICATED", async () => {
    expect((await rejection(verify("garbage"))).message).toBe("token is malformed");
    expect((await rejection(verify(""))).message).toBe("token is malformed");
    const expired = await mintToken(secret, alice, { ttl: 60, now: new Date(Date.now() - 3_600_000) });
    expect((await rejection(verify(expired))).message).toBe("token has expired");
    const otherSecret = new TextEncoder().encode("some other secret of a sufficient length");
    expect((await rejection(verify(await mintToken(otherSecret, alice)))).message).toBe("token signature is not valid");
    const unsigned = new UnsecuredJWT({ device: "phone" }).setSubject("alice").setExpirationTime("1h").encode();
    expect((await rejection(verify(unsigned))).message).toBe("token algorithm none is not accepted");
    const noExpiry = await new SignJWT({ device: "phone" }).setProtectedHeader({ alg: "HS256" }).setSubject("alice").setIssuedAt().sign(secret);
    expect((await rejection(verify(noExpiry))).message).toContain('"exp"');
    const noDevice = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("alice").setIssuedAt().setExpirationTime("1h").sign(secret);
    expect((await rejection(verify(noDevice))).message).toContain("device claim");
  });

  it("refuses a token that does not say when it was issued, or lives longer than the limit", async () => {
    const noIssuedAt = await new SignJWT({ device: "phone" }).setProtectedHeader({ alg: "HS256" }).setSubject("alice").setExpirationTime("1h").sign(secret);
    expect((await rejection(verify(noIssuedAt))).message).toBe('token rejected: missing required "iat" claim');
    expect((await rejection(verify(await mintToken(secret, alice, { ttl: "31d" })))).message).toBe(
      "token lives 2678400 s (exp - iat), longer than this server accepts (MAX_TOKEN_LIFETIME, 2592000 s): use a shorter-lived token",
    );
    await expect(verify(await mintToken(secret, alice, { ttl: "30d" }))).resolves.toMatchObject(alice);
    const hourly = createTokenVerifier({ secret, maxLifetimeSeconds: 3600 });
    await expect(hourly(await mintToken(secret, alice, { ttl: "1h" }))).resolves.toMatchObject(alice);
    expect((await rejection(hourly(await mintToken(secret, alice, { ttl: 3601 })))).message).toContain("MAX_TOKEN_LIFETIME, 3600 s");
  });

  it("refuses a token issued in the future, which would outlive the limit", async () => {
    const inAYear = new Date(Date.now() + 365 * 86_400_000);
    expect((await rejection(verify(await mintToken(secret, alice, { ttl: "30d", now: inAYear })))).message).toBe(
      "token is issued in the future (iat)",
    );
    // A little ahead is the issuer's clock running fast.
    await expect(verify(await mintToken(secret, alice, { ttl: "1h", now: new Date(Date.now() + 30_000) }))).resolves.toMatchObject(alice);
  });

  it("remembers a verified token, but never past its exp", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const remembering = createTokenVerifier({ secret, remember: { max: 10, forMs: 600_000 } });
    const token = await mintToken(secret, alice, { ttl: 60 });
    expect(await remembering(token)).toMatchObject(alice);
    expect(await remembering(token)).toMatchObject(alice);
    vi.setSystemTime(Date.now() + 61_000);
    expect((await rejection(remembering(token))).message).toBe("token has expired");
  });

  it("refuses asymmetric tokens when no key set is configured", async () => {
    const { privateKey } = await generateKeyPair("ES256");
    const token = await new SignJWT({ device: "phone" }).setProtectedHeader({ alg: "ES256" }).setSubject("alice").setIssuedAt().setExpirationTime("1h").sign(privateKey);
    expect((await rejection(verify(token))).message).toBe("token algorithm ES256 is not accepted");
  });
});

describe("createTokenVerifier with a JWKS URL", () => {
  let jwksServer: http.Server;
  let jwksUrl: string;
  let privateKey: CryptoKey;
  /** The key set the server publishes: one key, or none once a test drops it. */
  let keys: object[] = [];
  let publishedKeys: object[];
  beforeAll(async () => {
    const pair = await generateKeyPair("ES256");
    privateKey = pair.privateKey;
    publishedKeys = [{ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "ES256", use: "sig" }];
    keys = publishedKeys;
    jwksServer = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
    jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
  });
  afterAll(() => jwksServer?.close());
  afterEach(() => {
    vi.useRealTimers();
    keys = publishedKeys;
  });

  const signed = (key: CryptoKey, kid = "k1") =>
    new SignJWT({ device: "laptop" }).setProtectedHeader({ alg: "ES256", kid }).setSubject("bob").setIssuedAt().setExpirationTime("1h").sign(key);

  it("accepts tokens signed by a key in the set, and still HS256 tokens", async () => {
    const verify = createTokenVerifier({ secret, jwksUrl });
    expect(await verify(await signed(privateKey))).toMatchObject({ userId: "bob", deviceName: "laptop" });
    expect(await verify(await mintToken(secret, alice))).toMatchObject(alice);
  });

  it("refuses a token signed by a key outside the set", async () => {
    const verify = createTokenVerifier({ secret, jwksUrl });
    const stranger = (await generateKeyPair("ES256")).privateKey;
    expect((await rejection(verify(await signed(stranger)))).message).toBe("token signature is not valid");
    expect((await rejection(verify(await signed(stranger, "k9")))).message).toBe("no key in the key set matches the token");
  });

  it("reports a key set it cannot fetch as an unavailable dependency", async () => {
    const verify = createTokenVerifier({ secret, jwksUrl: "http://127.0.0.1:1/jwks.json" });
    await expect(verify(await signed(privateKey))).rejects.toBeInstanceOf(DependencyUnavailableError);
  });

  it("takes a remembered token signed with a key the set dropped for at most the remembering time", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const briefly = createTokenVerifier({ secret, jwksUrl, remember: { max: 10, forMs: 60_000 } });
    const long = createTokenVerifier({ secret, jwksUrl, remember: { max: 10, forMs: 3_600_000 } });
    const token = await signed(privateKey);
    expect(await briefly(token)).toMatchObject({ userId: "bob" });
    expect(await long(token)).toMatchObject({ userId: "bob" });
    keys = [];
    // Past jose's own cache of the key set (10 minutes), which then fetches the set without the key.
    vi.setSystemTime(Date.now() + 11 * 60_000);
    expect((await rejection(briefly(token))).message).toBe("no key in the key set matches the token");
    expect(await long(token)).toMatchObject({ userId: "bob" });
  });
});
