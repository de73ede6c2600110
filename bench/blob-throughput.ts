/**
 * Upload then download a 100 MiB file through each media backend with signed URLs, as a client would, and print MiB/s
 * for each direction (median of a few runs). The local store is served by a separate Node process (as the Palaver
 * server would serve it) and SeaweedFS is the real binary, so the client's own work is not counted twice.
 *
 *   npx tsx bench/blob-throughput.ts            (SeaweedFS from `bash scripts/tools.sh weed`)
 */
import { fork } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalBlobStore, type LocalBlobStoreConfig } from "../src/adapters/blob/local-blob-store.js";
import { S3BlobStore } from "../src/adapters/blob/s3-blob-store.js";
import type { BlobStore } from "../src/ports/blob-store.js";
import { freshBucketName, startS3Server } from "../test/support/s3-server.js";

const SIZE = 100 * 1024 * 1024;
const RUNS = 3;

if (process.argv[2] === "--serve") {
  await serveLocal(JSON.parse(process.argv[3]!) as Omit<LocalBlobStoreConfig, "publicUrl">);
} else {
  await main();
}

async function main(): Promise<void> {
  const body = randomBytes(SIZE);
  const sha256 = createHash("sha256").update(body).digest();
  const results: string[] = [];

  const dir = await mkdtemp(join(tmpdir(), "palaver-bench-blobs-"));
  const secret = randomBytes(32).toString("hex");
  const server = fork(import.meta.filename, ["--serve", JSON.stringify({ dir, secret })]);
  try {
    const publicUrl = await new Promise<string>((resolve) => server.once("message", (m) => resolve(String(m))));
    const local = new LocalBlobStore({ dir, secret, publicUrl });
    results.push(await measure("local store (Node HTTP/1.1)", local, body, sha256));
  } finally {
    server.kill();
    await rm(dir, { recursive: true, force: true });
  }

  const seaweed = await startS3Server();
  const s3 = new S3BlobStore({ ...seaweed, bucket: freshBucketName(), expireAfterDays: 1 });
  try {
    await s3.init();
    results.push(await measure("SeaweedFS (S3, one server)", s3, body, sha256));
  } finally {
    s3.close();
    await seaweed.stop();
  }
  console.log(`\n${SIZE / 2 ** 20} MiB, median of ${RUNS} runs, loopback:\n${results.join("\n")}`);
}

async function measure(name: string, store: BlobStore, body: Buffer, sha256: Uint8Array): Promise<string> {
  const up: number[] = [];
  const down: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const key = `bench/run-${run}`;
    const contentType = "application/octet-stream";
    const signed = await store.signUpload({ key, sizeBytes: BigInt(SIZE), sha256, contentType, expiresInSeconds: 300 });
    let started = performance.now();
    const put = await fetch(signed.url, { method: signed.method, headers: signed.headers, body });
    await put.arrayBuffer();
    if (put.status !== 200) throw new Error(`${name}: upload answered ${put.status}`);
    up.push(mibPerSecond(started));

    const { url } = await store.signDownload({ key, fileName: "bench.bin", contentType, expiresInSeconds: 300 });
    started = performance.now();
    const res = await fetch(url);
    const received = Buffer.from(await res.arrayBuffer());
    down.push(mibPerSecond(started));
    if (!received.equals(body)) throw new Error(`${name}: downloaded bytes differ`);
    await store.delete([key]);
    console.log(`${name} run ${run + 1}: up ${up.at(-1)!.toFixed(0)} MiB/s, down ${down.at(-1)!.toFixed(0)} MiB/s`);
  }
  const rate = (values: number[]) => `${median(values).toFixed(0).padStart(5)} MiB/s`;
  return `${name.padEnd(30)} upload ${rate(up)}   download ${rate(down)}`;
}

function mibPerSecond(startedMs: number): number {
  return SIZE / 2 ** 20 / ((performance.now() - startedMs) / 1000);
}

function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
}

/** The child: the local store's handler on its own HTTP server, as Palaver would mount it. */
async function serveLocal(config: Omit<LocalBlobStoreConfig, "publicUrl">): Promise<void> {
  let store: LocalBlobStore | undefined;
  const server = http.createServer(async (req, res) => {
    if (!(await store!.handleRequest(req, res))) res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const publicUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  store = new LocalBlobStore({ ...config, publicUrl });
  await store.init();
  process.send!(publicUrl);
}
