import { mkdir } from "node:fs/promises";
import type { Browser } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ClientPage, eventually, launchChromium, screenshotSideBySide } from "../support/browser.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LEVELS = ["sent", "delivered", "read"];

/**
 * Receipts, typing and unread counts in the web client, in real Chromium against a real server: what each page shows
 * as the others receive, read and type.
 */
describe("web client receipts and typing", () => {
  let server: TestServer;
  let browser: Browser;
  const opened: ClientPage[] = [];

  const signIn = async (user: string, device = "browser") => {
    const client = await ClientPage.signIn(browser, server.url, user, device);
    opened.push(client);
    return client;
  };
  const idOf = async (client: ClientPage) => (await client.page.getByTestId("me").textContent())!;

  /** The ticks of my messages in the open chat, oldest first: sent, delivered or read. */
  const ticks = (client: ClientPage) =>
    client.page.locator('[data-testid="message"].mine').evaluateAll((nodes) =>
      nodes.map((node) => (node as unknown as { dataset: Record<string, string | undefined> }).dataset.receipt ?? ""),
    );
  const waitForTicks = (client: ClientPage, expected: string[], what: string) =>
    eventually(async () => JSON.stringify(await ticks(client)) === JSON.stringify(expected), what);
  /** The unread count the chat list shows for a chat (0 when it shows none). */
  const unread = async (client: ClientPage, title: string) => {
    const [count, badge] = await client.chatItem(title).evaluate((node) => {
      const el = node as unknown as {
        dataset: Record<string, string | undefined>;
        querySelector(selector: string): { textContent: string | null } | null;
      };
      return [Number(el.dataset.unread), Number(el.querySelector('[data-testid="unread"]')?.textContent ?? 0)];
    });
    expect(badge, "the badge shows the count").toBe(count);
    return count;
  };
  const subtitle = async (client: ClientPage) => (await client.page.getByTestId("chat-subtitle").textContent()) ?? "";
  const typingShown = async (client: ClientPage) => (await subtitle(client)).includes("typing…");

  /** Records every tick each of my messages shows on the page, as `seq:level`, from now on. */
  const recordTicks = (client: ClientPage) =>
    client.page.evaluate(`(() => {
      window.tickLog = [];
      const last = new Map();
      const record = () => {
        for (const el of document.querySelectorAll('[data-testid="message"].mine[data-seq]')) {
          const key = el.dataset.seq;
          const level = el.dataset.receipt ?? "";
          if (last.get(key) !== level) {
            last.set(key, level);
            window.tickLog.push(key + ":" + level);
          }
        }
      };
      new MutationObserver(record).observe(document.body, { subtree: true, childList: true, attributes: true });
      record();
    })()`);
  /** Per seq, the levels its ticks went through, in order. */
  const tickHistory = async (client: ClientPage) => {
    const log = (await client.page.evaluate("window.tickLog")) as string[];
    const bySeq: Record<string, string[]> = {};
    for (const item of log) {
      const [seq, level] = item.split(":") as [string, string];
      (bySeq[seq] ??= []).push(level);
    }
    return bySeq;
  };
  const expectForwardOnly = (levels: string[]) => {
    const ranks = levels.map((level) => LEVELS.indexOf(level));
    expect(ranks.every((rank) => rank >= 0), `levels ${levels.join(" → ")}`).toBe(true);
    expect(
      ranks.every((rank, i) => i === 0 || rank > ranks[i - 1]!),
      `ticks went ${levels.join(" → ")}`,
    ).toBe(true);
  };

  beforeAll(async () => {
    [server, browser] = await Promise.all([startTestServer("pglite", { DEV_SIGN_IN: "local" }), launchChromium()]);
  });
  afterEach(async () => {
    const errors = opened.flatMap((c) => c.errors.map((e) => e.message));
    await Promise.all(opened.splice(0).map((c) => c.close().catch(() => undefined)));
    expect(errors, "uncaught errors in the page").toEqual([]);
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it("shows a message delivered once the other page has it, read once they look, and never less", async () => {
    const alice = await signIn(uniqueUser("alice"), "laptop");
    const bob = await signIn(uniqueUser("bob"), "laptop");
    const [aliceId, bobId] = [await idOf(alice), await idOf(bob)];
    await alice.createChat([bobId]);
    await alice.page.locator(".conversation-title h1", { hasText: bobId }).waitFor();
    await bob.chatItem(aliceId).waitFor(); // in Bob's list, not open
    await recordTicks(alice);

    await alice.send("Did you get the tickets?");
    await waitForTicks(alice, ["delivered"], "alice's message to show delivered");
    const mark = alice.page.locator('[data-testid="message"].mine .receipt');
    expect(await mark.getAttribute("aria-label")).toBe("Delivered");
    // Bob's page has it but he has not opened the chat: delivered, not read; one unread for him.
    await eventually(async () => (await unread(bob, aliceId)) === 1, "bob's unread count");
    await sleep(1000);
    expect(await ticks(alice)).toEqual(["delivered"]);
    expect(await bob.page.title()).toBe("(1) Palaver");

    await bob.openChat(aliceId);
    await bob.waitForTexts(["Did you get the tickets?"]);
    await waitForTicks(alice, ["read"], "alice's message to show read");
    expect(await mark.getAttribute("aria-label")).toBe("Read");
    await eventually(async () => (await unread(bob, aliceId)) === 0, "bob's unread count to clear");
    expect(await bob.page.title()).toBe("Palaver");

    // Bob answers; Alice's next message is read at once, since Bob is looking at the chat.
    await bob.send("Yes, two of them");
    await alice.waitForTexts(["Did you get the tickets?", "Yes, two of them"]);
    await alice.send("Great");
    await waitForTicks(alice, ["read", "read"], "alice's second message to show read");
    expect(await unread(alice, bobId)).toBe(0);
    const history = await tickHistory(alice);
    expect(history["1"]).toContain("delivered");
    for (const levels of Object.values(history)) {
      expectForwardOnly(levels);
      expect(levels.at(-1)).toBe("read");
    }

    // A reload keeps them read (history, then ListChats's receipts).
    await alice.page.reload();
    await alice.waitForState("live");
    await alice.openChat(bobId);
    await waitForTicks(alice, ["read", "read"], "the ticks after a reload");
  });

  it("shows who is typing until their message arrives, they clear the text, or they stop for a while", async () => {
    const alice = await signIn(uniqueUser("alice"));
    const bob = await signIn(uniqueUser("bob"));
    const [aliceId, bobId] = [await idOf(alice), await idOf(bob)];
    await alice.createChat([bobId]);
    await alice.page.locator(".conversation-title h1", { hasText: bobId }).waitFor();
    await bob.openChat(aliceId);
    const box = bob.page.getByLabel("Message", { exact: true });
    await alice.send("Where are you?");
    await waitForTicks(alice, ["read"], "alice's question to show read");

    // Typing, then sending: the indicator goes when the message comes.
    await box.fill("Running 5 minutes la");
    await eventually(() => typingShown(alice), "alice to see bob typing");
    expect(await subtitle(alice)).toBe(`${bobId} is typing…`);
    expect(await alice.chatItem(bobId).locator(".chat-item-preview").textContent()).toBe(`${bobId} is typing…`);
    await mkdir("test-results", { recursive: true });
    await screenshotSideBySide(browser, [alice.page, bob.page], "test-results/typing.png");
    await box.fill("Running 5 minutes late, sorry!");
    await box.press("Enter");
    const texts = ["Where are you?", "Running 5 minutes late, sorry!"];
    await alice.waitForTexts(texts);
    expect(await typingShown(alice)).toBe(false);
    expect(await subtitle(alice)).toContain("2 participants");

    // Typing, then clearing the text: it goes within a few seconds (calls are at least 2 s apart).
    await box.fill("Actually");
    await eventually(() => typingShown(alice), "alice to see bob typing again");
    await box.fill("");
    const cleared = Date.now();
    await eventually(async () => !(await typingShown(alice)), "the typing to end when bob clears the text", 5000);
    expect(Date.now() - cleared).toBeLessThan(4000);

    // Typing on and on: renewed, so it holds past the server's 6 s lapse.
    await sleep(2000);
    const typingUntil = Date.now() + 8000;
    let seen = 0;
    let missed = 0;
    while (Date.now() < typingUntil) {
      await box.press("x");
      if (await typingShown(alice)) seen++;
      else if (seen > 0) missed++;
      await sleep(300);
    }
    expect(seen).toBeGreaterThan(10);
    expect(missed, "times alice's page stopped showing bob typing while he typed").toBe(0);

    // Stopping without sending: it lapses within 10 s, not at once.
    const stopped = Date.now();
    await sleep(2000);
    expect(await typingShown(alice)).toBe(true);
    await eventually(async () => !(await typingShown(alice)), "the typing to lapse", 10_000);
    const lapsedAfter = Date.now() - stopped;
    expect(lapsedAfter).toBeGreaterThan(3000);
    expect(lapsedAfter).toBeLessThan(10_000);
    expect(await alice.texts()).toEqual(texts);

    // Bob's browser loses the network while he types: no `false` can come, and Alice's page lets it lapse (6 s).
    await box.fill("One more thing");
    await eventually(() => typingShown(alice), "alice to see bob typing once more");
    await bob.context.setOffline(true);
    const lost = Date.now();
    await eventually(async () => !(await typingShown(alice)), "the typing to lapse on alice's page", 10_000);
    expect(Date.now() - lost).toBeGreaterThan(3000);
  });

  it("counts unread messages on each of a user's devices, and clears them on all when one reads", async () => {
    const alice = await signIn(uniqueUser("alice"));
    const bobId = uniqueUser("bob");
    const laptop = await signIn(bobId, "laptop");
    const phone = await signIn(bobId, "phone");
    const aliceId = await idOf(alice);
    await alice.createChat([bobId]);
    await alice.page.locator(".conversation-title h1", { hasText: bobId }).waitFor();
    await Promise.all([laptop.chatItem(aliceId).waitFor(), phone.chatItem(aliceId).waitFor()]);

    await alice.send("Dinner at 8?");
    await alice.send("I'll bring dessert");
    for (const device of [laptop, phone]) {
      await eventually(async () => (await unread(device, aliceId)) === 2, "2 unread on each of bob's devices");
      expect(await device.page.title()).toBe("(2) Palaver");
    }

    await laptop.openChat(aliceId);
    await laptop.waitForTexts(["Dinner at 8?", "I'll bring dessert"]);
    await eventually(async () => (await unread(laptop, aliceId)) === 0, "the laptop's count to clear");
    await eventually(async () => (await unread(phone, aliceId)) === 0, "the phone's count to clear");
    expect(await phone.page.title()).toBe("Palaver");
    await waitForTicks(alice, ["read", "read"], "alice's messages to show read");

    // The phone is offline while a message comes and the laptop reads it: no receipt reaches the phone, but after
    // its backlog it asks for the chats again, and counts nothing unread.
    await phone.context.setOffline(true);
    await phone.waitForState("offline");
    await alice.send("See you!");
    await laptop.waitForTexts(["Dinner at 8?", "I'll bring dessert", "See you!"]);
    await waitForTicks(alice, ["read", "read", "read"], "alice's third message to show read");
    await phone.context.setOffline(false);
    await phone.waitForState("live");
    await eventually(
      async () => (await phone.chatItem(aliceId).locator(".chat-item-preview").textContent()) === "See you!",
      "the phone to receive the third message",
    );
    await eventually(async () => (await unread(phone, aliceId)) === 0, "the phone's count to stay clear");
    expect(await phone.page.title()).toBe("Palaver");
  });

  it("shows a group message delivered once all have it, and read only once everyone read it", async () => {
    const alice = await signIn(uniqueUser("alice"));
    const bob = await signIn(uniqueUser("bob"));
    const carol = await signIn(uniqueUser("carol"));
    const [bobId, carolId] = [await idOf(bob), await idOf(carol)];
    await alice.createChat([bobId, carolId], "Book club");
    await alice.page.locator(".conversation-title h1", { hasText: "Book club" }).waitFor();
    await Promise.all([bob.chatItem("Book club").waitFor(), carol.chatItem("Book club").waitFor()]);
    await recordTicks(alice);

    // Carol is offline: Bob's page alone has it, which is not yet delivered to the group.
    await carol.context.setOffline(true);
    await carol.waitForState("offline");
    await alice.send("Next book: Middlemarch?");
    await waitForTicks(alice, ["sent"], "alice's message to be stored");
    await eventually(async () => (await unread(bob, "Book club")) === 1, "bob's page to have it");
    await sleep(1000);
    expect(await ticks(alice)).toEqual(["sent"]);

    await carol.context.setOffline(false);
    await carol.waitForState("live");
    await waitForTicks(alice, ["delivered"], "the message to show delivered once carol has it");
    expect(await unread(carol, "Book club")).toBe(1);

    await bob.openChat("Book club");
    await bob.waitForTexts(["Next book: Middlemarch?"]);
    await eventually(async () => (await unread(bob, "Book club")) === 0, "bob's count to clear");
    await sleep(1000);
    expect(await ticks(alice), "read by bob only").toEqual(["delivered"]);

    await carol.openChat("Book club");
    await waitForTicks(alice, ["read"], "the message to show read once carol read it too");
    expect((await tickHistory(alice))["1"]).toEqual(["sent", "delivered", "read"]);
  });
});
