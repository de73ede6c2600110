import { idPattern } from "../../src/api-rules.js";

/**
 * A random UUID for client_message_id. crypto.randomUUID exists only in secure contexts (https, localhost); a page
 * opened over plain http on a LAN address falls back to getRandomValues, which is everywhere.
 */
export function newClientMessageId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The id pattern of the API (user ids, device names), read from chat.proto's rules as the server reads it. */
export { idPattern };

/** The same pattern for an input's `pattern` attribute, which browsers compile in the stricter `v` mode. */
export const idInputPattern = inputPattern(idPattern.source);

/**
 * An anchored pattern as an input's `pattern` attribute: the browser anchors it itself, and in `v` mode a `-` that
 * ends a character class must be escaped.
 */
function inputPattern(source: string): string {
  return source.replace(/^\^/, "").replace(/\$$/, "").replace(/(?<!\\)-\]/g, "\\-]");
}
