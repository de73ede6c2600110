import { describe, expect, it } from "vitest";
import { MemoryDb } from "../adapters/memory/memory-db.js";
import type { DeviceRegistration, DeviceSignIn, DeviceStore } from "../ports/db.js";
import { DeviceDirectory } from "./device-directory.js";

const clock = { now: () => new Date() };

/** A MemoryDb's devices, recording each batch it is asked for and failing while `failing` is set. */
function recordingStore() {
  const db = new MemoryDb();
  const batches: string[][] = [];
  const store = {
    failing: false,
    batches,
    db,
    async registerDevices(devices: readonly DeviceSignIn[], now: Date, maxPerUser: number): Promise<DeviceRegistration[]> {
      batches.push(devices.map((d) => `${d.userId}/${d.deviceName}`));
      if (store.failing) throw new Error("database unavailable");
      return db.registerDevices(devices, now, maxPerUser);
    },
  } satisfies Pick<DeviceStore, "registerDevices"> & Record<string, unknown>;
  return store;
}

describe("DeviceDirectory", () => {
  it("looks up a lone miss at once, then the misses that came meanwhile in batches of at most maxBatch", async () => {
    const store = recordingStore();
    const directory = new DeviceDirectory(store, clock, { maxBatch: 4, maxInFlight: 1 });
    const keys = await Promise.all(Array.from({ length: 10 }, (_, i) => directory.resolve("alice", `device-${i}`)));
    expect(new Set(keys).size).toBe(10);
    expect(store.batches.map((b) => b.length)).toEqual([1, 4, 4, 1]);
    expect(store.batches.flat()).toEqual(Array.from({ length: 10 }, (_, i) => `alice/device-${i}`));
  });

  it("asks once for a device that several calls miss at the same time, and not again once it is known", async () => {
    const store = recordingStore();
    const directory = new DeviceDirectory(store, clock, { maxBatch: 100, maxInFlight: 1 });
    const keys = await Promise.all([
      directory.resolve("alice", "phone"),
      directory.resolve("alice", "phone"),
      directory.resolve("bob", "phone"),
      directory.resolve("alice", "phone"),
    ]);
    expect(keys[0]).toBe(keys[1]);
    expect(keys[0]).toBe(keys[3]);
    expect(keys[2]).not.toBe(keys[0]);
    expect(store.batches).toEqual([["alice/phone"], ["bob/phone"]]);
    expect(await directory.resolve("alice", "phone")).toBe(keys[0]);
    expect(await directory.resolve("bob", "phone")).toBe(keys[2]);
    expect(store.batches).toHaveLength(2);
  });

  it("fails every call waiting on a failed lookup, and tries again on the next call", async () => {
    const store = recordingStore();
    const directory = new DeviceDirectory(store, clock, { maxBatch: 100, maxInFlight: 1 });
    store.failing = true;
    const failed = await Promise.allSettled([directory.resolve("alice", "phone"), directory.resolve("alice", "phone")]);
    expect(failed.map((f) => f.status)).toEqual(["rejected", "rejected"]);
    expect(store.batches).toEqual([["alice/phone"]]);
    store.failing = false;
    expect(await directory.resolve("alice", "phone")).toMatch(/^[1-9][0-9]*$/);
    expect(store.batches).toHaveLength(2);
  });

  it("forgets the least recently used key past maxCached", async () => {
    const store = recordingStore();
    const directory = new DeviceDirectory(store, clock, { maxBatch: 100, maxInFlight: 1, maxCached: 2 });
    const phone = await directory.resolve("alice", "phone");
    await directory.resolve("alice", "laptop");
    expect(await directory.resolve("alice", "phone")).toBe(phone); // now the most recently used
    await directory.resolve("alice", "tablet"); // evicts the laptop
    store.batches.length = 0;
    await directory.resolve("alice", "phone");
    await directory.resolve("alice", "laptop");
    expect(store.batches).toEqual([["alice/laptop"]]);
  });

  it("refuses a new device past maxDevicesPerUser with FAILED_PRECONDITION, and takes it once one is removed", async () => {
    const store = recordingStore();
    const directory = new DeviceDirectory(store, clock, { maxBatch: 100, maxInFlight: 1, maxDevicesPerUser: 2 });
    await directory.resolve("alice", "phone");
    await directory.resolve("alice", "laptop");
    const refusal = await directory.resolve("alice", "tablet").catch((error: unknown) => error);
    expect(refusal).toMatchObject({ kind: "not_ready", message: expect.stringContaining("MAX_DEVICES_PER_USER") });
    expect(await store.db.removeDevice({ userId: "alice", deviceName: "laptop" }, new Date())).not.toBeNull();
    expect(await directory.resolve("alice", "tablet")).toMatch(/^[1-9][0-9]*$/);
  });

  it("refuses tokens issued before the device's removal once the device is forgotten, and takes newer ones", async () => {
    const store = recordingStore();
    const directory = new DeviceDirectory(store, clock, { maxBatch: 100, maxInFlight: 1 });
    const issued = new Date(Date.now() - 60_000);
    const before = await directory.resolve("alice", "phone", issued);
    const removed = (await store.db.removeDevice({ userId: "alice", deviceName: "phone" }, new Date()))!;
    expect(await directory.resolve("alice", "phone", issued)).toBe(before); // not told yet: the cached key
    directory.forget([removed]);
    for (const token of [issued, undefined]) {
      const refusal = await directory.resolve("alice", "phone", token).catch((error: unknown) => error);
      expect(refusal).toMatchObject({ kind: "unauthenticated", message: expect.stringContaining("removed") });
    }
    const after = await directory.resolve("alice", "phone", new Date(Date.now() + 1000));
    expect(after).not.toBe(before);
    // The new device's key is cached, and still refuses the old token.
    await expect(directory.resolve("alice", "phone", issued)).rejects.toMatchObject({ kind: "unauthenticated" });
  });

  it("does not keep a key whose lookup ran while a device was forgotten", async () => {
    const store = recordingStore();
    const directory = new DeviceDirectory(store, clock, { maxBatch: 100, maxInFlight: 1 });
    const lookup = directory.resolve("alice", "phone");
    directory.forgetAll();
    const key = await lookup;
    expect(store.batches).toEqual([["alice/phone"], ["alice/phone"]]); // looked up again after the forget
    expect(await directory.resolve("alice", "phone")).toBe(key);
    expect(store.batches).toHaveLength(2);
  });
});
