import { type DescField, getOption, hasOption } from "@bufbuild/protobuf";
import { field as validateField, type FieldRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { CreateAttachmentRequestSchema } from "../gen/palaver/chat/v1/attachment_pb.js";
import { CreateChatRequestSchema, ModifyChatParticipantsRequestSchema } from "../gen/palaver/chat/v1/chat_pb.js";

/**
 * The limits the API's validation rules (buf.validate options in proto/palaver/chat/v1) set, read from the generated
 * descriptors so the proto stays their one source: config caps its settings at them (src/config.ts) and the web
 * client reads the id pattern the same way (web/src/ids.ts). A rule missing from the proto fails at import.
 */

/** The pattern user ids, device names and node ids share with the API (ModifyChatParticipantsRequest.user_id). */
export const idPattern = new RegExp(stringPattern(ModifyChatParticipantsRequestSchema.field.userId));

/**
 * How many participants a chat may be created with: CreateChatRequest.participant_user_ids (min_items..max_items)
 * are the others, and the creator is added to them.
 */
export const participantsRule = (() => {
  const rules = repeatedRules(CreateChatRequestSchema.field.participantUserIds);
  return {
    min: Number(rules.minItems) + 1,
    max: Number(rules.maxItems) + 1,
    rule: `chat.proto CreateChatRequest.participant_user_ids max_items ${rules.maxItems}, plus the creator`,
  };
})();

/** The largest attachment CreateAttachmentRequest.size_bytes accepts (uint64.lte). */
export const attachmentBytesRule = (() => {
  const desc = CreateAttachmentRequestSchema.field.sizeBytes;
  const rules = fieldRules(desc);
  const lessThan = rules.type.case === "uint64" ? rules.type.value.lessThan : undefined;
  if (lessThan?.case !== "lte") throw new Error(`${desc.toString()} has no uint64.lte rule`);
  const max = lessThan.value;
  return { max: Number(max), rule: `attachment.proto CreateAttachmentRequest.size_bytes lte ${max}` };
})();

/** The string.pattern rule of a field, or of its items for a repeated field. */
export function stringPattern(desc: DescField): string {
  let rules = fieldRules(desc);
  if (rules.type.case === "repeated" && rules.type.value.items) rules = rules.type.value.items;
  if (rules.type.case !== "string" || !rules.type.value.pattern) {
    throw new Error(`${desc.toString()} has no string.pattern rule`);
  }
  return rules.type.value.pattern;
}

function repeatedRules(desc: DescField) {
  const rules = fieldRules(desc);
  if (rules.type.case !== "repeated" || rules.type.value.maxItems === undefined) {
    throw new Error(`${desc.toString()} has no repeated.max_items rule`);
  }
  return { minItems: rules.type.value.minItems ?? 0n, maxItems: rules.type.value.maxItems };
}

function fieldRules(desc: DescField): FieldRules {
  if (!hasOption(desc, validateField)) throw new Error(`${desc.toString()} has no buf.validate rules`);
  return getOption(desc, validateField);
}
