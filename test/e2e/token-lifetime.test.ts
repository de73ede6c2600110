import { randomBytes } from "node:crypto";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { decodeJwt, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatService } from "../../gen/palaver/chat/v1/chat_pb.js";
import { mintToken } from "../../src/auth/tokens.js";
import { ConnectDevice, connectChatClient, SubscribeDevice } from "../../src/client/device.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";
import { transportFor } from "../support/server-clients.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(testBackends())("token lifetimes on %s", (backend) => {
  // The server's secret is set here, so that the tests can sign tokens the test server's helper would not.
  const secretText = randomBytes(32).toString("base64url");
  const secret = new TextEncoder().encode(secretText);
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend, { AUTH_SECRET: secretText, MAX_TOKEN_LIFETIME: "1h" });
  });
  afterAll(() => server?.close());

  const mint = (userId: string, deviceName: string, ttl: number | string) => mintToken(secret, { userId, deviceName }, { ttl });

  async function createChat(creator: ConnectDevice, others: string[]): Promise<string> {
    const result = await creator.command({ case: "createChat", value: { name: "renewals", participantUserIds: others } });
    if (result.outcome.case !== "createChat") throw new Error(`createChat failed: ${JSON.stringify(result.outcome)}`);
    return result.outcome.value.chat!.chatId;
  }

  async function send(from: ConnectDevice, chatId: string, clientMessageId: string): Promise<void> {
    const result = await from.command({ case: "sendMessage", value: { chatId, clientMessageId, text: clientMessageId } });
    expect(result.outcome.case).toBe("sendMessage");
  }

  async function refusal(token: string): Promise<ConnectError | undefined> {
    return connectChatClient(server.url, token)
      .listChats({})
      .then(() => undefined, ConnectError.from);
  }

  it("ends Connect (gRPC and Connect protocol) and Subscribe streams with UNAUTHENTICATED when their token expires", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const sender = ConnectDevice.open(server.url, await mint(alice, "phone", "1h"));
    const token = (device: string) => mint(bob, device, 5);
    const tokens = { grpc: await token("phone"), connect: await token("tablet"), subscribe: await token("web") };
    const devices = {
      // gRPC takes the server's fast path (transport/grpc-bidi.ts), the Connect protocol connect-es.
      grpc: ConnectDevice.open(server.url, tokens.grpc),
      connect: new ConnectDevice(createClient(ChatService, transportFor("connect over h2c", server.url)), tokens.connect),
      subscribe: new SubscribeDevice(server.url, tokens.subscribe),
    };
    await Promise.all([sender, ...Object.values(devices)].map((d) => d.waitForDrained()));
    const chatId = await createChat(sender, [bob]);
    await Promise.all(Object.values(devices).map((d) => d.waitForChatUpdates(1)));

    await Promise.all(
      Object.entries(devices).map(async ([name, device]) => {
        await device.waitForEnd(5000);
        const expiresAt = decodeJwt(tokens[name as keyof typeof tokens]).exp! * 1000;
        expect(Date.now(), name).toBeGreaterThanOrEqual(expiresAt - 100); // timers may fire a little early
        expect(Date.now(), name).toBeLessThan(expiresAt + 2000);
        expect(device.ended?.code, name).toBe(Code.Unauthenticated);
        expect(device.ended?.rawMessage, name).toMatch(/^the token expired at .*: get a fresh token and reconnect/);
      }),
    );

    // Nothing reaches the ended streams; the message waits in each device's inbox for its next stream, with a fresh token.
    await send(sender, chatId, "after expiry");
    await sleep(300);
    for (const [name, device] of Object.entries(devices)) expect(device.messages, name).toEqual([]);
    const renewed = [
      ConnectDevice.open(server.url, await token("phone")),
      new ConnectDevice(createClient(ChatService, transportFor("connect over h2c", server.url)), await token("tablet")),
      new SubscribeDevice(server.url, await token("web")),
    ];
    for (const device of renewed) {
      await device.waitForDrained();
      expect(device.stored.map((e) => e.kind.case)).toEqual(["chatUpdate", "newMessage"]); // none was acked
      expect(device.messages[0]?.text).toBe("after expiry");
    }
    for (const device of [sender, ...renewed]) device.disconnect();
  });

  it("refuses a token that lives longer than MAX_TOKEN_LIFETIME, or does not say when it was issued", async () => {
    const user = uniqueUser("mallory");
    expect(await refusal(await mint(user, "phone", "1h"))).toBeUndefined();

    const tooLong = await refusal(await mint(user, "phone", 3601));
    expect(tooLong?.code).toBe(Code.Unauthenticated);
    expect(tooLong?.rawMessage).toBe(
      "token lives 3601 s (exp - iat), longer than this server accepts (MAX_TOKEN_LIFETIME, 3600 s): use a shorter-lived token",
    );

    const noIssuedAt = await new SignJWT({ device: "phone" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(user)
      .setExpirationTime("10m")
      .sign(secret);
    const missing = await refusal(noIssuedAt);
    expect(missing?.code).toBe(Code.Unauthenticated);
    expect(missing?.rawMessage).toBe('token rejected: missing required "iat" claim');

    // Streams too, on every path.
    const streams = [
      ConnectDevice.open(server.url, await mint(user, "phone", "2h")),
      new ConnectDevice(createClient(ChatService, transportFor("connect over h2c", server.url)), noIssuedAt),
      new SubscribeDevice(server.url, await mint(user, "web", "2h")),
    ];
    for (const stream of streams) {
      await stream.waitForEnd();
      expect(stream.ended?.code).toBe(Code.Unauthenticated);
      expect(stream.events).toEqual([]);
    }
  });

  it("lets the TypeScript devices renew their tokens without losing an event", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const sender = ConnectDevice.open(server.url, await mint(alice, "phone", "1h"));
    const minted: Record<string, number> = { phone: 0, tablet: 0, web: 0 };
    const source = (device: string, delayMs = 0) => async () => {
      // The tablet's later tokens come late: its stream ends first, when its token expires, and it reconnects then.
      if (minted[device]!++ > 0) await sleep(delayMs);
      return mint(bob, device, 4);
    };
    const devices = {
      phone: ConnectDevice.open(server.url, source("phone")),
      tablet: ConnectDevice.open(server.url, source("tablet", 1500)),
      web: new SubscribeDevice(server.url, source("web")),
    };
    await Promise.all([sender, ...Object.values(devices)].map((d) => d.waitForDrained()));
    const chatId = await createChat(sender, [bob]);

    // Each device acks every second what it received, on whichever stream is open (a lost ack: the event comes again).
    const acking = setInterval(() => {
      devices.phone.ackAll();
      devices.tablet.ackAll();
      const eventIds = devices.web.stored.map((e) => e.eventId);
      if (eventIds.length > 0) devices.web.client.ackEvents({ eventIds }).catch(() => undefined);
    }, 1000);
    const sent: string[] = [];
    try {
      for (const started = Date.now(); Date.now() - started < 9000; ) {
        const id = `m${sent.length}`;
        await send(sender, chatId, id);
        sent.push(id);
        await sleep(150);
      }
      await Promise.all(Object.values(devices).map((d) => d.waitForMessages(sent.length, 15_000)));
      // Acks sent on a later stream reach the server like any other (one lost as streams change goes again in a second).
      await expect.poll(() => server.inbox(bob, "phone"), { timeout: 5000 }).toEqual([]);
    } finally {
      clearInterval(acking);
    }

    for (const [name, device] of Object.entries(devices)) {
      expect(device.ended, name).toBeUndefined();
      expect(device.messages.map((m) => m.clientMessageId), name).toEqual(sent); // each once, in order
      expect(device.streamEnds.length, name).toBeGreaterThanOrEqual(2);
    }
    // The phone and the browser changed streams before their tokens expired; the tablet's streams ended at expiry.
    expect(devices.phone.streamEnds.every((end) => end === null)).toBe(true);
    expect(devices.web.streamEnds.every((end) => end?.code === Code.Canceled)).toBe(true);
    expect(devices.tablet.streamEnds.every((end) => end?.code === Code.Unauthenticated)).toBe(true);

    // The phone's next stream has no backlog.
    for (const device of [sender, ...Object.values(devices)]) device.disconnect();
    const next = ConnectDevice.open(server.url, await mint(bob, "phone", 60));
    await next.waitForDrained();
    expect(next.events.map((e) => e.kind.case)).toEqual(["inboxDrained"]);
    next.disconnect();
  });
});
