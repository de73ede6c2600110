import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectDevice } from "../../src/client/device.js";
import { runCommand } from "../support/commands.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

const buf = fileURLToPath(new URL("../../node_modules/.bin/buf", import.meta.url));

/** A generic tool that knows nothing of Palaver: `buf curl`, with the schema from the server's reflection. */
describe("buf curl", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer("pglite");
  });
  afterAll(() => server?.close());

  async function curl(args: string[]) {
    return runCommand(buf, ["curl", ...args], { timeoutMs: 30_000, missing: `buf is not installed at ${buf}: run npm ci` });
  }

  /** A gRPC call over h2c, as the docs show it. */
  async function call(method: string, token: string | null, body: unknown) {
    const auth = token === null ? [] : ["-H", `authorization: Bearer ${token}`];
    return curl([
      "--protocol", "grpc", "--http2-prior-knowledge", ...auth, "-d", JSON.stringify(body),
      `${server.url}/palaver.chat.v1.ChatService/${method}`,
    ]);
  }

  it("lists the API's methods through server reflection", async () => {
    const run = await curl(["--list-methods", server.url]);
    expect(run.code, run.stderr).toBe(0);
    const methods = run.stdout.trim().split("\n");
    expect(methods).toContain("palaver.chat.v1.ChatService/SendMessage");
    expect(methods).toContain("palaver.chat.v1.ChatService/Connect");
    expect(methods).toContain("palaver.chat.v1.AttachmentService/CreateAttachment");
  });

  it("creates a chat and sends a message that reaches the other participant's device", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const bobPhone = ConnectDevice.open(server.url, await server.token(bob, "phone"));
    await bobPhone.waitForDrained();
    const token = await server.token(alice, "curl");

    const created = await call("CreateChat", token, { name: "from curl", participantUserIds: [bob] });
    expect(created.code, created.stderr).toBe(0);
    const chat = JSON.parse(created.stdout).chat;
    expect(chat.participantUserIds).toEqual([alice, bob].sort());

    const sent = await call("SendMessage", token, { chatId: chat.chatId, clientMessageId: "curl-1", text: "hi from buf curl" });
    expect(sent.code, sent.stderr).toBe(0);
    expect(JSON.parse(sent.stdout)).toMatchObject({ seq: "1" });

    await bobPhone.waitForMessages(1);
    expect(bobPhone.messages[0]).toMatchObject({ text: "hi from buf curl", senderUserId: alice, senderDeviceId: "curl" });
    bobPhone.disconnect();
  });

  it("exits with the gRPC status shifted left by three on a failed call", async () => {
    const missingToken = await call("CreateChat", null, { participantUserIds: ["bob"] });
    expect(missingToken.code).toBe(16 << 3); // UNAUTHENTICATED
    const tooFew = await call("CreateChat", await server.token(uniqueUser("alice"), "curl"), { participantUserIds: [] });
    expect(tooFew.code).toBe(3 << 3); // INVALID_ARGUMENT
    expect(tooFew.stderr).toMatch(/participant_user_ids/);
  });
});
