import { mkdir, mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import type { Browser } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SendMessageRequestSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { ClientPage, eventually, launchChromium, screenshotSideBySide } from "../support/browser.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

/**
 * The web client in real Chromium against a real server: people sign in through the page, chat, go offline, send
 * media and make mistakes, and the assertions read what the page shows.
 */
describe("web client", () => {
  let server: TestServer;
  let browser: Browser;
  const opened: ClientPage[] = [];

  const signIn = async (
    user: string,
    device = "browser",
    origin = server.url,
    viewport?: { width: number; height: number },
  ) => {
    const client = await ClientPage.signIn(browser, origin, user, device, viewport);
    opened.push(client);
    return client;
  };

  beforeAll(async () => {
    [server, browser] = await Promise.all([startTestServer("pglite", { DEV_SIGN_IN: "local" }), launchChromium()]);
    const page = await fetch(server.url);
    if (!(page.headers.get("content-type") ?? "").startsWith("text/html")) {
      throw new Error(
        `the server does not serve the web client at / (HTTP ${page.status}): ` +
          "is createStaticFiles (src/web/static-files.ts) in the fallback chain of src/app.ts?",
      );
    }
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

  it("lets two people chat both ways, sends each message once through a retry, and looks good doing it", async () => {
    const screen = { width: 960, height: 640 };
    const alice = await signIn(uniqueUser("alice"), "laptop", server.url, screen);
    const bob = await signIn(uniqueUser("bob"), "browser", server.url, screen);
    const aliceId = (await alice.page.getByTestId("me").textContent())!;
    const bobId = (await bob.page.getByTestId("me").textContent())!;

    await alice.createChat([bobId]);
    await alice.page.locator(".conversation-title h1", { hasText: bobId }).waitFor();
    await bob.openChat(aliceId); // appears in Bob's list through the live chat update

    await alice.send("Hi Bob! Are we still on for Friday?");
    await bob.waitForTexts(["Hi Bob! Are we still on for Friday?"]);
    await bob.send("Hey Alice, yes: 7pm at Café Müller works for me.");
    await alice.waitForTexts(["Hi Bob! Are we still on for Friday?", "Hey Alice, yes: 7pm at Café Müller works for me."]);

    // The first answer to this send is lost on its way back: the client retries with the same client_message_id and
    // the server answers with the message it already stored.
    const sendBodies: Buffer[] = [];
    await alice.page.route("**/palaver.chat.v1.ChatService/SendMessage", async (route) => {
      sendBodies.push(route.request().postDataBuffer()!);
      const response = await route.fetch();
      if (sendBodies.length === 1) await route.abort("connectionreset");
      else await route.fulfill({ response });
    });
    await alice.send("Great, I'll book the table.\nSomewhere with a view?");
    const expected = [
      "Hi Bob! Are we still on for Friday?",
      "Hey Alice, yes: 7pm at Café Müller works for me.",
      "Great, I'll book the table.\nSomewhere with a view?",
    ];
    await bob.waitForTexts(expected);
    await eventually(async () => (await alice.messages()).every((m) => m.status === "sent"), "alice's send to settle");
    await alice.page.unroute("**/palaver.chat.v1.ChatService/SendMessage");
    expect(sendBodies.length).toBe(2);
    const [first, retry] = sendBodies.map((body) => fromBinary(SendMessageRequestSchema, body));
    expect(retry!.clientMessageId).toBe(first!.clientMessageId);
    await alice.waitForTexts(expected);

    await bob.send("Perfect. See you there!");
    await alice.send("Booked ✓");
    const all = [...expected, "Perfect. See you there!", "Booked ✓"];
    await Promise.all([alice.waitForTexts(all), bob.waitForTexts(all)]);
    // Everyone sees the chat in seq order, 1 to 5.
    for (const client of [alice, bob]) {
      expect((await client.messages()).map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
    }
    expect((await alice.messages()).map((m) => m.mine)).toEqual([true, false, true, false, true]);

    await mkdir("test-results", { recursive: true });
    await screenshotSideBySide(browser, [alice.page, bob.page], "test-results/two-users.png");
  });

  it("shows the connection state and delivers what was sent while a device was away, once and in order", async () => {
    const alice = await signIn(uniqueUser("alice"));
    const bobId = uniqueUser("bob");
    let bob = await signIn(bobId, "laptop");
    await alice.createChat([bobId]);
    await bob.openChat((await alice.page.getByTestId("me").textContent())!);
    await alice.send("one");
    await bob.waitForTexts(["one"]);

    // The network goes away: the page says so, and what Alice sends waits in Bob's inbox.
    await bob.context.setOffline(true);
    await bob.waitForState("offline");
    for (const text of ["two", "three", "four"]) await alice.send(text);
    await eventually(async () => (await alice.messages()).every((m) => m.status === "sent"), "alice's sends");
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await bob.texts()).toEqual(["one"]);
    await bob.context.setOffline(false);
    await bob.waitForState("live");
    await bob.waitForTexts(["one", "two", "three", "four"]);
    // What the page shows, it acks: the server's inbox for this device empties.
    await eventually(async () => (await server.inbox(bobId, "laptop")).length === 0, "bob's acks to reach the server");

    // The whole browser goes away; the device comes back in a new one and gets its backlog.
    await bob.close();
    opened.splice(opened.indexOf(bob), 1);
    await alice.send("five");
    await alice.send("six");
    await eventually(async () => (await alice.messages()).every((m) => m.status === "sent"), "alice's sends");
    bob = await signIn(bobId, "laptop");
    await bob.openChat((await alice.page.getByTestId("me").textContent())!);
    // A new profile has no local history: exactly the unacked backlog, in order, nothing twice.
    await bob.waitForTexts(["five", "six"]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await bob.texts()).toEqual(["five", "six"]);
  });

  it("shows a sent image in the other browser, offers a file as a link, and uploads the same bytes once", async () => {
    // Alice uses the host name `localhost`: her uploads go to the 127.0.0.1 URLs the server signs (CORS).
    const alice = await signIn(uniqueUser("alice"), "browser", server.url.replace("127.0.0.1", "localhost"));
    const bob = await signIn(uniqueUser("bob"));
    const aliceId = (await alice.page.getByTestId("me").textContent())!;
    const bobId = (await bob.page.getByTestId("me").textContent())!;
    await alice.createChat([bobId]);
    await bob.openChat(aliceId);

    const puts: string[] = [];
    alice.page.on("request", (request) => {
      if (request.method() === "PUT") puts.push(request.url());
    });
    // A real PNG: a picture of the page itself.
    const png = await alice.page.screenshot({ clip: { x: 0, y: 0, width: 320, height: 200 } });
    await alice.attach({ name: "palaver.png", mimeType: "image/png", buffer: png });
    const image = bob.page.locator('[data-testid="message"] img');
    await image.waitFor();
    const width = await eventually(
      () => image.evaluate((img) => (img as unknown as { complete: boolean; naturalWidth: number }).naturalWidth),
      "the image to load in Bob's browser",
    );
    expect(width).toBe(320);
    expect(puts).toHaveLength(1);

    const notes = Buffer.from("Agenda\n1. Venue\n2. Food\n");
    await alice.attach({ name: "agenda.txt", mimeType: "text/plain", buffer: notes });
    const link = bob.page.locator('[data-testid="message"] a.attachment-file');
    await link.waitFor();
    expect(await link.textContent()).toContain("agenda.txt");
    const href = (await eventually(() => link.getAttribute("href"), "the download link"))!;
    const download = await fetch(href);
    expect(download.status).toBe(200);
    expect(Buffer.from(await download.arrayBuffer())).toEqual(notes);

    // The same picture again: CreateAttachment says already_uploaded, so no PUT.
    await alice.attach({ name: "again.png", mimeType: "image/png", buffer: png });
    await eventually(async () => (await bob.page.locator('[data-testid="message"] img').count()) === 2, "the second image");
    await eventually(async () => (await alice.messages()).every((m) => m.status === "sent"), "alice's sends");
    expect(puts).toHaveLength(2);
  });

  it("shows a participant added mid-chat only later messages, and tells a removed one why sending fails", async () => {
    const alice = await signIn(uniqueUser("alice"));
    const bob = await signIn(uniqueUser("bob"));
    const carol = await signIn(uniqueUser("carol"));
    const [aliceId, bobId, carolId] = await Promise.all(
      [alice, bob, carol].map(async (c) => (await c.page.getByTestId("me").textContent())!),
    );

    await alice.createChat([bobId], "Trip planning");
    await bob.openChat("Trip planning");
    await alice.send("Before Carol joins");
    await bob.waitForTexts(["Before Carol joins"]);

    await alice.page.getByRole("button", { name: "Participants", exact: true }).click();
    await alice.page.getByLabel("User id to add").fill(carolId);
    await alice.page.getByRole("button", { name: "Add", exact: true }).click();
    await alice.page.locator(".member-name", { hasText: carolId }).waitFor();
    await carol.openChat("Trip planning");
    await eventually(async () => (await carol.notices()).some((n) => n.includes(`${aliceId} added you`)), "carol's notice");
    await alice.send("Welcome, Carol!");
    await carol.waitForTexts(["Welcome, Carol!"]);
    await bob.waitForTexts(["Before Carol joins", "Welcome, Carol!"]);

    await alice.page.getByRole("button", { name: `Remove ${bobId}` }).click();
    await eventually(async () => (await bob.notices()).some((n) => n.includes(`${aliceId} removed you`)), "bob's notice");
    await bob.page.getByText("You are no longer a participant of this chat.").waitFor();
    await bob.send("Wait, can I still write here?");
    expect(await bob.errorBanner()).toContain("Permission denied: only participants may send to a chat");
    await alice.send("Just us two now");
    await carol.waitForTexts(["Welcome, Carol!", "Just us two now"]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await bob.texts()).toEqual(["Before Carol joins", "Welcome, Carol!", "Wait, can I still write here?"]);
    expect((await bob.messages()).at(-1)!.status).toBe("failed");
  });

  it("shows the server's message for a group over 100 participants and an oversized file", async () => {
    const alice = await signIn(uniqueUser("alice"));
    const crowd = Array.from({ length: 100 }, (_, i) => `guest-${i}`);
    await alice.createChat(crowd, "Too many");
    const dialogError = alice.page.getByTestId("dialog-error");
    await eventually(async () => (await dialogError.textContent()) || undefined, "the dialog's error");
    expect(await dialogError.textContent()).toContain("Invalid argument: a chat has at most 100 participants");
    await alice.page.getByRole("button", { name: "Cancel" }).click();

    await alice.createChat([uniqueUser("bob")]);
    const dir = await mkdtemp(join(tmpdir(), "palaver-web-"));
    try {
      const big = join(dir, "holiday-video.mp4");
      await writeFile(big, "");
      await truncate(big, 100 * 1024 * 1024 + 1); // sparse: 100 MiB and one byte
      await alice.attach(big);
      const message = await alice.errorBanner(30_000);
      expect(message).toContain("Could not send holiday-video.mp4");
      expect(message).toContain("size_bytes");
      expect((await alice.messages()).at(-1)!.status).toBe("failed");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("signs in only with valid ids through the development endpoint", async () => {
    const post = (body: unknown) =>
      fetch(`${server.url}/dev/token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    expect((await post({ user: "alice", device: "web" })).status).toBe(200);
    const bad = await post({ user: "alice/../../etc", device: "web" });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toContain("user must");
  });
});

describe("web client on a production server", () => {
  let server: TestServer;
  let browser: Browser;
  beforeAll(async () => {
    [server, browser] = await Promise.all([startTestServer("pglite", { NODE_ENV: "production" }), launchChromium()]);
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it("has no development sign-in, and the page says how to sign in instead", async () => {
    const res = await fetch(`${server.url}/dev/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: "alice", device: "web" }),
    });
    expect(res.status).toBe(404);

    const client = await ClientPage.open(browser, server.url);
    try {
      await client.page.getByLabel("User id").fill("alice");
      await client.page.getByRole("button", { name: "Sign in", exact: true }).click();
      const error = client.page.getByTestId("sign-in-error");
      await eventually(async () => (await error.textContent()) || undefined, "the sign-in error");
      expect(await error.textContent()).toContain("no development sign-in");

      // A token minted with the CLI still works.
      await client.page.getByText("Sign in with a token", { exact: true }).click();
      await client.page.getByLabel(/Token from/).fill(await server.token("alice", "web"));
      await client.page.getByRole("button", { name: "Use token" }).click();
      await client.waitForState("live");
    } finally {
      await client.close();
    }
  });
});
