import { describe, expect, it, vi } from "vitest";
import { silentLogger } from "../../../test/support/features.js";
import type { InboxEntry } from "../../ports/db.js";
import { Metrics } from "../operations/metrics.js";
import { InboxCap } from "./inbox-cap.js";

const entries = (...deviceKeys: string[]): InboxEntry[] => deviceKeys.map((deviceKey, i) => ({ deviceKey, eventId: BigInt(i + 1) }));

describe("InboxCap", () => {
  function capWith(checkEvery: number, maxDevices = 100) {
    const calls: string[][] = [];
    let release = () => {};
    const db = {
      trimInboxes: vi.fn(async (_max: number, deviceKeys?: readonly string[]) => {
        calls.push([...deviceKeys!]);
        await new Promise<void>((resolve) => (release = resolve));
        return deviceKeys!.length;
      }),
    };
    const cap = new InboxCap(db, { maxEvents: 10, checkEvery, maxDevices }, silentLogger, new Metrics(() => 0));
    return { cap, calls, release: () => release() };
  }

  it("trims a device's inbox every checkEvery entries written to it, and not before", async () => {
    const { cap, calls, release } = capWith(3);
    cap.written(entries("a", "b", "a"));
    expect(calls).toEqual([]);
    cap.written(entries("a"));
    expect(calls).toEqual([["a"]]);
    release();
    await new Promise((resolve) => setImmediate(resolve)); // the trim is done
    cap.written(entries("a", "a", "b"));
    expect(calls).toEqual([["a"]]); // a's count started again when it fell due; b is at 2
    cap.written(entries("b"));
    expect(calls).toEqual([["a"], ["b"]]);
  });

  it("gathers the devices that fall due while a trim runs into the next one", async () => {
    const { cap, calls, release } = capWith(1);
    cap.written(entries("a"));
    cap.written(entries("b", "c"));
    cap.written(entries("b"));
    expect(calls).toEqual([["a"]]);
    release();
    await vi.waitFor(() => expect(calls).toEqual([["a"], ["b", "c"]]));
  });
});
