import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import * as net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachmentService } from "../../gen/palaver/chat/v1/attachment_pb.js";
import { type App, startApp } from "../../src/app.js";
import { resolveAuthSecret } from "../../src/auth/secret.js";
import { mintToken } from "../../src/auth/tokens.js";
import { connectChatClient, connectTransport } from "../../src/client/device.js";
import { loadConfig } from "../../src/config.js";
import { codeOf } from "../support/codes.js";
import { openTestDb, type TestDb, testBackends } from "../support/db.js";
import { captureLogs } from "../support/log-capture.js";
import { rawRequest } from "../support/plain-http.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

/** An address of this machine that is not loopback: a client using it is, to the server, another machine. */
const otherAddress = Object.values(networkInterfaces())
  .flat()
  .find((address) => address && address.family === "IPv4" && !address.internal)?.address;

function signIn(baseUrl: string, headers: Record<string, string> = {}) {
  return fetch(`${baseUrl}/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ user: "alice", device: "web" }),
  });
}

describe("dev sign-in", () => {
  const local = captureLogs("warn");
  const any = captureLogs("warn");
  let localServer: TestServer;
  let anyServer: TestServer;
  beforeAll(async () => {
    [localServer, anyServer] = await Promise.all([
      startTestServer("pglite", { HOST: "0.0.0.0", DEV_SIGN_IN: "local" }, { logger: local.logger }),
      startTestServer("pglite", { HOST: "0.0.0.0", DEV_SIGN_IN: "any", MAX_TOKEN_LIFETIME: "1h" }, { logger: any.logger }),
    ]);
  });
  afterAll(() => Promise.all([localServer?.close(), anyServer?.close()]));

  it("answers a client on this machine, and the server warns at start that it is on", async () => {
    const res = await signIn(localServer.url);
    expect(res.status).toBe(200);
    expect(local.lines).toContainEqual(
      expect.objectContaining({ level: 40, devSignIn: "local", msg: expect.stringMatching(/^development sign-in is on/) }),
    );
  });

  it("hands out tokens the server accepts when MAX_TOKEN_LIFETIME is shorter than its usual 12 hours", async () => {
    const res = await signIn(anyServer.url);
    expect(res.status).toBe(200);
    const { token } = (await res.json()) as { token: string };
    expect(await connectChatClient(anyServer.url, token).listChats({})).toBeDefined();
  });

  it("refuses a request a proxy on this machine forwarded", async () => {
    const forwarded: Record<string, string>[] = [{ "x-forwarded-for": "203.0.113.9" }, { forwarded: "for=203.0.113.9" }];
    for (const headers of forwarded) {
      const res = await signIn(localServer.url, headers);
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: string }).error).toMatch(/only clients on the server's machine.*DEV_SIGN_IN=any/);
    }
  });

  it.skipIf(!otherAddress)("refuses a client from another address, unless DEV_SIGN_IN=any, which warns louder", async () => {
    const refused = await signIn(`http://${otherAddress}:${localServer.port}`);
    expect(refused.status).toBe(403);
    expect((await signIn(`http://${otherAddress}:${anyServer.port}`)).status).toBe(200);
    expect(any.lines).toContainEqual(
      expect.objectContaining({ level: 40, devSignIn: "any", msg: expect.stringMatching(/open to every machine/) }),
    );
  });
});

/**
 * Sends an HTTP/1.1 request head announcing a 100 MiB body, then the body as fast as the connection takes it, as a
 * hostile client would: it goes on sending after the answer and the server's FIN, until the server drops the
 * connection. Returns the answer's head and how much of the body got out.
 */
function sendHugeBody(port: number, head: string): Promise<{ answer: string; sentBytes: number }> {
  const total = 100 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sentBytes = 0;
    let answer = "";
    let closed = false;
    const pump = () => {
      while (!closed && sentBytes < total) {
        sentBytes += chunk.length;
        if (!socket.write(chunk)) return void socket.once("drain", pump);
      }
    };
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open; ${sentBytes} bytes sent, answer: ${answer}`));
    }, 20_000);
    socket.on("connect", () => {
      socket.write(`${head}content-length: ${total}\r\n\r\n`);
      pump();
    });
    socket.on("data", (data: Buffer) => (answer += data.toString("latin1")));
    socket.on("error", () => {}); // EPIPE or ECONNRESET: the server closed while the body was still going out
    socket.on("close", () => {
      closed = true;
      clearTimeout(timer);
      resolve({ answer: answer.split("\r\n\r\n")[0]!.toLowerCase(), sentBytes });
    });
  });
}

describe("HTTP/1.1 requests refused before their body is read", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer("pglite", { DEV_SIGN_IN: "local" }, { logger: captureLogs("warn").logger });
  });
  afterAll(() => server?.close());

  it.each([
    ["an RPC over the size limit, without a token", "POST /palaver.chat.v1.ChatService/SendMessage", "content-type: application/proto\r\n", 429],
    ["a path that does not exist", "POST /no/such/path", "", 404],
    ["a media upload with a bad signature", "PUT /blobs/attachments/x?expires=1&size=1&sha256=00&signature=x", "", 403],
    ["a dev sign-in over its size limit", "POST /dev/token", "content-type: application/json\r\n", 413],
  ])("%s: answered, then the connection closes with the body unread", async (_name, request, headers, status) => {
    const { answer, sentBytes } = await sendHugeBody(server.port, `${request} HTTP/1.1\r\nhost: test\r\n${headers}`);
    expect(answer).toMatch(new RegExp(`^http/1.1 ${status} `));
    expect(answer).toContain("connection: close");
    // What the kernel's socket buffers hold at most, far below the 100 MiB the client meant to send.
    expect(sentBytes).toBeLessThan(16 * 1024 * 1024);
  });

  it("keeps the connection of a request whose body was read", async () => {
    const res = await rawRequest(server.port, "/dev/token", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: "alice", device: "web" }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.connection).toBe("keep-alive");
  });
});

describe("files on the embedded defaults", () => {
  let parent: string;
  let app: App;
  beforeAll(async () => {
    parent = await mkdtemp(join(tmpdir(), "palaver-modes-"));
  });
  afterAll(async () => {
    await app?.close();
    await rm(parent, { recursive: true, force: true });
  });

  it("are the server's user's alone: DATA_DIR and every directory in it 0700, every file 0600", async () => {
    const dataDir = join(parent, "data");
    const config = loadConfig({ PORT: "0", HOST: "127.0.0.1", DATA_DIR: dataDir, LOG_LEVEL: "warn", DEV_SIGN_IN: "off" });
    app = await startApp(config);
    // A token from the secret the server generated, and a media file stored through the local store.
    const token = await mintToken(await resolveAuthSecret(config), { userId: uniqueUser("alice"), deviceName: "phone" });
    const bytes = randomBytes(4096);
    const media = createClient(AttachmentService, connectTransport(app.server.url, token));
    const created = await media.createAttachment({
      sha256: createHash("sha256").update(bytes).digest(),
      sizeBytes: BigInt(bytes.length),
      contentType: "image/png",
      fileName: "photo.png",
    });
    const put = await fetch(created.upload!.url, { method: "PUT", headers: created.upload!.headers, body: bytes });
    expect(put.status).toBe(200);
    await connectChatClient(app.server.url, token).createChat({ name: "modes", participantUserIds: [uniqueUser("bob")] });

    const entries = await readdir(dataDir, { recursive: true, withFileTypes: true });
    expect(entries.map((entry) => join(entry.parentPath, entry.name))).toEqual(
      expect.arrayContaining([join(dataDir, "auth-secret"), join(dataDir, "pglite", "PG_VERSION")]),
    );
    expect(entries.some((entry) => entry.parentPath.startsWith(join(dataDir, "blobs", "attachments")))).toBe(true);
    const modes = async (path: string, directory: boolean) => ({ path, mode: (await stat(path)).mode & 0o777, directory });
    const found = await Promise.all([
      modes(dataDir, true),
      ...entries.map((entry) => modes(join(entry.parentPath, entry.name), entry.isDirectory())),
    ]);
    expect(found.filter(({ mode, directory }) => mode !== (directory ? 0o700 : 0o600))).toEqual([]);
  });
});

describe.each(testBackends())("logs of a failed statement on %s", (backend) => {
  const secretName = "Surprise party for Bob";
  const logs = captureLogs("warn");
  let testDb: TestDb;
  let app: App;
  let dataDir: string;
  beforeAll(async () => {
    testDb = await openTestDb(backend);
    dataDir = await mkdtemp(join(tmpdir(), "palaver-logs-"));
    const env = { PORT: "0", HOST: "127.0.0.1", DATA_DIR: dataDir, AUTH_SECRET: "s".repeat(32), DEV_SIGN_IN: "off" };
    app = await startApp(loadConfig(env), { db: testDb.db, logger: logs.logger });
  });
  afterAll(async () => {
    await app?.close();
    await testDb?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("carry what failed, not the chat name the statement was given, nor the row", async () => {
    // A constraint the API does not know of: the insert fails in the database with the name as a parameter.
    await testDb.driver.exec("ALTER TABLE chats ADD CONSTRAINT no_surprises CHECK (name NOT LIKE 'Surprise%')");
    const token = await mintToken(new TextEncoder().encode("s".repeat(32)), { userId: uniqueUser("alice"), deviceName: "phone" });
    const created = connectChatClient(app.server.url, token).createChat({ name: secretName, participantUserIds: [uniqueUser("bob")] });
    expect(await codeOf(created)).toBe(Code.Internal);
    expect(logs.lines).toContainEqual(expect.objectContaining({ err: expect.objectContaining({ code: "23514" }) }));
    expect(logs.text()).not.toContain("Surprise");
  });
});
