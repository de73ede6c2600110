import { describe, expect, it } from "vitest";
import { withKeepAlive } from "./keep-alive.js";

/** Yields each value after its delay (ms); records whether it was closed. */
function delayed(values: [string, number][]) {
  const state = { closed: false };
  async function* source() {
    try {
      for (const [value, ms] of values) {
        await new Promise((resolve) => setTimeout(resolve, ms));
        yield value;
      }
    } finally {
      state.closed = true;
    }
  }
  return { source: source(), state };
}

describe("withKeepAlive", () => {
  it("passes values through and fills each idle stretch with keep-alives", async () => {
    const { source } = delayed([["a", 0], ["b", 220], ["c", 0]]);
    const out: string[] = [];
    for await (const value of withKeepAlive(source, 50, () => "·")) out.push(value);
    expect(out[0]).toBe("a");
    expect(out.slice(-2)).toEqual(["b", "c"]); // no keep-alive between values that come at once
    const idle = out.slice(1, -2);
    expect(idle.length).toBeGreaterThanOrEqual(2); // about four; timers on a busy machine fire late
    expect(new Set(idle)).toEqual(new Set(["·"]));
  });

  it("closes the source when the consumer stops early", async () => {
    const { source, state } = delayed([["a", 0], ["b", 0], ["c", 0]]);
    for await (const value of withKeepAlive(source, 50, () => "·")) if (value === "b") break;
    expect(state.closed).toBe(true);
  });
});
