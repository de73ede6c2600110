import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { signPngUpload } from "../../../test/support/blob-uploads.js";
import { LocalBlobStore } from "./local-blob-store.js";
import type { BlobRequest, BlobResponse } from "./local-blob-http.js";

describe("LocalBlobStore's HTTP handler", () => {
  let dir: string;
  let server: http.Server | http2.Http2Server;
  let store: LocalBlobStore;
  let failures: unknown[];

  async function serve(create: (handler: (req: BlobRequest, res: BlobResponse) => void) => typeof server) {
    failures = [];
    server = create(async (req, res) => {
      if (await store.handleRequest(req, res)) return;
      res.writeHead(404);
      res.end();
    });
    // The URL is known once the server listens, as in the app: the store asks for it when it signs.
    let publicUrl = "";
    store = new LocalBlobStore({
      dir,
      publicUrl: () => publicUrl,
      secret: "test secret",
      onError: (err) => failures.push(err),
    });
    await store.init();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    publicUrl = `http://127.0.0.1:${port}/`;
    return port;
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "palaver-blobs-"));
  });
  afterEach(async () => {
    if ("closeAllConnections" in server) server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    expect(await readdir(join(dir, ".incoming"))).toEqual([]);
    expect(failures).toEqual([]);
    await rm(dir, { recursive: true, force: true });
  });

  const signUpload = (body: Uint8Array, key = "attachments/x") => signPngUpload(store, key, body);

  /** A raw HTTP/1.1 request: fetch would normalise the paths these tests need to send as they are. */
  function raw(port: number, method: string, path: string, headers: http.OutgoingHttpHeaders = {}, body?: Buffer) {
    return new Promise<{ status: number; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, method, path, headers }, (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers }));
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  describe("over HTTP/1.1", () => {
    let port: number;
    beforeEach(async () => {
      port = await serve((handler) => http.createServer(handler));
    });

    it("leaves paths outside /blobs/ to the caller", async () => {
      const handled = await store.handleRequest(
        { url: "/palaver.chat.v1.ChatService/Connect" } as BlobRequest,
        {} as BlobResponse,
      );
      expect(handled).toBe(false);
    });

    it("never maps a path outside the store", async () => {
      const signed = new URL((await signUpload(Buffer.from("x"))).url);
      for (const path of [
        "/blobs/../etc/passwd",
        "/blobs/%2e%2e/%2e%2e/etc/passwd",
        "/blobs/attachments%2Fx",
        "/blobs/.incoming/x",
        "/blobs/attachments//x",
        "/blobs/",
      ]) {
        expect((await raw(port, "GET", path + signed.search)).status, path).toBe(404);
      }
    });

    it("allows only GET and PUT", async () => {
      for (const method of ["DELETE", "POST", "HEAD"]) {
        const res = await raw(port, method, "/blobs/attachments/x");
        expect(res.status, method).toBe(405);
        expect(res.headers.allow).toBe("GET, PUT");
      }
    });

    it("refuses requests without a signature", async () => {
      expect((await raw(port, "GET", "/blobs/attachments/x")).status).toBe(403);
      expect((await raw(port, "PUT", "/blobs/attachments/x?expires=9999999999&size=1&sha256=00")).status).toBe(403);
    });

    it("takes a chunked upload of exactly the signed size", async () => {
      const body = randomBytes(300_000);
      const signed = await signUpload(body);
      const res = await fetch(signed.url, { method: "PUT", body: chunked(body), duplex: "half" } as RequestInit);
      expect(res.status).toBe(200);
      expect(await store.stat("attachments/x")).toEqual({ sizeBytes: 300_000n });
    });

    it("answers 413 to a chunked upload a little over the signed size", async () => {
      const body = randomBytes(300_000);
      const signed = await signUpload(body);
      const over = Buffer.concat([body, Buffer.from("!")]);
      const res = await fetch(signed.url, { method: "PUT", body: chunked(over), duplex: "half" } as RequestInit);
      expect(res.status).toBe(413);
      expect(await store.stat("attachments/x")).toBeNull();
    });

    it("drops a chunked upload far over the signed size", async () => {
      const body = randomBytes(1000);
      const signed = await signUpload(body);
      const huge = randomBytes(3 * 1024 * 1024);
      await expect(
        fetch(signed.url, { method: "PUT", body: chunked(huge), duplex: "half" } as RequestInit).then((r) => r.text()),
      ).rejects.toThrow();
      expect(await store.stat("attachments/x")).toBeNull();
    });

    it("answers 500 to a failure of its own and reports it", async () => {
      const body = Buffer.from("hello");
      const signed = await signUpload(body);
      await rm(join(dir, ".incoming"), { recursive: true });
      expect((await fetch(signed.url, { method: "PUT", body })).status).toBe(500);
      expect(failures).toHaveLength(1);
      failures = [];
      await store.init();
    });

    it("answers 413 to a declared length over the signed size before the body arrives", async () => {
      const signed = new URL((await signUpload(randomBytes(1000))).url);
      const res = await raw(port, "PUT", signed.pathname + signed.search, { "content-length": 10 * 1024 ** 3 });
      expect(res.status).toBe(413);
    });
  });

  it("serves HTTP/2 too", async () => {
    const port = await serve((handler) => http2.createServer(handler));
    const body = randomBytes(200_000);
    const signed = await signUpload(body);
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const put = await h2(session, { ":method": "PUT", ":path": pathOf(signed.url), ...signed.headers }, body);
      expect(put.status).toBe(200);
      const download = await store.signDownload({
        key: "attachments/x",
        fileName: "x.png",
        contentType: "image/png",
        expiresInSeconds: 60,
      });
      const get = await h2(session, { ":method": "GET", ":path": pathOf(download.url) });
      expect(get.status).toBe(200);
      expect(get.body.equals(body)).toBe(true);
      const wrong = await h2(session, { ":method": "PUT", ":path": pathOf(signed.url) }, randomBytes(200_000));
      expect(wrong.status).toBe(400);
    } finally {
      session.close();
    }
  });
});

function chunked(bytes: Buffer): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.subarray(offset, offset + 64 * 1024));
      offset += 64 * 1024;
    },
  });
}

function pathOf(url: string): string {
  const parsed = new URL(url);
  return parsed.pathname + parsed.search;
}

function h2(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer) {
  return new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
    const stream = session.request(headers);
    const chunks: Buffer[] = [];
    let status = 0;
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => resolve({ status, body: Buffer.concat(chunks) }));
    stream.on("error", reject);
    stream.end(body);
  });
}
