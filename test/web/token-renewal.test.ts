import { randomBytes } from "node:crypto";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintToken } from "../../src/auth/tokens.js";
import { ConnectDevice } from "../../src/client/device.js";
import { ClientPage, launchChromium } from "../support/browser.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The web client renews its development sign-in's token before it expires, or when the server ends its stream for
 * it, and shows every message sent meanwhile. The sign-in's tokens are made to live 4 seconds here (its own last 12
 * hours): the test answers POST /dev/token itself, with the server's secret.
 */
describe("web client token renewal", () => {
  const secretText = randomBytes(32).toString("base64url");
  const secret = new TextEncoder().encode(secretText);
  let server: TestServer;
  let browser: Browser;

  beforeAll(async () => {
    [server, browser] = await Promise.all([
      startTestServer("pglite", { NODE_ENV: "development", AUTH_SECRET: secretText }),
      launchChromium(),
    ]);
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  /** A page signed in as `user` on `device`, whose later sign-ins (renewals) are answered after `delayMs`. */
  async function signIn(user: string, device: string, delayMs: number) {
    const client = await ClientPage.open(browser, server.url);
    const signIns: number[] = [];
    await client.context.route("**/dev/token", async (route) => {
      if (signIns.push(Date.now()) > 1) await sleep(delayMs);
      const body = route.request().postDataJSON() as { user: string; device: string };
      const token = await mintToken(secret, { userId: body.user, deviceName: body.device }, { ttl: 4 });
      await route.fulfill({ json: { token, user: body.user, device: body.device } });
    });
    await client.signIn(user, device);
    return { client, signIns };
  }

  it("keeps the stream across renewals, before expiry and at it, and shows every message", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    // The laptop renews ahead of expiry; the tablet's renewals come late, so the server ends its stream first.
    const pages = { laptop: await signIn(bob, "laptop", 0), tablet: await signIn(bob, "tablet", 1500) };
    const sender = ConnectDevice.open(server.url, await mintToken(secret, { userId: alice, deviceName: "phone" }, { ttl: "1h" }));
    await sender.waitForDrained();
    const created = await sender.command({ case: "createChat", value: { name: "", participantUserIds: [bob] } });
    expect(created.outcome.case).toBe("createChat");
    const chatId = created.outcome.case === "createChat" ? created.outcome.value.chat!.chatId : "";
    for (const { client } of Object.values(pages)) await client.openChat(alice);

    const sent: string[] = [];
    for (const started = Date.now(); Date.now() - started < 10_000; ) {
      const text = `message ${sent.length}`;
      const result = await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: text, text } });
      expect(result.outcome.case).toBe("sendMessage");
      sent.push(text);
      await sleep(250);
    }

    for (const [name, { client, signIns }] of Object.entries(pages)) {
      await client.waitForTexts(sent);
      expect(signIns.length, name).toBeGreaterThanOrEqual(3);
      await client.waitForState("live"); // still signed in
      expect(client.errors, name).toEqual([]);
      await client.close();
    }
    sender.disconnect();
  });
});
