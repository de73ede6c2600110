import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Attachment, AttachmentSchema } from "../../../gen/palaver/chat/v1/model_pb.js";
import { Refusal } from "../../errors.js";
import type { BlobStore } from "../../ports/blob-store.js";
import type { Caller } from "../../ports/caller.js";
import { type Clock, DAY_MS } from "../../ports/clock.js";
import type { AttachmentRecord, AttachmentStore } from "../../ports/db.js";
import type { RateLimiters } from "../../ports/rate-limiter.js";
import { Limit } from "../rate-limit.js";

/**
 * Days an attachment outlives the latest message that carried it. Messages go by whole days, 30 to 31 days after they
 * were sent, and a send restarts an attachment's lifetime only when that last started over a day ago: two days of
 * grace keep a message's media for as long as the message.
 */
export function attachmentLifetimeDays(retentionDays: number): number {
  return retentionDays + 2;
}

/** An attachment about to be uploaded, as its uploader describes it. */
export interface NewAttachmentInput {
  sha256: Uint8Array;
  sizeBytes: bigint;
  contentType: string;
  fileName: string;
}

/** A new attachment and where to upload it, or, when this uploader already uploaded the same bytes, that one. */
export type NewAttachment =
  | { attachmentId: string; alreadyUploaded: true }
  | { attachmentId: string; alreadyUploaded: false; upload: Awaited<ReturnType<BlobStore["signUpload"]>> };

export interface AttachmentsOptions {
  maxBytes: number;
  uploadUrlSeconds: number;
  downloadUrlSeconds: number;
  /** CreateAttachment calls (upload grants) one user may make an hour. */
  uploadsPerHour: number;
  /** Bytes those grants may declare together, per user an hour. */
  uploadBytesPerHour: number;
}

/**
 * Media: the server records attachments and signs direct uploads and downloads; clients move the bytes. An
 * attachment counts as uploaded once the store has an object of the declared size (the signed upload already pinned
 * its length and SHA-256); that is checked once and recorded.
 */
export class Attachments {
  private readonly uploads: Limit;
  private readonly uploadBytes: Limit;

  constructor(
    private readonly db: AttachmentStore,
    private readonly blobs: BlobStore,
    private readonly clock: Clock,
    limiters: RateLimiters,
    private readonly options: AttachmentsOptions,
  ) {
    // A grant lets its holder store that many bytes: both bound what one user can make the store keep.
    this.uploads = new Limit(limiters, {
      name: "uploads",
      points: options.uploadsPerHour,
      windowSeconds: 3600,
      allows: `this user may create ${options.uploadsPerHour} attachments an hour`,
    });
    this.uploadBytes = new Limit(limiters, {
      name: "upload-bytes",
      points: options.uploadBytesPerHour,
      windowSeconds: 3600,
      allows: `this user may create attachments of ${options.uploadBytesPerHour} bytes in all an hour`,
    });
  }

  async create(caller: Caller, input: NewAttachmentInput): Promise<NewAttachment> {
    if (input.sizeBytes > BigInt(this.options.maxBytes)) {
      throw new Refusal("invalid", `an attachment is at most ${this.options.maxBytes} bytes`);
    }
    await this.uploads.take(caller.userId);
    await this.uploadBytes.take(caller.userId, Number(input.sizeBytes));
    const attachmentId = randomUUID();
    const now = this.clock.now();
    const { attachment } = await this.db.createAttachment({
      attachmentId,
      uploaderUserId: caller.userId,
      sha256: input.sha256,
      sizeBytes: input.sizeBytes,
      contentType: input.contentType,
      fileName: input.fileName,
      objectKey: `attachments/${attachmentId}`,
      createdAt: now,
      uploadedAt: null,
      keptAt: now,
    });
    if (await this.isUploaded(attachment)) {
      return { attachmentId: attachment.attachmentId, alreadyUploaded: true };
    }
    const upload = await this.blobs.signUpload({
      key: attachment.objectKey,
      sizeBytes: attachment.sizeBytes,
      sha256: attachment.sha256,
      contentType: attachment.contentType,
      expiresInSeconds: this.options.uploadUrlSeconds,
    });
    return { attachmentId: attachment.attachmentId, alreadyUploaded: false, upload };
  }

  /** A signed URL the caller downloads the attachment's bytes from, and when it stops working. */
  async download(caller: Caller, attachmentId: string): Promise<{ url: string; expiresAt: Date }> {
    const attachment = await this.visible(caller, attachmentId);
    if (!(await this.isUploaded(attachment))) {
      throw new Refusal("not_ready", `attachment ${attachmentId} has not been uploaded`);
    }
    return this.blobs.signDownload({
      key: attachment.objectKey,
      fileName: attachment.fileName,
      contentType: attachment.contentType,
      expiresInSeconds: this.options.downloadUrlSeconds,
    });
  }

  /**
   * What recipients see of the attachments of a send. The sender must be able to see each one (its uploader, or a
   * participant of a chat it was sent to, which lets a user forward media) and each must be uploaded. Each then lives
   * on for its lifetime from this send.
   */
  async resolveForSend(userId: string, attachmentIds: readonly string[]): Promise<Attachment[]> {
    const caller = { userId };
    const resolved: Attachment[] = [];
    for (const attachmentId of attachmentIds) {
      const attachment = await this.visible(caller, attachmentId);
      if (!(await this.isUploaded(attachment))) {
        throw new Refusal(
          "not_ready",
          `attachment ${attachmentId} has not been uploaded: upload it to the URL CreateAttachment returned, then send`,
        );
      }
      await this.keepForSend(attachment);
      resolved.push(
        create(AttachmentSchema, {
          attachmentId,
          contentType: attachment.contentType,
          sizeBytes: attachment.sizeBytes,
          sha256: attachment.sha256,
          fileName: attachment.fileName,
        }),
      );
    }
    return resolved;
  }

  /** The attachment when the caller uploaded it or takes part in a chat where it was sent. */
  private async visible(caller: Pick<Caller, "userId">, attachmentId: string): Promise<AttachmentRecord> {
    const attachment = await this.db.getAttachment(attachmentId);
    if (attachment && (await this.db.canDownloadAttachment(attachmentId, caller.userId))) return attachment;
    if (attachment) throw new Refusal("forbidden", `no access to attachment ${attachmentId}`);
    throw new Refusal("not_found", `attachment ${attachmentId} not found`);
  }

  /** Restarts the lifetime of media kept over a day ago (a forward, or the same bytes sent again), in store and record. */
  private async keepForSend(attachment: AttachmentRecord): Promise<void> {
    const now = this.clock.now();
    if (now.getTime() - attachment.keptAt.getTime() < DAY_MS) return;
    if (!(await this.blobs.keep({ key: attachment.objectKey, contentType: attachment.contentType }))) {
      throw new Refusal("not_found", `attachment ${attachment.attachmentId} has expired`);
    }
    await this.db.markAttachmentKept(attachment.attachmentId, now);
  }

  private async isUploaded(attachment: AttachmentRecord): Promise<boolean> {
    if (attachment.uploadedAt) return true;
    const stat = await this.blobs.stat(attachment.objectKey);
    if (!stat || stat.sizeBytes !== attachment.sizeBytes) return false;
    await this.db.markAttachmentUploaded(attachment.attachmentId, this.clock.now());
    return true;
  }
}
