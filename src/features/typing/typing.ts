import type { Caller } from "../../ports/caller.js";
import { type ChatStore, deviceNameKey, participantsOf } from "../../ports/db.js";
import type { RateLimiters } from "../../ports/rate-limiter.js";
import type { Notice } from "../../ports/routing.js";
import { chatOfParticipant } from "../chats/chats.js";
import { typingUpdateBody } from "../delivery/events.js";
import { Limit } from "../rate-limit.js";

export interface TypingOptions {
  /** SetTyping calls and frames one device may make a minute. */
  perMinute: number;
  /** How long `typing: true` holds on the receiving devices unless renewed. */
  lapseMs: number;
}

/**
 * Typing: a device tells the chat's other participants' online devices that its user is typing, or stopped. Nothing
 * is stored or remembered: a TypingUpdate notice carries when it lapses, and clients drop it then, or when a message
 * from that user arrives. Only a participant may send one, to the participants of the moment: a removed user neither
 * sends nor gets them.
 */
export class Typing {
  private readonly limit: Limit;

  constructor(
    private readonly db: Pick<ChatStore, "getChat">,
    private readonly notify: (notices: Notice[]) => void,
    limiters: RateLimiters,
    private readonly options: TypingOptions,
  ) {
    const points = options.perMinute;
    this.limit = new Limit(limiters, {
      name: "typing",
      points,
      windowSeconds: 60,
      allows: `this device may send typing updates ${points} times a minute`,
    });
  }

  async set(caller: Caller, chatId: string, typing: boolean): Promise<void> {
    await this.limit.take(deviceNameKey(caller));
    const chat = await chatOfParticipant(this.db, caller, chatId, "send typing updates to a chat");
    const others = participantsOf(chat).filter((userId) => userId !== caller.userId);
    if (others.length === 0) return;
    this.notify([{ body: typingUpdateBody(chat.chatId, caller, typing, this.options.lapseMs), userIds: others }]);
  }
}
