import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";

type NodeHandler = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
/** What connect-node hands its `fallback`: an HTTP/1.1 or an HTTP/2 request and response. */
export type BlobRequest = Parameters<NodeHandler>[0];
export type BlobResponse = Parameters<NodeHandler>[1];

/**
 * How far past the signed size an upload without a declared length is still read to the end so the client gets a
 * clean status. Beyond it the connection is dropped instead: refusing politely must not cost reading an unbounded body.
 */
const DRAIN_SLACK = 1024 * 1024;

/**
 * Streams a PUT body to a temporary file in `incomingDir` while counting and hashing it, and moves it to `path` only
 * when it has exactly `size` bytes with this SHA-256. A refused or interrupted upload leaves nothing behind.
 */
export async function receiveUpload(
  req: BlobRequest,
  res: BlobResponse,
  target: { path: string; incomingDir: string; size: number; sha256Hex: string },
): Promise<void> {
  const declared = req.headers["content-length"];
  if (declared !== undefined) {
    const length = /^\d{1,15}$/.test(declared) ? Number(declared) : Number.NaN;
    if (length !== target.size) {
      // Refused unread: an HTTP/1.1 connection closes after the answer (startServer), an HTTP/2 stream is reset.
      return reply(res, length > target.size ? 413 : 400, `this URL takes exactly ${target.size} bytes`);
    }
  }
  const temp = join(target.incomingDir, randomUUID());
  const hash = createHash("sha256");
  let received = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      received += chunk.length;
      if (received > target.size + DRAIN_SLACK) return done(new FarOverSize());
      if (received > target.size) return done(); // over: keep counting to answer 413, stop storing
      hash.update(chunk);
      done(null, chunk);
    },
  });
  try {
    // A 1 MiB write buffer: with the 16 KiB default the upload runs ~20% slower (bench/blob-throughput.ts).
    await pipeline(req, meter, createWriteStream(temp, { flags: "wx", mode: 0o600, highWaterMark: 1024 * 1024 }));
  } catch (err) {
    await rm(temp, { force: true });
    if (err instanceof FarOverSize) return void res.destroy(); // drops the HTTP/1 connection, or the HTTP/2 stream
    if (clientGone(err)) return;
    throw err;
  }
  const refusal =
    received !== target.size
      ? { status: received > target.size ? 413 : 400, message: `this URL takes exactly ${target.size} bytes` }
      : hash.digest("hex") !== target.sha256Hex
        ? { status: 400, message: "the body does not have the SHA-256 this URL was signed for" }
        : null;
  if (refusal) {
    await rm(temp, { force: true });
    return reply(res, refusal.status, refusal.message);
  }
  await mkdir(dirname(target.path), { recursive: true, mode: 0o700 });
  await rename(temp, target.path); // atomic: readers see the whole object or none
  reply(res, 200, "");
}

/** Streams a stored object, or answers 404. */
export async function sendObject(
  res: BlobResponse,
  path: string,
  headers: { contentType: string; contentDisposition: string },
): Promise<void> {
  let file;
  try {
    file = await open(path, "r"); // reading from the open file keeps a concurrent delete or replace from tearing it
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return reply(res, 404, "no such object");
    throw err;
  }
  try {
    const found = await file.stat();
    if (!found.isFile()) return reply(res, 404, "no such object");
    res.writeHead(200, {
      "content-type": headers.contentType,
      "content-disposition": headers.contentDisposition,
      "content-length": found.size,
      "cache-control": "private",
      // User content on the API's origin: never sniff it into something active, never run it.
      "x-content-type-options": "nosniff",
      "content-security-policy": "default-src 'none'; sandbox",
    });
    // Both HTTP/1's and HTTP/2's responses are writable streams; connect-node's type just does not say so.
    // 1 MiB reads: with the 64 KiB default the download runs ~35% slower (bench/blob-throughput.ts).
    await pipeline(file.createReadStream({ highWaterMark: 1024 * 1024 }), res as unknown as Writable);
  } catch (err) {
    if (!clientGone(err)) throw err; // a client that hangs up mid-download is not a failure
  } finally {
    await file.close();
  }
}

class FarOverSize extends Error {}

function clientGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ECONNRESET" || code === "ERR_HTTP2_STREAM_ERROR";
}

/** A short plain-text answer. */
export function reply(res: BlobResponse, status: number, message: string): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(message) });
  res.end(message);
}
