import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { freshBucketName, s3ForSuite } from "../../../test/support/s3-server.js";
import type { BlobStore } from "../../ports/blob-store.js";
import type { Clock } from "../../ports/clock.js";
import { LocalBlobStore } from "./local-blob-store.js";
import { S3BlobStore } from "./s3-blob-store.js";

/** One test's store on an empty bucket or directory; `at` opens another on the same one with its own clock. */
interface Target {
  store: BlobStore;
  at(clock: Clock): BlobStore;
  close(): Promise<void>;
}

interface Backend {
  name: string;
  /** Once per suite; fresh() gives each test its own empty store. */
  start(): Promise<{ fresh(): Promise<Target>; stop(): Promise<void> }>;
}

const local: Backend = {
  name: "LocalBlobStore behind an HTTP server",
  async start() {
    return {
      fresh: async () => {
        const dir = await mkdtemp(join(tmpdir(), "palaver-blobs-"));
        const failures: unknown[] = [];
        let store: LocalBlobStore | undefined;
        const server = http.createServer(async (req, res) => {
          if (!(await store!.handleRequest(req, res))) res.writeHead(404).end();
        });
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        const config = {
          dir,
          publicUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          secret: randomBytes(32),
          onError: (err: unknown) => failures.push(err),
        };
        store = new LocalBlobStore(config);
        await store.init();
        return {
          store,
          at: (clock) => new LocalBlobStore(config, clock),
          close: async () => {
            server.closeAllConnections();
            await new Promise((resolve) => server.close(resolve));
            // Refused and interrupted uploads leave no temporary file, and the handler never failed.
            expect(await readdir(join(dir, ".incoming"))).toEqual([]);
            expect(failures).toEqual([]);
            await rm(dir, { recursive: true, force: true });
          },
        };
      },
      stop: async () => {},
    };
  },
};

const s3: Backend = {
  name: "S3BlobStore on SeaweedFS",
  async start() {
    const { s3, release } = await s3ForSuite();
    return {
      fresh: async () => {
        const config = { ...s3, bucket: freshBucketName(), expireAfterDays: 30 };
        const store = new S3BlobStore(config);
        await store.init();
        return { store, at: (clock) => new S3BlobStore(config, clock), close: async () => store.close() };
      },
      stop: release,
    };
  },
};

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash("sha256").update(bytes).digest();
}

/** PUTs to a signed upload as a client would; `omit` drops headers the client lets fetch compute instead. */
async function upload(
  signed: { url: string; method: string; headers: Record<string, string> },
  body: Uint8Array,
  omit: string[] = [],
): Promise<Response> {
  const headers = Object.fromEntries(Object.entries(signed.headers).filter(([name]) => !omit.includes(name)));
  const res = await fetch(signed.url, { method: signed.method, headers, body });
  await res.arrayBuffer();
  return res;
}

/** The URL with one character of its signature changed. */
function tamperSignature(url: string): string {
  const parsed = new URL(url);
  const name = [...parsed.searchParams.keys()].find((k) => /signature$/i.test(k))!;
  const signature = parsed.searchParams.get(name)!;
  const last = signature.at(-1) === "a" ? "b" : "a";
  parsed.searchParams.set(name, signature.slice(0, -1) + last);
  return parsed.toString();
}

/** The URL with its validity stretched by one second (a signed field that is not the signature). */
function tamperExpiry(url: string): string {
  const parsed = new URL(url);
  const name = [...parsed.searchParams.keys()].find((k) => /expires$/i.test(k))!;
  parsed.searchParams.set(name, String(Number(parsed.searchParams.get(name)) + 1));
  return parsed.toString();
}

const anHourAgo: Clock = { now: () => new Date(Date.now() - 3_600_000) };

describe.each([local, s3])("BlobStore contract: $name", (backend) => {
  let suite: Awaited<ReturnType<Backend["start"]>>;
  let target: Target;
  let store: BlobStore;

  beforeAll(async () => {
    suite = await backend.start();
  });
  afterAll(async () => {
    await suite?.stop();
  });
  beforeEach(async () => {
    target = await suite.fresh();
    store = target.store;
  });
  afterEach(async () => {
    await target?.close();
  });

  function signUpload(key: string, body: Uint8Array, expiresInSeconds = 300, on: BlobStore = store) {
    return on.signUpload({
      key,
      sizeBytes: BigInt(body.length),
      sha256: sha256(body),
      contentType: "application/pdf",
      expiresInSeconds,
    });
  }

  /** A download of a PDF named x.pdf, valid for a minute. */
  function signDownload(key: string, on: BlobStore = store) {
    return on.signDownload({ key, fileName: "x.pdf", contentType: "application/pdf", expiresInSeconds: 60 });
  }

  it("round-trips a 5 MiB file through the signed URLs", async () => {
    const body = randomBytes(5 * 1024 * 1024);
    const before = Date.now();
    const signed = await signUpload("attachments/round-trip", body);
    expect(signed.method).toBe("PUT");
    expect(signed.expiresAt.getTime()).toBeGreaterThan(before + 298_000);
    expect(signed.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 300_000);

    expect((await upload(signed, body)).status).toBe(200);
    expect(await store.stat("attachments/round-trip")).toEqual({ sizeBytes: BigInt(body.length) });

    const download = await store.signDownload({
      key: "attachments/round-trip",
      fileName: 'rapport "été" 2026.pdf',
      contentType: "application/pdf",
      expiresInSeconds: 60,
    });
    const res = await fetch(download.url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/pdf");
    expect(res.headers.get("content-length")).toBe(String(body.length));
    expect(res.headers.get("content-disposition")).toBe(
      `attachment; filename="rapport __t__ 2026.pdf"; filename*=UTF-8''rapport%20%22%C3%A9t%C3%A9%22%202026.pdf`,
    );
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
  });

  it("refuses other bytes of the signed length and keeps nothing", async () => {
    const body = randomBytes(64 * 1024);
    const other = Buffer.from(body);
    other[1000]! ^= 1;
    const res = await upload(await signUpload("attachments/x", body), other);
    expect(res.status).toBe(400);
    expect(await store.stat("attachments/x")).toBeNull();
  });

  it.each([
    ["shorter", -1],
    ["longer", 1],
  ])("refuses a body %s than signed and keeps nothing", async (_, delta) => {
    const body = randomBytes(64 * 1024);
    const signed = await signUpload("attachments/x", body);
    const sent = delta < 0 ? body.subarray(0, body.length - 1) : Buffer.concat([body, Buffer.from("!")]);
    const res = await upload(signed, sent, ["content-length"]); // fetch declares the true length
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(await store.stat("attachments/x")).toBeNull();
  });

  it("refuses an expired upload URL and keeps nothing", async () => {
    const body = randomBytes(1024);
    const signed = await signUpload("attachments/x", body, 60, target.at(anHourAgo));
    expect(signed.expiresAt.getTime()).toBeLessThan(Date.now());
    expect((await upload(signed, body)).status).toBe(403);
    expect(await store.stat("attachments/x")).toBeNull();
  });

  it("refuses an expired download URL", async () => {
    const body = randomBytes(1024);
    expect((await upload(await signUpload("attachments/x", body), body)).status).toBe(200);
    const download = await signDownload("attachments/x", target.at(anHourAgo));
    expect((await fetch(download.url)).status).toBe(403);
  });

  it.each([
    ["its signature", tamperSignature],
    ["its expiry", tamperExpiry],
    ["its key", (url: string) => url.replace("/attachments/x?", "/attachments/y?")],
  ])("refuses an upload URL with %s changed and keeps nothing", async (_, tamper) => {
    const body = randomBytes(1024);
    const signed = await signUpload("attachments/x", body);
    expect((await upload({ ...signed, url: tamper(signed.url) }, body)).status).toBe(403);
    expect(await store.stat("attachments/x")).toBeNull();
    expect(await store.stat("attachments/y")).toBeNull();
  });

  it("refuses a download URL with its signature changed", async () => {
    const body = randomBytes(1024);
    expect((await upload(await signUpload("attachments/x", body), body)).status).toBe(200);
    const download = await signDownload("attachments/x");
    expect((await fetch(tamperSignature(download.url))).status).toBe(403);
    expect((await fetch(download.url)).status).toBe(200);
  });

  it("answers 404 for a signed download of a missing object", async () => {
    const download = await signDownload("attachments/missing");
    expect((await fetch(download.url)).status).toBe(404);
  });

  it("stats and deletes objects", async () => {
    expect(await store.stat("attachments/a")).toBeNull();
    const a = randomBytes(10);
    const b = randomBytes(20);
    expect((await upload(await signUpload("attachments/a", a), a)).status).toBe(200);
    expect((await upload(await signUpload("attachments/b", b), b)).status).toBe(200);
    expect(await store.stat("attachments/b")).toEqual({ sizeBytes: 20n });

    await store.delete(["attachments/a", "attachments/missing"]);
    expect(await store.stat("attachments/a")).toBeNull();
    expect(await store.stat("attachments/b")).toEqual({ sizeBytes: 20n });
    await store.delete([]);
    await store.delete(["attachments/b"]);
    expect(await store.stat("attachments/b")).toBeNull();
  });

  it("keeps an object with its bytes, and says when there is none", async () => {
    const body = randomBytes(64 * 1024);
    expect(await store.keep({ key: "attachments/k", contentType: "application/pdf" })).toBe(false);
    expect((await upload(await signUpload("attachments/k", body), body)).status).toBe(200);
    expect(await store.keep({ key: "attachments/k", contentType: "application/pdf" })).toBe(true);
    const download = await signDownload("attachments/k");
    const res = await fetch(download.url);
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
  });

  it("does not take a key's prefix for an object", async () => {
    const body = randomBytes(10);
    expect((await upload(await signUpload("attachments/dir/a", body), body)).status).toBe(200);
    expect(await store.stat("attachments/dir")).toBeNull();
    const download = await signDownload("attachments/dir");
    expect((await fetch(download.url)).status).toBe(404);
  });

  it("rejects keys it would not generate", async () => {
    for (const key of ["../etc/passwd", "attachments/../x", ".incoming/x", "a//b", "a/", "a b", "é"]) {
      await expect(store.stat(key)).rejects.toThrow(/invalid blob key/);
    }
  });
});
