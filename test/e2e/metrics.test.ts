import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectDevice, connectChatClient } from "../../src/client/device.js";
import { testBackends } from "../support/db.js";
import { sample, scrapeMetrics } from "../support/metrics.js";
import { killConnectionNamed, redisAdmin, redisUrl } from "../support/redis.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

describe.each(testBackends())("storage metrics on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend);
  });
  afterAll(() => server?.close());

  const scrape = () => scrapeMetrics(server.url);

  it("times every database call by operation: a send's storeMessages, a stream's openInbox, its ackEvents", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const db = (text: string, operation: string) =>
      sample(text, "palaver_db_call_duration_seconds_count", { operation, outcome: "ok" });
    const before = await scrape();

    const phone = ConnectDevice.open(server.url, await server.token(bob!, "phone"));
    await phone.waitForDrained();
    const api = connectChatClient(server.url, await server.token(alice!, "phone"));
    const { chat } = await api.createChat({ participantUserIds: [bob!] });
    await api.sendMessage({ chatId: chat!.chatId, clientMessageId: "m1", text: "hello" });
    await phone.waitForMessages(1);
    phone.ackAll();
    await expect.poll(() => server.inbox(bob!, "phone"), { timeout: 10_000 }).toEqual([]);
    phone.disconnect();

    // The test's own query can see the ack's delete before the server has read its reply and timed the call.
    const ackTimed = async () => db(await scrape(), "ackEvents");
    await expect.poll(ackTimed, { timeout: 10_000 }).toBeGreaterThan(db(before, "ackEvents"));
    const after = await scrape();
    for (const operation of ["createChat", "storeMessages", "openInbox"]) {
      expect(db(after, operation), operation).toBeGreaterThan(db(before, operation));
    }
    expect(sample(after, "palaver_db_call_duration_seconds_bucket", { operation: "storeMessages", le: "+Inf" })).toBe(
      db(after, "storeMessages"),
    );
    // The send and the ack each went through their group committer.
    const batches = (text: string, committer: string) =>
      sample(text, "palaver_group_commit_batch_size_count", { committer });
    expect(batches(after, "sends")).toBeGreaterThan(batches(before, "sends"));
    expect(batches(after, "acks")).toBeGreaterThan(batches(before, "acks"));
  });
});

describe("routing metrics", () => {
  it("count each Redis connection's errors and reconnects by role", async () => {
    const nodeId = `metrics-${randomBytes(4).toString("hex")}`;
    const server = await startTestServer("pglite", { REDIS_URL: redisUrl, NODE_ID: nodeId });
    const admin = await redisAdmin();
    try {
      const before = await scrapeMetrics(server.url);
      for (const role of ["commands", "subscriber"]) {
        expect(before).toContain(`palaver_redis_errors_total{role="${role}"} 0`);
        expect(before).toContain(`palaver_redis_reconnects_total{role="${role}"} 0`);
      }
      // Redis drops the subscriber connection, as a restart would; node-redis reconnects.
      await killConnectionNamed(admin, `palaver-${nodeId}-subscriber`);
      const reconnects = async () =>
        sample(await scrapeMetrics(server.url), "palaver_redis_reconnects_total", { role: "subscriber" });
      for (const deadline = Date.now() + 5000; (await reconnects()) < 1 && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await reconnects()).toBe(1);
    } finally {
      await admin.close();
      await server.close();
    }
  });
});
