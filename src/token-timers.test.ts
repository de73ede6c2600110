import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { renewalTime, runAt } from "./token-timers.js";

describe("runAt", () => {
  beforeEach(() => vi.useFakeTimers({ now: new Date("2030-01-01T00:00:00Z") }));
  afterEach(() => vi.useRealTimers());

  it("fires at a moment further off than one setTimeout reaches, and not before", () => {
    const run = vi.fn();
    const thirtyDays = 30 * 86_400_000;
    runAt(Date.now() + thirtyDays, run);
    vi.advanceTimersByTime(thirtyDays - 1);
    expect(run).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(run).toHaveBeenCalledOnce();
  });

  it("fires at once for a moment already past, and never once cancelled", () => {
    const past = vi.fn();
    runAt(Date.now() - 1, past);
    expect(past).toHaveBeenCalledOnce();
    const cancelled = vi.fn();
    runAt(Date.now() + 1000, cancelled)();
    vi.advanceTimersByTime(2000);
    expect(cancelled).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("renewalTime", () => {
  it("is a quarter of the lifetime before expiry, at most a minute before, in ms", () => {
    expect(renewalTime({ iat: 1000, exp: 1010 })).toBe(1007_500);
    expect(renewalTime({ iat: 0, exp: 12 * 3600 })).toBe((12 * 3600 - 60) * 1000);
    expect(renewalTime({ exp: 500 })).toBe(500_000);
    expect(renewalTime({ iat: 0 })).toBeUndefined();
  });
});
