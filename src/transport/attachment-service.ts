import type { ServiceImpl } from "@connectrpc/connect";
import { AttachmentService } from "../../../gen/palaver/chat/v1/attachment_pb.js";
import { requireCaller } from "../../transport/caller.js";
import type { Attachments } from "./attachments.js";

export function attachmentService(attachments: Attachments): ServiceImpl<typeof AttachmentService> {
  return {
    createAttachment: (request, ctx) => attachments.create(requireCaller(ctx), request),
    getAttachmentDownload: (request, ctx) => attachments.download(requireCaller(ctx), request.attachmentId),
  };
}
