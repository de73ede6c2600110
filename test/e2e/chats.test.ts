import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatUpdateKind } from "../../gen/palaver/chat/v1/event_pb.js";
import { ParticipantOperation } from "../../gen/palaver/chat/v1/chat_pb.js";
import { ConnectDevice, connectChatClient } from "../../src/client/device.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";
import { codeOf } from "../support/codes.js";

describe.each(testBackends())("chats on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend);
  });
  afterAll(() => server?.close());

  const client = async (user: string, device = "web") => connectChatClient(server.url, await server.token(user, device));

  it("creates a chat with the caller included and duplicates folded, and lists and gets it", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser);
    const api = await client(alice!);
    const { chat } = await api.createChat({ name: "trip", participantUserIds: [bob!, carol!, bob!, alice!] });
    expect(chat?.participantUserIds).toEqual([alice, bob, carol].sort());
    expect(chat?.name).toBe("trip");
    expect((await api.getChat({ chatId: chat!.chatId })).chat?.participantUserIds).toEqual(chat?.participantUserIds);
    const bobsChats = await (await client(bob!)).listChats({});
    expect(bobsChats.chats.map((c) => c.chatId)).toEqual([chat!.chatId]);
  });

  it("pages ListChats", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const api = await client(alice!);
    const created = [];
    for (let i = 0; i < 5; i++) created.push((await api.createChat({ name: `c${i}`, participantUserIds: [bob!] })).chat!.chatId);
    const first = await api.listChats({ pageSize: 2 });
    const second = await api.listChats({ pageSize: 2, pageToken: first.nextPageToken });
    const third = await api.listChats({ pageSize: 2, pageToken: second.nextPageToken });
    const seen = [...first.chats, ...second.chats, ...third.chats].map((c) => c.chatId);
    expect(seen.sort()).toEqual(created.sort());
    expect(third.nextPageToken).toBe("");
    expect(await codeOf(api.listChats({ pageToken: "garbage" }))).toBe(Code.InvalidArgument);
  });

  it("refuses chats below 2 or above 100 participants and stores nothing", async () => {
    const alice = uniqueUser("alice");
    const api = await client(alice);
    expect(await codeOf(api.createChat({ participantUserIds: [] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(api.createChat({ participantUserIds: [alice] }))).toBe(Code.InvalidArgument);
    const hundredOthers = Array.from({ length: 100 }, (_, i) => `${alice}-f${i}`);
    expect(await codeOf(api.createChat({ participantUserIds: hundredOthers }))).toBe(Code.InvalidArgument);
    const tooMany = Array.from({ length: 101 }, (_, i) => `${alice}-g${i}`);
    expect(await codeOf(api.createChat({ participantUserIds: tooMany }))).toBe(Code.InvalidArgument);
    expect(await codeOf(api.createChat({ participantUserIds: ["not a user id!"] }))).toBe(Code.InvalidArgument);
    expect((await api.listChats({})).chats).toHaveLength(0);
    // 99 others plus the caller is exactly 100: allowed.
    const { chat } = await api.createChat({ participantUserIds: hundredOthers.slice(0, 99) });
    expect(chat?.participantUserIds).toHaveLength(100);
    expect(await codeOf(api.modifyChatParticipants({
      chatId: chat!.chatId, userId: `${alice}-extra`, operation: ParticipantOperation.ADD,
    }))).toBe(Code.InvalidArgument);
    expect((await api.getChat({ chatId: chat!.chatId })).chat?.participantUserIds).toHaveLength(100);
  });

  it("pushes every change to every device of everyone before and after it, the removed user included", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser);
    const devices = await Promise.all(
      [[alice!, "phone"], [alice!, "laptop"], [bob!, "phone"], [carol!, "phone"]].map(async ([u, d]) => {
        const device = ConnectDevice.open(server.url, await server.token(u!, d!));
        await device.waitForDrained();
        return device;
      }),
    );
    const [alicePhone, aliceLaptop, bobPhone, carolPhone] = devices as [ConnectDevice, ConnectDevice, ConnectDevice, ConnectDevice];
    const api = await client(alice!, "phone");
    const { chat } = await api.createChat({ name: "g", participantUserIds: [bob!] });
    await api.modifyChatParticipants({ chatId: chat!.chatId, userId: carol!, operation: ParticipantOperation.ADD });
    await api.modifyChatParticipants({ chatId: chat!.chatId, userId: bob!, operation: ParticipantOperation.REMOVE });

    for (const d of [alicePhone, aliceLaptop]) {
      await d.waitForChatUpdates(3);
      expect(d.chatUpdates.map((u) => u.kind)).toEqual([
        ChatUpdateKind.CREATED, ChatUpdateKind.PARTICIPANT_ADDED, ChatUpdateKind.PARTICIPANT_REMOVED,
      ]);
    }
    await bobPhone.waitForChatUpdates(3);
    const removal = bobPhone.chatUpdates[2]!;
    expect(removal.subjectUserId).toBe(bob);
    expect(removal.actorUserId).toBe(alice);
    expect(removal.chat?.participantUserIds).toEqual([alice, carol].sort());
    await carolPhone.waitForChatUpdates(2);
    expect(carolPhone.chatUpdates.map((u) => u.kind)).toEqual([ChatUpdateKind.PARTICIPANT_ADDED, ChatUpdateKind.PARTICIPANT_REMOVED]);

    // Bob no longer receives messages and can no longer send or change the chat.
    await api.sendMessage({ chatId: chat!.chatId, clientMessageId: "after", text: "bob is gone" });
    await carolPhone.waitForMessages(1);
    await new Promise((r) => setTimeout(r, 200));
    expect(bobPhone.messages).toHaveLength(0);
    const bobApi = await client(bob!, "phone");
    expect(await codeOf(bobApi.sendMessage({ chatId: chat!.chatId, clientMessageId: "x", text: "hi" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(bobApi.modifyChatParticipants({
      chatId: chat!.chatId, userId: bob!, operation: ParticipantOperation.ADD,
    }))).toBe(Code.PermissionDenied);
    expect(await codeOf(bobApi.getChat({ chatId: chat!.chatId }))).toBe(Code.PermissionDenied);
    for (const d of devices) d.disconnect();
  });

  it("answers NOT_FOUND for an unknown chat and INVALID_ARGUMENT for a malformed change", async () => {
    const alice = uniqueUser("alice");
    const api = await client(alice);
    const unknown = "00000000-0000-4000-8000-000000000000";
    expect(await codeOf(api.getChat({ chatId: unknown }))).toBe(Code.NotFound);
    expect(await codeOf(api.modifyChatParticipants({ chatId: unknown, userId: "bob", operation: ParticipantOperation.ADD }))).toBe(Code.NotFound);
    expect(await codeOf(api.sendMessage({ chatId: unknown, clientMessageId: "1", text: "x" }))).toBe(Code.NotFound);
    expect(await codeOf(api.modifyChatParticipants({ chatId: unknown, userId: "bob", operation: ParticipantOperation.UNSPECIFIED }))).toBe(Code.InvalidArgument);
    expect(await codeOf(api.getChat({ chatId: "not-a-uuid" }))).toBe(Code.InvalidArgument);
  });
});
