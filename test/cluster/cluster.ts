/**
 * Three Palaver nodes and HAProxy on loopback, on a fresh database of the machine's Postgres and its Redis, as the
 * cluster suite drives them. Logs go to test-results/cluster/ (one file per process) so CI can show them.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import postgres from "postgres";
import { connectRedis, type RedisLink } from "../../src/adapters/redis/connect.js";
import { mintToken } from "../../src/auth/tokens.js";
import { grpcChatClient } from "../../src/client/device.js";
import { renderHaproxyConfig } from "./haproxy.js";
import { freePort, HaproxyProcess, PalaverNode, repoRoot, sleep, waitFor } from "./processes.js";

const ADMIN_URL = process.env.CLUSTER_ADMIN_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
/** The machine's Redis, unless the suite gives a Redis Cluster's URL. */
export const MACHINE_REDIS_URL = process.env.CLUSTER_REDIS_URL ?? "redis://127.0.0.1:6379";

export const logDir = join(repoRoot, "test-results", "cluster");

export class Cluster {
  readonly nodes: PalaverNode[] = [];

  constructor(private readonly redisUrl = MACHINE_REDIS_URL) {}

  haproxy!: HaproxyProcess;
  /** For assertions on the tables; reconnects by itself after Postgres restarts. */
  sql!: postgres.Sql<{ bigint: bigint }>;
  /** For looking at presence records; commands fail at once while Redis is down, and it reconnects by itself. */
  private redis: RedisLink | undefined;
  private readonly secret = randomBytes(32).toString("base64url");
  private readonly run = randomBytes(3).toString("hex");
  private dataDir = "";
  private dbName = "";

  /** Where clients connect when they do not pick a node: HAProxy. */
  get lbUrl(): string {
    return this.haproxy.url;
  }

  async start(size = 3): Promise<void> {
    rmSync(logDir, { recursive: true, force: true });
    mkdirSync(logDir, { recursive: true });
    this.dataDir = await mkdtemp(join(tmpdir(), "palaver-cluster-"));

    this.dbName = `palaver_cluster_${Date.now()}_${process.pid}`;
    const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`CREATE DATABASE ${this.dbName}`);
    } finally {
      await admin.end();
    }
    const databaseUrl = withDatabase(ADMIN_URL, this.dbName);
    this.sql = postgres(databaseUrl, { max: 2, types: { bigint: postgres.BigInt }, onnotice: () => {} });

    for (let i = 1; i <= size; i++) {
      this.nodes.push(
        new PalaverNode({
          // Unique per run: node channels and presence values never meet a previous run's.
          nodeId: `c${this.run}-n${i}`,
          port: await freePort(),
          databaseUrl,
          redisUrl: this.redisUrl,
          authSecret: this.secret,
          dataDir: join(this.dataDir, `n${i}`),
          logDir,
        }),
      );
    }
    // All at once, as a deployment starts them: migrations and partition creation must cope with the race.
    await Promise.all(this.nodes.map((node) => node.start()));

    const adminSocket = join(this.dataDir, "haproxy.sock");
    const configFile = join(logDir, "haproxy.cfg");
    const port = await freePort();
    writeFileSync(
      configFile,
      renderHaproxyConfig({
        port,
        statsPort: await freePort(),
        adminSocket,
        nodes: this.nodes.map((node, i) => ({ name: `node${i + 1}`, port: node.options.port })),
      }),
    );
    this.haproxy = new HaproxyProcess(configFile, join(logDir, "haproxy.log"), port, adminSocket);
    await this.haproxy.start();
    await this.waitAllUp();
  }

  /** Waits until HAProxy's health checks see every running node UP (and every stopped one not UP). */
  async waitAllUp(timeoutMs = 30_000): Promise<void> {
    await waitFor("haproxy to see the running nodes up", async () => {
      const states = await this.haproxy.serverStates();
      return this.nodes.every((node, i) => states.get(`node${i + 1}`)?.startsWith("UP") === node.running);
    }, timeoutMs, 200);
  }

  token(userId: string, deviceName: string): Promise<string> {
    return mintToken(new TextEncoder().encode(this.secret), { userId, deviceName });
  }

  /** A user id unique to this run. */
  user(name: string): string {
    return `${name}-${this.run}-${randomBytes(2).toString("hex")}`;
  }

  /** Creates a chat through `url` as `creator` with the other participants; returns its id. */
  async createChat(url: string, creator: string, others: string[]): Promise<string> {
    const client = grpcChatClient(url, await this.token(creator, "phone"));
    const res = await client.createChat({ name: "cluster test", participantUserIds: others });
    return res.chat!.chatId;
  }

  async deviceKey(userId: string, deviceName: string): Promise<string> {
    const rows = await this.sql`SELECT device_key FROM devices WHERE user_id = ${userId} AND device_name = ${deviceName}`;
    if (rows.length === 0) throw new Error(`no device ${userId}/${deviceName}`);
    return String(rows[0]!.device_key);
  }

  /** The node presence says holds the device (the record RedisPresence writes: `node/instance`), or null. */
  async presenceOf(deviceKey: string): Promise<string | null> {
    this.redis ??= await connectRedis(this.redisUrl, { nodeId: `test-${this.run}`, logger: pino({ level: "silent" }) });
    const holder = await this.redis.get(`palaver:dev:{${deviceKey}}`);
    return holder === null ? null : holder.slice(0, holder.lastIndexOf("/"));
  }

  nodeIndexById(nodeId: string | null): number {
    return this.nodes.findIndex((node) => node.id === nodeId);
  }

  /** CPU time (user + system, ms) each node process has used so far, from /proc. */
  cpuMs(): number[] {
    return this.nodes.map((node) => {
      try {
        const fields = readFileSync(`/proc/${node.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
        // utime and stime are fields 14 and 15 of stat (11 and 12 after the command name), in clock ticks (100/s).
        return (Number(fields[11]) + Number(fields[12])) * 10;
      } catch {
        return 0;
      }
    });
  }

  /** Every log's tail, for a failure message. */
  tails(): string {
    return [...this.nodes, this.haproxy].filter(Boolean).map((p) => `== ${p.logFile}\n${p.tail(15)}`).join("\n");
  }

  /** Stops everything; returns the nodes that did not exit cleanly on SIGTERM (with their log tails). */
  async stop(): Promise<string[]> {
    this.haproxy?.signal("SIGTERM");
    const running = this.nodes.filter((node) => node.running);
    for (const node of running) node.signal("SIGTERM");
    await Promise.race([Promise.all(running.map((n) => n.exit())), sleep(15_000)]);
    for (const node of this.nodes) node.signal("SIGKILL");
    const exits = await Promise.all(running.map((n) => n.exit()));
    await this.haproxy?.exit();
    const unclean = running.flatMap((node, i) =>
      exits[i]!.code === 0 ? [] : [`${node.id} exited with ${exits[i]!.code ?? exits[i]!.signal}:\n${node.tail(20)}`],
    );
    await this.sql?.end({ timeout: 2 }).catch(() => {});
    await this.redis?.close();
    this.redis = undefined;
    if (this.dbName) {
      const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
      await admin.unsafe(`DROP DATABASE IF EXISTS ${this.dbName} WITH (FORCE)`).catch(() => {});
      await admin.end();
    }
    if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
    return unclean;
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
