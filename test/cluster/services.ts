/**
 * The machine's Redis and Postgres, stopped and started for real (a fault a test injects), and always brought back:
 * `ensureServicesUp` is safe to call whatever state a failed test left them in.
 */
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { promisify } from "node:util";
import { waitFor } from "./processes.js";

const run = promisify(execFile);

const REDIS_PORT = "6379";
// The machine's own start command (as scripts/services.sh starts it): nothing kept on disk.
const REDIS_START = [
  "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", REDIS_PORT, "--save", "", "--appendonly", "no",
  "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
];

export async function redisUp(): Promise<boolean> {
  try {
    const { stdout } = await run("redis-cli", ["-h", "127.0.0.1", "-p", REDIS_PORT, "ping"], { timeout: 2000 });
    return stdout.trim() === "PONG";
  } catch {
    return false;
  }
}

/** Shuts Redis down without saving: when it starts again it has nothing (no presence, no subscriptions). */
export async function stopRedis(): Promise<void> {
  await run("redis-cli", ["-h", "127.0.0.1", "-p", REDIS_PORT, "shutdown", "nosave"], { timeout: 5000 }).catch(() => {});
  await waitFor("redis to stop", async () => !(await redisUp()), 10_000);
}

export async function startRedis(): Promise<void> {
  if (await redisUp()) return;
  await run("redis-server", REDIS_START, { timeout: 10_000 });
  await waitFor("redis to answer", redisUp, 15_000);
}

function pgCluster(): [version: string, name: string] {
  const named = process.env.PALAVER_PG_CLUSTER; // e.g. "15/main"
  if (named) return named.split("/") as [string, string];
  return [readdirSync("/etc/postgresql").sort().at(-1)!, "main"];
}

export async function postgresUp(): Promise<boolean> {
  try {
    await run("pg_isready", ["-q", "-h", "127.0.0.1", "-p", "5432"], { timeout: 3000 });
    return true;
  } catch {
    return false;
  }
}

async function pgctl(action: "start" | "stop"): Promise<void> {
  await run("pg_ctlcluster", ["--skip-systemctl-redirect", ...pgCluster(), action], { timeout: 60_000 });
}

/** A fast shutdown: open transactions roll back and every connection is dropped. */
export async function stopPostgres(): Promise<void> {
  await pgctl("stop");
  await waitFor("postgres to stop", async () => !(await postgresUp()), 30_000);
}

export async function startPostgres(): Promise<void> {
  if (await postgresUp()) return;
  await pgctl("start");
  await waitFor("postgres to accept connections", postgresUp, 60_000);
}

/** Brings back whatever a test stopped; for afterAll and finally blocks. */
export async function ensureServicesUp(): Promise<void> {
  const results = await Promise.allSettled([startRedis(), startPostgres()]);
  const failures = results.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : []));
  if (failures.length > 0) throw new Error(`could not restore services: ${failures.join("; ")}`);
}
