/** CPU readings of processes on this machine: the runner's watched processes, and the database-path benchmarks'. */
import { readdirSync, readFileSync } from "node:fs";

/** A process's parent and CPU ticks (user + system, its own and its reaped children's), from /proc/<pid>/stat. */
function readStat(pid: string): { ppid: number; comm: string; ticks: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    // The fields after the command name: state, ppid, …, utime, stime, cutime, cstime (fields 3, 4, 14-17 of stat).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = fields.slice(11, 15).reduce((sum, f) => sum + Number(f), 0);
    return { ppid: Number(fields[1]), comm, ticks };
  } catch {
    return undefined; // the process ended meanwhile
  }
}

function readStats(): Map<number, { ppid: number; comm: string; ticks: number }> {
  const stats = new Map<number, { ppid: number; comm: string; ticks: number }>();
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    const stat = readStat(pid);
    if (stat) stats.set(Number(pid), stat);
  }
  return stats;
}

/**
 * CPU seconds so far of each pid with every process under it, those that have ended included (in their parent's
 * cutime and cstime once reaped): Postgres's backends are its postmaster's children, opened by connection pools
 * when first needed, often after a measurement has begun. A pid that is gone is left out.
 */
export function treeCpuSeconds(pids: readonly number[]): Map<number, number> {
  const stats = readStats();
  const children = new Map<number, number[]>();
  for (const [pid, { ppid }] of stats) {
    const siblings = children.get(ppid);
    if (siblings) siblings.push(pid);
    else children.set(ppid, [pid]);
  }
  const ticksUnder = (pid: number): number =>
    (stats.get(pid)?.ticks ?? 0) + (children.get(pid) ?? []).reduce((sum, child) => sum + ticksUnder(child), 0);
  const cpu = new Map<number, number>();
  for (const pid of pids) if (stats.has(pid)) cpu.set(pid, ticksUnder(pid) / 100); // USER_HZ
  return cpu;
}

/** Pids of this machine's processes whose command name is `name`. */
export function pidsNamed(name: string): number[] {
  return [...readStats()].filter(([, { comm }]) => comm === name).map(([pid]) => pid);
}

/** This machine's Postgres postmasters: processes named postgres whose parent is not. */
export function postmasterPids(): number[] {
  const stats = readStats();
  return [...stats]
    .filter(([, { comm, ppid }]) => comm === "postgres" && stats.get(ppid)?.comm !== "postgres")
    .map(([pid]) => pid);
}

/** CPU seconds used so far by this machine's Postgres, its ended backends included. */
export function postgresCpuSeconds(): number {
  return [...treeCpuSeconds(postmasterPids()).values()].reduce((sum, seconds) => sum + seconds, 0);
}

export interface Measured<T> {
  result: T;
  ms: number;
  /** CPU seconds of this process and of Postgres during the work. */
  nodeCpu: number;
  postgresCpu: number;
}

/** Runs work, timing it and the CPU it cost this process and Postgres. */
export async function measure<T>(work: () => Promise<T>): Promise<Measured<T>> {
  const [postgresBefore, nodeBefore, started] = [postgresCpuSeconds(), process.cpuUsage(), performance.now()];
  const result = await work();
  const ms = performance.now() - started;
  const node = process.cpuUsage(nodeBefore);
  return { result, ms, nodeCpu: (node.user + node.system) / 1e6, postgresCpu: postgresCpuSeconds() - postgresBefore };
}
