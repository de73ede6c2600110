import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ResyncReason } from "../../gen/palaver/chat/v1/event_pb.js";
import { ConnectDevice, connectChatClient } from "../../src/client/device.js";
import { testBackends } from "../support/db.js";
import { sample, scrapeMetrics } from "../support/metrics.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

const DAY_MS = 24 * 60 * 60 * 1000;

describe.each(testBackends())("retention on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend, { MAX_INBOX_EVENTS: "5" });
  });
  afterAll(() => server?.close());

  it("drops whole day partitions after RETENTION_DAYS, with their messages and inbox entries, and tells the device to resync", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const api = connectChatClient(server.url, await server.token(alice!, "phone"));
    const { chat } = await api.createChat({ participantUserIds: [bob!] });
    for (let i = 0; i < 3; i++) await api.sendMessage({ chatId: chat!.chatId, clientMessageId: `old${i}`, text: "old" });
    expect(await server.inbox(bob!, "phone")).toEqual([]); // bob's phone did not exist yet

    // Bob's phone appears, hears nothing for 31 days.
    const phone = ConnectDevice.open(server.url, await server.token(bob!, "phone"));
    await phone.waitForDrained();
    await api.sendMessage({ chatId: chat!.chatId, clientMessageId: "unread", text: "you will never see this" });
    await phone.waitForMessages(1);
    phone.disconnect();
    const today = server.clock.now();
    expect(await server.partitionsOf(today)).toEqual(["inbox", "messages"]);
    // The three messages nobody could receive were not kept.
    expect(await server.messageCount(chat!.chatId)).toBe(1);

    server.clock.advance(31 * DAY_MS);
    const report = await server.app.retention.run();
    expect(report.partitionsDropped.length).toBeGreaterThanOrEqual(2);
    expect(await server.partitionsOf(today)).toEqual([]);
    expect(await server.messageCount(chat!.chatId)).toBe(0);
    expect(await server.inbox(bob!, "phone")).toEqual([]);

    const back = ConnectDevice.open(server.url, await server.token(bob!, "phone"));
    await back.waitForDrained();
    expect(back.events[0]?.kind.case).toBe("resync");
    expect(back.events[0]?.kind.case === "resync" && back.events[0].kind.value.reason).toBe(ResyncReason.RETENTION);
    expect(back.stored).toHaveLength(0);
    back.disconnect();

    // Sending still works on the new day (its partition was created by the run), and resync is said once.
    await api.sendMessage({ chatId: chat!.chatId, clientMessageId: "new", text: "fresh" });
    const again = ConnectDevice.open(server.url, await server.token(bob!, "phone"));
    await again.waitForMessages(1);
    expect(again.events.some((e) => e.kind.case === "resync")).toBe(false);
    again.disconnect();
  });

  it("holds an inbox to MAX_INBOX_EVENTS as events are written: the oldest go and the device is told to resync", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const phone = ConnectDevice.open(server.url, await server.token(bob!, "phone"));
    await phone.waitForDrained();
    phone.disconnect();
    const before = await scrapeMetrics(server.url);
    const api = connectChatClient(server.url, await server.token(alice!, "phone"));
    const { chat } = await api.createChat({ participantUserIds: [bob!] });
    for (let i = 1; i <= 8; i++) await api.sendMessage({ chatId: chat!.chatId, clientMessageId: `m${i}`, text: `m${i}` });
    // Nine events (the chat's creation and eight messages) were written; no retention run trims them.
    await vi.waitFor(async () => expect(await server.inbox(bob!, "phone")).toHaveLength(5), { timeout: 5_000 });

    // The hourly run finds nothing left to trim; the trims show in the metrics.
    const report = await server.app.retention.run();
    expect(report.inboxesTrimmed).toBe(0);
    const after = await scrapeMetrics(server.url);
    const moved = (name: string, labels?: Record<string, string>) => sample(after, name, labels) - sample(before, name, labels);
    expect(moved("palaver_retention_runs_total", { outcome: "ok" })).toBe(1);
    expect(moved("palaver_retention_inboxes_trimmed_total")).toBeGreaterThanOrEqual(1);

    const back = ConnectDevice.open(server.url, await server.token(bob!, "phone"));
    await back.waitForDrained();
    expect(back.events[0]?.kind.case === "resync" && back.events[0].kind.value.reason).toBe(ResyncReason.INBOX_OVERFLOW);
    expect(back.messages.map((m) => m.text)).toEqual(["m4", "m5", "m6", "m7", "m8"]);
    back.disconnect();
  });
});
