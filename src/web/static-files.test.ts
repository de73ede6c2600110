import * as http2 from "node:http2";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PlainHttpServer, rawRequest, servePlainHttp } from "../../test/support/plain-http.js";
import { startServer, type Server } from "../transport/server.js";
import { createStaticFiles } from "./static-files.js";

describe("static files", () => {
  let dir: string;
  let server: PlainHttpServer;
  const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
    rawRequest(server.port, path, { method, headers });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "palaver-static-"));
    const dist = join(dir, "dist");
    await mkdir(join(dist, "assets"), { recursive: true });
    await mkdir(join(dist, "docs"));
    await writeFile(join(dist, "index.html"), "<!doctype html><title>app</title>");
    await writeFile(join(dist, "assets", "app-Bx9f3.js"), "console.log(1)");
    await writeFile(join(dist, "docs", "index.html"), "docs");
    await writeFile(join(dist, "logo.svg"), "<svg/>");
    await writeFile(join(dist, ".env"), "SECRET=1");
    await writeFile(join(dir, "secret.txt"), "outside");
    await symlink(join(dir, "secret.txt"), join(dist, "escape.txt"));
    server = await servePlainHttp([createStaticFiles(dist)]);
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves index.html at / with a policy and without long caching", async () => {
    const res = await get("/");
    expect(res.status).toBe(200);
    expect(res.body).toContain("<title>app</title>");
    expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(res.headers["cache-control"]).toBe("no-cache");
    expect(res.headers["content-security-policy"]).toContain("default-src 'self'");
    expect(res.headers["x-content-type-options"]).toBe("nosniff");
  });

  it("lets browsers keep hashed assets forever", async () => {
    const res = await get("/assets/app-Bx9f3.js?v=1");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(res.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(res.body).toBe("console.log(1)");
  });

  it("names content types by extension and serves a folder's index", async () => {
    expect((await get("/logo.svg")).headers["content-type"]).toBe("image/svg+xml");
    expect((await get("/docs/")).body).toBe("docs");
  });

  it("answers HEAD without a body and a matching ETag with 304", async () => {
    const head = await get("/assets/app-Bx9f3.js", {}, "HEAD");
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe("14");
    expect(head.body).toBe("");
    const again = await get("/assets/app-Bx9f3.js", { "if-none-match": head.headers.etag! });
    expect(again.status).toBe(304);
    expect(again.body).toBe("");
  });

  it.each([
    "/../secret.txt",
    "/assets/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/assets%2f..%2f..%2fsecret.txt",
    "/assets/..%5c..%5csecret.txt",
    "/.env",
    "/%2eenv",
    "/escape.txt",
    "/index.html%00.js",
    "/%E0%A4%A",
    "//etc/passwd",
    "/assets",
    "/missing.js",
  ])("leaves %s to the next handler", async (path) => {
    const res = await get(path);
    expect(res.status).toBe(404);
    expect(res.body).toBe("next");
  });

  it("leaves other methods to the next handler", async () => {
    expect((await get("/", {}, "POST")).body).toBe("next");
  });

  it("says how to build the client when it is missing", async () => {
    const empty = await servePlainHttp([createStaticFiles(join(dir, "nowhere"))]);
    try {
      const res = await rawRequest(empty.port, "/");
      expect(res.status).toBe(404);
      expect(res.body).toContain("npm run build:web");
      expect((await rawRequest(empty.port, "/app.js")).body).toBe("next");
    } finally {
      await empty.close();
    }
  });

  describe("over HTTP/2", () => {
    let h2: Server;
    beforeAll(async () => {
      const files = createStaticFiles(join(dir, "dist"));
      h2 = await startServer({
        host: "127.0.0.1",
        port: 0,
        routes: () => {},
        fallback: (req, res) => void files(req, res),
      });
    });
    afterAll(() => h2.close(0));

    it("serves the same files to an h2c client", async () => {
      const session = http2.connect(h2.url);
      try {
        const stream = session.request({ ":path": "/assets/app-Bx9f3.js" });
        const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("response", resolve));
        let body = "";
        for await (const chunk of stream) body += chunk;
        expect(headers[":status"]).toBe(200);
        expect(headers["cache-control"]).toContain("immutable");
        expect(body).toBe("console.log(1)");
      } finally {
        session.close();
      }
    });
  });
});
