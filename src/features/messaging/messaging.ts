import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import type { Attachment } from "../../../gen/palaver/chat/v1/model_pb.js";
import { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";
import type { Clock } from "../../ports/clock.js";
import { deviceNameKey, type MessageStore, type PendingSend, type SendOutcome } from "../../ports/db.js";
import type { RateLimiters } from "../../ports/rate-limiter.js";
import { chatNotFound } from "../chats/chats.js";
import { encodeStoredEvent } from "../delivery/events.js";
import type { DeliveryHub } from "../delivery/hub.js";
import type { Metrics } from "../operations/metrics.js";
import { GroupCommitter } from "../group-commit.js";
import { Limit } from "../rate-limit.js";

/** Checks that the caller may send these attachments (uploaded, by them) and returns what recipients see of them. */
export type AttachmentResolver = (uploaderUserId: string, attachmentIds: readonly string[]) => Promise<Attachment[]>;

/** A message as its sender's device sends it. */
export interface SendInput {
  chatId: string;
  /** The sending device's id for it: a retry with the same id is answered with the first result and stored once. */
  clientMessageId: string;
  text: string;
  attachmentIds: readonly string[];
}

/** What the sender is told: the message as stored (the first attempt's, for a retry). */
export interface SendResult {
  messageId: string;
  seq: bigint;
  sentAt: Date;
}

export interface SendOptions {
  /** Most sends stored in one transaction. */
  maxBatch: number;
  /** Batches written at once. */
  maxInFlight: number;
  /** How long a send may wait for others to share its batch (GroupCommitOptions.gatherMs). */
  gatherMs: number;
  /** Messages one device may send a minute (across the nodes sharing the limiters' store). */
  sendsPerMinute: number;
}

/**
 * Sending: store first (message, seq and one inbox entry per recipient device, in one statement or transaction shared
 * with other concurrent sends), answer, and push the event to connected recipients.
 */
export class Messaging {
  private readonly committer: GroupCommitter<PendingSend, SendOutcome>;
  private readonly limit: Limit;

  constructor(
    private readonly db: MessageStore,
    private readonly hub: DeliveryHub,
    private readonly clock: Clock,
    private readonly resolveAttachments: AttachmentResolver,
    private readonly metrics: Metrics,
    limiters: RateLimiters,
    options: SendOptions,
  ) {
    this.committer = new GroupCommitter(
      (sends) => db.storeMessages(sends),
      options.maxBatch,
      options.maxInFlight,
      {
        // Batches in flight at once never share a chat, so they never wait on each other's chat row locks.
        keyOf: (send) => send.chatId.toLowerCase(),
        onBatch: metrics.batchObserver("sends"),
        gatherMs: options.gatherMs,
      },
    );
    this.limit = new Limit(limiters, {
      name: "sends",
      points: options.sendsPerMinute,
      windowSeconds: 60,
      allows: `this device may send ${options.sendsPerMinute} messages a minute`,
    });
  }

  /**
   * A retry may follow a first attempt whose live push never happened (its node died after the commit): push the
   * message again to the devices that have not acked it. Streams drop events they already sent.
   */
  private async pushAgain(chatId: string, messageId: string, sentAt: Date): Promise<void> {
    const pending = await this.db.pendingFanout(chatId, messageId);
    if (pending && pending.entries.length > 0) await this.hub.deliver({ ...pending, sentAtMs: sentAt.getTime() });
  }

  async send(caller: Caller, input: SendInput): Promise<SendResult> {
    return (await this.queue(caller, input)).stored;
  }

  /**
   * Takes the send in: its rate limit and attachments checked, then queued for the next batch. Resolves once it is
   * queued, so a caller that queues one send after the other gets their seqs in that order while they are stored
   * together; `stored` settles with the send's result.
   */
  async queue(caller: Caller, input: SendInput): Promise<{ stored: Promise<SendResult> }> {
    await this.limit.take(deviceNameKey(caller));
    const attachments =
      input.attachmentIds.length > 0 ? await this.resolveAttachments(caller.userId, input.attachmentIds) : [];
    const messageId = randomUUID();
    const sentAt = this.clock.now();
    const outcome = this.committer.submit({
      chatId: input.chatId,
      messageId,
      senderUserId: caller.userId,
      senderDeviceKey: caller.deviceKey,
      clientMessageId: input.clientMessageId,
      sentAt,
      attachmentIds: input.attachmentIds,
      encode: (seq) =>
        encodeStoredEvent(
          create(EventSchema, {
            chatId: input.chatId,
            kind: {
              case: "newMessage",
              value: {
                messageId,
                seq,
                senderUserId: caller.userId,
                senderDeviceId: caller.deviceName,
                text: input.text,
                attachments,
                sentAt: timestampFromDate(sentAt),
                clientMessageId: input.clientMessageId,
              },
            },
          }),
        ),
    });
    return { stored: outcome.then((o) => this.answer(input.chatId, o)) };
  }

  /** Pushes a stored send to its recipients and says what the sender is told; a refusal throws. */
  private async answer(chatId: string, outcome: SendOutcome): Promise<SendResult> {
    switch (outcome.kind) {
      case "chat_not_found":
        throw chatNotFound(chatId);
      case "blocked":
        throw new Refusal("forbidden", "the other participant of this chat blocked the caller");
      case "not_participant":
        throw new Refusal("forbidden", "only participants may send to a chat");
      case "stored":
        await this.hub.deliver(outcome.fanout);
        break;
      case "duplicate":
        await this.pushAgain(chatId, outcome.messageId, outcome.sentAt);
        break;
    }
    this.metrics.sends.inc({ outcome: outcome.kind });
    return { messageId: outcome.messageId, seq: outcome.seq, sentAt: outcome.sentAt };
  }
}
