import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PlainHttpServer, rawRequest, servePlainHttp } from "../../test/support/plain-http.js";
import { blobCors } from "./blob-cors.js";

describe("CORS for signed blob URLs", () => {
  let server: PlainHttpServer;
  beforeAll(async () => {
    server = await servePlainHttp([blobCors]);
  });
  afterAll(() => server.close());

  it("answers a preflight for an upload from another origin", async () => {
    const res = await rawRequest(server.port, "/blobs/attachments/x?signature=s", {
      method: "OPTIONS",
      headers: { origin: "http://localhost:8080", "access-control-request-method": "PUT" },
    });
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe("*");
    expect(res.headers["access-control-allow-methods"]).toBe("GET, PUT");
    expect(res.headers["access-control-allow-headers"]).toBe("content-type");
  });

  it("adds its header and leaves the request to the blob store", async () => {
    const res = await rawRequest(server.port, "/blobs/attachments/x", { method: "PUT", body: "bytes" });
    expect(res.body).toBe("next");
    expect(res.headers["access-control-allow-origin"]).toBe("*");
  });

  it("stays out of other paths", async () => {
    const res = await rawRequest(server.port, "/palaver.chat.v1.ChatService/ListChats", { method: "OPTIONS" });
    expect(res.body).toBe("next");
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
  });
});
