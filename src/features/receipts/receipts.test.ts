import { fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import { memoryRateLimiters } from "../../adapters/rate-limiters.js";
import type { ReceiptChange } from "../../ports/db.js";
import type { Notice } from "../../ports/routing.js";
import { Receipts } from "./receipts.js";

const WINDOW_MS = 50;

function receipts() {
  const sent: Notice[] = [];
  const feature = new Receipts(
    { markRead: async () => [] },
    (notices) => sent.push(...notices),
    memoryRateLimiters,
    { maxBatch: 10, maxInFlight: 1, readsPerMinute: 100, windowMs: WINDOW_MS },
  );
  return { feature, sent };
}

const change = (userId: string, deliveredSeq: bigint, readSeq: bigint, notifyUserIds: string[]): ReceiptChange => ({
  chatId: "c1",
  receipt: { userId, deliveredSeq, readSeq },
  notifyUserIds,
});

const decoded = (notice: Notice) => {
  const event = fromBinary(EventSchema, notice.body);
  return { chatId: event.chatId, kind: event.kind.case, value: event.kind.value, userIds: [...notice.userIds].sort() };
};

describe("Receipts", () => {
  it("merges the changes to one participant's receipt within the window into one notice with the latest seqs", async () => {
    const { feature, sent } = receipts();
    feature.changed([change("bob", 3n, 0n, ["alice"])]);
    feature.changed([change("bob", 5n, 0n, ["carol"]), change("dave", 5n, 0n, ["alice"])]);
    feature.changed([change("bob", 5n, 2n, ["alice", "bob"])], "bob-phone");
    expect(sent).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS * 2));
    expect(sent.map(decoded)).toEqual([
      {
        chatId: "c1",
        kind: "receiptUpdate",
        value: expect.objectContaining({ userId: "bob", deliveredSeq: 5n, readSeq: 2n }),
        userIds: ["alice", "bob", "carol"],
      },
      {
        chatId: "c1",
        kind: "receiptUpdate",
        value: expect.objectContaining({ userId: "dave", deliveredSeq: 5n, readSeq: 0n }),
        userIds: ["alice"],
      },
    ]);
    // Bob's phone caused only one of the merged changes: it gets the notice too (its own read is in it, besides acks).
    expect(sent[0]!.exceptDeviceKey).toBeUndefined();
  });

  it("spares the device that caused every merged change, and sends nothing for a change nobody is to hear of", async () => {
    const { feature, sent } = receipts();
    feature.changed([change("bob", 2n, 2n, ["bob"])], "bob-phone");
    feature.changed([change("bob", 3n, 3n, ["bob"])], "bob-phone");
    feature.changed([change("carol", 1n, 0n, [])]);
    feature.flush();
    expect(sent).toHaveLength(1);
    expect(sent[0]!.exceptDeviceKey).toBe("bob-phone");
    expect(decoded(sent[0]!).value).toMatchObject({ deliveredSeq: 3n, readSeq: 3n });
  });
});
