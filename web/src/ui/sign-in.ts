import { idInputPattern } from "../ids.js";
import { type Session, sessionFromToken, signInForDevelopment, suggestedDeviceName } from "../session.js";
import { h } from "./dom.js";

/** The sign-in page: a user id and a device name for development servers, or a token minted with the CLI. */
export function renderSignIn(root: HTMLElement, signedIn: (session: Session) => void, notice?: string): void {
  const pattern = idInputPattern;
  const user = h("input", { id: "user", name: "user", required: true, pattern, autocomplete: "username", placeholder: "alice" });
  const device = h("input", { id: "device", name: "device", required: true, pattern, value: suggestedDeviceName() });
  const token = h("textarea", { id: "token", name: "token", rows: 3, placeholder: "eyJhbGciOi…" });
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "sign-in-error" }, notice ?? "");
  const submit = h("button", { type: "submit", class: "primary wide" }, "Sign in");

  const attempt = async (signIn: () => Promise<Session>) => {
    submit.disabled = true;
    error.textContent = "";
    try {
      signedIn(await signIn());
    } catch (err) {
      error.textContent = err instanceof Error ? err.message : String(err);
    } finally {
      submit.disabled = false;
    }
  };

  root.replaceChildren(
    h(
      "main",
      { class: "sign-in" },
      h(
        "div",
        { class: "sign-in-card" },
        h("div", { class: "brand brand-large" }, h("img", { src: "/favicon.svg", alt: "", width: 40, height: 40 }), "Palaver"),
        h("p", { class: "muted" }, "Pick who you are and name this device. Each device keeps its own inbox."),
        h(
          "form",
          {
            onsubmit: (event: Event) => {
              event.preventDefault();
              void attempt(() => signInForDevelopment(user.value.trim(), device.value.trim()));
            },
          },
          h("label", { for: "user" }, "User id"),
          user,
          h("label", { for: "device" }, "Device name"),
          device,
          error,
          submit,
        ),
        h(
          "details",
          { class: "token-sign-in" },
          h("summary", {}, "Sign in with a token"),
          h(
            "form",
            {
              onsubmit: (event: Event) => {
                event.preventDefault();
                void attempt(async () => sessionFromToken(token.value));
              },
            },
            h("label", { for: "token" }, "Token from ", h("code", {}, "palaver token --user <id> --device <name>")),
            token,
            h("button", { type: "submit", class: "secondary wide" }, "Use token"),
          ),
        ),
      ),
    ),
  );
  user.focus();
}
