import { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";
import { deviceNameKey, type ReadMark, type ReadOutcome, type Receipt, type ReceiptChange, type ReceiptStore } from "../../ports/db.js";
import type { RateLimiters } from "../../ports/rate-limiter.js";
import type { Notice } from "../../ports/routing.js";
import { chatNotFound } from "../chats/chats.js";
import { receiptUpdateBody } from "../delivery/events.js";
import { GroupCommitter } from "../group-commit.js";
import { Limit } from "../rate-limit.js";

export interface ReceiptsOptions {
  /** Most read marks written by one statement. */
  maxBatch: number;
  /** Read-mark statements running at once. */
  maxInFlight: number;
  /** MarkRead calls and frames one device may make a minute. */
  readsPerMinute: number;
  /** How long receipt changes gather before their notices go out: changes to one (chat, user) within it make one. */
  windowMs: number;
  /** Told each batch's size (a metric). */
  onBatch?: (size: number) => void;
}

/** A pending notice of one (chat, user)'s receipt: the latest receipt, everyone to tell, and who caused it. */
interface Pending {
  chatId: string;
  receipt: Receipt;
  userIds: Set<string>;
  /** The device that caused every change merged here (it needs no notice of its own act); null once they differ. */
  exceptDeviceKey: string | null | undefined;
}

/**
 * Receipts: how far each participant has received and read each chat. Acks move what was delivered (Acks hands the
 * changes here), MarkRead what was read; both are rows of chat_participants, never stored events. Every change
 * becomes a ReceiptUpdate notice to the users who sent something since the receipt's old seq (and, for a read, the
 * reader's other devices), coalesced: the changes to one (chat, user) within `windowMs` go out as one notice with the
 * latest receipt, however many acks and marks made them.
 */
export class Receipts {
  private readonly committer: GroupCommitter<ReadMark, ReadOutcome>;
  private readonly limit: Limit;
  private readonly pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    db: ReceiptStore,
    private readonly notify: (notices: Notice[]) => void,
    limiters: RateLimiters,
    private readonly options: ReceiptsOptions,
  ) {
    this.committer = new GroupCommitter((marks) => db.markRead(marks), options.maxBatch, options.maxInFlight, {
      onBatch: options.onBatch,
    });
    const points = options.readsPerMinute;
    this.limit = new Limit(limiters, {
      name: "reads",
      points,
      windowSeconds: 60,
      allows: `this device may mark chats read ${points} times a minute`,
    });
  }

  /** Marks the chat read up to `seq` for the caller's user; returns the receipt after it and the unread count. */
  async markRead(caller: Caller, chatId: string, seq: bigint): Promise<{ receipt: Receipt; unreadCount: bigint }> {
    await this.limit.take(deviceNameKey(caller));
    const outcome = await this.committer.submit({ chatId, userId: caller.userId, seq });
    switch (outcome.kind) {
      case "chat_not_found":
        throw chatNotFound(chatId);
      case "not_participant":
        throw new Refusal("forbidden", "only participants may mark a chat read");
      case "beyond_last_seq":
        throw new Refusal("invalid", `seq ${seq} is past the chat's last message (seq ${outcome.lastSeq})`);
      case "read":
        if (outcome.change) this.changed([outcome.change], caller.deviceKey);
        return { receipt: outcome.receipt, unreadCount: outcome.lastSeq - outcome.receipt.readSeq };
    }
  }

  /** Queues the notices of receipts that moved; `exceptDeviceKey` caused them all. */
  changed(changes: readonly ReceiptChange[], exceptDeviceKey?: string): void {
    for (const change of changes) {
      if (change.notifyUserIds.length === 0) continue;
      const key = JSON.stringify([change.chatId, change.receipt.userId]);
      const pending = this.pending.get(key);
      if (!pending) {
        this.pending.set(key, {
          chatId: change.chatId,
          receipt: change.receipt,
          userIds: new Set(change.notifyUserIds),
          exceptDeviceKey,
        });
        continue;
      }
      pending.receipt = later(pending.receipt, change.receipt);
      for (const userId of change.notifyUserIds) pending.userIds.add(userId);
      if (pending.exceptDeviceKey !== exceptDeviceKey) pending.exceptDeviceKey = null;
    }
    if (this.pending.size > 0 && !this.timer) this.timer = setTimeout(() => this.flush(), this.options.windowMs);
  }

  /** Sends the notices gathered (at the end of the window, and at shutdown). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const notices = [...this.pending.values()].map(({ chatId, receipt, userIds, exceptDeviceKey }) => ({
      body: receiptUpdateBody(chatId, receipt),
      userIds: [...userIds],
      exceptDeviceKey: exceptDeviceKey ?? undefined,
    }));
    this.pending.clear();
    if (notices.length > 0) this.notify(notices);
  }
}

/** The further of two receipts of one participant (each seq only moves forward). */
function later(a: Receipt, b: Receipt): Receipt {
  return {
    userId: a.userId,
    deliveredSeq: a.deliveredSeq > b.deliveredSeq ? a.deliveredSeq : b.deliveredSeq,
    readSeq: a.readSeq > b.readSeq ? a.readSeq : b.readSeq,
  };
}
