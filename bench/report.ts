/**
 * The shape of bench/results/<date>-<scenario>.json and the rendering of bench/results/report.md from the newest run's
 * files, with two charts drawn by hand (no chart library): latency.svg (delivery latency p50/p99/p99.9 against the send
 * rate) and cpu.svg (CPU per delivery of the server, Postgres, Redis, HAProxy and the load generator against the send
 * rate).
 *
 *   npx tsx bench/run.ts --report-only [--out DIR]     re-renders DIR's report from its files
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { CeilingResult } from "./pg-ceiling.js";

// ---------------------------------------------------------------------------------------------------------------
// The load generator's result (bench/loadgen/README.md: one per process, `loadgen merge` writes the same shape)

export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  count: number;
  /** The HDR histogram, base64 (kept so that results can be merged again). */
  hdr?: string;
}

/** Watched processes, as the loadgen names them. */
export type Watched = "server" | "postgres" | "redis" | "haproxy" | "loadgen";

/** The processes a result's CPU is broken down into, in the report's order: HAProxy only where the nodes ran behind it. */
export function cpuBreakdown(r: Pick<ScenarioResult, "proxy">): Watched[] {
  return r.proxy ? ["server", "postgres", "redis", "haproxy", "loadgen"] : ["server", "postgres", "redis", "loadgen"];
}

export interface LoadgenPoint {
  tag: string;
  rate: number;
  seconds: number;
  /** /proc/loadavg's 1-minute figure when the step began (shard 0's; null for a step that never began). */
  loadAvg1: number | null;
  /** Not in the README's contract, written by the loadgen: sending stopped before this step (ramp). */
  skipped?: boolean;
  sendsDue: number;
  sendsOk: number;
  sendErrors: Record<string, number>;
  deliveriesExpected: number;
  deliveriesReceived: number;
  duplicates: number;
  deliveryLatency: Latency;
  sendLatency: Latency;
  cpuSeconds: Partial<Record<Watched, number>>;
  cpuMicrosPerDelivery: Partial<Record<Watched, number>>;
  /** Counted while the step ran (absent in results from before receipts): ReceiptUpdate events received, mark_reads. */
  receiptUpdates?: number;
  receiptUpdatesPerSecond?: number;
  markReadsSent?: number;
  markReadsOk?: number;
  markReadErrors?: Record<string, number>;
}

export interface LoadgenResult {
  scenario: string;
  shards: number;
  devices: number;
  devicesPerConn: number;
  points: LoadgenPoint[];
  /** startedLateMs (beyond the README): how long after startAtMs the devices were all live (0: on time). */
  connect?: { devices: number; secondsUntilAllLive: number; latency: Latency; failed: number; startedLateMs?: number };
  drain?: { backlogEvents: number; secondsUntilAllDrained: number; eventsPerSecond: number };
  /** Beyond the README: finalDrainFailed (devices that did not drain after the last reconnect), chatsUnchecked. */
  churn?: {
    reconnects: number;
    lost: number;
    duplicatesOnAStream: number;
    redeliveredAfterReconnect: number;
    finalDrainFailed?: number;
    chatsUnchecked?: number;
  };
  memory?: { serverRssBeforeBytes: number; serverRssConnectedBytes: number; rssPerIdleDeviceBytes: number };
  /** The whole run's receipts and typing figures (absent in results from before receipts). */
  receipts?: {
    markRead: boolean;
    markReadsSent: number;
    markReadsOk: number;
    markReadErrors: Record<string, number>;
    markReadsUnanswered: number;
    receiptUpdates: number;
    typingUpdates: number;
  };
  errors?: Record<string, number>;
  loadgen?: { cpuSeconds: number; maxRssBytes: number };
}

// ---------------------------------------------------------------------------------------------------------------
// One scenario's stored result (written by bench/run.ts)

/** Marks the files of the Go load generator; the earlier load generator's files (2026-11-28/29) have none and are left out. */
export const FORMAT = "loadgen-1";

export interface Step {
  tag: string;
  rate: number;
  seconds: number;
}

/** What the plan looked like, without its tokens. */
export interface PlanShape {
  groups: number;
  groupUsers: number;
  devicesPerUser: number;
  devices: number;
  senders: number;
  recipientsPerSend: number;
  /** connect: the devices were never seen by the server before they connect. */
  newDevices: boolean;
  /** drain: events stored for each device before it reconnects. */
  backlogPerDevice?: number;
  steps: Step[];
  holdSeconds: number;
  /** From writing the plan to its startAtMs: the time the devices have to connect. */
  startDelaySeconds: number;
  stopAboveP99Ms?: number;
  inFlightPerSender: number;
  ackDelayMs: number;
  /** Every receiving device marked its chat read as messages arrived (receipts; absent in older results: false). */
  markRead?: boolean;
  churn?: { everySeconds: number; fraction: number };
  urls: number;
}

/** Rows of one table, from pg_stat_user_tables (n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd). */
export interface TableWrites {
  ins: number;
  upd: number;
  del: number;
  /** Of upd, the HOT ones (no index entry written). */
  hotUpd: number;
}

/**
 * The database's row writes during a run, from Postgres's statistics: from just before the send clock started until
 * the server nodes had stopped (their backends flush their statistics as they exit), so the warm-up, the hold and the
 * acks of the last messages are in it; per message stored in that time (every step's sendsOk).
 */
export interface DbWrites {
  span: "run";
  messages: number;
  /** Per table (partitions counted under their parent), tables without a write left out. */
  tables: Record<string, TableWrites>;
  total: TableWrites;
  /** (ins + upd + del) per stored message, in all and for the tables a message writes. */
  perMessage: { total: number; inbox: number; messages: number; chat_participants: number; other: number };
  /** WAL written meanwhile (the whole cluster's: pg_current_wal_lsn), and per stored message. */
  walBytes: number;
  walBytesPerMessage: number;
}

export interface ScenarioResult {
  format: typeof FORMAT;
  scenario: string;
  profile: string;
  /** When the scenario started (ISO). */
  date: string;
  backend: "pglite" | "postgres";
  nodes: number;
  /** The load balancer every device connected through (bench/run.ts --proxy); absent: device i to node i mod nodes. */
  proxy?: ProxyInfo;
  shards: number;
  devicesPerConn: number;
  machine: { cpus: number; model: string };
  shape: PlanShape;
  /** /proc/loadavg (1, 5, 15 minutes) before the server started, and before the load generator started. */
  loadAvgBefore: number[];
  loadAvgBeforeLoadgen: number[];
  setupSeconds: number;
  fillSendsPerSecond?: number;
  /** Wall time of the load generator processes. */
  seconds: number;
  /** CPU seconds over the whole loadgen run (connecting included), read by the runner from /proc. */
  cpuSeconds: Partial<Record<Watched, number>>;
  serverMaxRssBytes: number;
  /** The server's own view (palaver_delivery_latency_seconds: stored to handed to the stream), bucket bounds. */
  serverDeliveryP50Ms: number | null;
  serverDeliveryP99Ms: number | null;
  /**
   * The server's event-loop delay from the start of sending to the end (node 0; prom-client's histogram): tens of
   * milliseconds when it keeps up, hundreds when work queues faster than it is done. null in older files.
   */
  serverLoopDelayMs?: { p50: number; p99: number; max: number } | null;
  /** steady, receipts, groups100: the database's writes (null: not measurable, on PGlite; absent: not counted). */
  dbWrites?: DbWrites | null;
  figures: Figures;
  result: LoadgenResult;
  pgCeiling?: CeilingResult;
  notes: string[];
  /** What makes the run fail: a lost message, a broken script or server. */
  problems: string[];
}

export interface ProxyInfo {
  name: "haproxy";
  /** `haproxy -v`'s version. */
  version: string;
  /** The global maxconn it ran with (two file descriptors per proxied connection). */
  maxconn: number;
}

/** "2 nodes behind HAProxy 2.6.12-1+deb12u4": how the devices reached the server. */
export function nodesLabel(r: Pick<ScenarioResult, "nodes" | "proxy">): string {
  return `${r.nodes} node${r.nodes > 1 ? "s" : ""}${r.proxy ? ` behind HAProxy ${r.proxy.version}` : ""}`;
}

/** Figures derived from the loadgen's result (also stored, for comparing runs by eye). */
export interface Figures {
  /** steady, groups100, churn: the tag of the measured step (the warm-up left out). */
  measuredTag?: string;
  /** ramp: highest step with p99 < 500 ms, nothing lost and the sends keeping up; 0 when none held. */
  kneeSendsPerSecond?: number;
  highestStepSent?: number;
  pgCeilingSendsPerSecond?: number;
  kneeShareOfPgCeiling?: number;
}

/** A run whose receivers marked read though its scenario does not (BENCH_PLAN markRead): stored and shown apart. */
export function marksReadApart(r: Pick<ScenarioResult, "scenario" | "shape">): boolean {
  return r.shape.markRead === true && r.scenario !== "receipts";
}

/** The result's file name part: `<date>-<key>.json` (groups100 marking read: groups100reads). */
export function scenarioKey(r: Pick<ScenarioResult, "scenario" | "shape">): string {
  return `${r.scenario}${marksReadApart(r) ? "reads" : ""}`;
}

/** The scenario as the summary and the report name it. */
export function scenarioLabel(r: Pick<ScenarioResult, "scenario" | "shape">): string {
  return marksReadApart(r) ? `${r.scenario} (marking read)` : r.scenario;
}

export const KNEE_P99_MS = 500;
/** A step's sends "keep up" when this share of what the plan asked for came back stored. */
export const KEEP_UP = 0.95;

/** The points that sent something (a ramp that stopped early leaves its later steps empty). */
export function sentPoints(r: ScenarioResult): LoadgenPoint[] {
  return r.result.points.filter((p) => !p.skipped && (p.sendsDue > 0 || p.sendsOk > 0));
}

/** Whether a step held: p99 under the knee limit, every expected delivery received, sends keeping up. */
export function held(p: LoadgenPoint): boolean {
  return (
    p.deliveryLatency.count > 0 &&
    p.deliveryLatency.p99 < KNEE_P99_MS &&
    p.deliveriesReceived >= p.deliveriesExpected &&
    p.sendsOk >= KEEP_UP * p.rate * p.seconds
  );
}

export function kneeOf(r: ScenarioResult): { knee: number; point: LoadgenPoint | undefined } {
  const points = sentPoints(r).filter((p) => p.tag !== "warmup");
  const failed = points.findIndex((p) => !held(p));
  const ok = failed < 0 ? points : points.slice(0, failed);
  const point = ok.at(-1);
  return { knee: point?.rate ?? 0, point };
}

/** The step steady, groups100 and churn are judged by: the last one that is not warm-up. */
export function measuredPoint(r: ScenarioResult): LoadgenPoint | undefined {
  return sentPoints(r)
    .filter((p) => p.tag !== "warmup")
    .at(-1);
}

// ---------------------------------------------------------------------------------------------------------------
// Reading a results directory

const FILE = /^(\d{4}-\d{2}-\d{2})-([a-z0-9]+)\.json$/;

/** The newest date's loadgen-format results in `dir` (one file per scenario), in the runner's scenario order. */
export async function newestRun(dir: string, order: readonly string[]): Promise<ScenarioResult[]> {
  const results: { day: string; result: ScenarioResult }[] = [];
  for (const file of (await readdir(dir)).sort()) {
    const m = FILE.exec(file);
    if (!m) continue;
    const result = JSON.parse(await readFile(join(dir, file), "utf8")) as Partial<ScenarioResult>;
    if (result.format === FORMAT) results.push({ day: m[1]!, result: result as ScenarioResult });
  }
  const newest = results.map((r) => r.day).sort().at(-1);
  const rank = (s: string) => (order.includes(s) ? order.indexOf(s) : order.length);
  return results
    .filter((r) => r.day === newest)
    .map((r) => r.result)
    .sort((a, b) => rank(a.scenario) - rank(b.scenario));
}

// ---------------------------------------------------------------------------------------------------------------
// report.md

const ms = (v: number | undefined) => (v === undefined ? "-" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const int = (v: number | undefined) => (v === undefined ? "-" : Math.round(v).toLocaleString("en-US"));
const kib = (bytes: number | undefined) => (bytes === undefined ? "-" : `${(bytes / 1024).toFixed(1)} KiB`);
const mib = (bytes: number | undefined) => (bytes === undefined ? "-" : `${(bytes / 2 ** 20).toFixed(0)} MiB`);
const codes = (errors: Record<string, number> | undefined) => {
  const listed = Object.entries(errors ?? {}).filter(([, n]) => n > 0);
  return listed.length === 0 ? "none" : listed.map(([code, n]) => `${code} ${n}`).join(", ");
};
const micros = (p: LoadgenPoint, who: Watched) => {
  const v = p.cpuMicrosPerDelivery[who];
  return v === undefined || (v === 0 && who !== "server") ? "-" : v.toFixed(0);
};

export async function renderReport(dir: string, results: ScenarioResult[]): Promise<void> {
  // By scenario; a run marking read apart (groups100reads) does not stand in for its scenario's own.
  const by = new Map<string, ScenarioResult>();
  for (const r of results) if (!marksReadApart(r) || !by.has(r.scenario)) by.set(r.scenario, r);
  const first = results[0];
  const lines: string[] = ["# Palaver benchmark report", ""];
  if (!first) {
    lines.push("No results of the Go load generator in this directory yet: run `npm run bench`.", "");
    await writeFile(join(dir, "report.md"), `${lines.join("\n")}\n`);
    return;
  }
  const ramp = by.get("ramp");
  const ceiling = ramp?.pgCeiling ?? results.find((r) => r.pgCeiling)?.pgCeiling;
  const setups = [...new Set(results.map((r) => `${r.profile} profile, ${r.backend}, ${nodesLabel(r)}, ${r.shards} loadgen process${r.shards > 1 ? "es" : ""}, ${r.devicesPerConn} device${r.devicesPerConn > 1 ? "s" : ""} per HTTP/2 connection`))];
  lines.push(
    `Generated by \`npm run bench\` (bench/run.ts) from the ${first.date.slice(0, 10)} results in this directory ` +
      `(\`<date>-<scenario>.json\`, the newest date's), measured with our Go load generator (bench/loadgen): ${setups.join("; ")}; ` +
      `${first.machine.cpus} CPUs (${first.machine.model}). The load generator, the server and the database share the machine, ` +
      "so the load generator's CPU (shown) is taken from the same cores, and other work on the machine makes figures noisy: " +
      "each point carries the load average when it began.",
    "",
  );

  targets(lines, by);

  if (ceiling) {
    const { knee } = ramp ? kneeOf(ramp) : { knee: 0 };
    lines.push(
      "## Postgres ceiling",
      "",
      `bench/pg-ceiling.ts, same run: ${ceiling.writers} writers, ${ceiling.batch} messages per transaction, ${ceiling.recipients} inbox rows each, ${ceiling.seconds} s: ` +
        `**${int(ceiling.sendsPerSecond)} sends/s** (${int(ceiling.inboxRowsPerSecond)} inbox rows/s; batch commit p50 ${ceiling.batchMsP50} ms, max ${ceiling.batchMsMax} ms)` +
        (ramp ? `; the ramp's knee, ${int(knee)} sends/s, is ${((knee / ceiling.sendsPerSecond) * 100).toFixed(1)} % of it.` : "."),
      "",
    );
  }

  lines.push(
    "## Delivery latency against send rate",
    "",
    "![delivery latency against send rate](latency.svg)",
    "",
    "Ramp steps (circles) and the steady rate (squares). Latency runs from each message's due time on the send clock to its arrival on a recipient's stream, and counts against the step that sent it.",
    "",
    "## CPU per delivery against send rate",
    "",
    "![CPU per delivery against send rate](cpu.svg)",
    "",
    `CPU seconds of each watched process during the step, per delivery received.${results.some((r) => r.backend === "pglite") ? " On PGlite the database runs inside the server process, so its CPU is in the server's." : ""}`,
    "",
  );

  receiptsBesideSteady(lines, results);

  lines.push("## Scenarios", "");
  for (const r of results) scenarioSection(lines, r);

  await writeFile(join(dir, "report.md"), `${lines.join("\n")}\n`);
  await writeFile(join(dir, "latency.svg"), latencyChart(results));
  await writeFile(join(dir, "cpu.svg"), cpuChart(results));
}

/** The targets of the performance issue (#15), each against the figure of this run that measures it. */
function targets(lines: string[], by: Map<string, ScenarioResult>): void {
  const run = (r: ScenarioResult | undefined) => (r ? `${r.profile}, ${r.backend}, ${r.shape.devices.toLocaleString("en-US")} devices` : "not run");
  // "met" only when the run had the issue's size; a smaller run shows its figure and leaves the verdict out.
  const verdict = (sized: boolean, ok: boolean | undefined) => (ok === undefined ? "-" : !sized ? "- (smaller run)" : ok ? "yes" : "no");
  lines.push("## Targets of the performance issue", "");
  lines.push("| target | goal | measured | run | met |", "| --- | --- | --- | --- | --- |");
  const row = (what: string, goal: string, shown: string, r: ScenarioResult | undefined, sized: boolean, ok: boolean | undefined) =>
    lines.push(`| ${what} | ${goal} | ${r ? shown : "-"} | ${run(r)} | ${r ? verdict(sized, ok) : "-"} |`);

  const steady = by.get("steady");
  const sp = steady && measuredPoint(steady);
  if (sp && steady!.shape.devices <= 2_000) {
    row("2,000 devices, 250 msgs/s: p50 / p99", "(issue: 100 / 258 ms today)", `${ms(sp.deliveryLatency.p50)} / ${ms(sp.deliveryLatency.p99)} ms at ${sp.rate} msgs/s, ${((sp.cpuMicrosPerDelivery.server ?? 0) + (sp.cpuMicrosPerDelivery.postgres ?? 0)).toFixed(0)} µs CPU per delivery`, steady, steady!.shape.devices === 2_000 && sp.rate === 250, undefined);
  }
  const ramp = by.get("ramp");
  const { knee, point: kp } = ramp ? kneeOf(ramp) : { knee: 0, point: undefined };
  const tenK = (r: ScenarioResult | undefined) => (r?.shape.devices ?? 0) >= 10_000;
  row("knee: highest rate with p99 < 500 ms, nothing lost", "≥ 1,000 msgs/s into 10,000 devices", `${int(knee)} msgs/s${kp ? ` (p99 ${ms(kp.deliveryLatency.p99)} ms)` : ""}`, ramp, tenK(ramp), knee >= 1000);
  row("p99 at 1,000 msgs/s", "≤ 250 ms, 10,000 devices", sp ? `${ms(sp.deliveryLatency.p99)} ms at ${sp.rate} msgs/s` : "-", steady, tenK(steady) && sp?.rate === 1000, sp && sp.deliveryLatency.p99 <= 250);
  const cpu = (p: LoadgenPoint | undefined) => (p ? (p.cpuMicrosPerDelivery.server ?? 0) + (p.cpuMicrosPerDelivery.postgres ?? 0) : undefined);
  row("server + Postgres CPU per delivery", "≤ 100 µs at 1,000 msgs/s", sp ? `${cpu(sp)!.toFixed(0)} µs at ${sp.rate} msgs/s (steady)` : "-", steady, tenK(steady) && sp?.rate === 1000 && steady!.backend === "postgres", sp && cpu(sp)! <= 100);
  row("server + Postgres CPU per delivery at the knee", "(reported)", kp ? `${cpu(kp)!.toFixed(0)} µs at ${kp.rate} msgs/s (ramp)` : "-", ramp, tenK(ramp), undefined);
  const connect = by.get("connect");
  const c = connect?.result.connect;
  row("connecting new devices", "10,000 in ≤ 15 s", c ? `${c.secondsUntilAllLive.toFixed(1)} s for ${int(c.devices)} (${c.failed} failed)` : "-", connect, tenK(connect), c && c.secondsUntilAllLive <= 15 && c.failed === 0);
  const conns = by.get("connections");
  const known = conns?.result.connect;
  row("reconnecting registered devices", "as fast as Centrifugo's 10 s for 10,000", known ? `${known.secondsUntilAllLive.toFixed(1)} s for ${int(known.devices)}` : "-", conns, tenK(conns), known && known.secondsUntilAllLive <= 10);
  const mem = conns?.result.memory;
  row("memory per idle device connection", "≤ 30 KiB", mem ? kib(mem.rssPerIdleDeviceBytes) : "-", conns, tenK(conns), mem && mem.rssPerIdleDeviceBytes <= 30 * 1024);
  const drain = by.get("drain");
  const d = drain?.result.drain;
  row("drain", "≥ 100,000 events/s (5,000 devices × 100 events)", d ? `${int(d.eventsPerSecond)} events/s (${int(d.backlogEvents)} events)` : "-", drain, (drain?.shape.devices ?? 0) >= 5_000 && (drain?.shape.backlogPerDevice ?? 0) >= 100, d && d.eventsPerSecond >= 100_000);
  const share = ramp?.figures.kneeShareOfPgCeiling;
  row("knee / Postgres ceiling", "reported (7–10 % in earlier runs)", share === undefined ? "- (PGlite: no ceiling)" : `${(share * 100).toFixed(1)} % of ${int(ramp!.figures.pgCeilingSendsPerSecond)} sends/s`, ramp, true, undefined);
  lines.push("");
}

/** What marking read costs: receipts and the runs marking read beside steady (and groups100), one row each. */
function receiptsBesideSteady(lines: string[], results: ScenarioResult[]): void {
  const rows = results.filter((r) => ["steady", "receipts", "groups100"].includes(r.scenario) && measuredPoint(r));
  if (!rows.some((r) => r.shape.markRead)) return;
  lines.push(
    "## Marking read beside steady",
    "",
    "The measured step of each run (the warm-up left out); database writes are rows inserted + updated + deleted " +
      "(Postgres's pg_stat_user_tables) over the whole send run, per stored message.",
    "",
    "| run | devices | recipients per send | marks read | delivery p50 / p99 ms | CPU µs/delivery server / pg | receipt updates /s | mark_reads /s | DB writes per message: all (inbox / messages / chat_participants / other) | WAL per message |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const r of rows) {
    const p = measuredPoint(r)!;
    const w = r.dbWrites;
    const pm = w?.perMessage;
    const writes = pm
      ? `${pm.total.toFixed(2)} (${pm.inbox.toFixed(2)} / ${pm.messages.toFixed(2)} / ${pm.chat_participants.toFixed(2)} / ${pm.other.toFixed(2)})`
      : w === null
        ? "n/a (PGlite)"
        : "-";
    lines.push(
      `| ${scenarioLabel(r)} | ${int(r.shape.devices)} | ${r.shape.recipientsPerSend} | ${r.shape.markRead ? "yes" : "no"} | ${ms(p.deliveryLatency.p50)} / ${ms(p.deliveryLatency.p99)} | ` +
        `${micros(p, "server")} / ${micros(p, "postgres")} | ${int(p.receiptUpdatesPerSecond)} | ${r.shape.markRead ? int((p.markReadsSent ?? 0) / p.seconds) : "-"} | ${writes} | ${w ? kib(w.walBytesPerMessage) : "-"} |`,
    );
  }
  lines.push("");
}

function scenarioSection(lines: string[], r: ScenarioResult): void {
  const s = r.shape;
  const res = r.result;
  lines.push(`### ${scenarioLabel(r)}`, "");
  const what =
    `${int(s.devices)} devices (${s.groups} groups of ${s.groupUsers} user${s.groupUsers > 1 ? "s" : ""} × ${s.devicesPerUser} device${s.devicesPerUser > 1 ? "s" : ""}` +
    `${s.newDevices ? ", never seen by the server before" : ""}), ${s.senders} sending, ${s.recipientsPerSend} recipients per send` +
    (s.backlogPerDevice ? `, ${s.backlogPerDevice} stored events each` : "") +
    (s.churn ? `, ${(s.churn.fraction * 100).toFixed(0)} % of the devices dropping and reconnecting every ${s.churn.everySeconds} s` : "") +
    (s.markRead ? ", every receiving device marking its chat read as messages arrive" : "");
  lines.push(
    `${r.profile} profile, ${r.backend}${r.nodes > 1 || r.proxy ? `, ${nodesLabel(r)}` : ""}, ${r.date}. ${what}. ` +
      `Load generator: ${r.seconds} s, ${r.shards} process${r.shards > 1 ? "es" : ""}, ${r.devicesPerConn} device${r.devicesPerConn > 1 ? "s" : ""} per connection. ` +
      `Load average before: ${r.loadAvgBefore.join(" / ")}.`,
    "",
  );
  const points = sentPoints(r);
  const who = cpuBreakdown(r);
  if (points.length > 0) {
    lines.push(
      `| step | rate /s | s | sends due / ok | delivery p50 / p90 / p99 / p99.9 / max ms | send p50 / p99 / max ms | deliveries expected / received | dup | send errors | CPU µs/delivery ${who.map((w) => (w === "postgres" ? "pg" : w)).join(" / ")} | load avg |`,
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const p of points) {
      const d = p.deliveryLatency;
      const sl = p.sendLatency;
      const mark = r.scenario === "ramp" && p.tag !== "warmup" && !held(p) ? " ✗" : "";
      lines.push(
        `| ${p.tag}${mark} | ${int(p.rate)} | ${p.seconds} | ${int(p.sendsDue)} / ${int(p.sendsOk)} | ${ms(d.p50)} / ${ms(d.p90)} / ${ms(d.p99)} / ${ms(d.p999)} / ${ms(d.max)} | ` +
          `${ms(sl.p50)} / ${ms(sl.p99)} / ${ms(sl.max)} | ${int(p.deliveriesExpected)} / ${int(p.deliveriesReceived)} | ${p.duplicates} | ${codes(p.sendErrors)} | ` +
          `${who.map((w) => micros(p, w)).join(" / ")} | ${p.loadAvg1 === null || p.loadAvg1 < 0 ? "-" : p.loadAvg1.toFixed(2)} |`,
      );
    }
    lines.push("");
    if (s.markRead || points.some((p) => (p.receiptUpdates ?? 0) > 0)) {
      lines.push(
        "| step | receipt updates received (/s) | mark_reads sent / ok | mark_read errors |",
        "| --- | --- | --- | --- |",
      );
      for (const p of points) {
        lines.push(
          `| ${p.tag} | ${int(p.receiptUpdates)} (${int(p.receiptUpdatesPerSecond)}) | ${s.markRead ? `${int(p.markReadsSent)} / ${int(p.markReadsOk)}` : "-"} | ${s.markRead ? codes(p.markReadErrors) : "-"} |`,
        );
      }
      lines.push("");
    }
  }
  const figures: [string, string][] = [];
  if (r.scenario === "ramp") {
    const { knee } = kneeOf(r);
    figures.push(["knee (highest step with p99 < 500 ms, nothing lost, sends keeping up)", `${int(knee)} sends/s`]);
    if (r.figures.pgCeilingSendsPerSecond) {
      figures.push(["Postgres ceiling, same run", `${int(r.figures.pgCeilingSendsPerSecond)} sends/s (knee = ${((r.figures.kneeShareOfPgCeiling ?? 0) * 100).toFixed(1)} %)`]);
    }
  }
  if (res.connect) {
    const c = res.connect;
    figures.push(["connect: all live after", `${c.secondsUntilAllLive.toFixed(2)} s (${int(c.devices)} devices, ${c.failed} failed; per device p50 ${ms(c.latency.p50)} ms, p99 ${ms(c.latency.p99)} ms, max ${ms(c.latency.max)} ms)`]);
  }
  if (res.drain && r.scenario === "drain") {
    figures.push(["drain", `${int(res.drain.eventsPerSecond)} events/s: ${int(res.drain.backlogEvents)} of ${int(s.devices * (s.backlogPerDevice ?? 0))} stored events in ${res.drain.secondsUntilAllDrained.toFixed(2)} s`]);
    if (r.fillSendsPerSecond) figures.push(["backlog fill (unary SendMessage)", `${int(r.fillSendsPerSecond)} sends/s`]);
  }
  if (res.churn) {
    const c = res.churn;
    figures.push(["churn", `${int(c.reconnects)} reconnects, lost ${c.lost}, duplicates on one stream ${c.duplicatesOnAStream}, redelivered after a reconnect ${int(c.redeliveredAfterReconnect)}`]);
  }
  if (res.memory && r.scenario === "connections") {
    const m = res.memory;
    figures.push(["server RSS before / all connected", `${mib(m.serverRssBeforeBytes)} / ${mib(m.serverRssConnectedBytes)}: ${kib(m.rssPerIdleDeviceBytes)} per idle device`]);
  }
  const rc = res.receipts;
  if (rc && (rc.markRead || rc.receiptUpdates > 0 || rc.typingUpdates > 0)) {
    figures.push([
      "receipts over the run",
      `${rc.markRead ? `mark_reads sent ${int(rc.markReadsSent)}, ok ${int(rc.markReadsOk)}, errors ${codes(rc.markReadErrors)}, unanswered ${int(rc.markReadsUnanswered)}; ` : ""}receipt updates received ${int(rc.receiptUpdates)}${rc.typingUpdates > 0 ? `, typing updates ${int(rc.typingUpdates)}` : ""}`,
    ]);
  }
  if (r.dbWrites) {
    const w = r.dbWrites;
    const pm = w.perMessage;
    figures.push([
      "database writes per stored message (rows inserted + updated + deleted, pg_stat_user_tables, the whole send run)",
      `**${pm.total.toFixed(2)}**: inbox ${pm.inbox.toFixed(2)}, messages ${pm.messages.toFixed(2)}, chat_participants ${pm.chat_participants.toFixed(2)}, other ${pm.other.toFixed(2)} (${int(w.messages)} messages)`,
    ]);
    figures.push([
      "database rows by table (inserted / updated (HOT) / deleted)",
      Object.entries(w.tables).map(([t, d]) => `${t} ${int(d.ins)} / ${int(d.upd)} (${int(d.hotUpd)}) / ${int(d.del)}`).join("; ") || "none",
    ]);
    figures.push(["WAL written (the whole cluster's)", `${w.walBytes >= 2 ** 20 ? mib(w.walBytes) : kib(w.walBytes)}, ${kib(w.walBytesPerMessage)} per stored message`]);
  } else if (r.dbWrites === null) {
    figures.push(["database writes per stored message", "n/a (PGlite: counted from Postgres's statistics)"]);
  }
  figures.push(["server max RSS", mib(r.serverMaxRssBytes)]);
  const cpu = Object.entries(r.cpuSeconds).filter(([, v]) => v !== undefined && v > 0);
  if (cpu.length > 0) figures.push(["CPU seconds over the run (connecting included)", cpu.map(([k, v]) => `${k} ${v!.toFixed(1)}`).join(", ")]);
  if (res.loadgen) figures.push(["load generator", `${res.loadgen.cpuSeconds.toFixed(1)} CPU s, max RSS ${mib(res.loadgen.maxRssBytes)}`]);
  if (r.serverDeliveryP99Ms !== null) figures.push(["server's own delivery latency p50 / p99 (histogram bucket bounds)", `${r.serverDeliveryP50Ms} / ${r.serverDeliveryP99Ms} ms`]);
  if (r.serverLoopDelayMs) {
    const d = r.serverLoopDelayMs;
    figures.push(["server event-loop delay while sending p50 / p99 / max", `${d.p50} / ${d.p99} / ${d.max} ms`]);
  }
  figures.push(["stream and ack errors", codes(res.errors)]);
  lines.push("| figure | value |", "| --- | --- |");
  for (const [k, v] of figures) lines.push(`| ${k} | ${v} |`);
  for (const note of r.notes) lines.push("", `Note: ${note}.`);
  for (const problem of r.problems) lines.push("", `**Problem: ${problem}.**`);
  lines.push("");
}

// ---------------------------------------------------------------------------------------------------------------
// Charts

interface Series {
  name: string;
  color: string;
  /** Ramp: circles joined by a solid line; a single rate: squares. */
  marker: "circle" | "square";
  points: { x: number; y: number }[];
}

interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  yTick: (v: number) => string;
  series: Series[];
  hLines: { y: number; label: string; color: string }[];
  vLines: { x: number; label: string; color: string; dash?: string }[];
}

/** The points of the chart's x axis: ramp steps that sent, and the steady rate. */
function ratePoints(results: ScenarioResult[]): { ramp: LoadgenPoint[]; steady: LoadgenPoint[] } {
  const ramp = results.find((r) => r.scenario === "ramp");
  const steady = results.find((r) => r.scenario === "steady");
  const steadyPoint = steady && measuredPoint(steady);
  return {
    ramp: ramp ? sentPoints(ramp).filter((p) => p.tag !== "warmup" && p.deliveryLatency.count > 0) : [],
    steady: steadyPoint && steadyPoint.deliveryLatency.count > 0 ? [steadyPoint] : [],
  };
}

function kneeLines(results: ScenarioResult[]): Chart["vLines"] {
  const ramp = results.find((r) => r.scenario === "ramp");
  const out: Chart["vLines"] = [];
  const knee = ramp ? kneeOf(ramp).knee : 0;
  if (knee > 0) out.push({ x: knee, label: `knee ${knee}/s`, color: "#c0392b" });
  const ceiling = ramp?.pgCeiling?.sendsPerSecond;
  if (ceiling) out.push({ x: ceiling, label: `Postgres alone ${ceiling}/s`, color: "#555", dash: "2 3" });
  return out;
}

export function latencyChart(results: ScenarioResult[]): string {
  const { ramp, steady } = ratePoints(results);
  const keys = [
    ["p50", "#2e86de"],
    ["p99", "#8e44ad"],
    ["p999", "#e67e22"],
  ] as const;
  const series: Series[] = [];
  for (const [key, color] of keys) {
    const label = key === "p999" ? "p99.9" : key;
    if (ramp.length > 0) series.push({ name: `ramp ${label}`, color, marker: "circle", points: ramp.map((p) => ({ x: p.rate, y: p.deliveryLatency[key] })) });
    if (steady.length > 0) series.push({ name: `steady ${label}`, color, marker: "square", points: steady.map((p) => ({ x: p.rate, y: p.deliveryLatency[key] })) });
  }
  return logChart({
    title: "Delivery latency against send rate",
    xLabel: "messages sent per second (log)",
    yLabel: "delivery latency from due time (log)",
    yTick: (v) => (v >= 1000 ? `${v / 1000} s` : `${v} ms`),
    series,
    hLines: [
      { y: 500, label: "500 ms (knee limit)", color: "#c0392b" },
      { y: 250, label: "250 ms target at 1,000/s", color: "#27ae60" },
    ],
    vLines: kneeLines(results),
  });
}

export function cpuChart(results: ScenarioResult[]): string {
  const { ramp, steady } = ratePoints(results);
  const who = [
    ["server", "#2e86de"],
    ["postgres", "#27ae60"],
    ["redis", "#c0392b"],
    ["haproxy", "#8e44ad"],
    ["loadgen", "#7f8c8d"],
  ] as const;
  const series: Series[] = [];
  for (const [key, color] of who) {
    // Zero is "not watched" (PGlite has no Postgres process; one node has no Redis; no proxy, no HAProxy), and a log axis has no zero.
    const pts = (list: LoadgenPoint[]) => list.map((p) => ({ x: p.rate, y: p.cpuMicrosPerDelivery[key] ?? 0 })).filter((p) => p.y > 0);
    if (pts(ramp).length > 0) series.push({ name: `ramp ${key}`, color, marker: "circle", points: pts(ramp) });
    if (pts(steady).length > 0) series.push({ name: `steady ${key}`, color, marker: "square", points: pts(steady) });
  }
  return logChart({
    title: "CPU per delivery against send rate",
    xLabel: "messages sent per second (log)",
    yLabel: "CPU µs per delivery (log)",
    yTick: (v) => (v >= 1000 ? `${v / 1000} ms` : `${v} µs`),
    series,
    hLines: [{ y: 100, label: "100 µs target (server + Postgres)", color: "#27ae60" }],
    vLines: kneeLines(results),
  });
}

/** A log-log chart: decades with 2 and 5 between, series as lines with markers, reference lines, a legend. */
function logChart(c: Chart): string {
  const W = 760;
  const H = 420;
  const M = { left: 70, right: 190, top: 40, bottom: 56 };
  const xs = [...c.series.flatMap((s) => s.points.map((p) => p.x)), ...c.vLines.map((l) => l.x)];
  const ys = c.series.flatMap((s) => s.points.map((p) => p.y)).filter((v) => v > 0);
  const decade = (v: number, up: boolean) => Math.pow(10, (up ? Math.ceil : Math.floor)(Math.log10(v)));
  const xMin = decade(Math.min(...xs, 10), false);
  const xMax = decade(Math.max(...xs, 100), true);
  const yAll = [...ys, ...c.hLines.map((l) => l.y)];
  const yMin = decade(Math.min(...yAll), false);
  const yMax = Math.max(decade(Math.max(...yAll), true), yMin * 10);
  const x = (v: number) => M.left + ((Math.log10(v) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * (W - M.left - M.right);
  const y = (v: number) =>
    H - M.bottom - ((Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * (H - M.top - M.bottom);
  const f = (v: number) => v.toFixed(1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${M.left}" y="22" font-size="15" font-weight="bold">${escape(c.title)}</text>`);
  const ticks = (lo: number, hi: number) => {
    const list: number[] = [];
    for (let d = lo; d <= hi; d *= 10) for (const m of [1, 2, 5]) if (d * m <= hi) list.push(d * m);
    return list;
  };
  for (const v of ticks(xMin, xMax)) {
    out.push(`<line x1="${f(x(v))}" y1="${M.top}" x2="${f(x(v))}" y2="${H - M.bottom}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${f(x(v))}" y="${H - M.bottom + 16}" text-anchor="middle">${v >= 1000 ? `${v / 1000}k` : v}</text>`);
  }
  for (const v of ticks(yMin, yMax)) {
    out.push(`<line x1="${M.left}" y1="${f(y(v))}" x2="${W - M.right}" y2="${f(y(v))}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${M.left - 6}" y="${f(y(v) + 4)}" text-anchor="end">${escape(c.yTick(v))}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#888"/>`);
  out.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 14}" text-anchor="middle">${escape(c.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${escape(c.yLabel)}</text>`);
  for (const l of c.hLines) {
    if (l.y < yMin || l.y > yMax) continue;
    out.push(`<line x1="${M.left}" y1="${f(y(l.y))}" x2="${W - M.right}" y2="${f(y(l.y))}" stroke="${l.color}" stroke-dasharray="6 4"/>`);
    out.push(`<text x="${M.left + 4}" y="${f(y(l.y) - 4)}" fill="${l.color}">${escape(l.label)}</text>`);
  }
  for (const [i, l] of c.vLines.entries()) {
    if (l.x < xMin || l.x > xMax) continue;
    out.push(`<line x1="${f(x(l.x))}" y1="${M.top}" x2="${f(x(l.x))}" y2="${H - M.bottom}" stroke="${l.color}" stroke-width="1.5"${l.dash ? ` stroke-dasharray="${l.dash}"` : ""}/>`);
    out.push(`<text x="${f(x(l.x) + 4)}" y="${H - M.bottom - 8 - i * 14}" fill="${l.color}">${escape(l.label)}</text>`);
  }
  if (c.series.length === 0) {
    out.push(`<text x="${(M.left + W - M.right) / 2}" y="${(M.top + H - M.bottom) / 2}" text-anchor="middle" fill="#888">no ramp or steady points in this run</text>`);
  }
  let legendY = M.top + 6;
  for (const s of c.series) {
    const pts = s.points.slice().sort((a, b) => a.x - b.x);
    if (pts.length > 1) {
      out.push(`<polyline points="${pts.map((p) => `${f(x(p.x))},${f(y(p.y))}`).join(" ")}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    }
    for (const p of pts) out.push(marker(s, x(p.x), y(p.y)));
    out.push(`<line x1="${W - M.right + 12}" y1="${legendY}" x2="${W - M.right + 36}" y2="${legendY}" stroke="${s.color}" stroke-width="2"/>`);
    out.push(marker(s, W - M.right + 24, legendY));
    out.push(`<text x="${W - M.right + 42}" y="${legendY + 4}">${escape(s.name)}</text>`);
    legendY += 18;
  }
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function marker(s: Series, cx: number, cy: number): string {
  return s.marker === "circle"
    ? `<circle cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="3.5" fill="${s.color}"/>`
    : `<rect x="${(cx - 4).toFixed(1)}" y="${(cy - 4).toFixed(1)}" width="8" height="8" fill="${s.color}"/>`;
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
