import { SignJWT, createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWTVerifyGetKey } from "jose";
import { idPattern } from "../api-rules.js";
import { DependencyUnavailableError, Refusal } from "../errors.js";
import { LruMap } from "../lru-map.js";

/** Who a token speaks for: its `sub` and `device` claims. */
export interface TokenSubject {
  userId: string;
  deviceName: string;
}

/** A token the verifier accepted: who it speaks for, and until when. */
export interface VerifiedToken extends TokenSubject {
  /** Its `exp`: a stream opened with it ends then. */
  expiresAt: Date;
  /** Its `iat`: tokens issued before their device was removed are refused. */
  issuedAt: Date;
}

export type VerifyToken = (token: string) => Promise<VerifiedToken>;

export interface MintOptions {
  /** Lifetime: seconds, or a span such as "30d", "12h", "90m", "3600s", "2w". Default 30 days. */
  ttl?: number | string;
  /** When the token is issued; tests mint tokens that have already expired. */
  now?: Date;
}

/** The lifetime `palaver token` gives by default, and the longest the server accepts by default: MAX_TOKEN_LIFETIME. */
export const defaultTtlSeconds = 30 * 24 * 60 * 60;
/** How far a token's `iat` may be ahead of this server's clock (the issuer's clock may run a little fast). */
const clockSkewSeconds = 60;
const unitSeconds = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 } as const;
const asymmetricAlgorithms = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

/** Mints an HS256 token; what `palaver token --user U --device D [--ttl 30d]` prints. */
export async function mintToken(secret: Uint8Array, subject: TokenSubject, options: MintOptions = {}): Promise<string> {
  checkId("user id", subject.userId);
  checkId("device name", subject.deviceName);
  const ttl = typeof options.ttl === "string" ? parseTtl(options.ttl) : (options.ttl ?? defaultTtlSeconds);
  if (!Number.isSafeInteger(ttl) || ttl <= 0) throw new RangeError(`ttl must be a positive number of seconds`);
  const issuedAt = Math.floor((options.now ?? new Date()).getTime() / 1000);
  return new SignJWT({ device: subject.deviceName })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(subject.userId)
    .setIssuedAt(issuedAt)
    .setExpirationTime(issuedAt + ttl)
    .sign(secret);
}

/** "30d" → 2592000. */
export function parseTtl(text: string): number {
  const match = /^(\d+)([smhdw])$/.exec(text.trim());
  if (!match) throw new RangeError(`ttl must look like 30d, 12h, 90m, 3600s or 2w, got "${text}"`);
  return Number(match[1]) * unitSeconds[match[2] as keyof typeof unitSeconds];
}

/**
 * Verifies bearer tokens: HS256 with the server's secret, and, when a JWKS URL is configured, asymmetric tokens
 * against that key set. The algorithm in the header picks the key, so a token can never be checked with the wrong
 * kind of key. A token must say when it was issued (`iat`) and live no longer than `maxLifetimeSeconds` (default 30
 * days), so that a stolen token is not good for ever. Every rejection is UNAUTHENTICATED; a key set that cannot be
 * fetched is a dependency outage.
 */
export function createTokenVerifier(options: {
  secret: Uint8Array;
  jwksUrl?: string;
  maxLifetimeSeconds?: number;
  /** Tokens remembered as verified (see rememberVerified); unset: every call verifies the signature again. */
  remember?: { max: number; forMs: number };
}): VerifyToken {
  const verify = verifySignedToken(options);
  return options.remember ? rememberVerified(verify, options.remember) : verify;
}

/**
 * Verifying a signature is most of a connect's work for a device that was already seen (an HMAC through WebCrypto, a
 * tenth of a millisecond), and a device presents the same token on every reconnect and unary call until it renews
 * it. A token that passed is remembered as what it verified to, for `forMs` at most and never past its `exp`; the same
 * string is the same signature, so the answer cannot differ but for time: `exp` is checked on every use, and `forMs`
 * bounds how long a token signed with a key its JWKS has since dropped is still taken. Removed devices' tokens are
 * refused later, by the device lookup, so they need no forgetting here.
 */
function rememberVerified(verify: VerifyToken, options: { max: number; forMs: number }): VerifyToken {
  const verified = new LruMap<string, { token: VerifiedToken; until: number }>(options.max);
  return async (token) => {
    const now = Date.now();
    const known = verified.get(token);
    if (known && now < known.until) return known.token;
    const result = await verify(token);
    verified.set(token, { token: result, until: Math.min(now + options.forMs, result.expiresAt.getTime()) });
    return result;
  };
}

function verifySignedToken(options: {
  secret: Uint8Array;
  jwksUrl?: string;
  maxLifetimeSeconds?: number;
}): VerifyToken {
  const jwks = options.jwksUrl ? remoteKeys(new URL(options.jwksUrl)) : undefined;
  // Imported once: given the raw secret, jose imports it again for every token, a tenth of a connect's work.
  const hmacKey = crypto.subtle.importKey("raw", options.secret, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  const maxLifetime = options.maxLifetimeSeconds ?? defaultTtlSeconds;
  return async (token) => {
    let payload;
    try {
      const { alg } = decodeProtectedHeader(token);
      const claims = { requiredClaims: ["sub", "exp", "iat"] };
      if (alg === "HS256") {
        payload = (await jwtVerify(token, await hmacKey, { ...claims, algorithms: ["HS256"] })).payload;
      } else if (jwks && alg !== undefined && asymmetricAlgorithms.includes(alg)) {
        payload = (await jwtVerify(token, jwks, { ...claims, algorithms: asymmetricAlgorithms })).payload;
      } else {
        throw unauthenticated(`token algorithm ${alg ?? "(none)"} is not accepted`);
      }
    } catch (error) {
      throw explain(error);
    }
    const { sub, device } = payload;
    // jose checked that both are numbers, and that exp has not passed.
    const exp = payload.exp!;
    const iat = payload.iat!;
    if (exp - iat > maxLifetime) {
      const limit = `MAX_TOKEN_LIFETIME, ${maxLifetime} s`;
      throw unauthenticated(
        `token lives ${exp - iat} s (exp - iat), longer than this server accepts (${limit}): use a shorter-lived token`,
      );
    }
    // Else a token issued "in a year" with the longest lifetime would be good for 13 months.
    if (iat > Date.now() / 1000 + clockSkewSeconds) throw unauthenticated("token is issued in the future (iat)");
    if (typeof sub !== "string" || !idPattern.test(sub)) throw unauthenticated("token subject is not a valid user id");
    if (typeof device !== "string" || !idPattern.test(device)) {
      throw unauthenticated("token device claim is missing or not a valid device name");
    }
    return { userId: sub, deviceName: device, expiresAt: new Date(exp * 1000), issuedAt: new Date(iat * 1000) };
  };
}

/** A JWKS getter that reports fetch failures as the dependency being down rather than as a bad token. */
function remoteKeys(url: URL): JWTVerifyGetKey {
  const keys = createRemoteJWKSet(url);
  return async (header, token) => {
    try {
      return await keys(header, token);
    } catch (error) {
      const fetchFailed = !(error instanceof errors.JOSEError) || error instanceof errors.JWKSTimeout;
      if (fetchFailed || error instanceof errors.JWKSInvalid) throw new DependencyUnavailableError("jwks", { cause: error });
      throw error;
    }
  };
}

function explain(error: unknown): Error {
  if (error instanceof Refusal || error instanceof DependencyUnavailableError) return error;
  if (error instanceof errors.JWTExpired) return unauthenticated("token has expired");
  if (error instanceof errors.JWSSignatureVerificationFailed) return unauthenticated("token signature is not valid");
  if (error instanceof errors.JWTClaimValidationFailed) return unauthenticated(`token rejected: ${error.message}`);
  if (error instanceof errors.JWKSNoMatchingKey) return unauthenticated("no key in the key set matches the token");
  if (error instanceof errors.JOSEAlgNotAllowed) return unauthenticated("token algorithm is not accepted");
  return unauthenticated("token is malformed");
}

function unauthenticated(message: string): Refusal {
  return new Refusal("unauthenticated", message);
}

function checkId(what: string, value: string): void {
  if (!idPattern.test(value)) throw new RangeError(`${what} must match ${idPattern.source}, got "${value}"`);
}
