import type {
  AttachmentEntry,
  ChatEntry,
  MessageEntry,
  NoticeEntry,
  ReceiptLevel,
  TimelineEntry,
} from "../store.js";
import { h, icon } from "./dom.js";
import { formatBytes, formatTime, hueOf } from "./format.js";

export interface TimelineActions {
  retry(clientMessageId: string): void;
  discard(clientMessageId: string): void;
  downloadUrl(attachmentId: string): Promise<string>;
  forgetDownloadUrl(attachmentId: string): void;
}

/**
 * The open chat's messages. Nodes are kept per entry and rebuilt only when what they show changes, so images are
 * not fetched again and the reader's scroll position holds; it follows new messages only while at the bottom.
 */
export class TimelineView {
  readonly element: HTMLElement;
  private nodes = new Map<string, { node: HTMLElement; signature: string }>();
  private chatId: string | null = null;
  private atBottom = true;

  constructor(private readonly actions: TimelineActions) {
    this.element = h("div", { class: "timeline", role: "log", "aria-live": "polite", "aria-label": "Messages" });
    this.element.addEventListener("scroll", () => {
      const el = this.element;
      this.atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
    });
  }

  render(chat: ChatEntry, entries: TimelineEntry[]): void {
    if (chat.chatId !== this.chatId) {
      this.chatId = chat.chatId;
      this.nodes = new Map();
      this.atBottom = true;
    }
    const last = entries[entries.length - 1];
    const follow = this.atBottom || (last?.kind === "message" && last.mine && last.status === "sending");
    const group = chat.participants.length > 2 || chat.name !== "";
    const kept = new Map<string, { node: HTMLElement; signature: string }>();
    const children: HTMLElement[] = [];
    entries.forEach((entry, i) => {
      const previous = entries[i - 1];
      const startsRun =
        entry.kind === "message" &&
        !(previous?.kind === "message" && previous.sender === entry.sender && entry.sentAt - previous.sentAt < 5 * 60_000);
      const signature = signatureOf(entry, startsRun);
      const cached = this.nodes.get(entry.key);
      const node =
        cached && cached.signature === signature
          ? cached.node
          : entry.kind === "notice"
            ? this.notice(entry)
            : this.message(entry, startsRun && group && !entry.mine);
      kept.set(entry.key, { node, signature });
      children.push(node);
    });
    this.nodes = kept;
    if (children.length === 0) children.push(h("div", { class: "timeline-empty" }, "No messages yet. Say hello!"));
    this.element.replaceChildren(...children);
    if (follow) this.scrollToEnd();
  }

  private scrollToEnd(): void {
    this.element.scrollTop = this.element.scrollHeight;
    this.atBottom = true;
  }

  private notice(entry: NoticeEntry): HTMLElement {
    return h(
      "div",
      { class: "notice", "data-testid": "notice" },
      h("span", {}, entry.text, h("time", {}, ` · ${formatTime(entry.at)}`)),
    );
  }

  private message(entry: MessageEntry, showSender: boolean): HTMLElement {
    const sender = showSender ? h("div", { class: "sender" }, entry.sender) : null;
    sender?.style.setProperty("--hue", String(hueOf(entry.sender)));
    const bubble = h(
      "div",
      { class: "bubble" },
      ...entry.attachments.map((a) => this.attachment(a)),
      entry.text && h("p", { class: "text" }, entry.text),
      h("div", { class: "meta" }, h("time", {}, formatTime(entry.sentAt)), entry.mine && status(entry)),
    );
    return h(
      "div",
      {
        class: `message ${entry.mine ? "mine" : "theirs"}${entry.status === "failed" ? " failed" : ""}`,
        "data-testid": "message",
        "data-sender": entry.sender,
        "data-seq": entry.seq ?? false,
        "data-status": entry.status,
        "data-receipt": receiptOf(entry) ?? false,
      },
      sender,
      bubble,
      entry.status === "failed" && this.failure(entry),
    );
  }

  private failure(entry: MessageEntry): HTMLElement {
    return h(
      "div",
      { class: "failure" },
      h("span", { class: "failure-text" }, entry.error ?? "Not sent"),
      h("button", { type: "button", class: "link", onclick: () => this.actions.retry(entry.clientMessageId) }, "Retry"),
      h("button", { type: "button", class: "link", onclick: () => this.actions.discard(entry.clientMessageId) }, "Discard"),
    );
  }

  private attachment(attachment: AttachmentEntry): HTMLElement {
    const isImage = attachment.contentType.startsWith("image/");
    if (isImage) {
      const img = h("img", { alt: attachment.fileName, class: "image", decoding: "async" });
      const figure = h("a", { class: "attachment-image", target: "_blank", rel: "noopener", title: attachment.fileName }, img);
      img.addEventListener("load", () => {
        figure.classList.add("loaded");
        if (this.atBottom) this.scrollToEnd();
      });
      if (attachment.localUrl) {
        img.src = attachment.localUrl;
        figure.setAttribute("href", attachment.localUrl);
      } else if (attachment.attachmentId) {
        void this.resolve(attachment.attachmentId, img, figure);
      }
      return figure;
    }
    const link = h(
      "a",
      { class: "attachment-file", download: attachment.fileName, "aria-disabled": "true" },
      icon("file"),
      h(
        "span",
        { class: "attachment-file-text" },
        h("span", { class: "attachment-file-name" }, attachment.fileName),
        h("span", { class: "attachment-file-size" }, formatBytes(attachment.sizeBytes)),
      ),
      icon("download"),
    );
    if (attachment.attachmentId) {
      this.actions
        .downloadUrl(attachment.attachmentId)
        .then((url) => {
          link.setAttribute("href", url);
          link.removeAttribute("aria-disabled");
        })
        .catch(() => link.setAttribute("title", "The file is not available"));
    }
    return link;
  }

  /** Points an image at a signed URL; a URL that fails (expired) is fetched anew once. */
  private async resolve(attachmentId: string, img: HTMLImageElement, link: HTMLElement): Promise<void> {
    try {
      const url = await this.actions.downloadUrl(attachmentId);
      img.addEventListener(
        "error",
        () => {
          this.actions.forgetDownloadUrl(attachmentId);
          void this.actions.downloadUrl(attachmentId).then((fresh) => {
            if (fresh !== url) img.src = fresh;
          });
        },
        { once: true },
      );
      img.src = url;
      link.setAttribute("href", url);
    } catch {
      img.alt = `${img.alt} (not available)`;
      link.classList.add("unavailable");
    }
  }
}

const receiptLabels: Record<ReceiptLevel, string> = {
  sent: "Sent",
  delivered: "Delivered",
  read: "Read",
};

/** My stored messages' ticks: one once stored, two once every other participant received it, blue once all read it. */
function receiptOf(entry: MessageEntry): ReceiptLevel | undefined {
  return entry.mine && entry.status === "sent" ? (entry.receipt ?? "sent") : undefined;
}

function status(entry: MessageEntry): HTMLElement {
  const receipt = receiptOf(entry);
  if (receipt) {
    return h(
      "span",
      {
        class: `status receipt receipt-${receipt}`,
        role: "img",
        "aria-label": receiptLabels[receipt],
        title: receiptLabels[receipt],
      },
      icon(receipt === "sent" ? "check" : "checks"),
    );
  }
  const text = entry.status === "sending" ? (entry.progress ?? "Sending…") : "Not sent";
  return h("span", { class: `status status-${entry.status}`, title: text }, text);
}

function signatureOf(entry: TimelineEntry, startsRun: boolean): string {
  if (entry.kind === "notice") return "n";
  const files = entry.attachments.map((a) => `${a.attachmentId}:${a.localUrl ?? ""}`).join(",");
  return [entry.status, receiptOf(entry), entry.progress, entry.error, entry.seq, startsRun, files].join("|");
}
