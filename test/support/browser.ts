import { existsSync } from "node:fs";
import { type Browser, type BrowserContext, chromium, type Locator, type Page } from "playwright-core";

/** Debian's chromium (apt-get install chromium); CI installs the same. */
export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(chromiumPath)) {
    throw new Error(`no Chromium at ${chromiumPath}: apt-get install -y chromium, or set CHROMIUM_PATH`);
  }
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Polls `probe` until it returns something truthy; throws with the last value seen after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last saw ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface ShownMessage {
  text: string;
  sender: string;
  mine: boolean;
  seq: number | null;
  status: string;
}

/** One signed-in browser tab, in a context (profile) of its own, driven the way a person would. */
export class ClientPage {
  readonly errors: Error[] = [];

  private constructor(
    readonly context: BrowserContext,
    readonly page: Page,
  ) {
    page.on("pageerror", (error) => this.errors.push(error));
  }

  static async open(browser: Browser, url: string, viewport = { width: 1180, height: 760 }): Promise<ClientPage> {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
    const client = new ClientPage(context, await context.newPage());
    await client.page.goto(url);
    return client;
  }

  /** A fresh context, signed in through the development sign-in, with the event stream live. */
  static async signIn(
    browser: Browser,
    url: string,
    user: string,
    device = "browser",
    viewport?: { width: number; height: number },
  ): Promise<ClientPage> {
    const client = await ClientPage.open(browser, url, viewport);
    await client.signIn(user, device);
    return client;
  }

  async signIn(user: string, device: string): Promise<void> {
    await this.page.getByLabel("User id").fill(user);
    await this.page.getByLabel("Device name").fill(device);
    await this.page.getByRole("button", { name: "Sign in", exact: true }).click();
    await this.waitForState("live");
  }

  connection(): Locator {
    return this.page.getByTestId("connection-state");
  }

  async waitForState(state: "connecting" | "live" | "reconnecting" | "offline", timeoutMs = 15_000): Promise<void> {
    await this.page.locator(`[data-testid="connection-state"][data-state="${state}"]`).waitFor({ timeout: timeoutMs });
  }

  chatItem(title: string): Locator {
    return this.page.locator(".chat-item", { has: this.page.locator(".chat-item-title", { hasText: title }) });
  }

  async openChat(title: string): Promise<void> {
    await this.chatItem(title).click();
    await this.page.locator(".conversation-title h1", { hasText: title }).waitFor();
  }

  /** Creates a chat through the dialog; leaves the dialog open (with its error) when the server refuses. */
  async createChat(participants: string[], name = ""): Promise<void> {
    await this.page.getByRole("button", { name: "New chat" }).click();
    const dialog = this.page.getByRole("dialog");
    if (name) await dialog.getByLabel("Name").fill(name);
    await dialog.getByLabel("Participants", { exact: true }).fill(participants.join(", "));
    await dialog.getByRole("button", { name: "Create" }).click();
  }

  async send(text: string): Promise<void> {
    const box = this.page.getByLabel("Message", { exact: true });
    await box.fill(text);
    await box.press("Enter");
  }

  async attach(file: { name: string; mimeType: string; buffer: Buffer } | string): Promise<void> {
    await this.page.getByTestId("file-input").setInputFiles(file);
  }

  async messages(): Promise<ShownMessage[]> {
    return this.page.locator('[data-testid="message"]').evaluateAll((nodes) =>
      nodes.map((node) => {
        // The DOM types are not in this project's lib: describe the little that is read.
        const el = node as unknown as {
          dataset: Record<string, string | undefined>;
          classList: { contains(name: string): boolean };
          querySelector(selector: string): { textContent: string | null } | null;
        };
        return {
          text: el.querySelector(".text")?.textContent ?? "",
          sender: el.dataset.sender ?? "",
          mine: el.classList.contains("mine"),
          seq: el.dataset.seq ? Number(el.dataset.seq) : null,
          status: el.dataset.status ?? "",
        };
      }),
    );
  }

  async texts(): Promise<string[]> {
    return (await this.messages()).map((m) => m.text);
  }

  /** Waits until the open chat shows exactly these texts, in this order. */
  async waitForTexts(expected: string[], timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const texts = await this.texts();
      if (JSON.stringify(texts) === JSON.stringify(expected)) return;
      if (Date.now() > deadline) {
        throw new Error(`expected messages ${JSON.stringify(expected)}, the page shows ${JSON.stringify(texts)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async notices(): Promise<string[]> {
    return this.page.locator('[data-testid="notice"]').allTextContents();
  }

  async errorBanner(timeoutMs = 15_000): Promise<string> {
    const banner = this.page.getByTestId("error-banner");
    await banner.waitFor({ timeout: timeoutMs });
    return (await banner.textContent()) ?? "";
  }

  async close(): Promise<void> {
    await this.context.close();
  }
}

/** Writes the pages' screenshots side by side into one PNG, laid out by the browser itself. */
export async function screenshotSideBySide(browser: Browser, pages: Page[], path: string): Promise<void> {
  const shots = await Promise.all(pages.map((page) => page.screenshot()));
  const context = await browser.newContext({ deviceScaleFactor: 1 });
  try {
    const page = await context.newPage();
    const images = shots.map((png) => `<img src="data:image/png;base64,${png.toString("base64")}">`).join("");
    await page.setContent(
      `<body style="margin:0;display:flex;gap:12px;padding:12px;background:#c9ccd4;width:max-content">${images}</body>`,
    );
    await page.locator("body").screenshot({ path });
  } finally {
    await context.close();
  }
}
