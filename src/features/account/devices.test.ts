import { describe, expect, it } from "vitest";
import { newCaller, newHub, otherDevice, silentLogger } from "../../../test/support/features.js";
import { openMemoryDb } from "../../../test/support/db.js";
import { DAY_MS } from "../../ports/clock.js";
import type { DeviceName, RemovedDevice } from "../../ports/db.js";
import type { Bus } from "../../ports/routing.js";
import { Devices } from "./devices.js";

/** The removals channel of a bus: what this node announced, and a way to play other nodes. */
class FakeRemovals implements Pick<Bus, "announceRemovals" | "subscribeRemovals"> {
  readonly announced: RemovedDevice[][] = [];
  handler: ((devices: RemovedDevice[]) => void) | undefined;
  resumed: (() => void) | undefined;
  announceRemovals(devices: readonly RemovedDevice[]) {
    this.announced.push([...devices]);
  }
  async subscribeRemovals(handler: (devices: RemovedDevice[]) => void, link: { resumed(): void }) {
    this.handler = handler;
    this.resumed = () => link.resumed();
  }
}

/** Records what the node's key cache is told. */
class FakeKeyCache {
  readonly forgotten: string[] = [];
  forget(devices: readonly DeviceName[]) {
    this.forgotten.push(...devices.map((d) => `${d.userId}/${d.deviceName}`));
  }
  forgetAll() {
    this.forgotten.push("*");
  }
}

async function setUp() {
  const db = await openMemoryDb();
  const hub = newHub(db);
  const keys = new FakeKeyCache();
  const bus = new FakeRemovals();
  const clock = { at: Date.now(), now: () => new Date(clock.at) };
  const devices = new Devices(db, hub, keys, clock, silentLogger, bus);
  await devices.start();
  return { db, hub, keys, bus, clock, devices };
}

describe("Devices", () => {
  it("removes a device of the caller's user: forgets its key, ends its stream here, and tells the other nodes", async () => {
    const { db, hub, keys, bus, devices } = await setUp();
    const phone = await newCaller(db, "alice");
    const laptop = await otherDevice(db, phone, "laptop");
    const stream = await hub.open(phone);
    await devices.remove(laptop, "phone");
    expect(stream.ended).toBe(true);
    expect(keys.forgotten).toEqual([`${phone.userId}/phone`]);
    expect(bus.announced).toEqual([[{ deviceKey: phone.deviceKey, userId: phone.userId, deviceName: "phone" }]]);
    expect((await devices.list(laptop)).map((d) => d.deviceName)).toEqual(["laptop"]);
    await expect(hub.open(phone)).rejects.toMatchObject({ kind: "unauthenticated" });
    await expect(devices.remove(laptop, "phone")).rejects.toMatchObject({ kind: "not_found" });
  });

  it("ends the streams of devices other nodes removed, and after a bus outage those of devices removed meanwhile", async () => {
    const { db, hub, keys, bus } = await setUp();
    const phone = await newCaller(db, "alice");
    const tablet = await otherDevice(db, phone, "tablet");
    const laptop = await otherDevice(db, phone, "laptop");
    const [phoneStream, tabletStream, laptopStream] = await Promise.all(
      [phone, tablet, laptop].map((d) => hub.open(d)),
    );
    bus.handler!([{ deviceKey: phone.deviceKey, userId: phone.userId, deviceName: "phone" }]);
    expect(phoneStream.ended).toBe(true);
    expect(keys.forgotten).toEqual([`${phone.userId}/phone`]);

    // Removed on another node while this one's channel was down: nothing came.
    await db.removeDevice(tablet, new Date());
    bus.resumed!();
    await expect.poll(() => tabletStream.ended).toBe(true);
    expect(keys.forgotten).toEqual([`${phone.userId}/phone`, "*"]);
    expect(laptopStream.ended).toBe(false);
  });

  it("removes the devices no node saw for the retention period, but not those whose streams this node held", async () => {
    const { db, hub, bus, clock, devices } = await setUp();
    const phone = await newCaller(db, "alice");
    const tablet = await otherDevice(db, phone, "tablet");
    const laptop = await otherDevice(db, phone, "laptop");
    hub.close(await hub.open(tablet)); // opened and closed since the last run
    const stillOpen = await hub.open(laptop);

    const monthLater = async () => {
      clock.at += 31 * DAY_MS;
      return devices.removeNotSeenSince(new Date(clock.at - 30 * DAY_MS));
    };
    expect(await monthLater()).toBe(1);
    expect(bus.announced.flat().map((d) => d.deviceName)).toEqual(["phone"]);
    expect((await devices.list(phone)).map((d) => d.deviceName)).toEqual(["laptop", "tablet"]);
    // A month on, the laptop's stream is still open; the tablet was last seen a run ago.
    expect(await monthLater()).toBe(1);
    expect((await devices.list(phone)).map((d) => d.deviceName)).toEqual(["laptop"]);
    expect(stillOpen.ended).toBe(false);
  });
});
