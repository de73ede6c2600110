import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import type { Api } from "./api.js";
import { MAX_HASHED_BYTES, UploadError, sha256, upload } from "./attachments.js";
import { backoffDelay, pause } from "./backoff.js";
import { describeError, isRetryable } from "./errors.js";
import { newClientMessageId } from "./ids.js";
import type { AttachmentEntry, ChatStore } from "./store.js";
import { formatBytes } from "./ui/format.js";

/** Tries of one step (an RPC, an upload) before the send is shown as failed and left to the user to retry. */
const MAX_TRIES = 6;

interface Job {
  chatId: string;
  clientMessageId: string;
  text: string;
  file?: File;
  attachmentIds: string[];
  running: boolean;
}

/**
 * This device's sends. Each gets a client_message_id when the user sends it, and keeps it through every retry,
 * automatic or manual, so the server stores it once however often the request goes out. SendMessage calls leave in
 * the order the user sent them, per chat; a file's upload runs ahead and its message joins the line when done.
 */
export class Outbox {
  private readonly jobs = new Map<string, Job>();
  private readonly lines = new Map<string, Promise<unknown>>();

  constructor(
    private readonly api: Api,
    private readonly store: ChatStore,
    private readonly report: (message: string) => void,
  ) {}

  sendText(chatId: string, text: string): void {
    const clientMessageId = newClientMessageId();
    this.store.addOutgoing(chatId, clientMessageId, text, []);
    this.start({ chatId, clientMessageId, text, attachmentIds: [], running: false });
  }

  sendFile(chatId: string, file: File, text = ""): void {
    const clientMessageId = newClientMessageId();
    const attachment: AttachmentEntry = {
      attachmentId: "",
      contentType: contentTypeOf(file),
      sizeBytes: file.size,
      fileName: file.name,
      localUrl: file.type.startsWith("image/") ? URL.createObjectURL(file) : undefined,
    };
    this.store.addOutgoing(chatId, clientMessageId, text, [attachment]);
    this.start({ chatId, clientMessageId, text, file, attachmentIds: [], running: false });
  }

  /** Sends a failed message again, with the same client_message_id. */
  retry(clientMessageId: string): void {
    let job = this.jobs.get(clientMessageId);
    if (!job) {
      // Restored from an earlier page load: the text and any uploaded attachment ids are all it needs.
      const entry = this.store.findOutgoing(clientMessageId);
      if (!entry) return;
      if (entry.attachments.some((a) => !a.attachmentId)) {
        this.report(`Pick ${entry.attachments[0]!.fileName} again: the file was not uploaded before the page closed`);
        return;
      }
      job = {
        chatId: entry.chatId,
        clientMessageId,
        text: entry.text,
        attachmentIds: entry.attachments.map((a) => a.attachmentId),
        running: false,
      };
    }
    this.start(job);
  }

  discard(clientMessageId: string): void {
    this.jobs.delete(clientMessageId);
    this.store.removeOutgoing(clientMessageId);
  }

  private start(job: Job): void {
    if (job.running) return;
    job.running = true;
    this.jobs.set(job.clientMessageId, job);
    void this.run(job).finally(() => (job.running = false));
  }

  private async run(job: Job): Promise<void> {
    const { chatId, clientMessageId } = job;
    this.store.updateOutgoing(clientMessageId, { status: "sending", error: undefined });
    try {
      if (job.file && job.attachmentIds.length === 0) job.attachmentIds = [await this.uploadFile(job, job.file)];
      const sent = await this.inLine(chatId, () => {
        this.store.updateOutgoing(clientMessageId, { progress: undefined });
        return this.withRetries(() =>
          this.api.chat.sendMessage({ chatId, clientMessageId, text: job.text, attachmentIds: job.attachmentIds }),
        );
      });
      this.store.updateOutgoing(clientMessageId, {
        status: "sent",
        messageId: sent.messageId,
        seq: Number(sent.seq),
        sentAt: sent.sentAt ? timestampMs(sent.sentAt) : Date.now(),
      });
      this.jobs.delete(clientMessageId);
    } catch (error) {
      const message = describeError(error);
      this.store.updateOutgoing(clientMessageId, { status: "failed", progress: undefined, error: message });
      this.report(job.file ? `Could not send ${job.file.name}. ${message}` : message);
    }
  }

  /** Hash, CreateAttachment, PUT (unless this user uploaded the same bytes before): the attachment's id. */
  private async uploadFile(job: Job, file: File): Promise<string> {
    const progress = (text: string) => this.store.updateOutgoing(job.clientMessageId, { progress: text });
    if (file.size > MAX_HASHED_BYTES) {
      throw new Error(`${file.name} is ${formatBytes(file.size)}; attachments are at most 100 MiB`);
    }
    progress("Reading file…");
    const digest = await sha256(file);
    progress("Preparing upload…");
    const created = await this.withRetries(() =>
      this.api.attachments.createAttachment({
        sha256: digest,
        sizeBytes: BigInt(file.size),
        contentType: contentTypeOf(file),
        fileName: file.name,
      }),
    );
    const entry = this.store.findOutgoing(job.clientMessageId);
    if (entry) {
      const attachments = entry.attachments.map((a) => ({ ...a, attachmentId: created.attachmentId }));
      this.store.updateOutgoing(job.clientMessageId, { attachments });
    }
    if (!created.alreadyUploaded) {
      const target = created.upload;
      if (!target) throw new Error("The server returned no upload URL");
      progress(`Uploading ${formatBytes(file.size)}…`);
      await this.withRetries(() => upload(target, file));
    }
    progress("Sending…");
    return created.attachmentId;
  }

  /** Runs `step` after the sends queued before it in this chat, so messages keep the order they were sent in. */
  private inLine<T>(chatId: string, step: () => Promise<T>): Promise<T> {
    const previous = this.lines.get(chatId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(step);
    this.lines.set(chatId, next);
    return next;
  }

  private async withRetries<T>(call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (error) {
        const retryable =
          error instanceof UploadError ? error.retryable : error instanceof ConnectError && isRetryable(error);
        if (!retryable || attempt >= MAX_TRIES) throw error;
        await pause(navigator.onLine ? backoffDelay(attempt - 1) : Number.POSITIVE_INFINITY);
      }
    }
  }
}

/** The API takes `type/subtype` only; files the browser cannot type go as bytes. */
function contentTypeOf(file: File): string {
  const type = file.type.split(";")[0]!.trim();
  return /^[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]{0,63}\/[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]{0,63}$/.test(type)
    ? type
    : "application/octet-stream";
}
