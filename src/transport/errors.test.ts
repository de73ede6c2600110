import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { DependencyUnavailableError, Refusal } from "../errors.js";
import { retryAfterSeconds, toConnectError } from "./errors.js";

const logger = pino({ level: "silent" });

describe("toConnectError", () => {
  it("gives each refusal its code and keeps its message", () => {
    const cases: [Refusal, Code][] = [
      [new Refusal("invalid", "a"), Code.InvalidArgument],
      [new Refusal("not_found", "b"), Code.NotFound],
      [new Refusal("forbidden", "c"), Code.PermissionDenied],
      [new Refusal("not_ready", "d"), Code.FailedPrecondition],
      [new Refusal("unauthenticated", "e"), Code.Unauthenticated],
      [new Refusal("replaced", "f"), Code.Aborted],
      [new Refusal("too_slow", "g"), Code.ResourceExhausted],
      [new Refusal("shutting_down", "h"), Code.Unavailable],
    ];
    for (const [refusal, code] of cases) {
      const error = toConnectError(refusal, logger);
      expect([error.code, error.rawMessage]).toEqual([code, refusal.message]);
      expect(retryAfterSeconds(error)).toBeUndefined();
    }
  });

  it("tells a rate-limited client when to retry, in a retry-after header", () => {
    const error = toConnectError(new Refusal("rate_limited", "slow down", 42), logger);
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(error.metadata.get("retry-after")).toBe("42");
    expect(retryAfterSeconds(error)).toBe(42);
  });

  it("answers an unavailable dependency with UNAVAILABLE and anything unexpected with a bare INTERNAL", () => {
    expect(toConnectError(new DependencyUnavailableError("postgres"), logger).code).toBe(Code.Unavailable);
    const internal = toConnectError(new TypeError("secret detail"), logger);
    expect([internal.code, internal.rawMessage]).toEqual([Code.Internal, "internal error"]);
  });

  it("passes ConnectErrors through", () => {
    const error = new ConnectError("as is", Code.OutOfRange);
    expect(toConnectError(error, logger)).toBe(error);
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
