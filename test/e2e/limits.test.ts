import { randomBytes } from "node:crypto";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachmentService } from "../../gen/palaver/chat/v1/attachment_pb.js";
import { type CommandResult, ParticipantOperation } from "../../gen/palaver/chat/v1/chat_pb.js";
import { ConnectDevice, connectChatClient, connectTransport } from "../../src/client/device.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

/** Small limits, each reached in a few calls. */
const LIMITS = {
  SEND_LIMIT_PER_MINUTE: "4",
  CHAT_CHANGE_LIMIT_PER_DEVICE_PER_HOUR: "3",
  CHAT_CHANGE_LIMIT_PER_USER_PER_HOUR: "5",
  UPLOAD_LIMIT_PER_HOUR: "3",
  MAX_ATTACHMENT_BYTES: "1000",
  UPLOAD_BYTES_LIMIT_PER_HOUR: "2500",
  ACK_LIMIT_PER_MINUTE: "3",
};
const HOUR_SECONDS = 3600;

/** The error a call failed with, or undefined if it succeeded. */
const failure = (call: Promise<unknown>) =>
  call.then(
    () => undefined,
    (error: unknown) => ConnectError.from(error),
  );

/** Refused as a limit refuses: RESOURCE_EXHAUSTED, saying what is allowed, with a retry-after of at most the window. */
function expectRateLimited(error: ConnectError | undefined, allows: RegExp, windowSeconds: number) {
  expect(error?.code).toBe(Code.ResourceExhausted);
  expect(error?.rawMessage).toMatch(allows);
  const retryAfter = Number(error?.metadata.get("retry-after"));
  expect(retryAfter).toBeGreaterThan(0);
  expect(retryAfter).toBeLessThanOrEqual(windowSeconds);
}

/** The same for a command on the Connect stream, answered with a CommandError. */
function expectFrameRateLimited(result: CommandResult, allows: RegExp) {
  const error = result.outcome.case === "error" ? result.outcome.value : undefined;
  expect(error?.code).toBe(Code.ResourceExhausted);
  expect(error?.message).toMatch(allows);
  expect(error?.retryAfter?.seconds).toBeGreaterThan(0n);
}

const sha256 = () => randomBytes(32); // any digest: these uploads are never made
const upload = (sizeBytes: number) => ({
  sha256: sha256(),
  sizeBytes: BigInt(sizeBytes),
  contentType: "image/jpeg",
  fileName: "a.jpg",
});

describe.each(testBackends())("limits on writes on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend, LIMITS);
  });
  afterAll(() => server?.close());

  /** A client of a user's device, on the server's (or a given) node. */
  const chatApi = async (user: string, device = "phone", on = server, url = on.url) =>
    connectChatClient(url, await on.token(user, device));
  const mediaApi = async (user: string, on = server, url = on.url) =>
    createClient(AttachmentService, connectTransport(url, await on.token(user, "phone")));

  it("refuses a device's chat changes past its limit, and its user's over all devices, storing nothing", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser) as [string, string, string];
    await server.deviceKey(bob, "phone");
    const phone = await chatApi(alice);
    const { chat } = await phone.createChat({ participantUserIds: [bob] });
    const chatId = chat!.chatId;
    await phone.modifyChatParticipants({ chatId, userId: carol, operation: ParticipantOperation.ADD });
    await phone.modifyChatParticipants({ chatId, userId: carol, operation: ParticipantOperation.REMOVE });

    const perDevice = /^this device may create chats or change participants 3 times an hour: retry in \d+ s$/;
    expectRateLimited(await failure(phone.createChat({ participantUserIds: [bob] })), perDevice, HOUR_SECONDS);
    const add = { chatId, userId: carol, operation: ParticipantOperation.ADD };
    expectRateLimited(await failure(phone.modifyChatParticipants(add)), perDevice, HOUR_SECONDS);
    expect((await phone.listChats({})).chats).toHaveLength(1);
    expect((await phone.getChat({ chatId })).chat?.participantUserIds).toEqual([alice, bob].sort());
    expect(await server.inbox(bob, "phone")).toHaveLength(3); // created, added, removed

    // Another device of alice's, on its Connect stream: its own count, within alice's.
    const laptop = ConnectDevice.open(server.url, await server.token(alice, "laptop"));
    await laptop.waitForDrained();
    const outcome = async (command: Parameters<ConnectDevice["command"]>[0]) => (await laptop.command(command)).outcome.case;
    expect(await outcome({ case: "createChat", value: { participantUserIds: [bob] } })).toBe("createChat");
    expect(await outcome({ case: "modifyChatParticipants", value: add })).toBe("modifyChatParticipants");
    const perUser = /^this user may create chats or change participants 5 times an hour: retry in \d+ s$/;
    expectFrameRateLimited(await laptop.command({ case: "createChat", value: { participantUserIds: [bob] } }), perUser);
    laptop.disconnect();
    expect((await phone.listChats({})).chats).toHaveLength(2);
    expect(await server.inbox(bob, "phone")).toHaveLength(5);

    // Others are not held back by alice's count.
    expect((await (await chatApi(bob)).createChat({ participantUserIds: [carol] })).chat).toBeDefined();
  });

  it("refuses a user's upload grants past the hour's count or bytes, storing nothing", async () => {
    const [counted, weighed] = ["counted", "weighed"].map(uniqueUser) as [string, string];
    const byCount = await mediaApi(counted);
    for (let i = 0; i < 3; i++) await byCount.createAttachment(upload(10));
    const grants = /^this user may create 3 attachments an hour: retry in \d+ s$/;
    expectRateLimited(await failure(byCount.createAttachment(upload(10))), grants, HOUR_SECONDS);
    expect(await server.attachmentCount(counted)).toBe(3);

    const byBytes = await mediaApi(weighed);
    await byBytes.createAttachment(upload(1000));
    await byBytes.createAttachment(upload(1000));
    const bytes = /^this user may create attachments of 2500 bytes in all an hour: retry in \d+ s$/;
    expectRateLimited(await failure(byBytes.createAttachment(upload(1000))), bytes, HOUR_SECONDS);
    expect(await server.attachmentCount(weighed)).toBe(2);
  });

  it("refuses ack frames past a stream's limit and AckEvents calls past a device's, deleting nothing", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    await server.deviceKey(bob, "web");
    const phone = ConnectDevice.open(server.url, await server.token(bob, "phone"));
    await phone.waitForDrained();
    await (await chatApi(alice)).createChat({ participantUserIds: [bob] });
    await phone.waitForChatUpdates(1);
    const eventId = phone.stored[0]!.eventId;

    // Ids not in the inbox are ignored, but each frame counts.
    for (let i = 0; i < 3; i++) {
      const result = await phone.command({ case: "ackEvents", value: { eventIds: [eventId + 1000n] } });
      expect(result.outcome.case).toBe("ackEvents");
    }
    const frames = /^a stream may send 3 ack frames a minute: retry in \d+ s$/;
    expectFrameRateLimited(await phone.command({ case: "ackEvents", value: { eventIds: [eventId] } }), frames);
    // The device's own acks wait for no answer: it tells a refused one in ackErrors.
    phone.ackAll();
    await phone.until(() => phone.ackErrors.length > 0, "the ack's refusal");
    expect(phone.ackErrors).toMatchObject([{ code: Code.ResourceExhausted, rawMessage: expect.stringMatching(frames) }]);
    phone.disconnect();
    expect(await server.inbox(bob, "phone")).toHaveLength(1);

    const web = await chatApi(bob, "web");
    const webEventId = (await server.inbox(bob, "web"))[0]!.eventId;
    for (let i = 0; i < 3; i++) await web.ackEvents({ eventIds: [webEventId + 1000n] });
    const calls = /^this device may call AckEvents 3 times a minute: retry in \d+ s$/;
    expectRateLimited(await failure(web.ackEvents({ eventIds: [webEventId] })), calls, 60);
    expect(await server.inbox(bob, "web")).toHaveLength(1);
  });

  /** Two nodes on one database and one Redis: every limit counts a user's or device's writes once, on either node. */
  describe("across nodes sharing Redis", () => {
    let cluster: TestServer;
    let nodes: [string, string];
    beforeAll(async () => {
      const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
      cluster = await startTestServer(backend, { ...LIMITS, REDIS_URL: redisUrl });
      nodes = [cluster.url, (await cluster.addNode()).url];
    });
    afterAll(() => cluster?.close());

    /** Takes turns: the i-th call goes to node i mod 2. */
    const node = (i: number) => nodes[i % 2]!;

    it("counts a device's sends once", async () => {
      const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
      const token = await cluster.token(alice, "phone");
      const apis = nodes.map((url) => connectChatClient(url, token));
      const { chat } = await apis[0]!.createChat({ participantUserIds: [bob] });
      const chatId = chat!.chatId;
      for (let i = 0; i < 4; i++) await apis[i % 2]!.sendMessage({ chatId, clientMessageId: `m${i}`, text: `${i}` });
      const sends = /^this device may send 4 messages a minute: retry in \d+ s$/;
      for (const api of apis) {
        expectRateLimited(await failure(api.sendMessage({ chatId, clientMessageId: "over", text: "x" })), sends, 60);
      }
      expect((await apis[1]!.getChat({ chatId })).chat?.lastSeq).toBe(4n);
    });

    it("counts a device's and a user's chat changes once", async () => {
      const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
      const change = async (device: string, i: number) =>
        failure((await chatApi(alice, device, cluster, node(i))).createChat({ participantUserIds: [bob] }));
      for (let i = 0; i < 3; i++) expect(await change("phone", i)).toBeUndefined();
      expectRateLimited(await change("phone", 3), /^this device may create chats/, HOUR_SECONDS);
      expect(await change("laptop", 0)).toBeUndefined();
      expect(await change("laptop", 1)).toBeUndefined();
      expectRateLimited(await change("laptop", 2), /^this user may create chats/, HOUR_SECONDS);
      expect((await (await chatApi(alice, "phone", cluster, node(1))).listChats({})).chats).toHaveLength(5);
    });

    it("counts a user's upload grants and bytes once", async () => {
      const [counted, weighed] = ["counted", "weighed"].map(uniqueUser) as [string, string];
      const grant = async (user: string, i: number, sizeBytes: number) =>
        failure((await mediaApi(user, cluster, node(i))).createAttachment(upload(sizeBytes)));
      for (let i = 0; i < 3; i++) expect(await grant(counted, i, 10)).toBeUndefined();
      expectRateLimited(await grant(counted, 3, 10), /^this user may create 3 attachments an hour/, HOUR_SECONDS);
      expect(await grant(weighed, 0, 1000)).toBeUndefined();
      expect(await grant(weighed, 1, 1000)).toBeUndefined();
      expectRateLimited(await grant(weighed, 2, 1000), /^this user may create attachments of 2500 bytes/, HOUR_SECONDS);
      expect(await cluster.attachmentCount(counted)).toBe(3);
      expect(await cluster.attachmentCount(weighed)).toBe(2);
    });

    it("counts a device's AckEvents calls once", async () => {
      const bob = uniqueUser("bob");
      const ack = async (i: number) =>
        failure((await chatApi(bob, "web", cluster, node(i))).ackEvents({ eventIds: [1n] }));
      for (let i = 0; i < 3; i++) expect(await ack(i)).toBeUndefined();
      expectRateLimited(await ack(3), /^this device may call AckEvents 3 times a minute/, 60);
    });
  });
});
