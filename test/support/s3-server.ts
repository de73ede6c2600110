import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { inject } from "vitest";
import type { TestProject } from "vitest/node";

/** Where and as whom to reach an S3 server. */
export interface S3Connection {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface S3Server extends S3Connection {
  stop(): Promise<void>;
}

declare module "vitest" {
  export interface ProvidedContext {
    s3?: S3Connection;
  }
}

/** SeaweedFS's `weed`, which scripts/tools.sh builds (and `npm test` builds through it before the suites run). */
export function seaweedBinary(): string {
  return join(process.env.PALAVER_TOOLS_DIR ?? join(homedir(), ".cache", "palaver", "bin"), "weed");
}

/**
 * A real SeaweedFS (master, volume server, filer and S3 gateway in one process) on free loopback ports, with a fresh
 * data directory and fresh credentials, ready to store objects. stop() ends it and removes its data.
 */
export async function startS3Server(): Promise<S3Server> {
  const binary = seaweedBinary();
  if (!existsSync(binary)) {
    throw new Error(`SeaweedFS is not built (no ${binary}): run \`bash scripts/tools.sh weed\` (needs Go)`);
  }
  // A free port can be taken between probing and SeaweedFS binding it (parallel workers): then try others.
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(binary);
    } catch (err) {
      if (attempt === 3) throw err;
    }
  }
}

async function launch(binary: string): Promise<S3Server> {
  const dataDir = await mkdtemp(join(tmpdir(), "palaver-s3-"));
  // Every listener gets a port of its own: SeaweedFS's default gRPC port is the HTTP port + 10000, which a random
  // HTTP port can push past 65535 or onto another server's port.
  const [master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3, s3Grpc] = await freePorts(8);
  const connection = {
    endpoint: `http://127.0.0.1:${s3}`,
    region: "us-east-1",
    accessKeyId: `palaver-${randomBytes(4).toString("hex")}`,
    secretAccessKey: randomBytes(16).toString("hex"),
  };
  const args = [
    "server",
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    `-dir=${dataDir}`,
    // Each bucket takes volumes of its own, and -volume.max=0 allows free disk / volume size of them: small volumes
    // leave room for the many buckets a run creates (at the default 30 GB, a second bucket could find none).
    "-volume.max=0",
    "-master.volumeSizeLimitMB=64",
    "-master.telemetry=false",
    `-master.port=${master}`,
    `-master.port.grpc=${masterGrpc}`,
    `-volume.port=${volume}`,
    `-volume.port.grpc=${volumeGrpc}`,
    "-filer",
    `-filer.port=${filer}`,
    `-filer.port.grpc=${filerGrpc}`,
    "-s3",
    `-s3.port=${s3}`,
    `-s3.port.grpc=${s3Grpc}`,
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    // Its local sockets go with its data; the gRPC ones are always /tmp/seaweedfs-<service>-grpc-<port>.sock.
    `-filer.localSocket=${join(dataDir, "filer.sock")}`,
    `-s3.localSocket=${join(dataDir, "s3.sock")}`,
  ];
  const grpcSockets = Object.entries({ master: masterGrpc, volume: volumeGrpc, filer: filerGrpc, s3: s3Grpc }).map(
    ([service, port]) => `/tmp/seaweedfs-${service}-grpc-${port}.sock`,
  );
  const child = spawn(binary, args, {
    cwd: dataDir,
    // The S3 gateway's admin identity comes from these two variables.
    env: { ...process.env, AWS_ACCESS_KEY_ID: connection.accessKeyId, AWS_SECRET_ACCESS_KEY: connection.secretAccessKey },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // A test process that dies without its teardown must not leave SeaweedFS running.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  // Its data is thrown away, so nothing is owed a graceful shutdown (which waits out a 10 s pre-stop delay).
  const stop = async () => {
    process.off("exit", killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    await Promise.all([dataDir, ...grpcSockets].map((path) => rm(path, { recursive: true, force: true })));
  };
  try {
    await waitUntilWritable(connection, child, () => output);
  } catch (err) {
    await stop();
    throw err;
  }
  return { ...connection, stop };
}

/**
 * The S3 port answers after about 2 s, but the master grows its first volumes only some 9 s later, so ready means a
 * signed write went through: a probe bucket takes an object, and both are removed again.
 */
async function waitUntilWritable(connection: S3Connection, child: ChildProcess, output: () => string): Promise<void> {
  const client = new S3Client({
    endpoint: connection.endpoint,
    region: connection.region,
    forcePathStyle: true,
    credentials: connection,
    maxAttempts: 1,
  });
  const Bucket = `ready-${randomUUID()}`;
  const deadline = Date.now() + 60_000;
  let last: unknown;
  try {
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`SeaweedFS exited (${child.exitCode ?? child.signalCode}) while starting:\n${output()}`);
      }
      try {
        await client.send(new CreateBucketCommand({ Bucket })).catch((err) => {
          if ((err as Error).name !== "BucketAlreadyOwnedByYou") throw err;
        });
        await client.send(new PutObjectCommand({ Bucket, Key: "probe", Body: "ready" }));
        await client.send(new DeleteObjectCommand({ Bucket, Key: "probe" }));
        await client.send(new DeleteBucketCommand({ Bucket }));
        return;
      } catch (err) {
        last = err; // not listening yet, or no writable volume yet
      }
      await sleep(200);
    }
  } finally {
    client.destroy();
  }
  throw new Error(`SeaweedFS did not take a write at ${connection.endpoint} within 60 s (${String(last)}):\n${output()}`);
}

/** `count` distinct free loopback ports, all held open together while probing so none is handed out twice. */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, async () => {
      const server = net.createServer();
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      return server;
    }),
  );
  const ports = servers.map((server) => (server.address() as net.AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  return ports;
}

/**
 * vitest globalSetup: one S3 server for the whole run, handed to the suites through inject("s3"). Without the binary
 * it provides nothing and the suites that need S3 fail with the message telling how to build it; the rest run.
 */
export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (!existsSync(seaweedBinary())) return undefined;
  const { stop, ...connection } = await startS3Server();
  project.provide("s3", connection);
  return stop;
}

/** For a suite's beforeAll: the run's S3 server when globalSetup started one, else one of the suite's own. */
export async function s3ForSuite(): Promise<{ s3: S3Connection; release: () => Promise<void> }> {
  const shared = inject("s3");
  if (shared) return { s3: shared, release: async () => {} };
  const { stop, ...s3 } = await startS3Server();
  return { s3, release: stop };
}

/** A bucket name no other test uses (S3 names: 3–63 lowercase letters, digits, hyphens). */
export function freshBucketName(): string {
  return `t-${randomUUID()}`;
}
