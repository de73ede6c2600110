import { idInputPattern } from "../ids.js";
import type { ChatEntry } from "../store.js";
import { avatar } from "./common.js";
import { h, icon } from "./dom.js";

export interface MembersActions {
  addParticipant(userId: string): Promise<boolean>;
  removeParticipant(userId: string): Promise<boolean>;
  closeMembers(): void;
}

/** The side panel of the open chat's participants: add one by id, remove any (yourself: leave). */
export function renderMembers(panel: HTMLElement, chat: ChatEntry, me: string, actions: MembersActions): void {
  const input = h("input", {
    name: "user",
    autocomplete: "off",
    placeholder: "user id",
    required: true,
    pattern: idInputPattern,
    "aria-label": "User id to add",
  });
  const form = h(
    "form",
    {
      class: "members-add",
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const userId = input.value.trim();
        if (!userId) return;
        if (await actions.addParticipant(userId)) input.value = "";
      },
    },
    input,
    h("button", { type: "submit", class: "secondary" }, "Add"),
  );
  const rows = chat.participants.map((userId) =>
    h(
      "li",
      { class: "member" },
      avatar(userId, userId, "sm"),
      h("span", { class: "member-name" }, userId, userId === me && h("span", { class: "muted" }, " (you)")),
      h(
        "button",
        {
          type: "button",
          class: "link danger",
          "aria-label": userId === me ? "Leave this chat" : `Remove ${userId}`,
          onclick: () => void actions.removeParticipant(userId),
        },
        userId === me ? "Leave" : "Remove",
      ),
    ),
  );
  panel.replaceChildren(
    h(
      "header",
      { class: "members-header" },
      h("h2", {}, `Participants (${chat.participants.length})`),
      h(
        "button",
        { type: "button", class: "icon-button", "aria-label": "Close participants", onclick: () => actions.closeMembers() },
        icon("close"),
      ),
    ),
    h("ul", { class: "member-list" }, ...rows),
    chat.member ? form : h("p", { class: "muted members-note" }, "You are no longer a participant."),
  );
}
