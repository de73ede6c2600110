import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { inject } from "vitest";
import type { TestProject } from "vitest/node";

/** Where and as whom to reach a MinIO. */
export interface MinioConnection {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface MinioServer extends MinioConnection {
  stop(): Promise<void>;
}

declare module "vitest" {
  export interface ProvidedContext {
    minio?: MinioConnection;
  }
}

/** The binary scripts/tools.sh builds. */
export function minioBinary(): string {
  return join(process.env.PALAVER_TOOLS_DIR ?? join(homedir(), ".cache", "palaver", "bin"), "minio");
}

/**
 * A real MinIO on a free loopback port, with a fresh data directory and fresh credentials, ready to serve requests.
 * stop() ends it and removes its data.
 */
export async function startMinio(): Promise<MinioServer> {
  const binary = minioBinary();
  if (!existsSync(binary)) {
    throw new Error(`MinIO is not built (no ${binary}): run \`bash scripts/tools.sh minio\` (needs Go, ~2 min)`);
  }
  // The free port can be taken between probing and MinIO binding it (parallel workers): then try another.
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(binary, await freePort());
    } catch (err) {
      if (attempt === 3) throw err;
    }
  }
}

async function launch(binary: string, port: number): Promise<MinioServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "palaver-minio-"));
  const connection = {
    endpoint: `http://127.0.0.1:${port}`,
    region: "us-east-1",
    accessKeyId: `palaver-${randomBytes(4).toString("hex")}`,
    secretAccessKey: randomBytes(16).toString("hex"),
  };
  const child = spawn(binary, ["server", "--quiet", "--address", `127.0.0.1:${port}`, dataDir], {
    env: {
      ...process.env,
      MINIO_ROOT_USER: connection.accessKeyId,
      MINIO_ROOT_PASSWORD: connection.secretAccessKey,
      MINIO_BROWSER: "off", // no console on a second port
      MINIO_UPDATE: "off",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // A test process that dies without its teardown must not leave MinIO running.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const stop = async () => {
    process.off("exit", killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await waitUntilLive(connection.endpoint, child, () => output);
  } catch (err) {
    await stop();
    throw err;
  }
  return { ...connection, stop };
}

/**
 * /minio/health/live answers 200 as soon as HTTP is up, flagging with x-minio-server-status while the object layer
 * is still starting (requests would get 503): wait for a 200 without the flag.
 */
async function waitUntilLive(endpoint: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`MinIO exited (${child.exitCode ?? child.signalCode}) while starting:\n${output()}`);
    }
    try {
      const res = await fetch(`${endpoint}/minio/health/live`);
      if (res.status === 200 && !res.headers.has("x-minio-server-status")) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`MinIO did not come up at ${endpoint} within 30 s:\n${output()}`);
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * vitest globalSetup: one MinIO for the whole run, handed to the suites through inject("minio"). Without the binary
 * it provides nothing and the suites that need MinIO fail with the message telling how to build it; the rest run.
 */
export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (!existsSync(minioBinary())) return undefined;
  const { stop, ...connection } = await startMinio();
  project.provide("minio", connection);
  return stop;
}

/**
 * For a suite's beforeAll: the run's MinIO when globalSetup started one, else one of the suite's own. Call release()
 * in afterAll.
 */
export async function minioForSuite(): Promise<{ minio: MinioConnection; release: () => Promise<void> }> {
  const shared = inject("minio");
  if (shared) return { minio: shared, release: async () => {} };
  const { stop, ...minio } = await startMinio();
  return { minio, release: stop };
}

/** A bucket name no other test uses (S3 names: 3–63 lowercase letters, digits, hyphens). */
export function freshBucketName(): string {
  return `t-${randomUUID()}`;
}
