import type { ChatEntry } from "../store.js";
import { h } from "./dom.js";
import { hueOf, initials } from "./format.js";

/** A chat's name, else who is in it besides me. */
export function chatTitle(chat: ChatEntry, me: string): string {
  if (chat.name) return chat.name;
  const others = chat.participants.filter((p) => p !== me);
  if (others.length > 0) return others.join(", ");
  return chat.stub ? "Loading…" : "Just you";
}

/** Whose colour and initials a chat wears: the other person's in a one-to-one chat, its own otherwise. */
export function chatAvatar(chat: ChatEntry, me: string): HTMLElement {
  const others = chat.participants.filter((p) => p !== me);
  if (!chat.name && others.length === 1) return avatar(others[0]!, others[0]!);
  return avatar(chat.chatId, chatTitle(chat, me));
}

/** A round badge with initials, coloured by the id it stands for. */
export function avatar(id: string, label: string, size: "sm" | "md" = "md"): HTMLElement {
  const element = h("span", { class: `avatar avatar-${size}`, "aria-hidden": "true" }, initials(label));
  // CSSOM, not a style attribute: the page's CSP allows no inline styles.
  element.style.setProperty("--hue", String(hueOf(id)));
  return element;
}

/** The user ids in "bob, carol\ndave": split on commas and white space, duplicates dropped. */
export function parseUserIds(text: string): string[] {
  return [...new Set(text.split(/[\s,;]+/).filter(Boolean))];
}

/** "bob is typing…", "bob and carol are typing…", "bob, carol and 2 others are typing…". */
export function typingText(users: string[]): string {
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  if (users.length === 3) return `${users[0]}, ${users[1]} and ${users[2]} are typing…`;
  return `${users[0]}, ${users[1]} and ${users.length - 2} others are typing…`;
}
