import { Code } from "@connectrpc/connect";
import type { Api } from "./api.js";
import { backoffDelay } from "./backoff.js";
import { errorCode, isRetryable } from "./errors.js";
import type { ChatStore } from "./store.js";

interface Marking {
  /** The newest seq the user has seen here. */
  wanted: number;
  /** The newest seq the server has taken (or that there is no point sending). */
  done: number;
  inFlight: boolean;
  attempt: number;
  retry?: number;
}

/**
 * Marks the open chat read (MarkRead) while the user can see it: the page visible and focused, and messages in it
 * above my read seq. The count drops here at once; the server tells my other devices, whose counts drop too. One call
 * per chat at a time, with the newest seq: messages arriving meanwhile are covered by the next.
 */
export class ReadMarker {
  private readonly chats = new Map<string, Marking>();

  constructor(
    private readonly api: Api,
    private readonly store: ChatStore,
  ) {}

  start(): void {
    document.addEventListener("visibilitychange", this.check);
    window.addEventListener("focus", this.check);
  }

  stop(): void {
    document.removeEventListener("visibilitychange", this.check);
    window.removeEventListener("focus", this.check);
    for (const marking of this.chats.values()) window.clearTimeout(marking.retry);
    this.chats.clear();
  }

  /** Runs after every change to the store, and when the page is shown or focused. */
  readonly check = (): void => {
    const chatId = this.store.activeChatId;
    const chat = chatId ? this.store.chat(chatId) : undefined;
    if (!chatId || !chat || chat.stub || !chat.member || !seen()) return;
    if (chat.lastSeq <= this.store.myRead(chatId)) return;
    const marking = this.chats.get(chatId) ?? { wanted: 0, done: 0, inFlight: false, attempt: 0 };
    this.chats.set(chatId, marking);
    marking.wanted = Math.max(marking.wanted, chat.lastSeq);
    this.store.markReadLocally(chatId, chat.lastSeq);
    void this.send(chatId, marking);
  };

  private async send(chatId: string, marking: Marking): Promise<void> {
    if (marking.inFlight || marking.retry !== undefined || marking.wanted <= marking.done) return;
    marking.inFlight = true;
    const seq = marking.wanted;
    try {
      const { receipt } = await this.api.chat.markRead({ chatId, seq: BigInt(seq) });
      marking.done = Math.max(marking.done, seq);
      marking.attempt = 0;
      if (receipt) this.store.applyReceipt(chatId, receipt);
    } catch (error) {
      if (!isRetryable(error) && errorCode(error) !== Code.ResourceExhausted) {
        // Not a participant any more, or the chat is gone: nothing to mark.
        marking.done = Math.max(marking.done, seq);
      } else {
        marking.retry = window.setTimeout(() => {
          marking.retry = undefined;
          void this.send(chatId, marking);
        }, backoffDelay(marking.attempt++));
      }
    } finally {
      marking.inFlight = false;
    }
    void this.send(chatId, marking);
  }
}

/** The user can see the page: it is shown, and its window has the focus (not merely open behind another). */
function seen(): boolean {
  return document.visibilityState === "visible" && document.hasFocus();
}
