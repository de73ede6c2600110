/** CPU readings for the database-path benchmarks (connect-path.ts, send-path.ts). */
import { readdirSync, readFileSync } from "node:fs";

/** CPU seconds (user + system) used so far by every process named postgres (from /proc: a Postgres on this host). */
export function postgresCpuSeconds(): number {
  let ticks = 0;
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      if (!stat.includes("(postgres)")) continue;
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks / 100; // USER_HZ
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
