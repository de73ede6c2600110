import { describe, expect, it } from "vitest";
import { Metrics } from "../features/operations/metrics.js";
import { type ObservedCall, observed } from "./observed.js";

class FakePort {
  readonly name = "fake";
  calls = 0;
  async store(n: number): Promise<number> {
    this.calls++;
    await new Promise((r) => setTimeout(r, 5));
    return n * 2;
  }
  async fail(): Promise<never> {
    throw new Error("db down");
  }
  /** Calls another method on itself: one call, not two. */
  async storeTwice(n: number): Promise<number> {
    return (await this.store(n)) + (await this.store(n));
  }
  sync(): string {
    return this.name;
  }
}

describe("observed", () => {
  it("times each async method by name and outcome, passing results, errors, properties and sync methods through", async () => {
    const calls: ObservedCall[] = [];
    const port = observed(new FakePort(), (call) => calls.push(call));
    expect(await port.store(2)).toBe(4);
    await expect(port.fail()).rejects.toThrow("db down");
    expect(await port.storeTwice(1)).toBe(4);
    expect(port.sync()).toBe("fake");
    expect(port.name).toBe("fake");
    expect(port.calls).toBe(3);
    expect(port).toBeInstanceOf(FakePort);
    expect(port.store).toBe(port.store); // one wrapper per method
    expect(calls.map(({ operation, outcome }) => [operation, outcome])).toEqual([
      ["store", "ok"],
      ["fail", "error"],
      ["storeTwice", "ok"],
    ]);
    expect(calls[0]!.seconds).toBeGreaterThanOrEqual(0.004);
  });

  it("feeds the database latency histogram by operation and outcome", async () => {
    const metrics = new Metrics(() => 0);
    const port = observed(new FakePort(), (call) => metrics.observeDbCall(call));
    await port.store(1);
    await port.fail().catch(() => {});
    const text = await metrics.registry.metrics();
    expect(text).toContain('palaver_db_call_duration_seconds_count{operation="store",outcome="ok"} 1');
    expect(text).toContain('palaver_db_call_duration_seconds_count{operation="fail",outcome="error"} 1');
  });
});
