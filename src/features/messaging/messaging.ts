import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type SendMessageRequest,
  type SendMessageResponse,
  SendMessageResponseSchema,
} from "../../../gen/palaver/chat/v1/chat_pb.js";
import { type Event, EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import type { Attachment } from "../../../gen/palaver/chat/v1/model_pb.js";
import type { Db, PendingSend, SendOutcome } from "../../ports/db.js";
import type { Clock } from "../../ports/clock.js";
import type { Caller } from "../../transport/caller.js";
import { chatNotFound } from "../chats/chats.js";
import { decodeStoredEvent, encodeStoredEvent } from "../delivery/events.js";
import type { DeliveryHub } from "../delivery/hub.js";
import type { Metrics } from "../operations/metrics.js";
import { GroupCommitter } from "./group-commit.js";
import { SendLimit } from "./send-limit.js";

/** Checks that the caller may send these attachments (uploaded, by them) and returns what recipients see of them. */
export type AttachmentResolver = (uploaderUserId: string, attachmentIds: readonly string[]) => Promise<Attachment[]>;

export interface SendOptions {
  /** Most sends stored in one transaction. */
  maxBatch: number;
  /** Batches written at once. */
  maxInFlight: number;
  /** Messages one device may send a minute. */
  sendsPerMinute: number;
}

/**
 * Sending: store first (message, seq and one inbox row per recipient device, in one transaction shared with other
 * concurrent sends), answer, and push the event to connected recipients.
 */
export class Messaging {
  private readonly committer: GroupCommitter<PendingSend, SendOutcome>;
  private readonly limit: SendLimit;

  constructor(
    private readonly db: Db,
    private readonly hub: DeliveryHub,
    private readonly clock: Clock,
    private readonly resolveAttachments: AttachmentResolver,
    private readonly metrics: Metrics,
    options: SendOptions,
  ) {
    this.committer = new GroupCommitter(
      (sends) => db.storeMessages(sends),
      options.maxBatch,
      options.maxInFlight,
      // Batches in flight at once never share a chat, so they never wait on each other's chat row locks.
      (send) => send.chatId.toLowerCase(),
    );
    this.limit = new SendLimit(options.sendsPerMinute);
  }

  /**
   * A retry may follow a first attempt whose live push never happened (its node died after the commit): push the
   * message again to the devices that have not acked it. Streams drop events they already sent.
   */
  private async pushAgain(chatId: string, messageId: string): Promise<void> {
    const pending = await this.db.pendingFanout(chatId, messageId);
    if (pending && pending.deliveries.length > 0) {
      await this.hub.deliver({ event: decodeStoredEvent(pending.body, 0n), ...pending });
    }
  }

  async send(caller: Caller, request: SendMessageRequest): Promise<SendMessageResponse> {
    await this.limit.take(caller);
    const attachments =
      request.attachmentIds.length > 0 ? await this.resolveAttachments(caller.userId, request.attachmentIds) : [];
    const messageId = randomUUID();
    const sentAt = this.clock.now();
    let event: Event | undefined;
    const outcome = await this.committer.submit({
      chatId: request.chatId,
      messageId,
      senderUserId: caller.userId,
      senderDeviceKey: caller.deviceKey,
      clientMessageId: request.clientMessageId,
      sentAt,
      attachmentIds: request.attachmentIds,
      encode: (seq) => {
        event = create(EventSchema, {
          chatId: request.chatId,
          kind: {
            case: "newMessage",
            value: {
              messageId,
              seq,
              senderUserId: caller.userId,
              senderDeviceId: caller.deviceName,
              text: request.text,
              attachments,
              sentAt: timestampFromDate(sentAt),
              clientMessageId: request.clientMessageId,
            },
          },
        });
        return encodeStoredEvent(event);
      },
    });
    switch (outcome.kind) {
      case "chat_not_found":
        throw chatNotFound(request.chatId);
      case "not_participant":
        throw new ConnectError("only participants may send to a chat", Code.PermissionDenied);
      case "stored":
        await this.hub.deliver({ event: event!, body: outcome.body, deliveries: outcome.deliveries });
        break;
      case "duplicate":
        await this.pushAgain(request.chatId, outcome.messageId);
        break;
    }
    this.metrics.sends.inc({ outcome: outcome.kind });
    return create(SendMessageResponseSchema, {
      messageId: outcome.messageId,
      seq: outcome.seq,
      sentAt: timestampFromDate(outcome.sentAt),
    });
  }
}
