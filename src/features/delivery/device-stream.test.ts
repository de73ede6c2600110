import { randomUUID } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { create } from "@bufbuild/protobuf";
import { beforeAll, describe, expect, it } from "vitest";
import { CommandResultSchema } from "../../../gen/palaver/chat/v1/chat_pb.js";
import { openMemoryDb } from "../../../test/support/db.js";
import type { MemoryDb } from "../../adapters/memory/memory-db.js";
import type { InboxEvent, InboxStore } from "../../ports/db.js";
import { registerDeviceKeys } from "../../../test/support/store-fixtures.js";
import { oneByOne } from "../../../test/support/streams.js";
import { DeviceStream, StreamEnded, type StreamFrame } from "./device-stream.js";

const utf8 = new TextEncoder();

/** The stream of a device against an inbox (the in-memory store): batching, and hand-offs from other nodes interrupted. */
describe("DeviceStream", () => {
  let db: MemoryDb;
  beforeAll(async () => {
    db = await openMemoryDb();
  });

  /** A chat of two new users; returns the recipient's device key and a function that stores one message for it. */
  async function chatWithRecipient() {
    const [alice, bob] = [`alice-${randomUUID()}`, `bob-${randomUUID()}`];
    const [aliceKey, bobKey] = (await registerDeviceKeys(db, [
      { userId: alice, deviceName: "phone" },
      { userId: bob, deviceName: "phone" },
    ])) as [string, string];
    const chatId = randomUUID();
    await db.createChat(
      { chatId, name: "chat", participantUserIds: [alice, bob], createdAt: new Date(), updateMessageId: randomUUID() },
      () => utf8.encode("update"),
    );
    const store = async () => {
      const [outcome] = await db.storeMessages([
        {
          chatId,
          messageId: randomUUID(),
          senderUserId: alice,
          senderDeviceKey: aliceKey,
          clientMessageId: randomUUID(),
          sentAt: new Date(),
          attachmentIds: [],
          encode: () => utf8.encode("message"),
        },
      ]);
      if (outcome?.kind !== "stored") throw new Error(`not stored: ${outcome?.kind}`);
      return outcome.fanout.entries.find((e) => e.deviceKey === bobKey)!.eventId;
    };
    return { bobKey, store };
  }

  /** The ids of the next `count` stored events (other frames are skipped). */
  async function take(frames: AsyncGenerator<StreamFrame>, count: number): Promise<bigint[]> {
    const ids: bigint[] = [];
    while (ids.length < count) {
      const { value } = await frames.next();
      if (value?.kind === "event") ids.push(value.eventId);
    }
    return ids;
  }

  /** The ids of the backlog's stored events, read up to InboxDrained. */
  async function backlog(frames: AsyncGenerator<StreamFrame>): Promise<bigint[]> {
    const ids: bigint[] = [];
    for (;;) {
      const { value } = await frames.next();
      if (value?.kind === "event") ids.push(value.eventId);
      if (value?.kind === "signal" && value.event.kind.case === "inboxDrained") return ids;
    }
  }

  it("hands over what is ready at once as one batch, the backlog by pages, at most batchSize frames a batch", async () => {
    const { bobKey, store } = await chatWithRecipient();
    const stored = [await store(), await store(), await store(), await store(), await store()];
    const stream = new DeviceStream(bobKey, "bob", db, { queueLimit: 100, pageSize: 3, batchSize: 2, recentIds: 8, lateHandOffMs: 1000 });
    const batches = stream.frames();
    const next = async () => ((await batches.next()).value as StreamFrame[]).map((f) => (f.kind === "event" ? f.eventId : f.kind));
    // The chat update and five messages, in pages of three, in batches of two; InboxDrained on its own.
    const backlog = [await next(), await next(), await next(), await next()];
    expect(backlog.map((b) => b.length)).toEqual([2, 1, 2, 1]);
    expect(backlog.flat().slice(1)).toEqual(stored);
    expect(await next()).toEqual(["signal"]);
    // Three live events pushed in one turn: two batches, in order.
    const live = [await store(), await store(), await store()];
    for (const eventId of live) stream.pushEvent({ body: utf8.encode("message") }, eventId);
    expect([await next(), await next()]).toEqual([live.slice(0, 2), live.slice(2)]);
    stream.end();
  });

  it("writes live frames straight to the sink while the transport waits, and queues them once its buffer is full", async () => {
    const { bobKey, store } = await chatWithRecipient();
    const stream = new DeviceStream(bobKey, "bob", db, { queueLimit: 100, pageSize: 10, batchSize: 10, recentIds: 8, lateHandOffMs: 1000 });
    const written: bigint[][] = [];
    let room = true;
    stream.writeDirectlyTo((frames) => {
      written.push(frames.map((f) => (f.kind === "event" ? f.eventId : -1n)));
      return room;
    });
    const batches = stream.frames();
    const held = await store(); // stored before the backlog is read: it comes with the backlog, not to the sink
    for (;;) {
      const batch = (await batches.next()).value as StreamFrame[];
      if (batch.some((f) => f.kind === "signal")) break;
    }
    const parked = batches.next(); // the transport waits for the next batch
    const [first, second, third] = [await store(), await store(), await store()];
    stream.pushEvent({ body: utf8.encode("message") }, first);
    room = false; // this write fills the buffer
    stream.pushEvent({ body: utf8.encode("message") }, second);
    stream.pushEvent({ body: utf8.encode("message") }, third);
    expect(written).toEqual([[first], [second]]);
    expect(((await parked).value as StreamFrame[]).map((f) => f.kind === "event" && f.eventId)).toEqual([third]);
    expect(written.flat()).not.toContain(held);
    stream.end();
  });

  it("a stream that opened while hand-offs were interrupted gets, once they are back, what it missed, once", async () => {
    const { bobKey, store } = await chatWithRecipient();
    const sent = [await store(), await store(), await store()];
    const stream = new DeviceStream(bobKey, "bob", db, { queueLimit: 100, pageSize: 2, batchSize: 4, recentIds: 2, lateHandOffMs: 1000 });
    stream.markGap(); // opened during the outage
    const frames = oneByOne(stream.frames());
    const drained = await backlog(frames); // the chat update and the three messages
    expect(drained.slice(1)).toEqual(sent);
    // Stored while the bus was down: the hand-off never came.
    const missed = [await store(), await store()];

    await stream.catchUp();
    expect(await take(frames, 2)).toEqual(missed);
    // A late live push of something already sent is dropped; a new one goes through.
    const next = await store();
    stream.pushEvent({ body: utf8.encode("message") }, missed[1]!);
    stream.pushEvent({ body: utf8.encode("message") }, next);
    expect(await take(frames, 1)).toEqual([next]);
    stream.end();
  });

  it("a live stream gets what was stored during the outage, and nothing it already had", async () => {
    const { bobKey, store } = await chatWithRecipient();
    const stream = new DeviceStream(bobKey, "bob", db, { queueLimit: 100, pageSize: 2, batchSize: 4, recentIds: 2, lateHandOffMs: 1000 });
    const frames = oneByOne(stream.frames());
    await backlog(frames); // the chat update
    const live = await store();
    stream.pushEvent({ body: utf8.encode("message") }, live);
    expect(await take(frames, 1)).toEqual([live]);
    stream.markGap();
    const pushedLive = await store();
    stream.pushEvent({ body: utf8.encode("message") }, pushedLive); // a node on this side of the outage
    const missed = await store();
    expect(await take(frames, 1)).toEqual([pushedLive]);

    await stream.catchUp();
    expect(await take(frames, 1)).toEqual([missed]);
    stream.end();
  });

  it("does not send twice what the catch-up sent when another node's hand-off of it comes late", async () => {
    const { bobKey, store } = await chatWithRecipient();
    // A dedupe window of 2 ids: the late hand-off comes after it has moved on.
    const stream = new DeviceStream(bobKey, "bob", db, { queueLimit: 100, pageSize: 2, batchSize: 4, recentIds: 2, lateHandOffMs: 1000 });
    const frames = oneByOne(stream.frames());
    await backlog(frames);
    stream.markGap();
    const missed = await store(); // its hand-off failed on the other node
    await stream.catchUp();
    expect(await take(frames, 1)).toEqual([missed]);
    const later = [await store(), await store(), await store()];
    for (const id of later) stream.pushEvent({ body: utf8.encode("message") }, id);
    expect(await take(frames, 3)).toEqual(later);

    stream.pushEvent({ body: utf8.encode("message") }, missed); // the other node's retry gets through
    const next = await store();
    stream.pushEvent({ body: utf8.encode("message") }, next);
    expect(await take(frames, 1)).toEqual([next]);
    stream.end();
  });

  it("a client that sent commands and half-closed before its stream opened gets every answer, then the end", async () => {
    const { bobKey, store } = await chatWithRecipient();
    const stored = await store();
    const stream = new DeviceStream(bobKey, "bob", db, { queueLimit: 100, pageSize: 10, batchSize: 10, recentIds: 8, lateHandOffMs: 1000 });
    for (const requestId of ["a", "b"]) stream.pushResult(create(CommandResultSchema, { requestId }));
    stream.finish();
    const sent: string[] = [];
    await expect(async () => {
      for await (const batch of stream.frames()) {
        for (const frame of batch) {
          if (frame.kind === "result") sent.push(`result ${frame.result.requestId}`);
          if (frame.kind === "event") sent.push(`event ${frame.eventId}`);
        }
      }
    }).rejects.toThrow(StreamEnded);
    // The answers go first, with the backlog's first batch (the chat's creation and the message); then the end.
    expect(sent).toHaveLength(4);
    expect(sent.slice(0, 2)).toEqual(["result a", "result b"]);
    expect(sent[3]).toBe(`event ${stored}`);
  });

  it("keeps none of its backlog once live, for as long as the device stays connected", async () => {
    // Pages read as fresh objects, as from the SQL drivers (the in-memory store shares its own), each body watched.
    const watched: WeakRef<Uint8Array>[] = [];
    const page = (after: bigint): InboxEvent[] =>
      Array.from({ length: after < 100n ? 50 : 0 }, (_, i) => {
        const body = new Uint8Array(1_000);
        watched.push(new WeakRef(body));
        return { eventId: after + BigInt(i) + 1n, body };
      });
    const inbox = {
      openInbox: async () => ({ resync: null, events: page(0n) }),
      readInbox: async (_deviceKey: string, after: bigint) => page(after),
    } as unknown as InboxStore;
    const stream = new DeviceStream("1", "bob", inbox, { queueLimit: 100, pageSize: 50, batchSize: 64, recentIds: 8, lateHandOffMs: 1000 });
    const frames = stream.frames();
    while (!(await frames.next()).value!.some((frame: StreamFrame) => frame.kind === "signal")) {} // up to InboxDrained
    stream.writeDirectlyTo(() => true);
    const live = frames.next(); // the stream now waits for live events
    await collectGarbage();
    expect(watched).toHaveLength(100);
    expect(watched.filter((ref) => ref.deref() !== undefined)).toHaveLength(0);
    stream.end();
    await expect(live).rejects.toThrow(StreamEnded);
  });
});

/** A full garbage collection, once the current job is over (WeakRefs are only cleared between jobs). */
async function collectGarbage(): Promise<void> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  await new Promise((resolve) => setTimeout(resolve, 0));
  gc();
  await new Promise((resolve) => setTimeout(resolve, 0));
}
