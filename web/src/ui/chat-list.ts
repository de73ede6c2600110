import type { ChatEntry, ChatStore } from "../store.js";
import type { TypingIndicators } from "../typing.js";
import { chatAvatar, chatTitle, typingText } from "./common.js";
import { h } from "./dom.js";
import { formatWhen } from "./format.js";

/** The sidebar's list of chats, most recent first, with unread counts and who is typing. */
export function renderChatList(
  list: HTMLElement,
  store: ChatStore,
  typing: TypingIndicators,
  select: (chatId: string) => void,
): void {
  const chats = store.chatList();
  if (chats.length === 0) {
    list.replaceChildren(h("li", { class: "chat-list-empty" }, "No chats yet. Start one with New chat."));
    return;
  }
  list.replaceChildren(...chats.map((chat) => item(chat, store, typing.typers(chat.chatId), select)));
}

function item(chat: ChatEntry, store: ChatStore, typers: string[], select: (chatId: string) => void): HTMLElement {
  const title = chatTitle(chat, store.me);
  const active = chat.chatId === store.activeChatId;
  const typingNow = chat.member && typers.length > 0;
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        class: `chat-item${chat.member ? "" : " chat-item-left"}`,
        "aria-current": active ? "true" : false,
        "data-chat-id": chat.chatId,
        "data-unread": chat.unread,
        onclick: () => select(chat.chatId),
      },
      chatAvatar(chat, store.me),
      h(
        "span",
        { class: "chat-item-body" },
        h(
          "span",
          { class: "chat-item-top" },
          h("span", { class: "chat-item-title" }, title),
          chat.lastActivity > 0 && h("time", { class: "chat-item-time" }, formatWhen(chat.lastActivity)),
        ),
        h(
          "span",
          { class: "chat-item-bottom" },
          typingNow
            ? h("span", { class: "chat-item-preview typing" }, typingText(typers))
            : h("span", { class: "chat-item-preview" }, preview(chat, store)),
          chat.unread > 0 &&
            h(
              "span",
              { class: "badge", "aria-label": `${chat.unread} unread`, "data-testid": "unread" },
              String(chat.unread),
            ),
        ),
      ),
    ),
  );
}

function preview(chat: ChatEntry, store: ChatStore): string {
  if (!chat.member) return "You are no longer in this chat";
  const last = store.lastEntry(chat.chatId);
  if (!last) return `${chat.participants.length} participants`;
  if (last.kind === "notice") return last.text;
  const who = last.mine ? "You: " : chat.participants.length > 2 ? `${last.sender}: ` : "";
  const file = last.attachments[0];
  const what = last.text || (file ? `${file.contentType.startsWith("image/") ? "Photo" : "File"}: ${file.fileName}` : "");
  return who + what;
}
