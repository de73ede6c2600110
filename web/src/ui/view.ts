import type { Session } from "../session.js";
import type { ChatStore } from "../store.js";
import type { ConnectionState } from "../sync.js";
import type { TypingIndicators } from "../typing.js";
import { renderChatList } from "./chat-list.js";
import { avatar, chatAvatar, chatTitle, typingText } from "./common.js";
import { h, icon } from "./dom.js";
import { type MembersActions, renderMembers } from "./members.js";
import { openNewChatDialog } from "./new-chat.js";
import { type TimelineActions, TimelineView } from "./timeline.js";

export interface ViewActions extends TimelineActions, Omit<MembersActions, "closeMembers"> {
  selectChat(chatId: string | null): void;
  /** The composer's text changed (typing, or cleared). */
  typed(text: string): void;
  sendText(text: string): void;
  sendFiles(files: File[], text: string): void;
  createChat(name: string, userIds: string[]): Promise<void>;
  reconnect(): void;
  signOut(): void;
}

const stateLabels: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

/** The signed-in page: chats on the left, the open conversation on the right, participants beside it on demand. */
export class ChatView {
  private readonly shell: HTMLElement;
  private readonly connection: HTMLButtonElement;
  private readonly connectionStrip: HTMLElement;
  private readonly chatList: HTMLElement;
  private readonly conversation: HTMLElement;
  private readonly header: HTMLElement;
  /** Who is in the chat, or who is typing in it: kept across renders, so screen readers hear the change. */
  private readonly subtitle: HTMLElement;
  private readonly banners: HTMLElement;
  private readonly note: HTMLElement;
  private readonly composer: HTMLFormElement;
  private readonly textarea: HTMLTextAreaElement;
  private readonly membersPanel: HTMLElement;
  private readonly timeline: TimelineView;
  private membersOpen = false;
  private membersSignature = "";
  private headerSignature = "";

  constructor(
    root: HTMLElement,
    private readonly store: ChatStore,
    private readonly typing: TypingIndicators,
    private readonly session: Session,
    private readonly actions: ViewActions,
  ) {
    this.timeline = new TimelineView(actions);
    this.connection = h(
      "button",
      {
        type: "button",
        class: "connection",
        "data-state": "connecting",
        "data-testid": "connection-state",
        onclick: () => actions.reconnect(),
      },
      h("span", { class: "connection-dot", "aria-hidden": "true" }),
      h("span", { class: "connection-label", role: "status" }, stateLabels.connecting),
    );
    this.connectionStrip = h("div", { class: "connection-strip", "data-state": "connecting", "aria-hidden": "true" });
    this.chatList = h("ul", { class: "chat-list" });
    this.header = h("header", { class: "conversation-header" });
    this.subtitle = h("p", { class: "muted conversation-subtitle", role: "status", "data-testid": "chat-subtitle" });
    this.banners = h("div", { class: "banners" });
    this.note = h("div", { class: "composer-note", hidden: true });
    this.textarea = h("textarea", { rows: 1, placeholder: "Write a message…", "aria-label": "Message", maxlength: 65536 });
    this.composer = this.buildComposer();
    this.membersPanel = h("aside", { class: "members", "aria-label": "Participants", hidden: true });
    this.conversation = h("section", { class: "conversation" });
    this.shell = h(
      "div",
      { class: "shell", "data-pane": "list" },
      this.buildSidebar(),
      h("div", { class: "main" }, this.conversation, this.membersPanel),
    );
    root.replaceChildren(this.shell);
    this.render();
  }

  setConnection(state: ConnectionState, detail: string): void {
    this.connection.dataset.state = state;
    this.connection.title = state === "live" ? detail : `${detail}${state === "reconnecting" ? " (click to retry now)" : ""}`;
    this.connection.querySelector(".connection-label")!.textContent = stateLabels[state];
    this.connectionStrip.dataset.state = state;
    this.connectionStrip.textContent = state === "live" ? "" : `${stateLabels[state]} · ${detail}`;
  }

  /** A problem the user should read: the server's own message, until dismissed or replaced. */
  showError(message: string): void {
    this.showBanner(message, "error");
  }

  showInfo(message: string): void {
    this.showBanner(message, "info");
  }

  render(): void {
    renderChatList(this.chatList, this.store, this.typing, (chatId) => this.select(chatId));
    const chat = this.store.activeChatId ? this.store.chat(this.store.activeChatId) : undefined;
    this.shell.dataset.pane = chat ? "chat" : "list";
    const unread = this.store.chatList().reduce((sum, c) => sum + c.unread, 0);
    document.title = unread > 0 ? `(${unread}) Palaver` : "Palaver";
    if (!chat) {
      this.conversation.replaceChildren(
        this.banners,
        h(
          "div",
          { class: "empty-state" },
          icon("chat"),
          h("h2", {}, "Pick a chat, or start a new one"),
          h("p", { class: "muted" }, "Messages arrive here live, and wait in your inbox while you are away."),
        ),
      );
      this.membersPanel.hidden = true;
      return;
    }
    const title = chatTitle(chat, this.store.me);
    const headerSignature = `${chat.chatId}|${title}|${chat.participants.join(",")}|${this.membersOpen}`;
    if (headerSignature !== this.headerSignature) {
      this.headerSignature = headerSignature;
      this.header.replaceChildren(
        h(
          "button",
          { type: "button", class: "icon-button back", "aria-label": "Back to chats", onclick: () => this.select(null) },
          icon("back"),
        ),
        chatAvatar(chat, this.store.me),
        h("div", { class: "conversation-title" }, h("h1", {}, title), this.subtitle),
        h(
          "button",
          {
            type: "button",
            class: "icon-button",
            "aria-label": "Participants",
            "aria-pressed": String(this.membersOpen),
            onclick: () => this.toggleMembers(),
          },
          icon("users"),
        ),
      );
    }
    const typers = this.typing.typers(chat.chatId);
    const subtitle =
      typers.length > 0
        ? typingText(typers)
        : `${chat.participants.length} participants · ${chat.participants.join(", ")}`;
    if (this.subtitle.textContent !== subtitle) this.subtitle.textContent = subtitle;
    this.subtitle.classList.toggle("typing", typers.length > 0);
    this.note.hidden = chat.member;
    this.note.textContent = chat.member ? "" : "You are no longer a participant of this chat.";
    if (this.conversation.firstChild !== this.header) {
      this.conversation.replaceChildren(
        this.header,
        this.connectionStrip,
        this.banners,
        this.timeline.element,
        this.note,
        this.composer,
      );
    }
    this.timeline.render(chat, this.store.timeline(chat.chatId));
    this.membersPanel.hidden = !this.membersOpen;
    const membersSignature = `${chat.chatId}|${chat.member}|${chat.participants.join(",")}`;
    if (this.membersOpen && membersSignature !== this.membersSignature) {
      // Only when it changed: a re-render would wipe what is being typed into the add field.
      this.membersSignature = membersSignature;
      renderMembers(this.membersPanel, chat, this.store.me, {
        addParticipant: (userId) => this.actions.addParticipant(userId),
        removeParticipant: (userId) => this.actions.removeParticipant(userId),
        closeMembers: () => this.closeMembers(),
      });
    }
  }

  private select(chatId: string | null): void {
    if (chatId !== this.store.activeChatId) this.membersOpen = false;
    this.actions.selectChat(chatId);
    if (chatId) requestAnimationFrame(() => this.textarea.focus());
  }

  private toggleMembers(): void {
    this.membersOpen = !this.membersOpen;
    this.membersSignature = "";
    this.render();
  }

  private closeMembers(): void {
    this.membersOpen = false;
    this.render();
  }

  private showBanner(message: string, kind: "error" | "info"): void {
    const banner = h(
      "div",
      { class: `banner banner-${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": `${kind}-banner` },
      h("span", { class: "banner-text" }, message),
      h(
        "button",
        { type: "button", class: "icon-button", "aria-label": "Dismiss", onclick: () => banner.remove() },
        icon("close"),
      ),
    );
    this.banners.replaceChildren(banner);
  }

  private buildSidebar(): HTMLElement {
    return h(
      "aside",
      { class: "sidebar" },
      h(
        "header",
        { class: "sidebar-header" },
        h("div", { class: "brand" }, h("img", { src: "/favicon.svg", alt: "", width: 28, height: 28 }), "Palaver"),
        this.connection,
      ),
      h(
        "div",
        { class: "me" },
        avatar(this.session.userId, this.session.userId),
        h(
          "div",
          { class: "me-text" },
          h("strong", { "data-testid": "me" }, this.session.userId),
          h("span", { class: "muted" }, this.session.deviceName),
        ),
        h(
          "button",
          {
            type: "button",
            class: "icon-button",
            "aria-label": "Sign out",
            title: "Sign out",
            onclick: () => this.actions.signOut(),
          },
          icon("logout"),
        ),
      ),
      h(
        "div",
        { class: "sidebar-actions" },
        h(
          "button",
          {
            type: "button",
            class: "primary wide",
            onclick: () => openNewChatDialog((name, ids) => this.actions.createChat(name, ids)),
          },
          icon("plus"),
          "New chat",
        ),
      ),
      h("nav", { class: "chat-nav", "aria-label": "Chats" }, this.chatList),
    );
  }

  private buildComposer(): HTMLFormElement {
    const files = h("input", { type: "file", multiple: true, hidden: true, "data-testid": "file-input" });
    const send = () => {
      const text = this.textarea.value.trim();
      if (!text) return;
      this.actions.sendText(text);
      this.textarea.value = "";
      this.fitTextarea();
    };
    files.addEventListener("change", () => {
      const chosen = [...(files.files ?? [])];
      files.value = "";
      if (chosen.length === 0) return;
      this.actions.sendFiles(chosen, this.textarea.value.trim());
      this.textarea.value = "";
      this.fitTextarea();
    });
    this.textarea.addEventListener("input", () => {
      this.fitTextarea();
      this.actions.typed(this.textarea.value);
    });
    this.textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
    const form = h(
      "form",
      {
        class: "composer",
        onsubmit: (event: Event) => {
          event.preventDefault();
          send();
        },
      },
      files,
      h(
        "button",
        {
          type: "button",
          class: "icon-button",
          "aria-label": "Attach a file",
          title: "Attach a file",
          onclick: () => files.click(),
        },
        icon("paperclip"),
      ),
      this.textarea,
      h("button", { type: "submit", class: "send", "aria-label": "Send", title: "Send (Enter)" }, icon("send")),
    );
    // Files dropped anywhere on the conversation are sent like chosen ones.
    this.conversationDrop(form);
    return form;
  }

  private conversationDrop(form: HTMLFormElement): void {
    const target = form.ownerDocument;
    target.addEventListener("dragover", (event) => {
      if (this.store.activeChatId && event.dataTransfer?.types.includes("Files")) event.preventDefault();
    });
    target.addEventListener("drop", (event) => {
      const dropped = [...(event.dataTransfer?.files ?? [])];
      if (!this.store.activeChatId || dropped.length === 0) return;
      event.preventDefault();
      this.actions.sendFiles(dropped, "");
    });
  }

  private fitTextarea(): void {
    this.textarea.style.height = "auto";
    this.textarea.style.height = `${Math.min(this.textarea.scrollHeight, 160)}px`;
  }
}
