/**
 * A real Redis Cluster on loopback for the cluster suite: three primaries with one replica each, from the machine's
 * `redis-server` and `redis-cli` (`bash scripts/test-prereqs.sh cluster` installs them), on ports of its own, data in a
 * temp dir and nothing saved. Its faults are real: `kill -9` of a primary (its replica takes over once the others see
 * it failed, about cluster-node-timeout later) and the whole cluster restarted empty.
 *
 *   const redis = new RedisCluster();
 *   await redis.start();                          // redis.url: redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3
 *   await redis.primaries();                      // [{ port, pid, slots: ["0-5460"], replicas: [port] }, …]
 *   const killed = await redis.killPrimary(0);    // kill -9 of the primary that owns slot 0 (or give a port)
 *   const failoverMs = await redis.waitForFailover();
 *   await redis.recover();                        // the killed server back, now as its replacement's replica
 *   const downMs = await redis.restartEmpty();    // options: { downForMs, createAfterMs }
 *   await redis.stop();
 *
 * The servers die with the test process however it ends: they run under `setpriv --pdeathsig KILL` (vitest ends its
 * workers with SIGTERM, which skips exit hooks), and an exit hook kills them too. Each server logs to
 * test-results/redis-cluster/redis-PORT.log, outside test-results/cluster, which `Cluster.start` clears.
 */
import { execFile, spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { LoggedProcess, repoRoot, sleep, waitFor } from "./processes.js";

const run = promisify(execFile);

const SERVERS = 6;
const SLOTS = 16384;
/** How long a primary may be silent before the others count it failed; its replica is promoted about a second later. */
export const NODE_TIMEOUT_MS = 2000;

/** A server as the cluster sees it. */
export interface RedisClusterNode {
  port: number;
  /** Of the running process; undefined when it is not running. */
  pid: number | undefined;
}

export interface RedisClusterPrimary extends RedisClusterNode {
  /** Its slot ranges as CLUSTER NODES shows them, e.g. ["0-5460"]. */
  slots: string[];
  /** The ports of its replicas. */
  replicas: number[];
}

/** One redis-server in cluster mode, in the foreground, its output in its log file. */
class RedisServer extends LoggedProcess {
  constructor(
    readonly port: number,
    /** The cluster bus port, given explicitly: the default, port + 10000, would be in the ephemeral range. */
    readonly busPort: number,
    readonly dir: string,
    logDir: string,
  ) {
    super(join(logDir, `redis-${port}.log`));
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const args = [
      "--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir,
      "--cluster-enabled", "yes", "--cluster-port", String(this.busPort), "--cluster-config-file", "nodes.conf",
      "--cluster-node-timeout", String(NODE_TIMEOUT_MS),
      // A replica may take over whatever its lag: a fault test wants the failover, not the safety margin.
      "--cluster-replica-validity-factor", "0",
      // Nothing kept on disk (as the machine's Redis), and replicas synced at once rather than after the 5 s default.
      "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
      "--daemonize", "no", "--logfile", "",
    ];
    this.launch(...dieWithParent("redis-server", args), { PATH: process.env.PATH });
    try {
      await waitFor(`redis-server :${this.port} to answer`, async () => !this.running || (await ping(this.port)), 15_000, 50);
    } catch (error) {
      throw new Error(`${(error as Error).message}:\n${this.tail()}`);
    }
    if (!this.running) throw new Error(`redis-server :${this.port} exited while starting:\n${this.tail()}`);
  }

  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.exit();
  }
}

export class RedisCluster {
  private readonly servers: RedisServer[] = [];
  private readonly logDir: string;
  private dataDir = "";
  /** The primary killPrimary killed and its replicas, until waitForFailover sees one of them take over. */
  private killed: { port: number; replicas: number[]; at: number } | undefined;

  constructor(options: { logDir?: string } = {}) {
    this.logDir = options.logDir ?? join(repoRoot, "test-results", "redis-cluster");
  }

  /** The seed nodes as REDIS_URL names them: the three servers that start as primaries. */
  get url(): string {
    if (this.servers.length === 0) throw new Error("the Redis Cluster has not been started");
    return `redis+cluster://${this.servers.slice(0, 3).map((s) => `127.0.0.1:${s.port}`).join(",")}`;
  }

  /** Every server's port and pid, primaries and replicas alike. */
  get nodes(): RedisClusterNode[] {
    return this.servers.map((s) => ({ port: s.port, pid: s.running ? s.pid : undefined }));
  }

  /** Starts six servers, creates the cluster and resolves once every server sees all slots served and replicas synced. */
  async start(): Promise<void> {
    if (this.servers.length > 0) throw new Error("the Redis Cluster is already started");
    live.add(this);
    this.dataDir = await mkdtemp(join(tmpdir(), "palaver-redis-cluster-"));
    const ports = await freePortRange(SERVERS * 2);
    for (let i = 0; i < SERVERS; i++) {
      this.servers.push(new RedisServer(ports[i]!, ports[SERVERS + i]!, join(this.dataDir, `node${i + 1}`), this.logDir));
    }
    await Promise.all(this.servers.map((s) => s.start()));
    await this.create();
  }

  /** The primaries that serve slots, ordered by their first slot, as a running server sees them. */
  async primaries(): Promise<RedisClusterPrimary[]> {
    const view = await this.view();
    return view
      .filter((n) => n.primary && n.slots.length > 0)
      .sort((a, b) => firstSlot(a) - firstSlot(b))
      .map((n) => ({
        port: n.port,
        pid: this.server(n.port).running ? this.server(n.port).pid : undefined,
        slots: n.slots,
        replicas: view.filter((r) => r.primaryId === n.id).map((r) => r.port),
      }));
  }

  /**
   * Moves the slot of `key` (a key or a sharded channel) to another primary, as resharding does, with the key-less
   * slot needing no MIGRATE: IMPORTING on the target, MIGRATING on the owner, then the new owner told to every
   * primary. Returns the slot and the ports it moved between.
   */
  async moveSlotOf(key: string): Promise<{ slot: number; from: number; to: number }> {
    const primaries = await this.primaries();
    const slot = Number(await cli(primaries[0]!.port, "CLUSTER", "KEYSLOT", key));
    const owner = primaries.find((p) => p.slots.some((range) => inRange(slot, range)))!;
    const target = primaries.find((p) => p !== owner)!;
    const [ownerId, targetId] = await Promise.all([owner, target].map((p) => cli(p.port, "CLUSTER", "MYID")));
    await cli(target.port, "CLUSTER", "SETSLOT", String(slot), "IMPORTING", ownerId!);
    await cli(owner.port, "CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetId!);
    for (const p of primaries) await cli(p.port, "CLUSTER", "SETSLOT", String(slot), "NODE", targetId!);
    return { slot, from: owner.port, to: target.port };
  }

  /**
   * `kill -9` of a primary: `which` is an index into primaries() (0 is the one that owns slot 0) or a port. Returns it
   * as it was; waitForFailover then waits for one of its replicas to take its slots.
   */
  async killPrimary(which = 0): Promise<RedisClusterPrimary> {
    if (this.killed) throw new Error(`the primary on :${this.killed.port} was killed and waitForFailover not called`);
    const primaries = await this.primaries();
    const target = which < primaries.length ? primaries[which] : primaries.find((p) => p.port === which);
    if (!target) throw new Error(`no primary ${which} among ${primaries.map((p) => p.port).join(", ")}`);
    if (target.replicas.length === 0) throw new Error(`the primary on :${target.port} has no replica to take over`);
    this.killed = { port: target.port, replicas: target.replicas, at: Date.now() };
    await this.server(target.port).kill();
    return target;
  }

  /**
   * Resolves once a replica of the killed primary is a primary, every running server is `cluster_state:ok` and sees
   * every slot served by a running primary; returns the milliseconds from the kill.
   */
  async waitForFailover(timeoutMs = 30_000): Promise<number> {
    const killed = this.killed;
    if (!killed) throw new Error("no primary was killed");
    await waitFor(`a replica of :${killed.port} to take over`, async () => {
      const roles = await Promise.all(killed.replicas.map((port) => cli(port, "ROLE").catch(() => "")));
      return roles.some((role) => role.startsWith("master")) && (await this.settled(false));
    }, timeoutMs);
    this.killed = undefined;
    return Date.now() - killed.at;
  }

  /** Starts the servers that are down with their cluster config (a killed primary rejoins as a replica); waits for all. */
  async recover(timeoutMs = 30_000): Promise<void> {
    this.killed = undefined;
    await Promise.all(this.servers.filter((s) => !s.running).map((s) => s.start()));
    await waitFor("the Redis Cluster to take its servers back", () => this.settled(true), timeoutMs);
  }

  /**
   * The whole cluster restarted empty: every server killed, its data and cluster config wiped, started again on the
   * same ports and the cluster created anew (new node ids). Resolves when it is ok; returns the milliseconds it was
   * down. `downForMs` keeps the servers dead that much longer; `createAfterMs` leaves them up but not yet a cluster
   * (every slot unserved, as while an operator re-creates it) that long before the create.
   */
  async restartEmpty(options: { downForMs?: number; createAfterMs?: number } = {}): Promise<number> {
    const at = Date.now();
    this.killed = undefined;
    await Promise.all(this.servers.map((s) => s.kill()));
    await Promise.all(this.servers.map((s) => rm(s.dir, { recursive: true, force: true })));
    await sleep(options.downForMs ?? 0);
    await Promise.all(this.servers.map((s) => s.start()));
    await sleep(options.createAfterMs ?? 0);
    await this.create();
    return Date.now() - at;
  }

  /** Kills every server and removes the data. Safe to call more than once, or after a failed start; start may follow. */
  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.kill()));
    this.servers.length = 0;
    this.killed = undefined;
    live.delete(this);
    if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
    this.dataDir = "";
  }

  /** Every server's log tail, for a failure message. */
  tails(lines = 15): string {
    return this.servers.map((s) => `== ${s.logFile}\n${s.tail(lines)}`).join("\n");
  }

  /** `redis-cli --cluster create` on the six servers (the first three become primaries), then waits until settled. */
  private async create(timeoutMs = 30_000): Promise<void> {
    const addresses = this.servers.map((s) => `127.0.0.1:${s.port}`);
    const args = ["--cluster", "create", ...addresses, "--cluster-replicas", "1", "--cluster-yes"];
    const log = join(this.logDir, "redis-cli-create.log");
    mkdirSync(this.logDir, { recursive: true });
    appendFileSync(log, `--- ${new Date().toISOString()} redis-cli ${args.join(" ")}\n`);
    try {
      const { stdout, stderr } = await run("redis-cli", args, { timeout: timeoutMs });
      appendFileSync(log, stdout + stderr);
    } catch (error) {
      const { stdout = "", stderr = "" } = error as { stdout?: string; stderr?: string };
      appendFileSync(log, stdout + stderr);
      throw new Error(`redis-cli --cluster create failed: ${(error as Error).message}\n${stdout}${stderr}`);
    }
    try {
      await waitFor("the Redis Cluster to settle", () => this.settled(true), timeoutMs);
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${this.tails(5)}`);
    }
  }

  /**
   * Every running server says `cluster_state:ok` with all slots ok, knows all six servers and no other, sees each slot
   * owner as a running, unfailed primary, and agrees with the others on who owns which slots and replicates whom. With
   * `synced`, also: every server runs, each is a primary with slots or a replica of one, and every replica's link is up.
   */
  private async settled(synced: boolean): Promise<boolean> {
    const running = this.servers.filter((s) => s.running);
    if (synced && running.length < this.servers.length) return false;
    const layouts = new Set<string>();
    for (const s of running) {
      const info = fields(await cli(s.port, "CLUSTER", "INFO"));
      if (info.cluster_state !== "ok" || info.cluster_slots_ok !== String(SLOTS)) return false;
      const view = parseNodes(await cli(s.port, "CLUSTER", "NODES"));
      if (view.length !== this.servers.length || view.some((n) => !this.servers.some((o) => o.port === n.port))) return false;
      for (const n of view) {
        const up = this.server(n.port).running;
        if (n.flags.includes("handshake") || n.flags.includes("noaddr")) return false;
        if (up && !n.flags.includes("myself") && n.link !== "connected") return false;
        if (n.slots.length > 0 && (!n.primary || !up || n.failing)) return false;
        if (synced && !(n.primary ? n.slots.length > 0 : view.some((p) => p.id === n.primaryId && p.slots.length > 0))) return false;
      }
      const portOf = (id: string | undefined) => view.find((n) => n.id === id)?.port;
      layouts.add(view.map((n) => `${n.port}:${n.primary ? n.slots.join(",") : `>${portOf(n.primaryId)}`}`).sort().join(" "));
      if (layouts.size > 1) return false;
      if (synced && !view.find((n) => n.flags.includes("myself"))!.primary) {
        if (fields(await cli(s.port, "INFO", "replication")).master_link_status !== "up") return false;
      }
    }
    return true;
  }

  /** CLUSTER NODES from the first running server that answers. */
  private async view(): Promise<ClusterNodeLine[]> {
    for (const s of this.servers.filter((s) => s.running)) {
      const out = await cli(s.port, "CLUSTER", "NODES").catch(() => "");
      if (out.trim()) return parseNodes(out);
    }
    throw new Error("no Redis Cluster server answers");
  }

  private server(port: number): RedisServer {
    const server = this.servers.find((s) => s.port === port);
    if (!server) throw new Error(`no server of this Redis Cluster on :${port}`);
    return server;
  }
}

/** Clusters whose servers must not outlive the test process. */
const live = new Set<RedisCluster>();
process.once("exit", () => {
  for (const cluster of live) {
    for (const node of cluster.nodes) {
      try {
        if (node.pid) process.kill(node.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
});

/** The command under `setpriv --pdeathsig KILL` where util-linux has it: killed when this process dies, even by SIGKILL. */
function dieWithParent(command: string, args: string[]): [string, string[]] {
  hasSetpriv ??= spawnSync("setpriv", ["--version"]).status === 0;
  return hasSetpriv ? ["setpriv", ["--pdeathsig", "KILL", command, ...args]] : [command, args];
}
let hasSetpriv: boolean | undefined;

async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args], { timeout: 3000 });
  return stdout;
}

async function ping(port: number): Promise<boolean> {
  return (await cli(port, "PING").catch(() => "")).trim() === "PONG";
}

/** `key:value` lines (INFO, CLUSTER INFO). */
function fields(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(":");
    if (at > 0) out[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return out;
}

interface ClusterNodeLine {
  id: string;
  port: number;
  flags: string[];
  primary: boolean;
  /** PFAIL or FAIL in this server's view. */
  failing: boolean;
  primaryId: string | undefined;
  link: string;
  slots: string[];
}

/** CLUSTER NODES: `id ip:port@cport[,hostname] flags primary-id ping-sent pong-recv epoch link slot…`. */
function parseNodes(text: string): ClusterNodeLine[] {
  return text
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => {
      const [id, address, flags, primaryId, , , , link, ...slots] = line.trim().split(" ");
      const flagList = flags!.split(",");
      return {
        id: id!,
        port: Number(address!.split("@")[0]!.split(":").at(-1)),
        flags: flagList,
        primary: flagList.includes("master"),
        failing: flagList.includes("fail") || flagList.includes("fail?"),
        primaryId: primaryId === "-" ? undefined : primaryId,
        link: link!,
        // Importing or migrating slots show as [slot->-id]; only ranges and single slots are owned.
        slots: slots.filter((slot) => !slot.startsWith("[")),
      };
    });
}

function firstSlot(node: ClusterNodeLine): number {
  return Math.min(...node.slots.map((range) => Number(range.split("-")[0])));
}

/**
 * `count` consecutive ports free on 127.0.0.1, below the ephemeral range: a port there is never taken as the source
 * port of an outgoing connection (such as a client reconnecting) while its server is down for a restart.
 */
async function freePortRange(count: number): Promise<number[]> {
  let ephemeralLow = 32768;
  try {
    ephemeralLow = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || ephemeralLow;
  } catch {
    // Not Linux: keep the usual default.
  }
  const low = 20000;
  const high = Math.max(low + count + 1, ephemeralLow) - count;
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = low + Math.floor(Math.random() * (high - low));
    const ports = Array.from({ length: count }, (_, i) => base + i);
    let free = true;
    for (const port of ports) if (!(free = await canListen(port))) break;
    if (free) return ports;
  }
  throw new Error(`found no ${count} free consecutive ports between ${low} and ${high + count}`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Whether a slot lies in a CLUSTER NODES range ("0-5460" or "42"). */
function inRange(slot: number, range: string): boolean {
  const [first, last = first] = range.split("-").map(Number);
  return slot >= first! && slot <= last!;
}
