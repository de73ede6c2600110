import { describeError } from "../errors.js";
import { parseUserIds } from "./common.js";
import { h } from "./dom.js";

/** The "New chat" dialog: a name and the other participants by user id. Errors stay in the dialog. */
export function openNewChatDialog(create: (name: string, userIds: string[]) => Promise<void>): void {
  const name = h("input", {
    id: "new-chat-name",
    name: "name",
    maxlength: 200,
    autocomplete: "off",
    placeholder: "Weekend plans",
  });
  const people = h("textarea", {
    id: "new-chat-people",
    name: "participants",
    rows: 3,
    placeholder: "bob, carol",
    "aria-describedby": "new-chat-hint",
  });
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "dialog-error" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": "new-chat-title" });
  const form = h(
    "form",
    {
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const ids = parseUserIds(people.value);
        if (ids.length === 0) {
          error.textContent = "Add at least one participant.";
          return;
        }
        submit.disabled = true;
        error.textContent = "";
        try {
          await create(name.value.trim(), ids);
          dialog.close();
        } catch (err) {
          error.textContent = describeError(err);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h2", { id: "new-chat-title" }, "New chat"),
    h("label", { for: "new-chat-name" }, "Name ", h("span", { class: "muted" }, "(optional)")),
    name,
    h("label", { for: "new-chat-people" }, "Participants"),
    people,
    h("p", { id: "new-chat-hint", class: "hint" }, "User ids, separated by commas. You are included; up to 100 in all."),
    error,
    h(
      "div",
      { class: "dialog-actions" },
      h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel"),
      submit,
    ),
  );
  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  people.focus();
}
