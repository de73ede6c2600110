import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CreateChatResponseSchema, SendMessageResponseSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { type Event, EventSchema } from "../../gen/palaver/chat/v1/event_pb.js";
import { ConnectDevice } from "../../src/client/device.js";
import { runCommand, startCommand } from "../support/commands.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

const exampleDir = fileURLToPath(new URL("../../examples/go-client", import.meta.url));

/**
 * The Go example client (examples/go-client, on the generated code in gen/go) against a real server: the same
 * protocol from another language, with a TypeScript device on the other end.
 */
describe("the Go example client", () => {
  let buildDir: string;
  let goClient: string;
  let server: TestServer;

  beforeAll(async () => {
    buildDir = await mkdtemp(join(tmpdir(), "palaver-go-client-"));
    goClient = join(buildDir, "go-client");
    const build = await runCommand("go", ["build", "-buildvcs=false", "-o", goClient, "."], {
      cwd: exampleDir,
      timeoutMs: 170_000,
      missing: "these tests build examples/go-client and need Go on PATH (https://go.dev/dl/)",
    });
    if (build.code !== 0) throw new Error(`go build of examples/go-client failed:\n${build.stderr}`);
    server = await startTestServer("pglite");
  }, 180_000);

  afterAll(async () => {
    await server?.close();
    if (buildDir) await rm(buildDir, { recursive: true, force: true });
  });

  /** Runs one go-client mode as the given device and returns what it printed, one parsed JSON value a line. */
  async function go(user: string, device: string, args: string[]): Promise<unknown[]> {
    const token = await server.token(user, device);
    const run = await runCommand(goClient, [...args, "--url", server.url, "--token", token, "--timeout", "20s"]);
    if (run.code !== 0) throw new Error(`go-client ${args.join(" ")} exited with ${run.code}: ${run.stderr}`);
    return run.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
  }

  const parse = <D extends DescMessage>(schema: D, json: unknown): MessageShape<D> => fromJson(schema, json as never);
  const events = (lines: unknown[]): Event[] => lines.map((line) => parse(EventSchema, line));
  const texts = (list: Event[]) => list.flatMap((e) => (e.kind.case === "newMessage" ? [e.kind.value.text] : []));

  async function tsDevice(user: string, name: string) {
    const device = ConnectDevice.open(server.url, await server.token(user, name));
    await device.waitForDrained();
    return device;
  }

  it("exchanges messages both ways with a TypeScript device", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const ts = await tsDevice(alice, "laptop");

    const [created] = await go(bob, "go", ["create-chat", "--with", alice, "--name", "interop"]);
    const chat = parse(CreateChatResponseSchema, created).chat!;
    expect(chat.participantUserIds).toEqual([alice, bob].sort());
    await ts.waitForChatUpdates(1);
    // The chat's creation is in the Go device's inbox too: take it, and ack it.
    expect(events(await go(bob, "go", ["listen", "--until-drained"])).map((e) => e.kind.case)).toEqual([
      "chatUpdate",
      "inboxDrained",
    ]);

    // TypeScript to Go, live: the Go device is connected and drained before the send.
    const listening = startCommand(goClient, [
      "listen", "--count", "1", "--url", server.url, "--token", await server.token(bob, "go"), "--timeout", "20s",
    ]);
    await listening.waitForLine((line) => line.includes("inboxDrained"));
    const sent = await ts.command({
      case: "sendMessage",
      value: { chatId: chat.chatId, clientMessageId: "ts-1", text: "hello from TypeScript" },
    });
    expect(sent.outcome.case).toBe("sendMessage");
    const outcome = await listening.done;
    expect(outcome.code, outcome.stderr).toBe(0);
    const [drained, live] = events(outcome.stdout.trim().split("\n").map((line) => JSON.parse(line)));
    expect(drained?.kind).toEqual({ case: "inboxDrained", value: expect.objectContaining({ backlogEvents: 0n }) });
    expect(live?.chatId).toBe(chat.chatId);
    expect(live?.kind.case === "newMessage" && live.kind.value).toMatchObject({
      text: "hello from TypeScript",
      seq: 1n,
      senderUserId: alice,
      senderDeviceId: "laptop",
      clientMessageId: "ts-1",
    });

    // Go to TypeScript.
    const [response] = await go(bob, "go", ["send", "--chat", chat.chatId, "--text", "hello from Go", "--client-id", "go-1"]);
    expect(parse(SendMessageResponseSchema, response).seq).toBe(2n);
    await ts.waitForMessages(1); // a device does not receive what it sent itself
    expect(ts.messages).toHaveLength(1);
    expect(ts.messages[0]).toMatchObject({
      text: "hello from Go",
      seq: 2n,
      senderUserId: bob,
      senderDeviceId: "go",
      clientMessageId: "go-1",
    });
    expect(await server.inbox(bob, "go")).toEqual([]);
    ts.disconnect();
  });

  it("gets its backlog in seq order after being offline, and its acks empty its inbox", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const ts = await tsDevice(alice, "phone");
    const [created] = await go(bob, "go", ["create-chat", "--with", alice]);
    const chatId = parse(CreateChatResponseSchema, created).chat!.chatId;
    await go(bob, "go", ["listen", "--until-drained"]); // takes and acks the chat's creation

    // Sent while no Go process is connected.
    for (let i = 1; i <= 5; i++) {
      await ts.command({ case: "sendMessage", value: { chatId, clientMessageId: `m${i}`, text: `offline ${i}` } });
    }
    const expected = [1, 2, 3, 4, 5].map((i) => `offline ${i}`);

    // Without acks, the backlog comes again on the next run, with the same event ids.
    const unacked = events(await go(bob, "go", ["listen", "--until-drained", "--no-ack"]));
    expect(texts(unacked)).toEqual(expected);
    const backlog = events(await go(bob, "go", ["listen", "--until-drained"]));
    expect(backlog.map((e) => e.eventId)).toEqual(unacked.map((e) => e.eventId));
    expect(backlog.map((e) => (e.kind.case === "newMessage" ? e.kind.value.seq : undefined))).toEqual([
      1n, 2n, 3n, 4n, 5n, undefined,
    ]);
    expect(texts(backlog)).toEqual(expected);
    expect(backlog.at(-1)?.kind).toEqual({ case: "inboxDrained", value: expect.objectContaining({ backlogEvents: 5n }) });

    // Acked: nothing old comes again.
    expect(await server.inbox(bob, "go")).toEqual([]);
    const later = events(await go(bob, "go", ["listen", "--until-drained"]));
    expect(later.map((e) => e.kind.case)).toEqual(["inboxDrained"]);
    ts.disconnect();
  });

  it("renews its token with --token-command and prints every message sent across the renewals, once", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const ts = await tsDevice(alice, "tablet");
    const created = await ts.command({ case: "createChat", value: { name: "renewals", participantUserIds: [bob] } });
    const chatId = created.outcome.case === "createChat" ? created.outcome.value.chat!.chatId : "";

    // Tokens that live 4 seconds, a fresh one in each device's file every half second, for the command to print.
    const tokenDir = await mkdtemp(join(tmpdir(), "palaver-go-tokens-"));
    const devices = ["ahead", "late"];
    const refresh = async () => {
      for (const device of devices) {
        await writeFile(join(tokenDir, `${device}.new`), await server.token(bob, device, { ttl: 4 }));
        await rename(join(tokenDir, `${device}.new`), join(tokenDir, device));
      }
    };
    // One renewal at a time, each after the last; the directory goes only once the one under way has written.
    let renewed = refresh();
    await renewed;
    const refreshing = setInterval(() => (renewed = renewed.then(refresh)), 500);
    const sent: string[] = [];
    try {
      // "ahead" renews before its token expires; "late" gets its tokens a second late, so the server ends its stream
      // at expiry first, and it reconnects then.
      const commands = { ahead: `cat ${join(tokenDir, "ahead")}`, late: `sleep 1; cat ${join(tokenDir, "late")}` };
      const count = 40; // messages (the chat was created before these devices existed)
      const listeners = devices.map((device) =>
        startCommand(goClient, [
          "listen", "--count", String(count), "--url", server.url,
          "--token-command", commands[device as keyof typeof commands], "--timeout", "40s",
        ]),
      );
      await Promise.all(listeners.map((l) => l.waitForLine((line) => line.includes("inboxDrained"))));
      for (let i = 0; i < count; i++) {
        const text = `renewal ${i}`;
        const result = await ts.command({ case: "sendMessage", value: { chatId, clientMessageId: text, text } });
        expect(result.outcome.case).toBe("sendMessage");
        sent.push(text);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      for (const [i, listener] of listeners.entries()) {
        const outcome = await listener.done;
        expect(outcome.code, `${devices[i]}: ${outcome.stderr}`).toBe(0);
        const printed = events(outcome.stdout.trim().split("\n").map((line) => JSON.parse(line)));
        expect(texts(printed), devices[i]).toEqual(sent);
        const ids = printed.filter((e) => e.eventId !== 0n).map((e) => e.eventId);
        expect(new Set(ids).size, devices[i]).toBe(count); // none twice
        // One InboxDrained per stream: it moved to a new stream at least twice.
        expect(printed.filter((e) => e.kind.case === "inboxDrained").length, devices[i]).toBeGreaterThanOrEqual(3);
      }
    } finally {
      clearInterval(refreshing);
      await renewed;
      await rm(tokenDir, { recursive: true, force: true });
    }
    // Everything printed was acked, on whichever stream: nothing is left for the next listen.
    for (const device of devices) {
      expect(events(await go(bob, device, ["listen", "--until-drained"])).map((e) => e.kind.case)).toEqual(["inboxDrained"]);
    }
    ts.disconnect();
  });

  it("marks read what it prints (--mark-read), and prints the receipt and typing updates it gets without acking them", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const ts = await tsDevice(alice, "phone");
    const [created] = await go(bob, "go", ["create-chat", "--with", alice]);
    const chatId = parse(CreateChatResponseSchema, created).chat!.chatId;
    await go(bob, "go", ["listen", "--until-drained"]); // takes and acks the chat's creation
    const listen = async (extra: string[]) =>
      startCommand(goClient, ["listen", "--count", "1", ...extra, "--url", server.url, "--token", await server.token(bob, "go"), "--timeout", "20s"]);

    // TypeScript to Go: the Go device prints the message and marks the chat read up to it; alice's device hears so.
    const reading = await listen(["--mark-read"]);
    await reading.waitForLine((line) => line.includes("inboxDrained"));
    await ts.command({ case: "sendMessage", value: { chatId, clientMessageId: "m1", text: "read me" } });
    const read = await reading.done;
    expect(read.code, read.stderr).toBe(0);
    expect(read.stderr).toBe(""); // no MarkRead was refused
    await ts.until(() => (ts.receiptsIn(chatId).get(bob)?.readSeq ?? 0n) >= 1n, "bob's read receipt");
    expect(ts.receiptsIn(chatId).get(bob)).toEqual({ deliveredSeq: 1n, readSeq: 1n });

    // Go prints what alice's device does in the chat: a read receipt, typing, then her message, which ends the listen.
    await go(bob, "go", ["send", "--chat", chatId, "--text", "did you?", "--client-id", "g1"]); // seq 2
    await ts.waitForMessages(1);
    const watching = await listen([]);
    await watching.waitForLine((line) => line.includes("inboxDrained"));
    const marked = await ts.command({ case: "markRead", value: { chatId, seq: 2n } });
    expect(marked.outcome.case === "markRead" && marked.outcome.value.unreadCount).toBe(0n);
    // (protojson spaces its output at random: parse the line rather than match its text)
    await watching.waitForLine((line) => (JSON.parse(line) as { receiptUpdate?: { readSeq?: string } }).receiptUpdate?.readSeq === "2");
    await ts.command({ case: "setTyping", value: { chatId, typing: true } });
    await watching.waitForLine((line) => line.includes("typingUpdate"));
    await ts.command({ case: "sendMessage", value: { chatId, clientMessageId: "m2", text: "yes" } });
    const watched = await watching.done;
    expect(watched.code, watched.stderr).toBe(0); // an ack of event_id 0 would have been refused
    const printed = events(watched.stdout.trim().split("\n").map((line) => JSON.parse(line)));
    expect(printed[0]?.kind.case).toBe("inboxDrained");
    expect(printed.at(-1)?.kind.case === "newMessage" && printed.at(-1)?.kind.value).toMatchObject({ text: "yes", seq: 3n });
    const receipts = printed.flatMap((e) => (e.kind.case === "receiptUpdate" ? [e] : []));
    expect(receipts.at(-1)?.chatId).toBe(chatId);
    expect(receipts.at(-1)?.kind.value).toMatchObject({ userId: alice, deliveredSeq: 2n, readSeq: 2n });
    const typing = printed.flatMap((e) => (e.kind.case === "typingUpdate" ? [e] : []));
    expect(typing).toHaveLength(1);
    expect(typing[0]?.chatId).toBe(chatId);
    expect(typing[0]?.kind.value).toMatchObject({ userId: alice, deviceId: "phone", typing: true, lapseAfter: { seconds: 6n } });
    // Not stored, so never acked: only the message had an event id, and its ack emptied the inbox.
    expect(printed.filter((e) => e.eventId !== 0n).map((e) => e.kind.case)).toEqual(["newMessage"]);
    expect(await server.inbox(bob, "go")).toEqual([]);
    ts.disconnect();
  });

  it("reports a rejected command on stderr with a failing exit status", async () => {
    const outsider = uniqueUser("outsider");
    const run = await runCommand(goClient, [
      "send", "--chat", "00000000-0000-4000-8000-000000000000", "--text", "hi",
      "--url", server.url, "--token", await server.token(outsider, "go"), "--timeout", "20s",
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/not_found/);
  });
});
