import { randomUUID } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import { newCaller, newHub, otherDevice } from "../../../test/support/features.js";
import { openMemoryDb } from "../../../test/support/db.js";
import type { MemoryDb } from "../../adapters/memory/memory-db.js";
import { memoryRateLimiters } from "../../adapters/rate-limiters.js";
import { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";
import { systemClock } from "../../ports/clock.js";
import { Chats } from "../chats/chats.js";
import type { DeliveryHub } from "../delivery/hub.js";
import { Metrics } from "../operations/metrics.js";
import { Messaging } from "./messaging.js";

describe("Messaging", () => {
  let db: MemoryDb;
  let hub: DeliveryHub;
  let messaging: Messaging;
  let alice: Caller;
  let bobPhone: Caller;
  let bobLaptop: Caller;
  let chatId: string;
  beforeEach(async () => {
    db = await openMemoryDb();
    hub = newHub(db);
    messaging = new Messaging(db, hub, systemClock, async () => [], new Metrics(() => 0), memoryRateLimiters, {
      maxBatch: 100,
      maxInFlight: 1,
      gatherMs: 0,
      sendsPerMinute: 1000,
    });
    alice = await newCaller(db, "alice");
    bobPhone = await newCaller(db, "bob");
    bobLaptop = await otherDevice(db, bobPhone, "laptop");
    const chats = new Chats(db, hub, systemClock, memoryRateLimiters, {
      maxParticipants: 10,
      changesPerDevicePerHour: 10,
      changesPerUserPerHour: 10,
    });
    ({ chatId } = await chats.create(alice, { name: "c", participantUserIds: [bobPhone.userId] }));
  });

  const message = (clientMessageId: string = randomUUID(), text = "hi") => ({ chatId, clientMessageId, text, attachmentIds: [] });
  const inboxTexts = async (device: Caller) =>
    (await db.readInbox(device.deviceKey, 0n, 100))
      .map((e) => fromBinary(EventSchema, e.body).kind)
      .flatMap((kind) => (kind.case === "newMessage" ? [kind.value.text] : []));

  it("answers a retry with the first result and stores the message once", async () => {
    const first = await messaging.send(alice, message("m1", "once"));
    const retry = await messaging.send(alice, message("m1", "twice?"));
    expect(retry).toEqual(first);
    expect(first.seq).toBe(1n);
    expect(await inboxTexts(bobPhone)).toEqual(["once"]);
    expect((await db.getChat(chatId))!.lastSeq).toBe(1n);
  });

  it("pushes a retried message again to the devices that have not acked it, and not once all have", async () => {
    const deliver = vi.spyOn(hub, "deliver");
    await messaging.send(alice, message("m1"));
    const [first] = deliver.mock.calls.at(-1)!;
    expect(first.entries.map((e) => e.deviceKey).sort()).toEqual([bobPhone.deviceKey, bobLaptop.deviceKey].sort());

    const laptopEntry = first.entries.find((e) => e.deviceKey === bobLaptop.deviceKey)!;
    await db.ackEvents([{ deviceKey: bobLaptop.deviceKey, userId: bobLaptop.userId, eventIds: [laptopEntry.eventId] }]);
    await messaging.send(alice, message("m1"));
    expect(deliver).toHaveBeenCalledTimes(2);
    const [again] = deliver.mock.calls[1]!;
    expect(again.body).toEqual(first.body);
    expect(again.entries).toEqual(first.entries.filter((e) => e !== laptopEntry));
    expect(again.sentAtMs).toBe(first.sentAtMs);

    await db.ackEvents([{ deviceKey: bobPhone.deviceKey, userId: bobPhone.userId, eventIds: again.entries.map((e) => e.eventId) }]);
    await messaging.send(alice, message("m1"));
    expect(deliver).toHaveBeenCalledTimes(2);
  });

  it("writes concurrent sends together: the first at once, those that came meanwhile in one batch", async () => {
    const store = vi.spyOn(db, "storeMessages");
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => messaging.send(alice, message(`m${i}`))));
    expect(store.mock.calls.map(([sends]) => sends.length)).toEqual([1, 9]);
    expect(results.map((r) => r.seq)).toEqual(Array.from({ length: 10 }, (_, i) => BigInt(i + 1)));
  });

  it("refuses a send to a chat that does not exist as not found, and one from outside the chat as forbidden", async () => {
    const missing = messaging.send(alice, { ...message(), chatId: randomUUID() });
    await expect(missing).rejects.toBeInstanceOf(Refusal);
    await expect(missing).rejects.toMatchObject({ kind: "not_found" });
    const mallory = await newCaller(db, "mallory");
    await expect(messaging.send(mallory, message())).rejects.toMatchObject({ kind: "forbidden" });
    expect(await inboxTexts(bobPhone)).toEqual([]);
  });

  it("refuses a retry of a refused send the same way: a refusal records no key", async () => {
    const mallory = await newCaller(db, "mallory");
    await expect(messaging.send(mallory, message("m1"))).rejects.toMatchObject({ kind: "forbidden" });
    await expect(messaging.send(mallory, message("m1"))).rejects.toMatchObject({ kind: "forbidden" });
  });
});
