/**
 * `npm run bench`: Palaver's delivery benchmarks with k6 (bench/k6/*.js). For each scenario it starts the server as a
 * child process on a fresh database, creates the chats and registers the devices through the API, mints tokens, runs
 * the k6 script, and writes bench/results/<date>-<scenario>.json; at the end it renders bench/results/report.md with
 * an SVG chart of delivery latency against send rate. With Postgres it first measures the database alone on the same
 * write pattern (bench/pg-ceiling.ts), so the knee reads as a share of that ceiling.
 *
 *   npm run bench                                   quick profile, every scenario (a few minutes)
 *   npm run bench -- --profile full                 bigger numbers, longer
 *   npm run bench -- --scenario steady --profile ci the tiny CI run (fails only on a broken script)
 *   npm run bench -- --scenario steady,ramp --nodes 2   (several nodes need REDIS_URL)
 *   --out DIR                                       results and report elsewhere than bench/results
 *
 * Environment: DATABASE_URL (unset: PGlite in a temporary directory; set: a fresh database per scenario on that
 * server, dropped afterwards), REDIS_URL (with --nodes > 1), K6 (the k6 binary; default from scripts/tools.sh),
 * BENCH_CPU_PROF=1 (the server writes a V8 CPU profile into bench/results/profiles/).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ChatService } from "../gen/palaver/chat/v1/chat_pb.js";
import { mintToken } from "../src/auth/tokens.js";
import { type CeilingResult, createDatabase, dropDatabase, measureCeiling } from "./pg-ceiling.js";
import { renderReport } from "./report.js";

const ROOT = join(dirname(import.meta.filename), "..");
const RESULTS = join(ROOT, "bench", "results");
const SCENARIOS = ["steady", "ramp", "groups100", "drain", "connections"] as const;
type Scenario = (typeof SCENARIOS)[number];
type Profile = "quick" | "full" | "ci";

/** What one scenario runs with. groupUsers × devicesPerUser devices per chat; `online` of them connect to k6. */
interface Plan {
  groups: number;
  groupUsers: number;
  devicesPerUser: number;
  /** Devices per group that connect (the rest are registered and offline: they still get inbox rows). */
  onlinePerGroup?: number;
  vus: number;
  conns: number;
  env: Record<string, string | number>;
  /** drain: events stored for each device before it reconnects. */
  backlog?: number;
}

const PLANS: Record<Profile, Partial<Record<Scenario, Plan>>> = {
  ci: {
    steady: { groups: 2, groupUsers: 5, devicesPerUser: 2, vus: 2, conns: 1, env: { RATE: 10, SEND_S: 5, START_DELAY_S: 3 } },
    ramp: { groups: 4, groupUsers: 5, devicesPerUser: 2, onlinePerGroup: 2, vus: 2, conns: 1, env: { STEPS: "10,20", STEP_S: 3, START_DELAY_S: 3 } },
    groups100: { groups: 1, groupUsers: 100, devicesPerUser: 1, vus: 2, conns: 1, env: { RATE: 2, SEND_S: 5, START_DELAY_S: 3 } },
    drain: { groups: 2, groupUsers: 5, devicesPerUser: 2, vus: 2, conns: 1, backlog: 20, env: { ACK_BATCH: 100 } },
    connections: { groups: 5, groupUsers: 5, devicesPerUser: 2, vus: 2, conns: 1, env: { HOLD_S: 3 } },
  },
  quick: {
    steady: { groups: 200, groupUsers: 5, devicesPerUser: 2, vus: 4, conns: 2, env: { RATE: 200, SEND_S: 12, WARMUP_S: 3, START_DELAY_S: 5 } },
    ramp: {
      groups: 300, groupUsers: 5, devicesPerUser: 2, onlinePerGroup: 2, vus: 4, conns: 2,
      env: { STEPS: "250,500,1000,1500,2000,2500,3000,3500,4000,5000", STEP_S: 3, START_DELAY_S: 4 },
    },
    groups100: { groups: 10, groupUsers: 100, devicesPerUser: 1, vus: 4, conns: 2, env: { RATE: 20, SEND_S: 12, WARMUP_S: 3, START_DELAY_S: 5 } },
    drain: { groups: 100, groupUsers: 5, devicesPerUser: 2, vus: 4, conns: 2, backlog: 100, env: { ACK_BATCH: 500 } },
    connections: { groups: 200, groupUsers: 5, devicesPerUser: 2, vus: 4, conns: 2, env: { HOLD_S: 6 } },
  },
  full: {
    steady: { groups: 1000, groupUsers: 5, devicesPerUser: 2, vus: 20, conns: 2, env: { RATE: 1000, SEND_S: 60, WARMUP_S: 10, START_DELAY_S: 10 } },
    ramp: {
      groups: 1000, groupUsers: 5, devicesPerUser: 2, onlinePerGroup: 2, vus: 8, conns: 2,
      env: { STEPS: "500,1000,1500,2000,2500,3000,3500,4000,4500,5000,6000,7000,8000,10000", STEP_S: 8, START_DELAY_S: 8 },
    },
    groups100: { groups: 50, groupUsers: 100, devicesPerUser: 1, vus: 10, conns: 2, env: { RATE: 50, SEND_S: 30, WARMUP_S: 5, START_DELAY_S: 8 } },
    drain: { groups: 500, groupUsers: 5, devicesPerUser: 2, vus: 10, conns: 2, backlog: 100, env: { ACK_BATCH: 500 } },
    connections: { groups: 1000, groupUsers: 5, devicesPerUser: 2, vus: 20, conns: 2, env: { HOLD_S: 15 } },
  },
};

interface Args {
  profile: Profile;
  scenarios: Scenario[];
  nodes: number;
  /** Where results and the report go (default bench/results; CI writes outside the committed results). */
  out: string;
}

function parseArgs(argv: string[]): Args {
  const value = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const profile = (value("profile") ?? "quick") as Profile;
  if (!(profile in PLANS)) throw new Error(`--profile must be one of ${Object.keys(PLANS).join(", ")}`);
  const scenarios = (value("scenario") ?? SCENARIOS.join(",")).split(",") as Scenario[];
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s} (${SCENARIOS.join(", ")})`);
  const nodes = Number(value("nodes") ?? 1);
  if (nodes > 1 && !process.env.REDIS_URL) throw new Error("--nodes > 1 needs REDIS_URL");
  const out = value("out") ?? RESULTS;
  return { profile, scenarios, nodes, out };
}

// ---------------------------------------------------------------------------------------------------------------
// The server under test

interface Node {
  child: ChildProcess;
  addr: string;
  url: string;
  exited: Promise<number | null>;
}

interface Servers {
  nodes: Node[];
  secret: Uint8Array;
  backend: string;
  close(): Promise<void>;
}

async function startServers(scenario: Scenario, count: number): Promise<Servers> {
  const dataDir = await mkdtemp(join(tmpdir(), `palaver-bench-${scenario}-`));
  const authSecret = randomBytes(32).toString("base64url");
  const base = process.env.DATABASE_URL;
  const dbName = `palaver_bench_${scenario}_${process.pid}`;
  const databaseUrl = base ? await createDatabase(base, dbName) : undefined;
  const profileDir = join(RESULTS, "profiles");
  if (process.env.BENCH_CPU_PROF) await mkdir(profileDir, { recursive: true });

  const nodes: Node[] = [];
  for (let i = 0; i < count; i++) {
    const args = ["--import", "tsx"];
    // One file per thread (the main thread's is the biggest; tsx's loader runs in a worker).
    if (process.env.BENCH_CPU_PROF) args.push("--cpu-prof", "--cpu-prof-dir", join(profileDir, `${scenario}-node${i}`));
    args.push("src/main.ts");
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: {
        ...process.env,
        PORT: "0",
        HOST: "127.0.0.1",
        // PGlite is one process's: several nodes need Postgres.
        DATA_DIR: count > 1 ? join(dataDir, `node${i}`) : dataDir,
        AUTH_SECRET: authSecret,
        LOG_LEVEL: "info",
        NODE_ID: `bench-${i}`,
        DATABASE_URL: databaseUrl ?? "",
        REDIS_URL: count > 1 ? process.env.REDIS_URL : "",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    // The server's log goes to a file (errors are also echoed); its path is printed at the end of the scenario.
    const logFile = join(tmpdir(), `palaver-bench-${scenario}-node${i}.log`);
    const log = createWriteStream(logFile);
    console.log(`  server node ${i}: pid ${child.pid}, log ${logFile}`);
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const url = await new Promise<string>((resolve, reject) => {
      let buffered = "";
      const onData = (chunk: Buffer) => {
        buffered += chunk.toString();
        for (;;) {
          const nl = buffered.indexOf("\n");
          if (nl < 0) break;
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          try {
            const entry = JSON.parse(line) as { msg?: string; url?: string; level?: number };
            if (entry.msg === "palaver is serving" && entry.url) resolve(entry.url);
            else if ((entry.level ?? 0) >= 50) process.stderr.write(`[server] ${line}\n`);
          } catch {
            process.stderr.write(`[server] ${line}\n`);
          }
        }
      };
      child.stdout!.on("data", onData);
      void exited.then((code) => reject(new Error(`the server exited (${code}) before serving`)));
    });
    nodes.push({ child, url, addr: url.replace(/^http:\/\//, ""), exited });
    if (count > 1 && i === 0 && !databaseUrl) throw new Error("several nodes need DATABASE_URL");
  }
  return {
    nodes,
    secret: new TextEncoder().encode(authSecret),
    backend: databaseUrl ? "postgres" : "pglite",
    async close() {
      for (const node of nodes) node.child.kill("SIGTERM");
      await Promise.all(nodes.map((n) => Promise.race([n.exited, sleep(20_000).then(() => n.child.kill("SIGKILL"))])));
      if (base) await dropDatabase(base, dbName);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Resident memory and CPU seconds of a process, from /proc. */
function processStats(pid: number): { rssBytes: number; cpuSeconds: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
  return { rssBytes: rssKb * 1024, cpuSeconds: ticks / 100 };
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

// ---------------------------------------------------------------------------------------------------------------
// Setup through the API

interface Device {
  user: string;
  device: string;
  token: string;
  chat: string;
  group: number;
  online: boolean;
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

async function setUp(servers: Servers, plan: Plan, tag: string) {
  const client = createClient(ChatService, createGrpcTransport({ baseUrl: servers.nodes[0]!.url }));
  const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  const perGroup = plan.groupUsers * plan.devicesPerUser;
  const online = plan.onlinePerGroup ?? perGroup;
  const devices: Device[] = [];
  const run = `${tag}${randomBytes(3).toString("hex")}`;
  for (let g = 0; g < plan.groups; g++) {
    for (let u = 0; u < plan.groupUsers; u++) {
      for (let d = 0; d < plan.devicesPerUser; d++) {
        const user = `${run}-g${g}-u${u}`;
        const device = `d${d}`;
        const slot = u * plan.devicesPerUser + d;
        const partial = online < perGroup;
        // A partly online group: user 0's first device sends, and the first devices of the next users watch.
        const isOnline = !partial || slot === 0 || (d === 0 && u >= 1 && u < online);
        devices.push({ user, device, token: "", chat: "", group: g, online: isOnline, sends: !partial || slot === 0 });
      }
    }
  }
  let started = performance.now();
  await pool(devices, 64, async (d) => {
    d.token = await mintToken(servers.secret, { userId: d.user, deviceName: d.device });
  });
  // Chats first, then the devices: a device registered after its chat was created has no ChatUpdate waiting.
  const creators = devices.filter((d) => d.user.endsWith("-u0") && d.device === "d0");
  await pool(creators, 32, async (creator) => {
    const others = Array.from({ length: plan.groupUsers - 1 }, (_, i) => creator.user.replace(/-u0$/, `-u${i + 1}`));
    const res = await retry(() => client.createChat({ name: `bench ${creator.group}`, participantUserIds: others }, auth(creator.token)));
    for (const d of devices) if (d.group === creator.group) d.chat = res.chat!.chatId;
  });
  await pool(devices, 64, async (d) => {
    await retry(() => client.listChats({ pageSize: 1 }, auth(d.token)));
  });
  console.log(`  set up ${plan.groups} chats, ${devices.length} devices in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  started = performance.now();
  let filled = 0;
  if (plan.backlog) {
    // One extra device per group sends, so every one of the group's devices gets `backlog` events.
    const senders = await Promise.all(
      creators.map(async (c) => ({ chat: c.chat, token: await mintToken(servers.secret, { userId: c.user, deviceName: "filler" }) })),
    );
    const sends = senders.flatMap((s) => Array.from({ length: plan.backlog! }, (_, i) => ({ ...s, i })));
    await pool(sends, 128, async (s) => {
      await retry(() =>
        client.sendMessage({ chatId: s.chat, clientMessageId: `fill-${s.i}`, text: `${Date.now()}|fill| backlog message ${s.i}` }, auth(s.token)),
      );
      filled++;
    });
    const seconds = (performance.now() - started) / 1000;
    console.log(`  stored ${filled} sends (${filled * perGroup} inbox events) in ${seconds.toFixed(1)} s: ${Math.round(filled / seconds)} sends/s`);
  }
  return { devices, fillSendsPerSecond: plan.backlog ? filled / ((performance.now() - started) / 1000) : undefined };
}

// ---------------------------------------------------------------------------------------------------------------
// k6

function k6Binary(): string {
  if (process.env.K6) return process.env.K6;
  const built = spawnSync("bash", [join(ROOT, "scripts", "tools.sh"), "k6"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (built.status !== 0) throw new Error("could not build k6 (bash scripts/tools.sh k6)");
  return join(built.stdout.trim(), "k6");
}

type Export = { metrics: Record<string, Record<string, number>> };

async function runK6(
  k6: string,
  scenario: Scenario,
  env: Record<string, string | number>,
  work: string,
  servers: Servers,
  watch?: (stats: { rssBytes: number; connected: number }) => void,
): Promise<{ exitCode: number; export: Export; seconds: number; serverCpuSeconds: number; k6CpuSeconds: number; maxRss: number }> {
  const exportFile = join(work, `${scenario}-summary.json`);
  const args = ["run", "--quiet", "--address", "127.0.0.1:0", "--summary-export", exportFile];
  for (const [key, value] of Object.entries(env)) args.push("-e", `${key}=${value}`);
  args.push(join(ROOT, "bench", "k6", `${scenario}.js`));
  const pid = servers.nodes[0]!.child.pid!;
  const cpuBefore = servers.nodes.reduce((sum, n) => sum + processStats(n.child.pid!).cpuSeconds, 0);
  const started = performance.now();
  const child = spawn(k6, args, { stdio: ["ignore", "inherit", "inherit"] });
  let maxRss = 0;
  let k6Cpu = 0;
  const poll = setInterval(() => {
    try {
      const stats = processStats(pid);
      maxRss = Math.max(maxRss, stats.rssBytes);
      k6Cpu = processStats(child.pid!).cpuSeconds;
      if (watch) {
        void scrape(servers.nodes[0]!.url).then(
          (m) => watch({ rssBytes: stats.rssBytes, connected: m.get("palaver_connected_devices") ?? 0 }),
          () => {},
        );
      }
    } catch {
      // a process just ended
    }
  }, 500);
  // No scenario runs for 10 minutes: a k6 still running then is stuck (it has hung on ending gRPC streams), and a
  // benchmark must end rather than wait for ever.
  const stuck = setTimeout(() => child.kill("SIGKILL"), 10 * 60_000);
  const exitCode = await new Promise<number>((resolve) => child.once("exit", (code) => resolve(code ?? 1)));
  clearTimeout(stuck);
  clearInterval(poll);
  const seconds = (performance.now() - started) / 1000;
  const cpuAfter = servers.nodes.reduce((sum, n) => sum + processStats(n.child.pid!).cpuSeconds, 0);
  // 0: thresholds held; 99: a threshold failed (a figure, not a broken script). Anything else is a failure.
  if (exitCode !== 0 && exitCode !== 99) throw new Error(`k6 ${scenario} failed with exit code ${exitCode}`);
  const summary = JSON.parse(await readFile(exportFile, "utf8")) as Export;
  return { exitCode, export: summary, seconds, serverCpuSeconds: cpuAfter - cpuBefore, k6CpuSeconds: k6Cpu, maxRss };
}

// ---------------------------------------------------------------------------------------------------------------
// Figures

export interface LatencyPoint {
  rate: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  achievedSendsPerSecond?: number;
}

export interface ScenarioResult {
  scenario: Scenario;
  profile: Profile;
  date: string;
  backend: string;
  nodes: number;
  plan: Plan;
  k6ExitCode: number;
  seconds: number;
  serverCpuSeconds: number;
  k6CpuSeconds: number;
  serverMaxRssBytes: number;
  figures: Record<string, number | string | null>;
  points: LatencyPoint[];
  pgCeiling?: CeilingResult;
  notes: string[];
}

const metric = (e: Export, name: string, stat: string): number | null => e.metrics[name]?.[stat] ?? null;

function latencyPoint(e: Export, tag: string, seconds?: number): LatencyPoint | null {
  const name = `delivery_latency{rate:${tag}}`;
  if (!e.metrics[name] || metric(e, name, "p(99)") === null) return null;
  const sends = metric(e, `sends{rate:${tag}}`, "count");
  // A step the ramp never reached (it stopped before) has no samples.
  if (!metric(e, `deliveries{rate:${tag}}`, "count")) return null;
  return {
    rate: Number(tag),
    p50: metric(e, name, "med")!,
    p95: metric(e, name, "p(95)")!,
    p99: metric(e, name, "p(99)")!,
    max: metric(e, name, "max")!,
    achievedSendsPerSecond: sends !== null && seconds ? Math.round(sends / seconds) : undefined,
  };
}

function commonFigures(e: Export): Record<string, number | null> {
  return {
    sends: metric(e, "sends", "count"),
    deliveries: metric(e, "deliveries", "count"),
    errors: metric(e, "errors", "count") ?? 0,
    sendErrorRate: metric(e, "send_error_rate", "value"),
    deliveryP50Ms: metric(e, "delivery_latency", "med"),
    deliveryP95Ms: metric(e, "delivery_latency", "p(95)"),
    deliveryP99Ms: metric(e, "delivery_latency", "p(99)"),
    deliveryMaxMs: metric(e, "delivery_latency", "max"),
    sendP99Ms: metric(e, "send_latency", "p(99)"),
    ...Object.fromEntries(
      Object.entries(e.metrics)
        .filter(([name, values]) => name.startsWith("errors{code:") && (values.count ?? 0) > 0)
        .map(([name, values]) => [name.replace("errors{code:", "errors_").replace("}", ""), values.count ?? 0]),
    ),
  };
}

async function runScenario(k6: string, scenario: Scenario, args: Args, ceiling: CeilingResult | undefined): Promise<ScenarioResult> {
  const plan = PLANS[args.profile][scenario];
  if (!plan) throw new Error(`profile ${args.profile} has no ${scenario}`);
  console.log(`\n=== ${scenario} (${args.profile}) ===`);
  const servers = await startServers(scenario, args.nodes);
  const work = await mkdtemp(join(tmpdir(), `palaver-bench-k6-`));
  try {
    const { devices, fillSendsPerSecond } = await setUp(servers, plan, scenario.slice(0, 2));
    const online = devices.filter((d) => d.online);
    const devicesFile = join(work, "devices.json");
    await writeFile(devicesFile, JSON.stringify({ devices: online.map((d) => ({ t: d.token, c: d.chat, s: d.sends ? 1 : 0 })) }));

    const pid = servers.nodes[0]!.child.pid!;
    await sleep(1000);
    const baseline = processStats(pid).rssBytes;
    let plateau: { rssBytes: number; connected: number } | undefined;
    // BENCH_ENV='{"RATE":500}' overrides a profile's k6 settings for one run (experiments); the figures and the
    // stored plan follow what ran.
    const settings: Plan["env"] = {
      ...plan.env,
      ...(process.env.BENCH_ENV ? (JSON.parse(process.env.BENCH_ENV) as Plan["env"]) : {}),
    };
    const env = {
      ...settings,
      DEVICES: devicesFile,
      ADDRS: servers.nodes.map((n) => n.addr).join(","),
      VUS: plan.vus,
      CONNS: plan.conns,
      SENDERS: online.filter((d) => d.sends).length,
    };
    const watch =
      scenario === "connections"
        ? (s: { rssBytes: number; connected: number }) => {
            // The highest memory seen while every device is connected (checked every 500 ms).
            if (s.connected >= online.length && (!plateau || s.rssBytes > plateau.rssBytes)) plateau = s;
          }
        : undefined;
    const k6Run = await runK6(k6, scenario, env, work, servers, watch);
    // The server's own view of live delivery: from sent_at to the push being handed to the stream (no k6 in it).
    const serverMetrics = await scrape(servers.nodes[0]!.url).catch(() => new Map<string, number>());
    const e = k6Run.export;
    const notes: string[] = [];
    const figures: ScenarioResult["figures"] = { devices: online.length, registeredDevices: devices.length, ...commonFigures(e) };
    let points: LatencyPoint[] = [];

    const serverLatency = histogramQuantiles(serverMetrics, "palaver_delivery_latency_seconds", [0.5, 0.99]);
    figures.serverDeliveryP50Ms = serverLatency[0] ?? null;
    figures.serverDeliveryP99Ms = serverLatency[1] ?? null;
    if (scenario === "steady" || scenario === "groups100") {
      const rate = Number(settings.RATE);
      const measuredSeconds = Number(settings.SEND_S) - Number(settings.WARMUP_S ?? 0);
      const point = latencyPoint(e, String(rate), measuredSeconds);
      if (point) points = [point];
      // The headline latency leaves out the warm-up seconds; the whole run's stays beside it.
      figures.deliveryP99AllMs = figures.deliveryP99Ms ?? null;
      figures.deliveryP50Ms = point?.p50 ?? null;
      figures.deliveryP95Ms = point?.p95 ?? null;
      figures.deliveryP99Ms = point?.p99 ?? null;
      figures.deliveryMaxMs = point?.max ?? null;
      figures.warmupSeconds = Number(settings.WARMUP_S ?? 0);
      figures.targetSendsPerSecond = rate;
      figures.achievedSendsPerSecond = point?.achievedSendsPerSecond ?? null;
      figures.deliveriesPerSecond = Math.round((metric(e, `deliveries{rate:${rate}}`, "count") ?? 0) / measuredSeconds);
      if (figures.warmupSeconds) notes.push(`the first ${figures.warmupSeconds} s of sending are warm-up, left out of the latency and rate figures (deliveryP99AllMs includes them)`);
    }
    if (scenario === "ramp") {
      const steps = String(settings.STEPS).split(",");
      const stepSeconds = Number(settings.STEP_S);
      const reached = steps.map((tag) => latencyPoint(e, tag, stepSeconds)).filter((p): p is LatencyPoint => p !== null);
      // The knee: the highest step whose p99 held under 500 ms and whose sends kept up (90 % of the plan). The first
      // step that did not is the last one shown: after it the VUs stop sending one by one, so later steps are
      // partial.
      const failed = reached.findIndex((p) => p.p99 >= 500 || (p.achievedSendsPerSecond ?? 0) < 0.9 * p.rate);
      const held = failed < 0 ? reached : reached.slice(0, failed);
      points = failed < 0 ? reached : reached.slice(0, failed + 1);
      figures.kneeSendsPerSecond = held.at(-1)?.rate ?? 0;
      figures.highestStepReached = points.at(-1)?.rate ?? null;
      if (ceiling) {
        figures.pgCeilingSendsPerSecond = ceiling.sendsPerSecond;
        figures.kneeShareOfPgCeiling = Number((figures.kneeSendsPerSecond / ceiling.sendsPerSecond).toFixed(3));
      }
      notes.push(`${plan.onlinePerGroup} of ${plan.groupUsers * plan.devicesPerUser} devices per group online: every send writes ${plan.groupUsers * plan.devicesPerUser - 1} inbox rows, one of which is pushed live`);
    }
    if (scenario === "drain") {
      const events = metric(e, "backlog_events", "count") ?? 0;
      const slowest = metric(e, "time_to_inbox_drained", "max") ?? 0;
      figures.backlogEvents = events;
      figures.expectedBacklogEvents = online.length * plan.backlog!;
      figures.drainEventsPerSecond = slowest > 0 ? Math.round(events / (slowest / 1000)) : null;
      figures.timeToInboxDrainedP50Ms = metric(e, "time_to_inbox_drained", "med");
      figures.timeToInboxDrainedP99Ms = metric(e, "time_to_inbox_drained", "p(99)");
      figures.timeToInboxDrainedMaxMs = slowest;
      figures.fillSendsPerSecond = fillSendsPerSecond ? Math.round(fillSendsPerSecond) : null;
    }
    if (scenario === "connections") {
      figures.baselineRssBytes = baseline;
      figures.connectedRssBytes = plateau?.rssBytes ?? null;
      figures.bytesPerDevice = plateau ? Math.round((plateau.rssBytes - baseline) / online.length) : null;
      figures.timeToAllDrainedMs = metric(e, "time_to_inbox_drained", "max");
      if (!plateau) notes.push("never saw every device connected at once: no memory figure");
    }
    if (args.nodes > 1) notes.push(`${args.nodes} nodes; CPU and memory figures are the sum or the first node's`);

    const result: ScenarioResult = {
      scenario,
      profile: args.profile,
      date: new Date().toISOString(),
      backend: servers.backend,
      nodes: args.nodes,
      plan: { ...plan, env: settings },
      k6ExitCode: k6Run.exitCode,
      seconds: Math.round(k6Run.seconds),
      serverCpuSeconds: Number(k6Run.serverCpuSeconds.toFixed(1)),
      k6CpuSeconds: Number(k6Run.k6CpuSeconds.toFixed(1)),
      serverMaxRssBytes: k6Run.maxRss,
      figures,
      points,
      pgCeiling: ceiling,
      notes,
    };
    printFigures(result);
    if (scenario === "steady" || scenario === "groups100" || scenario === "ramp") {
      if (!figures.sends) throw new Error(`${scenario}: no send succeeded; the script or the server is broken`);
      if (!figures.deliveries) throw new Error(`${scenario}: no message was delivered; the script or the server is broken`);
    }
    if (scenario === "drain" && !figures.backlogEvents) throw new Error("drain: no backlog event arrived");
    return result;
  } finally {
    await servers.close();
    await rm(work, { recursive: true, force: true });
  }
}

/** Quantiles (ms, the bucket's upper bound) of a Prometheus histogram in seconds; empty when it has no samples. */
function histogramQuantiles(metrics: Map<string, number>, name: string, quantiles: number[]): (number | null)[] {
  const buckets: { le: number; count: number }[] = [];
  for (const [key, value] of metrics) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}$`).exec(key);
    if (m) buckets.push({ le: m[1] === "+Inf" ? Infinity : Number(m[1]), count: value });
  }
  buckets.sort((a, b) => a.le - b.le);
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return [];
  return quantiles.map((q) => {
    const bucket = buckets.find((b) => b.count >= q * total);
    return bucket && Number.isFinite(bucket.le) ? bucket.le * 1000 : null;
  });
}

function printFigures(result: ScenarioResult): void {
  console.log(`\n  palaver ${result.scenario} (${result.profile}, ${result.backend}, k6 exit ${result.k6ExitCode}):`);
  for (const [key, value] of Object.entries(result.figures)) console.log(`    ${key.padEnd(28)} ${value ?? "-"}`);
  for (const p of result.points) {
    console.log(`    rate ${String(p.rate).padStart(6)}/s  p50 ${p.p50.toFixed(1)} ms  p95 ${p.p95.toFixed(1)} ms  p99 ${p.p99.toFixed(1)} ms  achieved ${p.achievedSendsPerSecond ?? "-"}/s`);
  }
  console.log(`    server CPU ${result.serverCpuSeconds} s, k6 CPU ${result.k6CpuSeconds} s over ${result.seconds} s; server max RSS ${(result.serverMaxRssBytes / 2 ** 20).toFixed(0)} MiB`);
  for (const note of result.notes) console.log(`    note: ${note}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (process.argv.includes("--report-only")) return writeReport(args.out);
  const started = performance.now();
  const k6 = k6Binary();
  await mkdir(args.out, { recursive: true });
  let ceiling: CeilingResult | undefined;
  if (process.env.DATABASE_URL && args.scenarios.includes("ramp")) {
    const seconds = args.profile === "full" ? 20 : args.profile === "quick" ? 8 : 2;
    console.log(`=== pg-ceiling (${seconds} s) ===`);
    ceiling = await measureCeiling({ url: process.env.DATABASE_URL, seconds, writers: 4, batch: 256, recipients: 9 });
    console.log(`  Postgres alone: ${ceiling.sendsPerSecond} sends/s (${ceiling.inboxRowsPerSecond} inbox rows/s), batch of 256 p50 ${ceiling.batchMsP50} ms`);
  }
  const day = new Date().toISOString().slice(0, 10);
  for (const scenario of args.scenarios) {
    const result = await runScenario(k6, scenario, args, ceiling);
    await writeFile(join(args.out, `${day}-${scenario}.json`), `${JSON.stringify(result, null, 2)}\n`);
  }
  await writeReport(args.out);
  console.log(`\nwrote ${args.out}/${day}-*.json and ${args.out}/report.md in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

/** Renders report.md and latency.svg from the latest result of each scenario in `dir`. */
async function writeReport(dir: string): Promise<void> {
  const files = (await readdir(dir)).filter((f) => /^\d{4}-\d{2}-\d{2}-[a-z0-9]+\.json$/.test(f)).sort();
  const latest = new Map<string, ScenarioResult>();
  for (const file of files) {
    const result = JSON.parse(await readFile(join(dir, file), "utf8")) as ScenarioResult;
    latest.set(result.scenario, result);
  }
  await renderReport(dir, [...latest.values()]);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
