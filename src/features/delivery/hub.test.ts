import { describe, expect, it } from "vitest";
import { openMemoryDb } from "../../../test/support/db.js";
import { newHub } from "../../../test/support/features.js";
import { oneByOne } from "../../../test/support/streams.js";
import type { Fanout } from "../../ports/db.js";
import type { Bus, Presence } from "../../ports/routing.js";
import type { StreamFrame } from "./device-stream.js";

const utf8 = new TextEncoder();

/** Where each device is, as Redis would say; records what this node claims and releases. */
class FakePresence implements Presence {
  readonly nodes = new Map<string, string>();
  readonly claimed: string[] = [];
  readonly released: string[] = [];
  /** The keys of each locate call. */
  readonly asked: string[][] = [];
  failLocate = false;
  async claim(deviceKey: string) {
    this.claimed.push(deviceKey);
  }
  async release(deviceKey: string) {
    this.released.push(deviceKey);
  }
  async locate(deviceKeys: readonly string[]) {
    this.asked.push([...deviceKeys]);
    if (this.failLocate) throw new Error("redis is down");
    return new Map(deviceKeys.flatMap((key) => (this.nodes.has(key) ? [[key, this.nodes.get(key)!] as const] : [])));
  }
  async restore() {}
  async close() {}
}

/** Records publishes; `handOff` plays another node publishing to this one. */
class FakeBus implements Bus {
  readonly nodeId = "node-here";
  readonly published: { nodeId: string; fanouts: Fanout[] }[] = [];
  /** Publishes refused so far while failPublish is set (as by a Redis that does not answer). */
  refused = 0;
  failPublish = false;
  private handler: ((fanouts: Fanout[]) => void) | undefined;
  async subscribe(handler: (fanouts: Fanout[]) => void) {
    this.handler = handler;
  }
  async publish(nodeId: string, fanouts: Fanout[]) {
    if (this.failPublish) {
      this.refused++;
      throw new Error("the connection is closed");
    }
    this.published.push({ nodeId, fanouts });
  }
  handOff(fanouts: Fanout[]) {
    this.handler!(fanouts);
  }
  publishNotices() {}
  async subscribeNotices() {}
  announceRemovals() {}
  async subscribeRemovals() {}
  async close() {}
}

async function routedHub() {
  const presence = new FakePresence();
  const bus = new FakeBus();
  const hub = newHub(await openMemoryDb(), { presence, bus });
  await hub.start();
  return { hub, presence, bus };
}

/** The stream's frames after InboxDrained (these devices have empty inboxes), as far as they have come. */
async function liveFrames(frames: AsyncGenerator<StreamFrame>, count: number): Promise<StreamFrame[]> {
  const drained = await frames.next();
  expect(drained.value).toMatchObject({ kind: "signal", event: { kind: { case: "inboxDrained" } } });
  const live: StreamFrame[] = [];
  while (live.length < count) live.push((await frames.next()).value as StreamFrame);
  return live;
}

/** A device by its key, of a user of its own. */
const device = (deviceKey: string) => ({ deviceKey, userId: `user-${deviceKey}` });

const fanout = (eventIds: Record<string, bigint>): Fanout => ({
  body: utf8.encode("event"),
  entries: Object.entries(eventIds).map(([deviceKey, eventId]) => ({ deviceKey, eventId })),
  sentAtMs: 1_700_000_000_000,
});

describe("DeliveryHub", () => {
  it("pushes to a device's stream on this node and hands the others to their nodes, one publish per node", async () => {
    const { hub, presence, bus } = await routedHub();
    const local = await hub.open(device("1"));
    presence.nodes.set("1", bus.nodeId);
    presence.nodes.set("2", "node-b");
    presence.nodes.set("3", "node-c");
    presence.nodes.set("4", "node-b");
    presence.nodes.set("5", bus.nodeId); // claimed here, but its stream is gone: nothing to do
    // "6" is connected nowhere: its event waits in the inbox.

    const event = fanout({ 1: 11n, 2: 12n, 3: 13n, 4: 14n, 5: 15n, 6: 16n });
    await hub.deliver(event);
    expect(await liveFrames(oneByOne(local.frames()), 1)).toEqual([
      { kind: "event", eventId: 11n, body: event.body, sentAtMs: event.sentAtMs },
    ]);
    expect(presence.asked).toEqual([["2", "3", "4", "5", "6"]]);
    expect(bus.published).toEqual([
      { nodeId: "node-b", fanouts: [{ body: event.body, sentAtMs: event.sentAtMs, entries: [event.entries[1], event.entries[3]] }] },
      { nodeId: "node-c", fanouts: [{ body: event.body, sentAtMs: event.sentAtMs, entries: [event.entries[2]] }] },
    ]);
  });

  it("asks no one where a device is when every recipient has a stream here", async () => {
    const { hub, presence, bus } = await routedHub();
    await hub.open(device("1"));
    await hub.deliver(fanout({ 1: 11n }));
    expect(presence.asked).toEqual([]);
    expect(bus.published).toEqual([]);
  });

  it("hands an event over once Redis answers again when it could not find the other nodes' devices", async () => {
    const { hub, presence, bus } = await routedHub();
    presence.nodes.set("2", "node-b");
    presence.failLocate = true;
    const event = fanout({ 2: 12n });
    await expect(hub.deliver(event)).resolves.toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 50)); // tried again meanwhile, and failed again
    expect(bus.published).toEqual([]);
    expect(presence.asked.length).toBeGreaterThan(1);
    presence.failLocate = false;
    await expect.poll(() => bus.published).toEqual([{ nodeId: "node-b", fanouts: [{ ...event, entries: event.entries }] }]);
  });

  it("publishes a hand-off again when Redis did not take the publish", async () => {
    const { hub, presence, bus } = await routedHub();
    presence.nodes.set("2", "node-b");
    presence.nodes.set("3", "node-c");
    bus.failPublish = true;
    const event = fanout({ 2: 12n, 3: 13n });
    await hub.deliver(event);
    await expect.poll(() => bus.refused).toBeGreaterThan(2); // both nodes' publishes, and a retry
    bus.failPublish = false;
    await expect.poll(() => bus.published.map((p) => p.nodeId).sort()).toEqual(["node-b", "node-c"]);
    expect(bus.published).toEqual(
      expect.arrayContaining([
        { nodeId: "node-b", fanouts: [{ ...event, entries: [event.entries[0]] }] },
        { nodeId: "node-c", fanouts: [{ ...event, entries: [event.entries[1]] }] },
      ]),
    );
  });

  it("stops trying a failed hand-off after a while: the inbox has the event for the device's next connect", async () => {
    const { hub, presence, bus } = await routedHub();
    presence.nodes.set("2", "node-b");
    presence.failLocate = true;
    await hub.deliver(fanout({ 2: 12n }));
    await new Promise((resolve) => setTimeout(resolve, 1200)); // past the test hub's 1 s of retries
    const asked = presence.asked.length;
    presence.failLocate = false;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(presence.asked.length).toBe(asked);
    expect(bus.published).toEqual([]);
  });

  it("pushes what other nodes hand over to this node's streams", async () => {
    const { hub, bus } = await routedHub();
    const stream = await hub.open(device("1"));
    const frames = oneByOne(stream.frames());
    bus.handOff([fanout({ 1: 21n, 9: 29n })]);
    expect(await liveFrames(frames, 1)).toEqual([
      expect.objectContaining({ kind: "event", eventId: 21n }),
    ]);
  });

  it("writes a stream's notices of one batch in one write, and none to the device a notice excepts", async () => {
    const { hub } = await routedHub();
    const writes = new Map<string, string[][]>();
    // Alice's phone (device key 1) and laptop (2).
    for (const deviceKey of ["1", "2"]) {
      const stream = await hub.open({ deviceKey, userId: "alice" });
      writes.set(deviceKey, []);
      stream.writeDirectlyTo((frames) => {
        writes.get(deviceKey)!.push(frames.map((f) => (f.kind === "notice" ? new TextDecoder().decode(f.body) : f.kind)));
        return true;
      });
      const frames = stream.frames();
      await frames.next(); // InboxDrained
      void frames.next(); // the transport waits for the next batch: live frames go to its sink
    }
    hub.notify([
      { body: utf8.encode("bob read"), userIds: ["alice"] },
      { body: utf8.encode("alice read"), userIds: ["alice", "bob"], exceptDeviceKey: "1" },
      { body: utf8.encode("carol got it"), userIds: ["alice"] },
    ]);
    expect(writes.get("1")).toEqual([["bob read", "carol got it"]]);
    expect(writes.get("2")).toEqual([["bob read", "alice read", "carol got it"]]);
  });

  it("ends a device's older stream with `replaced` when it opens a newer one, which then gets its events", async () => {
    const { hub, presence } = await routedHub();
    const older = await hub.open(device("1"));
    const olderFrames = oneByOne(older.frames());
    const newer = await hub.open(device("1"));
    await expect(olderFrames.next()).rejects.toMatchObject({ kind: "replaced" });
    expect(presence.claimed).toEqual(["1", "1"]);

    // Closing the replaced stream does not release the device the newer one holds.
    hub.close(older);
    expect(presence.released).toEqual([]);
    await hub.deliver(fanout({ 1: 31n }));
    expect(await liveFrames(oneByOne(newer.frames()), 1)).toEqual([expect.objectContaining({ eventId: 31n })]);
    hub.close(newer);
    expect(presence.released).toEqual(["1"]);
    expect(hub.connectedDevices).toBe(0);
  });
});
