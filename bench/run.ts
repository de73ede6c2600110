/**
 * `npm run bench`: Palaver's delivery benchmarks, driven by our own Go load generator (bench/loadgen; its CLI, plan and
 * result are in bench/loadgen/README.md). For each scenario it starts the server as a child process on a fresh
 * database, creates the chats and registers the devices through the API, mints tokens, writes a plan, runs one or
 * several loadgen processes on it, merges their results and writes bench/results/<date>-<scenario>.json; at the end it
 * renders bench/results/report.md with its charts from the newest run's files (bench/report.ts). With Postgres it first
 * measures the database alone on the same write pattern (bench/pg-ceiling.ts), so the ramp's knee reads as a share of
 * that ceiling.
 *
 *   npm run bench                                        quick profile, every scenario (under 5 minutes)
 *   npm run bench -- --profile full                      the performance issue's sizes (10,000 devices)
 *   npm run bench -- --profile ci                        every scenario, tiny (npm run bench:ci; fails only on a
 *                                                        broken script or a lost message, never on a figure)
 *   npm run bench -- --scenario steady,ramp              some scenarios (steady receipts ramp groups100 drain
 *                                                        connections connect churn)
 *   npm run bench -- --nodes 2                           several server nodes (needs DATABASE_URL and REDIS_URL)
 *   npm run bench -- --nodes 2 --proxy haproxy           the nodes behind HAProxy (leastconn, TCP): every device
 *                                                        connects to it, and its CPU is reported apart (bench/haproxy.ts)
 *   npm run bench -- --shards 2                          two loadgen processes on this host, merged
 *   npm run bench -- --devices-per-conn 50               devices sharing one HTTP/2 connection (default 1, as phones)
 *   --out DIR                                            results and report elsewhere than bench/results
 *   --report-only                                        re-render DIR's report.md from its newest run
 *
 * Environment: DATABASE_URL (unset: PGlite in a temporary directory; set: a fresh database per scenario on that
 * server, dropped afterwards), REDIS_URL (with --nodes > 1), BENCH_CPU_PROF=1 (the server writes V8 CPU profiles into
 * <out>/profiles/), BENCH_PLAN='{"rate":500}' (overrides fields of each scenario's plan for one experiment;
 * '{"markRead":true}' makes groups100's receivers mark read, stored as <date>-groups100reads.json), PALAVER_TOOLS_DIR
 * (where the loadgen binary is cached; default ~/.cache/palaver/bin).
 *
 * With DATABASE_URL, steady, receipts and groups100 also count the database's row writes per stored message, from
 * Postgres's own statistics (pg_stat_user_tables; see STATS_SETTLE_SECONDS and statsReader).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream, existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { cpus, homedir, tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { createInterface } from "node:readline";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import postgres from "postgres";
import { AccountService } from "../gen/palaver/chat/v1/account_pb.js";
import { ChatService } from "../gen/palaver/chat/v1/chat_pb.js";
import { ensurePartitions, startOfUtcDay } from "../src/adapters/sql/partitions.js";
import { createPostgresDriver } from "../src/adapters/sql/postgres-driver.js";
import { mintToken } from "../src/auth/tokens.js";
import { DAY_MS } from "../src/ports/clock.js";
import { buildServer, type HaproxyProcess, NODE_ARGS, SERVER_ENTRY } from "../test/cluster/processes.js";
import { pidsNamed, postmasterPids, treeCpuSeconds } from "./cpu.js";
import { prepareHaproxy, sizeHaproxy, startHaproxy } from "./haproxy.js";
import { type CeilingResult, createDatabase, dropDatabase, measureCeiling } from "./pg-ceiling.js";
import {
  type DbWrites,
  FORMAT,
  KNEE_P99_MS,
  cpuBreakdown,
  type LoadgenPoint,
  type LoadgenResult,
  type PlanShape,
  type ProxyInfo,
  type ScenarioResult,
  type Step,
  held,
  kneeOf,
  measuredPoint,
  newestRun,
  renderReport,
  scenarioKey,
  scenarioLabel,
  sentPoints,
  type TableWrites,
} from "./report.js";

const ROOT = join(dirname(import.meta.filename), "..");
const RESULTS = join(ROOT, "bench", "results");
const SCENARIOS = ["steady", "receipts", "ramp", "groups100", "drain", "connections", "connect", "churn"] as const;
type Scenario = (typeof SCENARIOS)[number];
type Profile = "quick" | "full" | "ci";

/**
 * What one scenario runs with. Each group is a chat of groupUsers users × devicesPerUser devices; one device per
 * group (user 0's first) sends, every other device of the group receives.
 */
interface Plan {
  groups: number;
  groupUsers: number;
  devicesPerUser: number;
  /** A fixed rate (steady, groups100, churn): sends/s, after warmupSeconds at the same rate tagged "warmup". */
  rate?: number;
  /** Seconds at the (first) rate tagged "warmup" (JIT, pools, caches, late connects), left out of the figures. */
  warmupSeconds?: number;
  sendSeconds?: number;
  /** ramp: a warm-up at the first rate, then one step per rate, stepSeconds each, until a step's p99 passes 500 ms. */
  rampRates?: number[];
  stepSeconds?: number;
  /** Streams stay open this long after sending ends (late deliveries; the idle hold of connections). */
  holdSeconds: number;
  /** drain: events stored for each device while it is offline. */
  backlog?: number;
  /** connect: devices the server has never seen (not registered beforehand). */
  newDevices?: boolean;
  churn?: { everySeconds: number; fraction: number };
  /** From starting the load generator to the send clock's t0 (time for every device to connect). */
  startDelaySeconds?: number;
  /** How long a device may hold an ack to batch it; ACK_DELAY_MS unless an experiment sets it. */
  ackDelayMs?: number;
  /**
   * Every receiving device marks its chat read as messages arrive (a mark_read per message, at most one unanswered per
   * device, with the newest seq: bench/loadgen/README.md). receipts sets it; BENCH_PLAN='{"markRead":true}' sets it
   * for another scenario (groups100: do receipts multiply a 100-member group's writes?).
   */
  markRead?: boolean;
  /**
   * Makes the database look as a deployment's does after this many days (at most RETENTION_DAYS): a day partition of
   * inbox and messages for each past day, with PAST_DAY_ENTRIES inbox entries in each that nobody acks (devices that
   * stopped connecting). A bench database otherwise has today's partitions and those made ahead only, so a statement
   * that looks in every partition pays less than it would in production.
   */
  pastDays?: number;
}

const fivePairs = { groupUsers: 5, devicesPerUser: 2 } as const;
const hundreds = { groupUsers: 100, devicesPerUser: 1 } as const;

const PLANS: Record<Profile, Record<Scenario, Plan>> = {
  ci: {
    steady: { groups: 2, ...fivePairs, rate: 5, warmupSeconds: 1, sendSeconds: 3, holdSeconds: 2 },
    receipts: { groups: 2, ...fivePairs, rate: 5, warmupSeconds: 1, sendSeconds: 3, holdSeconds: 2, markRead: true },
    ramp: { groups: 2, ...fivePairs, rampRates: [5, 10], warmupSeconds: 1, stepSeconds: 2, holdSeconds: 2 },
    groups100: { groups: 1, ...hundreds, rate: 2, warmupSeconds: 1, sendSeconds: 3, holdSeconds: 2 },
    drain: { groups: 2, ...fivePairs, backlog: 20, holdSeconds: 1 },
    connections: { groups: 3, ...fivePairs, holdSeconds: 2 },
    connect: { groups: 3, ...fivePairs, newDevices: true, holdSeconds: 1 },
    churn: { groups: 2, ...fivePairs, rate: 5, warmupSeconds: 1, sendSeconds: 4, holdSeconds: 3, churn: { everySeconds: 1, fraction: 0.2 } },
  },
  quick: {
    // 2,000 devices at 250 msgs/s: the performance issue's first row.
    steady: { groups: 200, ...fivePairs, rate: 250, warmupSeconds: 3, sendSeconds: 12, holdSeconds: 3 },
    // steady's plan, every receiving device marking read as messages arrive.
    receipts: { groups: 200, ...fivePairs, rate: 250, warmupSeconds: 3, sendSeconds: 12, holdSeconds: 3, markRead: true },
    ramp: { groups: 200, ...fivePairs, rampRates: [100, 200, 300, 400, 500, 750, 1000], warmupSeconds: 2, stepSeconds: 3, holdSeconds: 3 },
    groups100: { groups: 10, ...hundreds, rate: 20, warmupSeconds: 3, sendSeconds: 10, holdSeconds: 3 },
    drain: { groups: 100, ...fivePairs, backlog: 50, holdSeconds: 1 }, // PGlite fills ~170 sends/s: under 5 min in all
    connections: { groups: 200, ...fivePairs, holdSeconds: 5 },
    connect: { groups: 200, ...fivePairs, newDevices: true, holdSeconds: 1 },
    churn: { groups: 100, ...fivePairs, rate: 100, warmupSeconds: 2, sendSeconds: 10, holdSeconds: 4, churn: { everySeconds: 1, fraction: 0.05 } },
  },
  full: {
    // The performance issue's sizes: 10,000 devices, groups of 5 users × 2 devices, one sending device per group.
    steady: { groups: 1000, ...fivePairs, rate: 1000, warmupSeconds: 10, sendSeconds: 60, holdSeconds: 5 },
    receipts: { groups: 1000, ...fivePairs, rate: 1000, warmupSeconds: 10, sendSeconds: 60, holdSeconds: 5, markRead: true },
    ramp: {
      groups: 1000,
      ...fivePairs,
      rampRates: [100, 200, 300, 400, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000],
      warmupSeconds: 5,
      stepSeconds: 8,
      holdSeconds: 5,
    },
    groups100: { groups: 50, ...hundreds, rate: 50, warmupSeconds: 5, sendSeconds: 30, holdSeconds: 5 },
    drain: { groups: 500, ...fivePairs, backlog: 100, holdSeconds: 2 },
    connections: { groups: 1000, ...fivePairs, holdSeconds: 15 },
    connect: { groups: 1000, ...fivePairs, newDevices: true, holdSeconds: 2 },
    churn: { groups: 500, ...fivePairs, rate: 250, warmupSeconds: 5, sendSeconds: 30, holdSeconds: 5, churn: { everySeconds: 1, fraction: 0.02 } },
  },
};

/**
 * Sends a device may have unanswered at once, and how long it may hold an ack to batch it (docs/protocol.md): 50 ms
 * acks about every event at the plans' rates, more often than examples/go-client (up to 1 s), so it errs on the
 * costly side.
 */
const IN_FLIGHT_PER_SENDER = 4;
const ACK_DELAY_MS = 50;

function stepsOf(plan: Plan): Step[] {
  const rates = plan.rampRates ?? (plan.rate ? [plan.rate] : []);
  if (rates.length === 0) return [];
  const steps: Step[] = [];
  if (plan.warmupSeconds) steps.push({ tag: "warmup", rate: rates[0]!, seconds: plan.warmupSeconds });
  const seconds = (plan.rampRates ? plan.stepSeconds : plan.sendSeconds) ?? 10;
  for (const rate of rates) steps.push({ tag: String(rate), rate, seconds });
  return steps;
}

/**
 * Seconds from starting the load generator to the send clock's t0: time for every device to connect first (a floor,
 * and about 250 connects/s, which the 2-core machine keeps for registered devices; the warm-up step absorbs a late
 * start, and the result notes it). Without steps nothing waits for the clock: connecting and holding start at once.
 */
function startDelayOf(plan: Plan, steps: Step[], devices: number, profile: Profile): number {
  if (plan.startDelaySeconds !== undefined) return plan.startDelaySeconds;
  if (steps.length === 0) return 0;
  return Math.ceil((profile === "ci" ? 2 : 3) + devices / 250);
}

interface Args {
  profile: Profile;
  scenarios: Scenario[];
  nodes: number;
  /** A load balancer in front of the nodes, which every device connects to (absent: device i to node i mod nodes). */
  proxy?: "haproxy";
  shards: number;
  devicesPerConn: number;
  /** Where results and the report go (default bench/results; CI writes outside the committed results). */
  out: string;
  reportOnly: boolean;
}

function parseArgs(argv: string[]): Args {
  const known = new Set(["profile", "scenario", "nodes", "proxy", "shards", "devices-per-conn", "out"]);
  const values = new Map<string, string>();
  let reportOnly = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--report-only") reportOnly = true;
    else if (arg.startsWith("--") && known.has(arg.slice(2)) && argv[i + 1] !== undefined) values.set(arg.slice(2), argv[++i]!);
    else throw new Error(`unknown argument ${arg} (see the top of bench/run.ts or bench/README.md)`);
  }
  const count = (name: string, fallback: number) => {
    const n = Number(values.get(name) ?? fallback);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a whole number ≥ 1`);
    return n;
  };
  const profile = (values.get("profile") ?? "quick") as Profile;
  if (!(profile in PLANS)) throw new Error(`--profile must be one of ${Object.keys(PLANS).join(", ")}`);
  const scenarios = (values.get("scenario") ?? SCENARIOS.join(",")).split(",") as Scenario[];
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s} (${SCENARIOS.join(", ")})`);
  const nodes = count("nodes", 1);
  if (nodes > 1 && !process.env.REDIS_URL) throw new Error("--nodes > 1 needs REDIS_URL");
  if (nodes > 1 && !process.env.DATABASE_URL) throw new Error("--nodes > 1 needs DATABASE_URL (PGlite is one process's)");
  const proxy = values.get("proxy");
  if (proxy !== undefined && proxy !== "haproxy") throw new Error("--proxy must be haproxy (the load balancer the runner can start)");
  return {
    profile,
    scenarios,
    nodes,
    ...(proxy ? { proxy } : {}),
    shards: count("shards", 1),
    devicesPerConn: count("devices-per-conn", 1),
    out: values.get("out") ?? RESULTS,
    reportOnly,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The load generator binary

/**
 * Builds bench/loadgen with the machine's Go into the tools cache and returns its path. The stamp beside it is a hash
 * of the sources it is built from (bench/loadgen and the generated client gen/go), so it is rebuilt when they change.
 */
async function loadgenBinary(): Promise<string> {
  const source = join(ROOT, "bench", "loadgen");
  if (!existsSync(join(source, "go.mod"))) throw new Error("bench/loadgen/go.mod is missing");
  const hash = createHash("sha256");
  for (const dir of [source, join(ROOT, "gen", "go")]) {
    const files = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => /(\.go|go\.mod|go\.sum)$/.test(f)).sort();
    for (const file of files) hash.update(`${relative(ROOT, join(dir, file))}\0`).update(readFileSync(join(dir, file)));
  }
  const stamp = hash.digest("hex");
  const cache = process.env.PALAVER_TOOLS_DIR || join(homedir(), ".cache", "palaver", "bin");
  const binary = join(cache, "loadgen");
  const stampFile = join(cache, ".loadgen.version");
  if (existsSync(binary) && existsSync(stampFile) && readFileSync(stampFile, "utf8").trim() === stamp) return binary;
  await mkdir(cache, { recursive: true });
  // Built beside the cache and moved in after success: an interrupted build leaves neither a half binary nor a stamp.
  const scratch = await mkdtemp(join(cache, ".build-loadgen-"));
  try {
    console.log(`building bench/loadgen into ${cache}`);
    const built = spawnSync("go", ["build", "-o", join(scratch, "loadgen"), "."], { cwd: source, stdio: "inherit" });
    if (built.error) throw new Error(`could not run go (the load generator is built with the machine's Go): ${built.error.message}`);
    if (built.status !== 0) throw new Error("go build in bench/loadgen failed");
    await rename(join(scratch, "loadgen"), binary);
    await writeFile(stampFile, `${stamp}\n`);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return binary;
}

// ---------------------------------------------------------------------------------------------------------------
// The server under test, and the processes whose CPU is watched

interface Node {
  child: ChildProcess;
  url: string;
  exited: Promise<number | null>;
}

interface Servers {
  nodes: Node[];
  /** What the devices connect to: the nodes' URLs, or the proxy's one. */
  urls: string[];
  proxy?: { info: ProxyInfo; process: HaproxyProcess };
  secret: Uint8Array;
  backend: "pglite" | "postgres";
  /** The scenario's own database (Postgres only). */
  databaseUrl?: string;
  /** Stops the nodes and the proxy, leaving the database (close() calls it too). */
  stopNodes(): Promise<void>;
  close(): Promise<void>;
}

/** Sends SIGTERM, then SIGKILL if the process has not exited within `graceMs` (a node first drains its streams). */
async function terminate(signal: (signal: NodeJS.Signals) => void, exited: Promise<unknown>, graceMs = 20_000): Promise<void> {
  signal("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const kill = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      signal("SIGKILL");
      resolve();
    }, graceMs);
  });
  await Promise.race([exited, kill]);
  clearTimeout(timer);
}

/**
 * Starts `count` server nodes on a fresh database and, with `proxyInfo` (from sizeHaproxy), HAProxy in front of them.
 * close() stops them all (and drops the database); a start that fails stops what had started.
 */
async function startServers(scenario: Scenario, count: number, out: string, proxyInfo?: ProxyInfo): Promise<Servers> {
  const dataDir = await mkdtemp(join(tmpdir(), `palaver-bench-${scenario}-`));
  const authSecret = randomBytes(32).toString("base64url");
  const base = process.env.DATABASE_URL;
  const dbName = `palaver_bench_${scenario}_${process.pid}`;
  const databaseUrl = base ? await createDatabase(base, dbName) : undefined;
  const profileDir = join(out, "profiles");
  if (process.env.BENCH_CPU_PROF) await mkdir(profileDir, { recursive: true });

  const nodes: Node[] = [];
  let proxy: HaproxyProcess | undefined;
  let stopping: Promise<unknown> | undefined;
  const stopNodes = async () => {
    stopping ??= Promise.all([
      ...nodes.map((n) => terminate((signal) => n.child.kill(signal), n.exited)),
      ...(proxy ? [terminate((signal) => proxy!.signal(signal), proxy.exit())] : []),
    ]);
    await stopping;
  };
  const close = async () => {
    await stopNodes();
    if (base) await dropDatabase(base, dbName);
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < count; i++) {
      // The node as deployed, then the experiment's arguments.
      const args = [...NODE_ARGS, ...(process.env.BENCH_NODE_ARGS?.split(" ").filter(Boolean) ?? [])];
      // One file per thread (the main thread's is the biggest).
      if (process.env.BENCH_CPU_PROF) args.push("--cpu-prof", "--cpu-prof-dir", join(profileDir, `${scenario}-node${i}`));
      args.push(SERVER_ENTRY);
      const child = spawn(process.execPath, args, {
        cwd: ROOT,
        env: {
          ...process.env,
          PORT: "0",
          HOST: "127.0.0.1",
          DATA_DIR: count > 1 ? join(dataDir, `node${i}`) : dataDir,
          AUTH_SECRET: authSecret,
          LOG_LEVEL: "info",
          NODE_ID: `bench-${i}`,
          DATABASE_URL: databaseUrl ?? "",
          REDIS_URL: count > 1 ? process.env.REDIS_URL : "",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      // The server's log goes to a file (errors are also echoed); its path is printed when the node starts.
      const logFile = join(tmpdir(), `palaver-bench-${scenario}-node${i}.log`);
      const log = createWriteStream(logFile);
      console.log(`  server node ${i}: pid ${child.pid}, log ${logFile}`);
      child.stdout!.pipe(log, { end: false });
      child.stderr!.pipe(log, { end: false });
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      const node: Node = { child, url: "", exited };
      nodes.push(node);
      node.url = await new Promise<string>((resolve, reject) => {
        let buffered = "";
        child.stdout!.on("data", (chunk: Buffer) => {
          buffered += chunk.toString();
          for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            try {
              const entry = JSON.parse(line) as { msg?: string; url?: string; level?: number };
              if (entry.msg === "palaver is serving" && entry.url) resolve(entry.url);
              else if ((entry.level ?? 0) >= 50) process.stderr.write(`[server ${i}] ${line}\n`);
            } catch {
              process.stderr.write(`[server ${i}] ${line}\n`);
            }
          }
        });
        void exited.then((code) => reject(new Error(`server node ${i} exited (${code}) before serving; see ${logFile}`)));
      });
    }
    if (proxyInfo) {
      const prepared = await prepareHaproxy(scenario, nodes.map((n) => n.url), proxyInfo, out, dataDir);
      proxy = prepared.process;
      await startHaproxy(proxy, count);
      console.log(`  haproxy ${proxyInfo.version}: pid ${proxy.pid}, ${proxy.url}, config ${prepared.configFile}, log ${proxy.logFile}`);
    }
  } catch (error) {
    await close();
    throw error;
  }
  return {
    nodes,
    urls: proxy ? [proxy.url] : nodes.map((n) => n.url),
    ...(proxy && proxyInfo ? { proxy: { info: proxyInfo, process: proxy } } : {}),
    secret: new TextEncoder().encode(authSecret),
    backend: databaseUrl ? "postgres" : "pglite",
    ...(databaseUrl ? { databaseUrl } : {}),
    stopNodes,
    close,
  };
}

/** Resident memory of a process, from /proc; 0 when it has ended. */
function rssBytesOf(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** Whether a postgres:// or redis:// URL names this machine (a Unix socket counts), so its processes can be watched. */
function isLocal(url: string): boolean {
  try {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
    return host === "" || host === "localhost" || host === "::1" || host.startsWith("127.");
  } catch {
    return false;
  }
}

/** The pids whose CPU the load generator samples, by the name it reports them under. */
interface Watch {
  server: number[];
  postgres: number[];
  redis: number[];
  haproxy: number[];
}

function watchedPids(servers: Servers, nodes: number): Watch {
  const db = process.env.DATABASE_URL;
  return {
    server: servers.nodes.map((n) => n.child.pid!),
    // The postmaster, whose CPU is read with its children's: the backends serving the server (those a pool opens
    // later too), the checkpointer, the WAL writer, …. On PGlite the database runs inside the server process, whose
    // CPU includes it.
    postgres: servers.backend === "postgres" && db && isLocal(db) ? postmasterPids() : [],
    redis: nodes > 1 && process.env.REDIS_URL && isLocal(process.env.REDIS_URL) ? pidsNamed("redis-server") : [],
    haproxy: servers.proxy ? [servers.proxy.process.pid!] : [],
  };
}

function loadAvg(): number[] {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number);
}

async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

/** Quantiles (ms, the bucket's upper bound) of a Prometheus histogram in seconds; null when it has no samples. */
function histogramQuantiles(metrics: Map<string, number>, name: string, quantiles: number[]): (number | null)[] {
  const buckets: { le: number; count: number }[] = [];
  for (const [key, value] of metrics) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}$`).exec(key);
    if (m) buckets.push({ le: m[1] === "+Inf" ? Infinity : Number(m[1]), count: value });
  }
  buckets.sort((a, b) => a.le - b.le);
  const total = buckets.at(-1)?.count ?? 0;
  return quantiles.map((q) => {
    const bucket = total > 0 ? buckets.find((b) => b.count >= q * total) : undefined;
    return bucket && Number.isFinite(bucket.le) ? bucket.le * 1000 : null;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Setup through the API

interface Device {
  user: string;
  device: string;
  token: string;
  chat: string;
  group: number;
  sends: boolean;
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** Retries what a loaded server answers with UNAVAILABLE or RESOURCE_EXHAUSTED (setup must not fail on load). */
async function retry<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      const code = ConnectError.from(error).code;
      if (attempt >= 5 || (code !== Code.Unavailable && code !== Code.ResourceExhausted && code !== Code.DeadlineExceeded)) {
        throw error;
      }
      await sleep(200 * (attempt + 1));
    }
  }
}

/** A seeded shuffle (mulberry32), so shards (device i % N) and nodes (urls[i % len]) each get a mix of groups. */
function shuffle<T>(items: T[], seed: number): T[] {
  let a = seed >>> 0;
  const random = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/**
 * Mints every device's token and creates the chats; registers the devices (a first authenticated call) unless the
 * scenario measures new devices; for drain, stores `backlog` messages in each chat while every device is offline.
 * Each chat is created by a device of its first user that is not in the plan ("setup"), so no plan device has a
 * ChatUpdate waiting and a drained backlog is exactly the stored messages. The setup devices are removed at the end:
 * left in place, each would be one more inbox entry per message that nobody acks, so no message would ever be deleted
 * and a message would cost one entry more than its deliveries.
 */
async function setUp(servers: Servers, plan: Plan, scenario: Scenario) {
  const transport = createGrpcTransport({ baseUrl: servers.nodes[0]!.url });
  const client = createClient(ChatService, transport);
  const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  const run = `${scenario.slice(0, 2)}${randomBytes(3).toString("hex")}`;
  const devices: Device[] = [];
  const creators: { group: number; user: string; token: string; chat: string }[] = [];
  for (let g = 0; g < plan.groups; g++) {
    creators.push({ group: g, user: `${run}-g${g}-u0`, token: "", chat: "" });
    for (let u = 0; u < plan.groupUsers; u++) {
      for (let d = 0; d < plan.devicesPerUser; d++) {
        devices.push({ user: `${run}-g${g}-u${u}`, device: `d${d}`, token: "", chat: "", group: g, sends: u === 0 && d === 0 });
      }
    }
  }
  const started = performance.now();
  const holders = [...devices, ...creators.map((c) => Object.assign(c, { device: "setup" }))];
  await pool(holders, 64, async (d) => {
    d.token = await mintToken(servers.secret, { userId: d.user, deviceName: d.device });
  });
  await pool(creators, 32, async (c) => {
    const others = Array.from({ length: plan.groupUsers - 1 }, (_, i) => `${run}-g${c.group}-u${i + 1}`);
    const res = await retry(() => client.createChat({ name: `bench ${c.group}`, participantUserIds: others }, auth(c.token)));
    c.chat = res.chat!.chatId;
  });
  for (const d of devices) d.chat = creators[d.group]!.chat;
  if (!plan.newDevices) {
    await pool(devices, 64, async (d) => {
      await retry(() => client.listChats({ pageSize: 1 }, auth(d.token)));
    });
  }
  const setupSeconds = (performance.now() - started) / 1000;
  console.log(
    `  set up ${plan.groups} chats, ${devices.length} devices${plan.newDevices ? " (tokens only: new to the server)" : ""} in ${setupSeconds.toFixed(1)} s`,
  );

  let fillSendsPerSecond: number | undefined;
  if (plan.backlog) {
    // The setup device sends: every one of the group's plan devices gets `backlog` events.
    const fillStarted = performance.now();
    const sends = creators.flatMap((c) => Array.from({ length: plan.backlog! }, (_, i) => ({ ...c, i })));
    await pool(sends, 128, async (s) => {
      await retry(() => client.sendMessage({ chatId: s.chat, clientMessageId: `fill-${s.i}`, text: `backlog message ${s.i}` }, auth(s.token)));
    });
    const seconds = (performance.now() - fillStarted) / 1000;
    fillSendsPerSecond = sends.length / seconds;
    const perGroup = plan.groupUsers * plan.devicesPerUser;
    console.log(`  stored ${sends.length} sends (${sends.length * perGroup} inbox events) in ${seconds.toFixed(1)} s: ${Math.round(fillSendsPerSecond)} sends/s`);
  }
  const accounts = createClient(AccountService, transport);
  await pool(creators, 32, async (c) => {
    await retry(() => accounts.removeDevice({ deviceId: "setup" }, auth(c.token)));
  });
  return { devices: shuffle(devices, 0x5eed), setupSeconds, fillSendsPerSecond };
}

// ---------------------------------------------------------------------------------------------------------------
// Running the load generator

/** The plan file of bench/loadgen/README.md. */
interface LoadgenPlan {
  scenario: Scenario;
  urls: string[];
  devices: { token: string; chatId: string; sends: boolean; online: boolean }[];
  recipientsPerSend: number;
  startAtMs: number;
  steps: Step[];
  holdSeconds: number;
  stopAboveP99Ms?: number;
  inFlightPerSender: number;
  ackDelayMs: number;
  markRead: boolean;
  churn?: { everySeconds: number; fraction: number };
  connectTimeoutSeconds: number;
  watch: Watch;
}

/** Copies a child's output line by line with a prefix, so several loadgen processes stay readable. */
function relay(child: ChildProcess, prefix: string): void {
  for (const [from, to] of [
    [child.stdout!, process.stdout],
    [child.stderr!, process.stderr],
  ] as const) {
    createInterface({ input: from }).on("line", (line) => to.write(`  ${prefix} ${line}\n`));
  }
}

/**
 * Writes the plan with its send clock `startDelayMs` from now, runs the loadgen processes on it, merges their results.
 * `onClock` learns the send clock's t0 (unix ms) once the plan is written.
 */
async function runLoadgen(
  binary: string,
  plan: LoadgenPlan,
  startDelayMs: number,
  args: Args,
  work: string,
  onClock?: (startAtMs: number) => void,
): Promise<{ result: LoadgenResult; seconds: number; cpuSeconds: ScenarioResult["cpuSeconds"]; serverMaxRssBytes: number }> {
  const planFile = join(work, "plan.json");
  plan.startAtMs = Date.now() + startDelayMs;
  await writeFile(planFile, JSON.stringify(plan));
  onClock?.(plan.startAtMs);
  const watched = Object.values(plan.watch).flat();
  const before = treeCpuSeconds(watched);
  const started = performance.now();

  const outputs = Array.from({ length: args.shards }, (_, i) => join(work, `result-${i}.json`));
  const children = outputs.map((out, i) => {
    const cli = ["run", "--plan", planFile, "--out", out, "--devices-per-conn", String(args.devicesPerConn)];
    if (args.shards > 1) cli.push("--shard", `${i}/${args.shards}`);
    const child = spawn(binary, cli, { stdio: ["ignore", "pipe", "pipe"] });
    relay(child, args.shards > 1 ? `[loadgen ${i}]` : "[loadgen]");
    return { child, exit: new Promise<number | null>((resolve) => child.once("exit", (code, signal) => resolve(signal ? null : code))) };
  });

  let serverMaxRssBytes = 0;
  const sampleRss = () => {
    const rss = plan.watch.server.reduce((sum, pid) => sum + rssBytesOf(pid), 0);
    serverMaxRssBytes = Math.max(serverMaxRssBytes, rss);
  };
  sampleRss();
  const poll = setInterval(sampleRss, 500);
  // A run longer than its plan allows (connecting, sending, holding, and a minute to spare) is stuck: end it.
  const planned = startDelayMs + plan.steps.reduce((s, step) => s + step.seconds * 1000, 0) + plan.holdSeconds * 1000;
  const limitMs = planned + plan.connectTimeoutSeconds * 1000 + 60_000;
  let timedOut = false;
  const stuck = setTimeout(() => {
    timedOut = true;
    for (const { child } of children) child.kill("SIGKILL");
  }, limitMs);
  const codes = await Promise.all(children.map((c) => c.exit));
  clearTimeout(stuck);
  clearInterval(poll);
  const seconds = (performance.now() - started) / 1000;

  // CPU of the watched processes over the whole run, connecting included (a process that ended meanwhile drops out).
  const after = treeCpuSeconds(watched);
  const sum = (pids: number[]) => round(pids.reduce((total, pid) => total + Math.max(0, (after.get(pid) ?? 0) - (before.get(pid) ?? 0)), 0), 2);
  const cpuSeconds: ScenarioResult["cpuSeconds"] = Object.fromEntries(Object.entries(plan.watch).map(([who, pids]) => [who, sum(pids)]));

  if (timedOut) throw new Error(`loadgen ran over ${Math.round(limitMs / 1000)} s and was killed`);
  codes.forEach((code, i) => {
    if (code !== 0) throw new Error(`loadgen ${args.shards > 1 ? `shard ${i}/${args.shards} ` : ""}exited with ${code ?? "a signal"}`);
  });
  let resultFile = outputs[0]!;
  if (args.shards > 1) {
    resultFile = join(work, "merged.json");
    const merged = spawnSync(binary, ["merge", "--out", resultFile, ...outputs], { stdio: "inherit" });
    if (merged.status !== 0) throw new Error(`loadgen merge exited with ${merged.status}`);
  }
  const result = JSON.parse(await readFile(resultFile, "utf8")) as LoadgenResult;
  cpuSeconds.loadgen = result.loadgen?.cpuSeconds;
  return { result, seconds: round(seconds, 1), cpuSeconds, serverMaxRssBytes };
}

// ---------------------------------------------------------------------------------------------------------------
// Database writes per stored message (Postgres's own statistics)

/**
 * Runs a CHECKPOINT once setup is done, so every run measures from just after one: Postgres checkpoints every 5
 * minutes by default, and one that fell inside a measured step (writing out the dirty pages, then a full page image
 * in the WAL for each page's first change after it) made runs of the same code differ by half in Postgres's CPU.
 * Returns a note when it could not (a role without pg_checkpoint).
 */
async function checkpoint(url: string): Promise<string | undefined> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`CHECKPOINT`;
    return undefined;
  } catch (error) {
    return `no CHECKPOINT before the run (${error instanceof Error ? error.message : String(error)}): a checkpoint may fall inside a measured step`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Inbox entries left unacked in each past day by ageDatabase: a month of them is about 150,000. */
const PAST_DAY_ENTRIES = 5000;

/** Adds the past `days` day partitions with entries nobody acks (Plan.pastDays), under device keys no device has. */
async function ageDatabase(url: string, days: number): Promise<void> {
  const driver = createPostgresDriver(url, { poolSize: 1 });
  try {
    const today = startOfUtcDay(new Date());
    const pastDays = Array.from({ length: days }, (_, i) => new Date(today.getTime() - (i + 1) * DAY_MS));
    await ensurePartitions(driver, pastDays.at(-1)!, days);
    await driver.query(
      `INSERT INTO inbox (device_key, event_id, created_at, chat_id, message_id, seq)
       SELECT -1 - g % 1000, nextval('inbox_event_id_seq'), d + g * interval '1 second', gen_random_uuid(),
              gen_random_uuid(), 1
         FROM unnest($1::timestamptz[]) d, generate_series(1, $2::int) g`,
      [pastDays, PAST_DAY_ENTRIES],
    );
  } finally {
    await driver.close();
  }
}

/** The scenarios whose database writes per stored message are counted, on Postgres (PGlite: n/a). */
const WRITES_COUNTED: ReadonlySet<Scenario> = new Set(["steady", "receipts", "groups100"]);

/**
 * Seconds from the end of setup to the send clock's start when writes are counted. Postgres (15 and later) keeps a
 * backend's table statistics in the backend and flushes them to shared memory, where pg_stat_user_tables reads them,
 * when a transaction ends at least 1 s after its last flush; a backend that goes idle with statistics pending flushes
 * them after up to 10 s (PGSTAT_IDLE_INTERVAL), and one that exits flushes them as it exits.
 * pg_stat_force_next_flush() acts on the calling backend only, so it cannot hurry the server's. Hence: the count
 * before is taken just before the send clock starts, at least this long after setup's last write (all of setup's
 * writes are in it, none of the run's), and the count after once the server nodes have stopped and their backends
 * have exited (every write of the run is in it). Waiting ~1 s, as for the older statistics collector's 500 ms, would
 * not be enough: at the end of a run the backends go idle.
 */
const STATS_SETTLE_SECONDS = 11;

/** When the count before is read: this long before the send clock starts (the devices are connecting, which writes no row). */
const COUNT_BEFORE_MS = 250;

interface StatsSnapshot {
  /** Rows inserted, updated (HOT ones among them) and deleted per table, partitions counted under their parent. */
  tables: Map<string, TableWrites>;
  /** pg_current_wal_lsn(): WAL is the whole cluster's. */
  lsn: string;
}

/** Reads the table statistics of the scenario's database on one connection of its own. */
function statsReader(url: string) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  return {
    async read(): Promise<StatsSnapshot> {
      // Each query is its own transaction, so stats_fetch_consistency's cache never serves an older count.
      const rows = await sql<{ name: string; ins: string; upd: string; del: string; hot: string }[]>`
        SELECT coalesce(parent.relname, s.relname) AS name,
               sum(s.n_tup_ins)::text AS ins, sum(s.n_tup_upd)::text AS upd, sum(s.n_tup_del)::text AS del,
               sum(s.n_tup_hot_upd)::text AS hot
          FROM pg_stat_user_tables s
          LEFT JOIN pg_inherits i ON i.inhrelid = s.relid
          LEFT JOIN pg_class parent ON parent.oid = i.inhparent
         GROUP BY 1`;
      const [{ lsn }] = await sql<{ lsn: string }[]>`SELECT pg_current_wal_lsn()::text AS lsn`;
      const tables = new Map<string, TableWrites>();
      for (const r of rows) tables.set(r.name, { ins: Number(r.ins), upd: Number(r.upd), del: Number(r.del), hotUpd: Number(r.hot) });
      return { tables, lsn: lsn! };
    },
    /** Waits until no other client backend is connected to the database (theirs have flushed their statistics). */
    async othersGone(timeoutMs: number): Promise<boolean> {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const [{ n }] = await sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`;
        if (n === 0) return true;
        if (performance.now() > deadline) return false;
        await sleep(100);
      }
    },
    async walBytesSince(lsn: string): Promise<number> {
      const [{ bytes }] = await sql<{ bytes: string }[]>`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), ${lsn}::pg_lsn)::text AS bytes`;
      return Number(bytes);
    },
    close: () => sql.end({ timeout: 5 }),
  };
}

/** The writes between two counts, per table and per stored message. */
function dbWritesOf(before: StatsSnapshot, after: StatsSnapshot, messages: number, walBytes: number): DbWrites {
  const tables: Record<string, TableWrites> = {};
  const total: TableWrites = { ins: 0, upd: 0, del: 0, hotUpd: 0 };
  for (const [name, a] of [...after.tables].sort(([x], [y]) => x.localeCompare(y))) {
    const b = before.tables.get(name) ?? { ins: 0, upd: 0, del: 0, hotUpd: 0 };
    const d: TableWrites = { ins: a.ins - b.ins, upd: a.upd - b.upd, del: a.del - b.del, hotUpd: a.hotUpd - b.hotUpd };
    if (d.ins === 0 && d.upd === 0 && d.del === 0) continue;
    tables[name] = d;
    total.ins += d.ins;
    total.upd += d.upd;
    total.del += d.del;
    total.hotUpd += d.hotUpd;
  }
  const writes = (t: TableWrites | undefined) => (t ? t.ins + t.upd + t.del : 0);
  const per = (n: number) => (messages > 0 ? round(n / messages, 2) : 0);
  const named = writes(tables.inbox) + writes(tables.messages) + writes(tables.chat_participants);
  return {
    span: "run",
    messages,
    tables,
    total,
    perMessage: {
      total: per(writes(total)),
      inbox: per(writes(tables.inbox)),
      messages: per(writes(tables.messages)),
      chat_participants: per(writes(tables.chat_participants)),
      other: per(writes(total) - named),
    },
    walBytes,
    walBytesPerMessage: per(walBytes),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// One scenario

async function runScenario(binary: string, scenario: Scenario, args: Args, ceiling: CeilingResult | undefined): Promise<ScenarioResult> {
  const plan: Plan = {
    ...PLANS[args.profile][scenario],
    // BENCH_PLAN='{"rate":500}' overrides a profile's settings for one experiment; the stored shape follows what ran.
    ...(process.env.BENCH_PLAN ? (JSON.parse(process.env.BENCH_PLAN) as Partial<Plan>) : {}),
  };
  console.log(`\n=== ${scenario} (${args.profile}) ===`);
  const date = new Date().toISOString();
  const loadAvgBefore = loadAvg();
  // Sized (or refused) before anything starts: HAProxy needs two file descriptors per device connection.
  const connections = Math.ceil((plan.groups * plan.groupUsers * plan.devicesPerUser) / args.devicesPerConn);
  const proxyInfo = args.proxy ? sizeHaproxy(connections) : undefined;
  const servers = await startServers(scenario, args.nodes, args.out, proxyInfo);
  const work = await mkdtemp(join(tmpdir(), "palaver-bench-loadgen-"));
  // Database writes are counted on Postgres only: PGlite runs inside the server, out of reach.
  const counting = servers.databaseUrl && WRITES_COUNTED.has(scenario) ? statsReader(servers.databaseUrl) : undefined;
  try {
    const { devices, setupSeconds, fillSendsPerSecond } = await setUp(servers, plan, scenario);
    if (plan.pastDays && servers.databaseUrl) await ageDatabase(servers.databaseUrl, plan.pastDays);
    const checkpointNote = servers.databaseUrl ? await checkpoint(servers.databaseUrl) : undefined;
    const steps = stepsOf(plan);
    let startDelaySeconds = startDelayOf(plan, steps, devices.length, args.profile);
    // Setup's table statistics must have reached pg_stat_user_tables before the count before (STATS_SETTLE_SECONDS).
    if (counting && plan.startDelaySeconds === undefined) startDelaySeconds = Math.max(startDelaySeconds, STATS_SETTLE_SECONDS);
    const recipientsPerSend = plan.groupUsers * plan.devicesPerUser - 1;
    const watch = watchedPids(servers, args.nodes);
    const loadgenPlan: LoadgenPlan = {
      scenario,
      urls: servers.urls,
      devices: devices.map((d) => ({ token: d.token, chatId: d.chat, sends: d.sends, online: true })),
      recipientsPerSend,
      startAtMs: 0, // set when the plan is written
      steps,
      holdSeconds: plan.holdSeconds,
      ...(plan.rampRates ? { stopAboveP99Ms: KNEE_P99_MS } : {}),
      inFlightPerSender: IN_FLIGHT_PER_SENDER,
      ackDelayMs: plan.ackDelayMs ?? ACK_DELAY_MS,
      markRead: scenario === "receipts" || (plan.markRead ?? false),
      ...(plan.churn ? { churn: plan.churn } : {}),
      connectTimeoutSeconds: args.profile === "full" ? 300 : args.profile === "quick" ? 120 : 60,
      watch,
    };
    const loadAvgBeforeLoadgen = loadAvg();
    let countBefore: Promise<StatsSnapshot | Error> | undefined;
    let lagReset: Promise<unknown> | undefined;
    const run = await runLoadgen(binary, loadgenPlan, startDelaySeconds * 1000, args, work, (startAtMs) => {
      // prom-client restarts its event-loop delay histogram at each scrape: one as sending starts leaves the last
      // scrape with the sending alone (warm-up included), not setup's or connecting's delays.
      lagReset = sleep(Math.max(0, startAtMs - Date.now()))
        .then(() => scrape(servers.nodes[0]!.url))
        .catch(() => undefined);
      if (counting) {
        countBefore = sleep(Math.max(0, startAtMs - COUNT_BEFORE_MS - Date.now()))
          .then(() => counting.read())
          .catch((error: unknown) => (error instanceof Error ? error : new Error(String(error))));
      }
    });
    await lagReset;
    const metrics = await scrape(servers.nodes[0]!.url).catch(() => new Map<string, number>());
    const [serverP50, serverP99] = histogramQuantiles(metrics, "palaver_delivery_latency_seconds", [0.5, 0.99]);
    const lag = (stat: string) => metrics.get(`palaver_process_nodejs_eventloop_lag_${stat}_seconds`);
    const [lagP50, lagP99, lagMax] = [lag("p50"), lag("p99"), lag("max")];

    // The count after: once the nodes have stopped, their backends have exited and flushed their statistics.
    let dbWrites: DbWrites | null | undefined = WRITES_COUNTED.has(scenario) ? null : undefined;
    const dbNotes: string[] = [];
    if (counting && countBefore) {
      const before = await countBefore;
      await servers.stopNodes();
      if (!(await counting.othersGone(10_000))) dbNotes.push("the server's database connections were still open 10 s after it stopped: the write counts may miss their last second");
      if (before instanceof Error) {
        dbNotes.push(`database writes not counted: ${before.message}`);
      } else {
        const messages = run.result.points.reduce((n, p) => n + p.sendsOk, 0);
        dbWrites = dbWritesOf(before, await counting.read(), messages, await counting.walBytesSince(before.lsn));
        if (plan.startDelaySeconds !== undefined && plan.startDelaySeconds < STATS_SETTLE_SECONDS) {
          dbNotes.push(`startDelaySeconds ${plan.startDelaySeconds} (BENCH_PLAN) is under ${STATS_SETTLE_SECONDS}: the database write counts may include some of setup's`);
        }
      }
    }

    const shape: PlanShape = {
      groups: plan.groups,
      groupUsers: plan.groupUsers,
      devicesPerUser: plan.devicesPerUser,
      devices: devices.length,
      senders: devices.filter((d) => d.sends).length,
      recipientsPerSend,
      newDevices: plan.newDevices ?? false,
      ...(plan.backlog ? { backlogPerDevice: plan.backlog } : {}),
      steps,
      holdSeconds: plan.holdSeconds,
      startDelaySeconds,
      ...(loadgenPlan.stopAboveP99Ms ? { stopAboveP99Ms: loadgenPlan.stopAboveP99Ms } : {}),
      inFlightPerSender: IN_FLIGHT_PER_SENDER,
      ackDelayMs: loadgenPlan.ackDelayMs,
      markRead: loadgenPlan.markRead,
      ...(plan.churn ? { churn: plan.churn } : {}),
      urls: loadgenPlan.urls.length,
    };
    const result: ScenarioResult = {
      format: FORMAT,
      scenario,
      profile: args.profile,
      date,
      backend: servers.backend,
      nodes: args.nodes,
      ...(servers.proxy ? { proxy: servers.proxy.info } : {}),
      shards: args.shards,
      devicesPerConn: args.devicesPerConn,
      machine: { cpus: cpus().length, model: cpus()[0]?.model.trim() ?? "unknown" },
      shape,
      loadAvgBefore,
      loadAvgBeforeLoadgen,
      setupSeconds: round(setupSeconds, 1),
      ...(fillSendsPerSecond ? { fillSendsPerSecond: Math.round(fillSendsPerSecond) } : {}),
      seconds: run.seconds,
      cpuSeconds: run.cpuSeconds,
      serverMaxRssBytes: run.serverMaxRssBytes,
      serverDeliveryP50Ms: serverP50 ?? null,
      serverDeliveryP99Ms: serverP99 ?? null,
      serverLoopDelayMs:
        lagP50 === undefined || lagP99 === undefined || lagMax === undefined
          ? null
          : { p50: round(lagP50 * 1000, 1), p99: round(lagP99 * 1000, 1), max: round(lagMax * 1000, 1) },
      ...(dbWrites !== undefined ? { dbWrites } : {}),
      figures: {},
      result: run.result,
      ...(scenario === "ramp" && ceiling ? { pgCeiling: { ...ceiling, url: withoutCredentials(ceiling.url) } } : {}),
      notes: checkpointNote ? [checkpointNote, ...dbNotes] : dbNotes,
      problems: [],
    };
    judge(result, watch);
    printSummary(result);
    return result;
  } finally {
    await counting?.close();
    await servers.close();
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Fills in the derived figures, the notes, and the problems: what fails the run. A problem is a broken script or
 * server (nothing sent, nothing delivered, a device that never connected) or a lost message (a delivery still missing
 * after the hold, a churned device that never got a message, a backlog event that never came); never a latency or a
 * rate. Past the ci profile, a step whose p99 passed 500 ms is saturated: what had not arrived when the hold ended is
 * late rather than lost, and is noted.
 */
function judge(r: ScenarioResult, watch: Watch): void {
  const res = r.result;
  const { notes, problems } = r;
  const sending = r.shape.steps.length > 0;
  const points = sentPoints(r);
  if (sending && !points.some((p) => p.sendsOk > 0)) problems.push("no send succeeded: the load generator or the server is broken");
  if (sending && !points.some((p) => p.deliveriesReceived > 0)) problems.push("no message was delivered: the load generator or the server is broken");
  for (const p of points) {
    const missing = p.deliveriesExpected - p.deliveriesReceived;
    if (missing <= 0) continue;
    if (r.profile !== "ci" && p.deliveryLatency.p99 >= KNEE_P99_MS) {
      notes.push(`step ${p.tag}: ${missing} of ${p.deliveriesExpected} deliveries had not arrived when the hold ended (saturated: p99 ${Math.round(p.deliveryLatency.p99)} ms)`);
    } else {
      problems.push(`step ${p.tag}: ${missing} of ${p.deliveriesExpected} deliveries never arrived (lost)`);
    }
  }
  if (res.churn && res.churn.lost > 0) problems.push(`churn: ${res.churn.lost} messages lost across reconnects`);
  if (res.churn?.chatsUnchecked) notes.push(`churn: ${res.churn.chatsUnchecked} chats could not be checked for losses (their last seq could not be read)`);
  if (res.churn && res.churn.duplicatesOnAStream > 0) notes.push(`churn: ${res.churn.duplicatesOnAStream} events came twice on one stream (the protocol says none should)`);
  if (r.scenario === "drain") {
    const expected = r.shape.devices * (r.shape.backlogPerDevice ?? 0);
    const got = res.drain?.backlogEvents ?? 0;
    if (got < expected) problems.push(`drain: ${got} of ${expected} stored events arrived before InboxDrained`);
  }
  if (res.connect && res.connect.failed > 0) problems.push(`${res.connect.failed} of ${res.connect.devices} devices never connected`);
  // Devices still connecting at startAtMs: the first messages are due before anyone can send them (latency counts from due).
  const late = res.connect?.startedLateMs ?? Math.max(0, ((res.connect?.secondsUntilAllLive ?? 0) - r.shape.startDelaySeconds) * 1000);
  if (sending && late > 0) {
    notes.push(`the devices were all live ${(late / 1000).toFixed(1)} s after the send clock started (${r.shape.startDelaySeconds} s after the load generator did): the first sends went out late, which the warm-up step absorbs`);
  }
  const sendErrors = points.reduce((n, p) => n + Object.values(p.sendErrors).reduce((a, b) => a + b, 0), 0);
  if (sendErrors > 0) notes.push(`${sendErrors} sends were answered with an error (by code in the table)`);
  const receipts = res.receipts;
  if (r.shape.markRead && sending) {
    if (!receipts || receipts.markReadsSent === 0) problems.push("no mark_read was sent: the load generator is broken");
    else if (receipts.markReadsOk === 0) problems.push("no mark_read succeeded: the server or the load generator is broken");
    const failed = Object.values(receipts?.markReadErrors ?? {}).reduce((a, b) => a + b, 0);
    if (failed > 0) notes.push(`${failed} of ${receipts!.markReadsSent} mark_reads were answered with an error (${Object.entries(receipts!.markReadErrors).map(([k, n]) => `${k} ${n}`).join(", ")})`);
    if (receipts && receipts.markReadsUnanswered > 0) notes.push(`${receipts.markReadsUnanswered} mark_reads were still unanswered when the streams closed`);
  }
  if (r.dbWrites) {
    notes.push("database writes: rows inserted, updated and deleted (pg_stat_user_tables) from just before the send clock started until the server had stopped, warm-up and hold included, per message stored in that time");
  } else if (r.dbWrites === null && r.backend === "pglite") {
    notes.push("database writes per message: n/a on PGlite (counted from Postgres's statistics, with DATABASE_URL)");
  }
  if (r.scenario === "ramp") {
    const { knee } = kneeOf(r);
    r.figures.kneeSendsPerSecond = knee;
    r.figures.highestStepSent = points.filter((p) => p.tag !== "warmup").at(-1)?.rate ?? 0;
    if (r.pgCeiling) {
      r.figures.pgCeilingSendsPerSecond = r.pgCeiling.sendsPerSecond;
      r.figures.kneeShareOfPgCeiling = round(knee / r.pgCeiling.sendsPerSecond, 3);
    }
  } else if (sending) {
    r.figures.measuredTag = measuredPoint(r)?.tag;
    if (r.shape.steps.some((s) => s.tag === "warmup")) notes.push("the warm-up step (JIT, pools, caches) is shown but left out of the figures");
  }
  if (r.backend === "pglite") notes.push("PGlite: the database runs inside the server process, so the server's CPU includes it");
  else if (watch.postgres.length === 0) notes.push("Postgres is not on this machine: its CPU is not measured");
  if (r.nodes > 1) notes.push(`${r.nodes} nodes behind Redis on the same machine: server CPU and memory are their sum`);
  if (r.proxy) notes.push(`every device connected through HAProxy (TCP, leastconn, one thread, maxconn ${r.proxy.maxconn}); its CPU is counted apart as haproxy`);
}

function printSummary(r: ScenarioResult): void {
  const res = r.result;
  const f = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  console.log(`\n  ${scenarioLabel(r)} (${r.profile}, ${r.backend}, ${r.shape.devices} devices, ${r.seconds} s):`);
  for (const p of sentPoints(r)) console.log(`    ${pointLine(r, p)}`);
  if (r.scenario === "ramp") {
    console.log(`    knee ${r.figures.kneeSendsPerSecond} sends/s${r.figures.kneeShareOfPgCeiling !== undefined ? ` = ${(r.figures.kneeShareOfPgCeiling * 100).toFixed(1)} % of Postgres alone (${r.figures.pgCeilingSendsPerSecond}/s)` : ""}`);
  }
  if (res.connect) console.log(`    connect: ${res.connect.devices} devices live after ${res.connect.secondsUntilAllLive.toFixed(2)} s (p99 ${f(res.connect.latency.p99)} ms), ${res.connect.failed} failed`);
  if (res.drain && r.scenario === "drain") console.log(`    drain: ${res.drain.backlogEvents} events in ${res.drain.secondsUntilAllDrained.toFixed(2)} s = ${Math.round(res.drain.eventsPerSecond)} events/s`);
  if (res.churn) console.log(`    churn: ${res.churn.reconnects} reconnects, lost ${res.churn.lost}, duplicates on a stream ${res.churn.duplicatesOnAStream}, redelivered ${res.churn.redeliveredAfterReconnect}`);
  const rc = res.receipts;
  if (rc && (rc.markRead || rc.receiptUpdates > 0 || rc.typingUpdates > 0)) {
    const failed = Object.values(rc.markReadErrors ?? {}).reduce((a, b) => a + b, 0);
    console.log(
      `    receipts over the run: ${rc.markRead ? `mark_read sent ${rc.markReadsSent}, ok ${rc.markReadsOk}, failed ${failed}, unanswered ${rc.markReadsUnanswered}; ` : ""}` +
        `receipt updates received ${rc.receiptUpdates}${rc.typingUpdates > 0 ? `, typing updates ${rc.typingUpdates}` : ""}`,
    );
  }
  if (r.dbWrites) {
    const w = r.dbWrites;
    const pm = w.perMessage;
    console.log(
      `    db writes per stored message: ${pm.total.toFixed(2)} (inbox ${pm.inbox.toFixed(2)}, messages ${pm.messages.toFixed(2)}, chat_participants ${pm.chat_participants.toFixed(2)}, other ${pm.other.toFixed(2)}) ` +
        `over ${w.messages} messages; WAL ${(w.walBytesPerMessage / 1024).toFixed(1)} KiB per message (whole cluster)`,
    );
    const tables = Object.entries(w.tables).map(([t, d]) => `${t} +${d.ins} ~${d.upd} -${d.del}`);
    console.log(`    db rows written (inserted + / updated ~ / deleted -): ${tables.join(", ") || "none"}`);
  } else if (r.dbWrites === null) {
    console.log("    db writes per stored message: n/a (PGlite; Postgres's statistics need DATABASE_URL)");
  }
  if (res.memory && r.scenario === "connections") {
    console.log(`    memory: server RSS ${(res.memory.serverRssBeforeBytes / 2 ** 20).toFixed(0)} → ${(res.memory.serverRssConnectedBytes / 2 ** 20).toFixed(0)} MiB, ${(res.memory.rssPerIdleDeviceBytes / 1024).toFixed(1)} KiB per idle device`);
  }
  const cpu = Object.entries(r.cpuSeconds)
    .filter(([, v]) => v !== undefined && v > 0)
    .map(([k, v]) => `${k} ${v!.toFixed(1)}`)
    .join(", ");
  console.log(`    CPU s over the run: ${cpu || "-"}; server max RSS ${(r.serverMaxRssBytes / 2 ** 20).toFixed(0)} MiB; load average before ${r.loadAvgBefore.join(" ")}`);
  const delay = r.serverLoopDelayMs;
  if (delay) console.log(`    server event-loop delay while sending: p50 ${delay.p50}, p99 ${delay.p99}, max ${delay.max} ms`);
  const errors = Object.entries(res.errors ?? {}).filter(([, n]) => n > 0);
  if (errors.length > 0) console.log(`    errors: ${errors.map(([k, n]) => `${k} ${n}`).join(", ")}`);
  for (const note of r.notes) console.log(`    note: ${note}`);
  for (const problem of r.problems) console.log(`    PROBLEM: ${problem}`);
}

function pointLine(r: ScenarioResult, p: LoadgenPoint): string {
  const d = p.deliveryLatency;
  const f = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const cpu = cpuBreakdown(r)
    .filter((k) => (p.cpuMicrosPerDelivery[k] ?? 0) > 0)
    .map((k) => `${k} ${Math.round(p.cpuMicrosPerDelivery[k]!)}`)
    .join(" ");
  const mark = r.scenario === "ramp" && p.tag !== "warmup" ? (held(p) ? " ok" : " ✗") : "";
  return (
    `${p.tag.padStart(6)}${mark}: ${p.rate}/s × ${p.seconds} s, sent ${p.sendsOk}/${p.sendsDue}; delivery p50 ${f(d.p50)} p99 ${f(d.p99)} p99.9 ${f(d.p999)} max ${f(d.max)} ms; ` +
    `send p99 ${f(p.sendLatency.p99)} ms; received ${p.deliveriesReceived}/${p.deliveriesExpected}, dup ${p.duplicates}; CPU µs/delivery ${cpu || "-"}; load ${p.loadAvg1 === null || p.loadAvg1 < 0 ? "-" : p.loadAvg1.toFixed(2)}` +
    (r.shape.markRead || (p.receiptUpdates ?? 0) > 0
      ? `; receipt updates ${f(p.receiptUpdatesPerSecond ?? 0)}/s${r.shape.markRead ? `, mark_read ${p.markReadsOk ?? 0}/${p.markReadsSent ?? 0} ok` : ""}`
      : "")
  );
}

/** A database URL fit for a committed file: no user or password. */
function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return "(unparsable)";
  }
}

function round(value: number, digits: number): number {
  return Number(value.toFixed(digits));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function writeReport(dir: string): Promise<void> {
  await renderReport(dir, await newestRun(dir, SCENARIOS));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.reportOnly) return writeReport(args.out);
  const started = performance.now();
  const [binary] = await Promise.all([loadgenBinary(), buildServer()]);
  await mkdir(args.out, { recursive: true });
  let ceiling: CeilingResult | undefined;
  if (process.env.DATABASE_URL && args.scenarios.includes("ramp")) {
    const seconds = args.profile === "full" ? 20 : args.profile === "quick" ? 8 : 2;
    console.log(`=== pg-ceiling (${seconds} s) ===`);
    ceiling = await measureCeiling({ url: process.env.DATABASE_URL, seconds, writers: 4, batch: 256, recipients: 9 });
    console.log(`  Postgres alone: ${ceiling.sendsPerSecond} sends/s (${ceiling.inboxRowsPerSecond} inbox rows/s), batch of 256 p50 ${ceiling.batchMsP50} ms`);
  }
  const day = new Date().toISOString().slice(0, 10);
  const problems: string[] = [];
  for (const scenario of args.scenarios) {
    const result = await runScenario(binary, scenario, args, ceiling);
    // A scenario run marking read though it does not by itself (BENCH_PLAN markRead) is kept apart: <date>-groups100reads.json.
    await writeFile(join(args.out, `${day}-${scenarioKey(result)}.json`), `${JSON.stringify(result, null, 2)}\n`);
    problems.push(...result.problems.map((p) => `${scenario}: ${p}`));
  }
  await writeReport(args.out);
  console.log(`\nwrote ${args.out}/${day}-*.json and ${args.out}/report.md in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  if (problems.length > 0) {
    console.error(`\nFAILED: ${problems.length} problem${problems.length > 1 ? "s" : ""}:\n${problems.map((p) => `  ${p}`).join("\n")}`);
    process.exitCode = 1;
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
