import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { type Event, EventSchema } from "../../gen/palaver/chat/v1/event_pb.js";
import { ChatSchema, ReceiptSchema } from "../../gen/palaver/chat/v1/model_pb.js";
import { ChatStore, type MessageEntry } from "../../web/src/store.js";

const CHAT = "5b0c3c1e-8f0a-4c65-9a3e-2f1f8f7f0a01";
let nextEventId = 1n;
const settled = () => new Promise<void>((resolve) => queueMicrotask(resolve));

const message = (sender: string, seq: number, text = `m${seq}`): Event =>
  create(EventSchema, {
    eventId: nextEventId++,
    chatId: CHAT,
    kind: {
      case: "newMessage",
      value: { messageId: `msg-${seq}`, seq: BigInt(seq), senderUserId: sender, text, clientMessageId: `c-${seq}` },
    },
  });
const receiptUpdate = (userId: string, delivered: number, read: number): Event =>
  create(EventSchema, {
    chatId: CHAT,
    kind: { case: "receiptUpdate", value: { userId, deliveredSeq: BigInt(delivered), readSeq: BigInt(read) } },
  });
const chat = (participants: string[], lastSeq: number, receipts: [string, number, number][]) =>
  create(ChatSchema, {
    chatId: CHAT,
    participantUserIds: participants,
    lastSeq: BigInt(lastSeq),
    receipts: receipts.map(([userId, d, r]) =>
      create(ReceiptSchema, { userId, deliveredSeq: BigInt(d), readSeq: BigInt(r) }),
    ),
  });
const ticks = (store: ChatStore) =>
  store
    .timeline(CHAT)
    .filter((e): e is MessageEntry => e.kind === "message" && e.mine)
    .map((e) => e.receipt ?? "sent");

/** The web client's store: receipts merged forward only, the unread count and ticks derived from them. */
describe("web client store: receipts", () => {
  it("derives ticks from every other participant's receipts, and never takes a tick back", async () => {
    const store = new ChatStore("alice");
    store.upsertChat(chat(["alice", "bob", "carol"], 0, []));
    store.applyEvent(message("alice", 1));
    store.applyEvent(message("alice", 2));
    await settled();
    expect(ticks(store)).toEqual(["sent", "sent"]);
    expect(store.chat(CHAT)!.unread).toBe(0); // sending marks read

    store.applyEvent(receiptUpdate("bob", 2, 0));
    await settled();
    expect(ticks(store)).toEqual(["sent", "sent"]); // carol has neither yet
    store.applyEvent(receiptUpdate("carol", 1, 1));
    await settled();
    expect(ticks(store)).toEqual(["delivered", "sent"]);
    // Bob answers at 3: he has read everything up to it.
    store.applyEvent(message("bob", 3));
    await settled();
    expect(ticks(store)).toEqual(["read", "sent"]);
    expect(store.chat(CHAT)!.unread).toBe(1);

    // An older answer does not take anything back; a new participant with nothing read does not either.
    store.upsertChat(chat(["alice", "bob", "carol", "dave"], 2, [["bob", 1, 0], ["carol", 0, 0], ["dave", 0, 0]]));
    await settled();
    expect(store.chat(CHAT)!.receipts.bob).toEqual({ delivered: 3, read: 3 });
    expect(ticks(store)).toEqual(["read", "sent"]);
    expect(store.chat(CHAT)!.lastSeq).toBe(3);
  });

  it("counts unread as last_seq minus my read_seq, cleared by a receipt of mine from another device", async () => {
    const store = new ChatStore("bob");
    store.upsertChat(chat(["alice", "bob"], 0, []));
    store.applyEvent(message("alice", 1));
    store.applyEvent(message("alice", 2));
    await settled();
    expect(store.chat(CHAT)!.unread).toBe(2);
    store.applyEvent(receiptUpdate("bob", 2, 1));
    await settled();
    expect(store.chat(CHAT)!.unread).toBe(1);
    store.markReadLocally(CHAT, 2);
    await settled();
    expect(store.chat(CHAT)!.unread).toBe(0);
    expect(store.myRead(CHAT)).toBe(2);

    // What survives a reload.
    const restored = ChatStore.restore("bob", store.serialize());
    expect(restored.chat(CHAT)!.unread).toBe(0);
    expect(restored.chat(CHAT)!.receipts.alice).toEqual({ delivered: 2, read: 2 });
  });
});
