import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectDevice, connectChatClient } from "../../src/client/device.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";
import { TcpProxy } from "../support/tcp-proxy.js";

const databaseUrl = process.env.DATABASE_URL;

/** Postgres goes away under a running server (a proxy in front of the real one is cut), then comes back. */
describe.runIf(databaseUrl)("when Postgres is unreachable", () => {
  let proxy: TcpProxy;
  let server: TestServer;
  beforeAll(async () => {
    const url = new URL(databaseUrl!);
    proxy = await TcpProxy.start({ host: url.hostname, port: Number(url.port || 5432) });
    url.host = `127.0.0.1:${proxy.port}`;
    server = await startTestServer("postgres", {}, { postgresUrl: url.toString() });
  });
  afterAll(async () => {
    await server?.close();
    await proxy?.close();
  });

  it("answers UNAVAILABLE without crashing, and a retry after it returns stores the message exactly once", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const api = connectChatClient(server.url, await server.token(alice!, "phone"));
    const { chat } = await api.createChat({ participantUserIds: [bob!] });
    const chatId = chat!.chatId;
    const receiver = ConnectDevice.open(server.url, await server.token(bob!, "phone"));
    await receiver.waitForDrained();

    await proxy.cut();
    const request = { chatId, clientMessageId: "during-outage", text: "are you there?" };
    for (let attempt = 0; attempt < 3; attempt++) {
      const error = await api.sendMessage(request).then(() => null, (e: unknown) => ConnectError.from(e));
      expect(error?.code).toBe(Code.Unavailable);
    }
    expect((await fetch(`${server.url}/livez`)).status).toBe(200);

    await proxy.restore();
    const stored = await retryUntilAvailable(() => api.sendMessage(request));
    const again = await api.sendMessage(request);
    expect(again.messageId).toBe(stored.messageId);
    expect(stored.seq).toBe(1n);
    expect(await server.messageCount(chatId)).toBe(1);
    await receiver.waitForMessages(1);
    await new Promise((r) => setTimeout(r, 200));
    expect(receiver.messages.map((m) => m.text)).toEqual(["are you there?"]);
    receiver.disconnect();
  });
});

async function retryUntilAvailable<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unavailable || attempt > 50) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
