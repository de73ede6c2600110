import { describe, expect, it } from "vitest";
import { Shutdown } from "./shutdown.js";

describe("Shutdown", () => {
  it("ends every call still registered, once, with the signal already aborted with the reason", () => {
    const shutdown = new Shutdown();
    const ended: string[] = [];
    const reasons: unknown[] = [];
    shutdown.onShutdown(() => {
      ended.push("a");
      reasons.push(shutdown.signal.reason);
    });
    const cancelB = shutdown.onShutdown(() => ended.push("b"));
    shutdown.onShutdown(() => ended.push("c"));
    cancelB(); // call b ended on its own before the shutdown
    shutdown.begin("stopping");
    shutdown.begin("again");
    expect(ended).toEqual(["a", "c"]);
    expect(reasons).toEqual(["stopping"]);
    expect(shutdown.signal.aborted).toBe(true);
  });

  it("ends a call that registers after the shutdown began at once", () => {
    const shutdown = new Shutdown();
    shutdown.begin("stopping");
    let ended = false;
    shutdown.onShutdown(() => (ended = true));
    expect(ended).toBe(true);
  });
});
