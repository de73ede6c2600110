/**
 * HAProxy in front of the benchmark's server nodes (`npm run bench -- --nodes 2 --proxy haproxy`), as a deployment runs
 * them: every device connects to the proxy's one port, and the proxy spreads the connections over the nodes. The
 * configuration is deploy/haproxy.cfg as the cluster suite renders it for loopback (test/cluster/haproxy.ts: TCP mode,
 * so gRPC over h2c with prior knowledge passes through untouched; leastconn; the production timeouts, retries and
 * health check), sized for the benchmark here; the process is the cluster suite's HaproxyProcess.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { renderHaproxyConfig } from "../test/cluster/haproxy.js";
import { freePort, HaproxyProcess, waitFor } from "../test/cluster/processes.js";
import type { ProxyInfo } from "./report.js";

/**
 * The most connections HAProxy is sized for: five times the full profile's 10,000 devices (churn's reconnects overlap
 * the connections they replace; BENCH_PLAN experiments may plan more groups), when the file limit allows (below).
 */
const MAXCONN = 50_000;
/** File descriptors HAProxy takes beyond two per connection: listeners, health checks, the admin socket (31 with two nodes). */
const SPARE_FDS = 100;

/**
 * How many file descriptors HAProxy can get. At start it raises its own limit to 2 × maxconn plus its listeners and
 * checks (two sockets per proxied connection: the device's and the node's), and HAProxy 2.6 refuses to start when it
 * cannot (`strict-limits` is on by default). Without CAP_SYS_RESOURCE it can raise it only up to the hard limit it
 * inherits from this process; with it, up to fs.nr_open.
 */
function fdCeiling(): number {
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "0";
  const CAP_SYS_RESOURCE = 24n;
  if ((BigInt(`0x${capEff}`) >> CAP_SYS_RESOURCE) & 1n) return Number(readFileSync("/proc/sys/fs/nr_open", "utf8"));
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1];
  return hard === undefined || hard === "unlimited" ? Infinity : Number(hard);
}

/**
 * The installed HAProxy's version and the global maxconn it gets for `connections` device connections: as many as its
 * file limit allows, up to MAXCONN. Throws, before anything starts, when the connections cannot fit.
 */
export function sizeHaproxy(connections: number): ProxyInfo {
  const probe = spawnSync("haproxy", ["-v"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    throw new Error(`--proxy haproxy: could not run haproxy -v (${probe.error?.message ?? probe.stderr.trim()}); install it: apt-get install haproxy`);
  }
  const version = /HAProxy version (\S+)/.exec(probe.stdout)?.[1] ?? "unknown";
  const fds = fdCeiling();
  const maxconn = Math.min(MAXCONN, Math.floor((fds - SPARE_FDS) / 2));
  if (connections > maxconn) {
    throw new Error(
      `--proxy haproxy: ${connections} device connections need about ${2 * connections + SPARE_FDS} file descriptors in HAProxy ` +
        `(two per proxied connection), and it may open ${fds} (the hard limit it inherits, \`ulimit -Hn\`; raising it takes ` +
        "CAP_SYS_RESOURCE): raise the hard limit (`ulimit -Hn` in a privileged shell, systemd LimitNOFILE=, docker --ulimit nofile=) " +
        `or plan fewer devices (BENCH_PLAN='{"groups":…}')`,
    );
  }
  return { name: "haproxy", version, maxconn };
}

/**
 * Writes the configuration to `<out>/haproxy/<scenario>.cfg` (its admin socket in `dir`, its log in the temporary
 * directory beside the nodes'), in front of the nodes at `nodeUrls`, and returns the process, not yet started: the
 * caller holds it before starting it, so that it is stopped however the start ends.
 */
export async function prepareHaproxy(scenario: string, nodeUrls: string[], info: ProxyInfo, out: string, dir: string) {
  const configFile = join(out, "haproxy", `${scenario}.cfg`);
  const adminSocket = join(dir, "haproxy.sock");
  const port = await freePort();
  const nodes = nodeUrls.map((url, i) => ({ name: `node${i}`, port: Number(new URL(url).port) }));
  await mkdir(dirname(configFile), { recursive: true });
  // maxconn from sizeHaproxy (the suite's 4,000 fits a test, not 10,000 devices). One thread: HAProxy 2.6 starts one
  // per CPU it may use, and on the 2-core test machine a second would take CPU from the nodes, which are what the
  // benchmark measures; its own CPU is reported apart (a thread near 1 CPU second per second is a saturated proxy).
  const config = renderHaproxyConfig({
    port,
    statsPort: await freePort(),
    adminSocket,
    nodes,
    maxconn: info.maxconn,
    nbthread: 1,
  });
  await writeFile(configFile, `${config}\n`);
  const logFile = join(tmpdir(), `palaver-bench-${scenario}-haproxy.log`);
  await rm(logFile, { force: true }); // HaproxyProcess appends: one scenario's log per file, as the nodes'
  return { process: new HaproxyProcess(configFile, logFile, port, adminSocket), configFile };
}

/** Starts HAProxy and resolves once its health checks see every node up. */
export async function startHaproxy(proxy: HaproxyProcess, nodes: number): Promise<void> {
  await proxy.start();
  const up = async () => [...(await proxy.serverStates()).values()].filter((state) => state === "UP").length === nodes;
  await waitFor("haproxy to see every node up", async () => !proxy.running || (await up()), 15_000);
  if (!proxy.running) throw new Error(`haproxy exited:\n${proxy.tail()}`);
}
