import { randomUUID } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { beforeEach, describe, expect, it } from "vitest";
import { ChatUpdateKind, EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import { openMemoryDb } from "../../../test/support/db.js";
import { newCaller, newHub, otherDevice } from "../../../test/support/features.js";
import type { MemoryDb } from "../../adapters/memory/memory-db.js";
import { memoryRateLimiters } from "../../adapters/rate-limiters.js";
import type { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";
import { systemClock } from "../../ports/clock.js";
import { Chats } from "./chats.js";

describe("Chats", () => {
  let db: MemoryDb;
  let chats: Chats;
  let alice: Caller;
  let bob: Caller;
  let carol: Caller;
  beforeEach(async () => {
    db = await openMemoryDb();
    chats = new Chats(db, newHub(db), systemClock, memoryRateLimiters, {
      maxParticipants: 3,
      changesPerDevicePerHour: 100,
      changesPerUserPerHour: 100,
    });
    [alice, bob, carol] = await Promise.all(["alice", "bob", "carol"].map((name) => newCaller(db, name)));
  });

  /** The chat updates in a device's inbox: what happened, and who was in the chat after. */
  async function updatesOf(device: Caller) {
    return (await db.readInbox(device.deviceKey, 0n, 100)).flatMap((e) => {
      const kind = fromBinary(EventSchema, e.body).kind;
      return kind.case === "chatUpdate"
        ? [{ kind: ChatUpdateKind[kind.value.kind], participants: kind.value.chat!.participantUserIds }]
        : [];
    });
  }

  describe("create", () => {
    it("adds the caller, drops repeats, and tells every device of every participant", async () => {
      const bobLaptop = await otherDevice(db, bob, "laptop");
      const chat = await chats.create(alice, { name: "lunch", participantUserIds: [bob.userId, bob.userId, alice.userId] });
      const participants = [alice.userId, bob.userId].sort();
      expect(chat.participantUserIds).toEqual(participants);
      for (const device of [alice, bob, bobLaptop]) expect(await updatesOf(device)).toEqual([{ kind: "CREATED", participants }]);
      expect(await updatesOf(carol)).toEqual([]);
    });

    it("refuses a chat of the caller alone, or of more than the participant limit, and stores nothing", async () => {
      await expect(chats.create(alice, { name: "me", participantUserIds: [alice.userId] })).rejects.toMatchObject({
        kind: "invalid",
      });
      const dave = await newCaller(db, "dave");
      const four = [bob, carol, dave].map((c) => c.userId);
      await expect(chats.create(alice, { name: "big", participantUserIds: four })).rejects.toMatchObject({ kind: "invalid" });
      expect(await chats.list(alice, { pageSize: 10, pageToken: "" })).toEqual({ chats: [], nextPageToken: "" });
    });
  });

  describe("modifyParticipants", () => {
    let chatId: string;
    beforeEach(async () => {
      ({ chatId } = await chats.create(alice, { name: "c", participantUserIds: [bob.userId] }));
    });
    const modify = (by: Caller, userId: string, operation: "add" | "remove") =>
      chats.modifyParticipants(by, { chatId, userId, operation });

    it("adds a participant and tells everyone in the chat after the change, the new one included", async () => {
      const chat = await modify(bob, carol.userId, "add");
      const after = [alice.userId, bob.userId, carol.userId].sort();
      expect(chat.participantUserIds).toEqual(after);
      for (const device of [alice, bob, carol]) {
        expect((await updatesOf(device)).at(-1)).toEqual({ kind: "PARTICIPANT_ADDED", participants: after });
      }
    });

    it("removes a participant and tells the removed one too", async () => {
      await modify(alice, carol.userId, "add");
      const chat = await modify(alice, carol.userId, "remove");
      const after = [alice.userId, bob.userId].sort();
      expect(chat.participantUserIds).toEqual(after);
      for (const device of [alice, bob, carol]) {
        expect((await updatesOf(device)).at(-1)).toEqual({ kind: "PARTICIPANT_REMOVED", participants: after });
      }
      await expect(chats.get(carol, chatId)).rejects.toMatchObject({ kind: "forbidden" });
    });

    it("answers an add of someone already there, or a remove of someone not, with the chat and tells no one", async () => {
      const before = await updatesOf(bob);
      expect((await modify(alice, bob.userId, "add")).participantUserIds).toEqual([alice.userId, bob.userId].sort());
      expect((await modify(alice, carol.userId, "remove")).participantUserIds).toEqual([alice.userId, bob.userId].sort());
      expect(await updatesOf(bob)).toEqual(before);
      expect(await updatesOf(carol)).toEqual([]);
    });

    it("refuses a missing chat, a caller outside the chat, and an add past the limit", async () => {
      await expect(chats.modifyParticipants(alice, { chatId: randomUUID(), userId: carol.userId, operation: "add" })).rejects.toMatchObject({
        kind: "not_found",
      });
      await expect(modify(carol, carol.userId, "add")).rejects.toMatchObject({ kind: "forbidden" });
      await modify(alice, carol.userId, "add");
      const dave = await newCaller(db, "dave");
      await expect(modify(alice, dave.userId, "add")).rejects.toMatchObject({ kind: "invalid" });
      expect(await updatesOf(dave)).toEqual([]);
    });
  });

  it("refuses changes past a device's hourly limit and past its user's over all devices, storing nothing", async () => {
    const limited = new Chats(db, newHub(db), systemClock, memoryRateLimiters, {
      maxParticipants: 3,
      changesPerDevicePerHour: 2,
      changesPerUserPerHour: 3,
    });
    const { chatId } = await limited.create(alice, { name: "c", participantUserIds: [bob.userId] });
    await limited.modifyParticipants(alice, { chatId, userId: carol.userId, operation: "add" });
    const refused = await limited.create(alice, { name: "more", participantUserIds: [bob.userId] }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ kind: "rate_limited", message: expect.stringMatching(/^this device may create chats/) });
    expect((refused as Refusal).retryAfterSeconds).toBeGreaterThan(3590);
    // The user's other device has its own count, but not beyond the user's.
    const laptop = await otherDevice(db, alice, "laptop");
    await limited.modifyParticipants(laptop, { chatId, userId: carol.userId, operation: "remove" });
    await expect(limited.modifyParticipants(laptop, { chatId, userId: carol.userId, operation: "add" })).rejects.toMatchObject({
      kind: "rate_limited",
      message: expect.stringMatching(/^this user may create chats or change participants 3 times an hour: retry in \d+ s$/),
    });
    expect((await limited.list(alice, { pageSize: 10, pageToken: "" })).chats).toHaveLength(1);
    expect((await updatesOf(bob)).map((u) => u.kind)).toEqual(["CREATED", "PARTICIPANT_ADDED", "PARTICIPANT_REMOVED"]);
    // Other users are not limited by alice's count.
    await expect(limited.create(bob, { name: "mine", participantUserIds: [carol.userId] })).resolves.toBeDefined();
  });

  it("lists the caller's chats a page at a time and refuses a page token it did not give", async () => {
    const created = await Promise.all([1, 2, 3].map(() => chats.create(alice, { name: "c", participantUserIds: [bob.userId] })));
    const ids = created.map((c) => c.chatId).sort();
    const first = await chats.list(alice, { pageSize: 2, pageToken: "" });
    expect(first.chats.map((c) => c.chatId)).toEqual(ids.slice(0, 2));
    expect(first.nextPageToken).toBe(ids[1]);
    const second = await chats.list(alice, { pageSize: 2, pageToken: first.nextPageToken });
    expect(second).toMatchObject({ chats: [{ chatId: ids[2] }], nextPageToken: "" });
    await expect(chats.list(alice, { pageSize: 2, pageToken: "not-a-token" })).rejects.toMatchObject({ kind: "invalid" });
  });
});
