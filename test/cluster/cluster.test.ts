/**
 * Many nodes behind an L4 load balancer, with nothing lost when a node dies (docs/architecture.md: "Decisions").
 *
 * Three real nodes (`node … src/main.ts`, as deployed) on a fresh database of the machine's Postgres and its Redis, with
 * HAProxy in front (deploy/haproxy.cfg rendered for loopback). Devices are placed by connecting straight to a node's
 * port; every reconnect goes through HAProxy. Faults are real: kill -9, SIGTERM, Redis and Postgres restarts.
 * Each fault test prints its figures; all of them go to test-results/cluster/figures.json.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ConnectDevice } from "../../src/client/device.js";
import { Cluster, logDir, MACHINE_REDIS_URL } from "./cluster.js";
import { RedisCluster } from "./redis-cluster.js";
import { type Ack, Recipient, Sender } from "./devices.js";
import { sleep, waitFor } from "./processes.js";
import { type Outcome, Scenario, round } from "./scenario.js";
import { ensureServicesUp, startPostgres, startRedis, stopPostgres, stopRedis } from "./services.js";

const figures: Record<string, unknown> = {};

function reportFigure(name: string, data: Record<string, unknown>): void {
  figures[name] = data;
  console.log(`[cluster] ${name}: ${JSON.stringify(data)}`);
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Adds the totals over the fault tests and writes everything to figures.json beside the logs. */
function writeFigures(): void {
  const faults = Object.values(figures).filter((f): f is Outcome => typeof f === "object" && f !== null && "delivered" in f);
  const sum = (key: "sent" | "delivered" | "duplicatesSuppressed") => faults.reduce((n, f) => n + f[key], 0);
  const delivered = sum("delivered");
  reportFigure("totals (fault tests)", {
    sent: sum("sent"),
    delivered,
    duplicatesSuppressed: sum("duplicatesSuppressed"),
    duplicateRate: round(sum("duplicatesSuppressed") / Math.max(1, delivered), 4),
  });
  writeFileSync(join(logDir, "figures.json"), `${JSON.stringify(figures, null, 2)}\n`);
  console.log(`[cluster] figures and logs: ${logDir}`);
}

/** What every fault test asserts once its traffic has settled. */
function expectNothingLost(scenario: Scenario, outcome: Outcome): void {
  expect(outcome.abandoned, "sends never acknowledged").toBe(0);
  expect(outcome.sent).toBeGreaterThan(0);
  expect(scenario.verify()).toEqual([]);
  expect(outcome.delivered).toBe(outcome.expected);
}

/** The Redis the nodes share, how it is brought up and down, and how it restarts empty. */
interface SharedRedis {
  name: string;
  /** Starts it if it is the suite's own, and returns its REDIS_URL. */
  start(): Promise<string>;
  /** Takes Redis away and brings it back empty; resolves once it serves again. */
  restartEmpty(): Promise<void>;
  stop(): Promise<void>;
  /** A Redis Cluster's own controls, for the faults only a cluster has. */
  cluster?: RedisCluster;
}

const machineRedis: SharedRedis = {
  name: "one Redis",
  start: async () => MACHINE_REDIS_URL,
  async restartEmpty() {
    await stopRedis();
    await sleep(2000);
    await startRedis();
  },
  stop: async () => {},
};

const ownCluster = new RedisCluster();
const redisCluster: SharedRedis = {
  name: "a Redis Cluster",
  async start() {
    await ownCluster.start();
    return ownCluster.url;
  },
  async restartEmpty() {
    await ownCluster.restartEmpty();
  },
  stop: () => ownCluster.stop(),
  cluster: ownCluster,
};

describe.each([machineRedis, redisCluster])("three nodes behind HAProxy on $name", (redis) => {
  let cluster: Cluster;
  /** Figures are reported per Redis. */
  const report = (name: string, data: Record<string, unknown>) => reportFigure(`${name} (${redis.name})`, data);

  beforeAll(async () => {
    await ensureServicesUp();
    cluster = new Cluster(await redis.start());
    await cluster.start(3);
  }, 120_000);

  afterAll(async () => {
    try {
      // Shutting down is not under test here (the SIGTERM test is), but a node that fails to exit cleanly is reported.
      const unclean = await cluster.stop();
      figures["nodes not exiting cleanly at teardown"] = unclean.length;
      for (const report of unclean) console.log(`[cluster] ${report}`);
    } finally {
      await redis.stop();
      await ensureServicesUp();
    }
  }, 60_000);

  // Each test starts from three serving nodes, whatever the previous one left (a failed test may leave a node down).
  beforeEach(async () => {
    const dead = cluster.nodes.filter((node) => !node.running);
    if (dead.length === 0) return;
    console.log(`[cluster] restarting ${dead.map((n) => n.id).join(", ")} left down by the previous test`);
    await Promise.all(dead.map((node) => node.start()));
    await cluster.waitAllUp();
  }, 90_000);

  it("answers the probe and metrics paths the deployment files use, on every node and through HAProxy", async () => {
    for (const url of [...cluster.nodes.map((node) => node.url), cluster.lbUrl]) {
      for (const path of ["/livez", "/readyz"]) expect((await fetch(`${url}${path}`)).status, `${url}${path}`).toBe(200);
      const metrics = await fetch(`${url}/metrics`);
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toContain("# TYPE");
    }
  });

  it("delivers live across nodes, for every ordered pair of nodes", async () => {
    const n = cluster.nodes.length;
    const pairs = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => [i, j] as const))
      .flat()
      .filter(([i, j]) => i !== j);
    const perPair = 5;
    const latencies: number[] = [];

    await Promise.all(
      pairs.map(async ([i, j]) => {
        const from = cluster.nodes[i]!;
        const to = cluster.nodes[j]!;
        const senderUser = cluster.user(`pair${i}${j}-s`);
        const recipientUser = cluster.user(`pair${i}${j}-r`);
        const recipient = new Recipient(`${recipientUser}/dev0`, await cluster.token(recipientUser, "dev0"), cluster.lbUrl);
        await recipient.connect(to.url);
        try {
          const chatId = await cluster.createChat(from.url, senderUser, [recipientUser]);
          // Placement is what Redis says it is.
          expect(await cluster.presenceOf(await cluster.deviceKey(recipientUser, "dev0"))).toBe(to.id);
          const sender = new Sender(senderUser, await cluster.token(senderUser, "phone"), from.url);
          const acks: Ack[] = [];
          for (let k = 0; k < perPair; k++) acks.push((await sender.send(chatId, `m${k}`))!);
          await waitFor(`${from.id} → ${to.id} live`, () => recipient.hasMessages(acks.map((a) => a.messageId)), 10_000, 20);
          // Live: on the first stream, after its backlog, with no reconnect.
          expect(recipient.streams).toHaveLength(1);
          for (const ack of acks) {
            const got = [...recipient.received.values()].find((m) => m.messageId === ack.messageId)!;
            expect(got.stream).toBe(0);
            expect(got.at).toBeGreaterThanOrEqual(recipient.drainedAt[0]!);
            latencies.push(got.at - ack.startedAt);
          }
          expect(recipient.duplicatesOnOneStream).toEqual([]);
        } finally {
          recipient.stop();
        }
      }),
    );
    report("cross-node", {
      pairs: pairs.length,
      messages: pairs.length * perPair,
      latencyMsP50: percentile(latencies, 50),
      latencyMsP99: percentile(latencies, 99),
      latencyMsMax: Math.max(...latencies),
    });
  });

  it("carries receipts and typing between devices on different nodes", async () => {
    const [alice, bob] = [cluster.user("receipts-a"), cluster.user("receipts-b")];
    const device = async (userId: string, deviceName: string, node: number) => {
      const opened = ConnectDevice.open(cluster.nodes[node]!.url, await cluster.token(userId, deviceName));
      await opened.waitForDrained();
      return opened;
    };
    const alicePhone = await device(alice, "phone", 0);
    const bobPhone = await device(bob, "phone", 1);
    const bobLaptop = await device(bob, "laptop", 2);
    try {
      const chatId = await cluster.createChat(cluster.nodes[0]!.url, alice, [bob]);
      const sent = await alicePhone.command({ case: "sendMessage", value: { chatId, clientMessageId: "m1", text: "hi" } });
      expect(sent.outcome.case).toBe("sendMessage");
      await bobPhone.waitForMessages(1);

      // Bob's phone (node 1) acks: Alice's phone (node 0) sees it delivered.
      bobPhone.ackAll();
      await alicePhone.until(() => alicePhone.receiptsIn(chatId).get(bob)?.deliveredSeq === 1n, "delivered across nodes");
      // Bob types on his phone: Alice sees it; his laptop (node 2), his own device, does not.
      await bobPhone.command({ case: "setTyping", value: { chatId, typing: true } });
      await alicePhone.until(() => alicePhone.typingIn(chatId).includes(bob), "typing across nodes");
      // Bob reads on his phone: Alice sees it read, and his laptop sees his own read (its unread count clears).
      await bobPhone.command({ case: "markRead", value: { chatId, seq: 1n } });
      await alicePhone.until(() => alicePhone.receiptsIn(chatId).get(bob)?.readSeq === 1n, "read across nodes");
      await bobLaptop.until(() => bobLaptop.receiptsIn(chatId).get(bob)?.readSeq === 1n, "own read on another node");
      expect(bobLaptop.typingUpdates).toEqual([]);
      expect(bobPhone.receiptUpdates.filter((r) => r.userId === bob)).toEqual([]);
    } finally {
      for (const d of [alicePhone, bobPhone, bobLaptop]) d.disconnect();
    }
  });

  it("loses nothing acknowledged when a node is killed with SIGKILL mid-traffic", async () => {
    const victim = 1;
    const scenario = new Scenario(cluster, "kill", { senders: 3, recipientUsers: 3, devicesPerUser: 2 });
    try {
      await scenario.setUp();
      const displaced = scenario.on(victim);
      expect(displaced.length).toBeGreaterThan(0);
      scenario.start();
      await sleep(2500);

      const killedAt = Date.now();
      cluster.nodes[victim]!.signal("SIGKILL");
      await cluster.nodes[victim]!.exit();
      const backAt = await Promise.all(displaced.map((r) => r.waitLive(killedAt)));
      await sleep(3000);
      await scenario.stop();
      const outcome = await scenario.settle();

      // The displaced devices came back through HAProxy, to the surviving nodes.
      for (const r of displaced) {
        expect(r.ends[0]!.code, r.name).not.toBe(undefined);
        expect(r.streams.length, r.name).toBeGreaterThan(1);
      }
      expectNothingLost(scenario, outcome);
      report("kill -9", {
        ...outcome,
        displacedDevices: displaced.length,
        displacedEndCodes: displaced.map((r) => Code[r.ends[0]!.code!]),
        recoveryMsAllDevicesLive: Math.max(...backAt) - killedAt,
      });
    } finally {
      scenario.close();
      // Back to three nodes for the tests that follow.
      if (!cluster.nodes[victim]!.running) {
        const restartAt = Date.now();
        await cluster.nodes[victim]!.start();
        await cluster.waitAllUp();
        figures["node restart to UP in HAProxy (ms)"] = Date.now() - restartAt;
      }
    }
  });

  /**
   * Runs traffic through a Redis fault (`fault` resolves once Redis serves again) and checks that sends were
   * acknowledged throughout, no stream ended, live delivery across nodes came back by itself and nothing was lost.
   */
  async function throughRedisFault(
    label: string,
    tag: string,
    fault: () => Promise<Record<string, unknown>>,
  ): Promise<void> {
    const scenario = new Scenario(cluster, tag, { senders: 3, recipientUsers: 3, devicesPerUser: 2 });
    // A probe pair pinned to two nodes shows when live hand-off between nodes works again.
    const probeFrom = cluster.nodes[0]!;
    const probeTo = cluster.nodes[2]!;
    const probeUser = cluster.user("probe-s");
    const watchUser = cluster.user("probe-r");
    const watcher = new Recipient(`${watchUser}/dev0`, await cluster.token(watchUser, "dev0"), cluster.lbUrl);
    try {
      await scenario.setUp();
      await watcher.connect(probeTo.url);
      const probeChat = await cluster.createChat(probeFrom.url, probeUser, [watchUser]);
      const probe = new Sender(probeUser, await cluster.token(probeUser, "phone"), probeFrom.url);
      const watcherKey = await cluster.deviceKey(watchUser, "dev0");

      scenario.start();
      await sleep(2000);
      const downAt = Date.now();
      const faultFigures = await fault();
      const upAt = Date.now();

      // Probes until one arrives live on the watcher's first stream.
      let resumedAt: number | undefined;
      const probeIds = new Set<string>();
      for (let k = 0; resumedAt === undefined && Date.now() - upAt < 20_000; k++) {
        const ack = await probe.send(probeChat, `probe-${k}`);
        if (ack) probeIds.add(ack.messageId);
        const live = [...watcher.received.values()].find((m) => probeIds.has(m.messageId) && m.stream === 0);
        if (live) resumedAt = live.at;
        else await sleep(100);
      }
      await waitFor("the watcher's presence to be back", async () => (await cluster.presenceOf(watcherKey)) === probeTo.id, 15_000);
      const presenceBackAt = Date.now();
      await sleep(2000);
      await scenario.stop();

      // Redis going away ended no device's stream; sends kept being acknowledged while it was down.
      for (const r of [...scenario.recipients, watcher]) expect(r.streams, r.name).toHaveLength(1);
      const ackedWhileDown = scenario.acks.filter((a) => a.ackedAt > downAt && a.ackedAt < upAt).length;
      expect(ackedWhileDown).toBeGreaterThan(0);
      expect(resumedAt, "live delivery across nodes never resumed").toBeDefined();

      const outcome = await scenario.settle();
      expectNothingLost(scenario, outcome);
      // And live: nothing waited for a reconnect to come out of the inbox.
      expect(outcome.missingBeforeReconnect, "events that reached connected devices only on their next connect").toBe(0);
      report(label, {
        ...outcome,
        ...faultFigures,
        redisDownMs: upAt - downAt,
        ackedWhileRedisDown: ackedWhileDown,
        recoveryMsLiveAcrossNodes: resumedAt! - upAt,
        presenceBackWithinMs: presenceBackAt - upAt,
      });
    } finally {
      scenario.close();
      watcher.stop();
    }
  }

  it("keeps every acknowledged message and resumes live delivery by itself when Redis restarts empty", async () => {
    try {
      await throughRedisFault("redis restart", "redis", async () => {
        await redis.restartEmpty();
        return {};
      });
    } finally {
      if (!redis.cluster) await startRedis();
    }
  });

  // Only a Redis Cluster has this fault: a primary dies and its replica takes over its slots and their channels.
  const own = redis.cluster;
  if (own) {
    it("keeps every acknowledged message and resumes by itself when a Redis primary is killed with kill -9", async () => {
      try {
        await throughRedisFault("redis primary kill -9", "redis-kill", async () => {
          await own.killPrimary(0);
          return { redisFailoverMs: await own.waitForFailover() };
        });
      } finally {
        await own.recover();
      }
    });
  }

  it("stores each message exactly once when Postgres restarts mid-traffic and clients retry", async () => {
    const scenario = new Scenario(cluster, "pg", { senders: 6, recipientUsers: 3, devicesPerUser: 2 });
    try {
      await scenario.setUp();
      scenario.start();
      await sleep(2000);
      const downAt = Date.now();
      await stopPostgres();
      const stoppedAt = Date.now();
      await sleep(3000);
      await startPostgres();
      const upAt = Date.now();
      await waitFor("a send acknowledged after Postgres is back", () => scenario.traffic.firstAckAfter(upAt) !== undefined, 30_000, 50);
      const recoveredAt = scenario.traffic.firstAckAfter(upAt)!;
      await sleep(2000);
      await scenario.stop();

      // A dependency's restart must not take the nodes down with it.
      for (const node of cluster.nodes) expect(node.running, `${node.id} died:\n${node.tail(12)}`).toBe(true);
      const { failures, samples } = scenario.traffic.stats;
      expect(failures.Unavailable ?? 0, "sends answered UNAVAILABLE while Postgres was down").toBeGreaterThan(0);
      // Retrying is safe only if failures say so: nothing but UNAVAILABLE (and the client's own deadline).
      const unexpected = Object.keys(failures).filter((code) => !["Unavailable", "DeadlineExceeded"].includes(code));
      expect(unexpected.map((code) => `${code}: ${samples[code]}`)).toEqual([]);

      const outcome = await scenario.settle();
      expectNothingLost(scenario, outcome);

      // Stored exactly once: one row per acknowledged send, seqs 1..n without gaps, the seqs the senders were told.
      const [row] = await cluster.sql`
        SELECT count(*)::int AS rows, count(DISTINCT seq)::int AS seqs, min(seq) AS min, max(seq) AS max,
               count(DISTINCT (sender_device_key, client_message_id))::int AS keys
          FROM messages WHERE chat_id = ${scenario.chatId} AND seq IS NOT NULL`;
      expect(row).toEqual({ rows: outcome.sent, seqs: outcome.sent, min: 1n, max: BigInt(outcome.sent), keys: outcome.sent });
      expect(new Set(scenario.acks.map((a) => a.seq)).size).toBe(outcome.sent);
      const retried = scenario.acks.filter((a) => a.attempts > 1).length;
      report("postgres restart", {
        ...outcome,
        postgresDownMs: upAt - downAt,
        stopTookMs: stoppedAt - downAt,
        sendsRetried: retried,
        messageRows: row!.rows,
        recoveryMsFirstAckAfterUp: recoveredAt - upAt,
      });
    } finally {
      scenario.close();
      await startPostgres();
    }
  });

  it("drains a node on SIGTERM: its streams end UNAVAILABLE and its devices resume elsewhere with nothing lost", async () => {
    const victim = 2;
    const scenario = new Scenario(cluster, "term", { senders: 3, recipientUsers: 3, devicesPerUser: 2 });
    try {
      await scenario.setUp();
      const displaced = scenario.on(victim);
      scenario.start();
      await sleep(2000);

      const termAt = Date.now();
      cluster.nodes[victim]!.signal("SIGTERM");
      const backAt = await Promise.all(displaced.map((r) => r.waitLive(termAt)));
      const exit = await cluster.nodes[victim]!.exit();
      const exitedAt = Date.now();
      expect(exit.code, cluster.nodes[victim]!.tail()).toBe(0);
      for (const r of displaced) {
        expect(r.ends[0]!.code, `${r.name}: ${r.ends[0]!.message}`).toBe(Code.Unavailable);
        const holder = await cluster.presenceOf(await deviceKeyOf(cluster, r));
        expect(cluster.nodeIndexById(holder), `${r.name} is held by ${holder}`).not.toBe(victim);
        expect(cluster.nodeIndexById(holder)).toBeGreaterThanOrEqual(0);
      }
      await sleep(2000);
      await scenario.stop();
      const outcome = await scenario.settle();
      expectNothingLost(scenario, outcome);
      report("SIGTERM drain", {
        ...outcome,
        displacedDevices: displaced.length,
        drainToExitMs: exitedAt - termAt,
        recoveryMsAllDevicesLive: Math.max(...backAt) - termAt,
      });
    } finally {
      scenario.close();
    }
  });
});

afterAll(() => writeFigures());

/** The recipient's device key, from its name "user/devN". */
function deviceKeyOf(cluster: Cluster, r: Recipient): Promise<string> {
  const [user, device] = r.name.split("/") as [string, string];
  return cluster.deviceKey(user, device);
}
