import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AttachmentService,
  CreateAttachmentResponseSchema,
  GetAttachmentDownloadResponseSchema,
} from "../../gen/palaver/chat/v1/attachment_pb.js";
import type { Attachments } from "../features/attachments/attachments.js";
import { requireCaller } from "./caller.js";

/** AttachmentService: each RPC handed to Attachments, its result put into the response message. */
export function attachmentService(attachments: Attachments): ServiceImpl<typeof AttachmentService> {
  return {
    async createAttachment(request, ctx) {
      const created = await attachments.create(requireCaller(ctx), request);
      if (created.alreadyUploaded) {
        return create(CreateAttachmentResponseSchema, { attachmentId: created.attachmentId, alreadyUploaded: true });
      }
      const { upload } = created;
      return create(CreateAttachmentResponseSchema, {
        attachmentId: created.attachmentId,
        upload: { ...upload, expiresAt: timestampFromDate(upload.expiresAt) },
      });
    },
    async getAttachmentDownload(request, ctx) {
      const signed = await attachments.download(requireCaller(ctx), request.attachmentId);
      return create(GetAttachmentDownloadResponseSchema, { url: signed.url, expiresAt: timestampFromDate(signed.expiresAt) });
    },
  };
}
