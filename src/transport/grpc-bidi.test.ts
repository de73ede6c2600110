import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../test/support/features.js";
import { grpcFrame as frame } from "../../test/support/raw-grpc.js";
import { Refusal } from "../errors.js";
import { toConnectError } from "./errors.js";
import { type BidiRoute, grpcBidiHandler, serveStreamsFirst } from "./grpc-bidi.js";
import { Shutdown } from "./shutdown.js";


/**
 * A trivial route: refuses a call without a token, echoes each request message back, and with the token "wait" sends
 * nothing until the call is aborted (its deadline).
 */
const echo: BidiRoute = {
  path: "/test.Echo/Echo",
  async start(authorization) {
    if (!authorization) throw new Refusal("unauthenticated", "no token");
    return {
      user: "alice",
      device: "phone",
      async *run(requests, signal) {
        if (authorization === "wait") {
          await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
          throw signal.reason;
        }
        for await (const request of requests) yield frame(request);
      },
    };
  },
};

interface Answer {
  headers: http2.IncomingHttpHeaders;
  data: Buffer;
  trailers: http2.IncomingHttpHeaders | null;
}

describe("gRPC bidi streams served on the HTTP/2 stream", () => {
  let server: http2.Http2Server;
  let session: http2.ClientHttp2Session;
  beforeAll(async () => {
    const handle = grpcBidiHandler(
      [echo],
      { logger: silentLogger, readMaxBytes: 1024, toConnectError: (error, signal) => toConnectError(error, silentLogger, signal) },
      new Shutdown(),
    );
    server = http2.createServer((_req, res) => res.writeHead(404).end());
    serveStreamsFirst(server, handle);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  afterAll(async () => {
    session?.close();
    await new Promise((resolve) => server?.close(resolve));
  });

  /** One call: writes each chunk as its own DATA frame (after the previous is flushed), then half-closes. */
  async function call(chunks: Buffer[], headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    const stream = session.request({
      ":method": "POST",
      ":path": echo.path,
      "content-type": "application/grpc",
      te: "trailers",
      authorization: "token",
      ...headers,
    });
    const data: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => data.push(chunk));
    const answer = new Promise<Answer>((resolve, reject) => {
      let responseHeaders: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders | null = null;
      stream.on("response", (h) => (responseHeaders = h));
      stream.on("trailers", (t) => (trailers = t));
      stream.on("close", () => resolve({ headers: responseHeaders, data: Buffer.concat(data), trailers }));
      stream.on("error", reject);
    });
    for (const chunk of chunks) await new Promise<void>((resolve) => stream.write(chunk, () => resolve()));
    stream.end();
    return answer;
  }

  it("reassembles a message that arrives split across several DATA frames", async () => {
    const message = Buffer.from("x".repeat(300));
    const whole = frame(message);
    const answer = await call([whole.subarray(0, 3), whole.subarray(3, 100), whole.subarray(100)]);
    expect(answer.headers[":status"]).toBe(200);
    expect(answer.data).toEqual(whole);
    expect(answer.trailers?.["grpc-status"]).toBe("0");
  });

  it("splits several messages out of one DATA frame, and the tail of one with the start of the next", async () => {
    const [a, b, c] = ["one", "two", "three"].map((text) => frame(Buffer.from(text)));
    const both = Buffer.concat([a!, b!, c!]);
    const answer = await call([both.subarray(0, a!.length + 4), both.subarray(a!.length + 4)]);
    expect(answer.data).toEqual(both);
    expect(answer.trailers?.["grpc-status"]).toBe("0");
  });

  it("refuses a message longer than readMaxBytes with RESOURCE_EXHAUSTED, and one cut off by the end with INVALID_ARGUMENT", async () => {
    const tooLong = await call([frame(Buffer.alloc(1025))]);
    expect(tooLong.headers["grpc-status"]).toBe(String(Code.ResourceExhausted));
    const cut = await call([frame(Buffer.from("hello")).subarray(0, 7)]);
    expect(cut.headers["grpc-status"]).toBe(String(Code.InvalidArgument));
  });

  it("answers a refusal from start() trailers-only: the status in the one HEADERS frame, no body", async () => {
    const answer = await call([frame(Buffer.from("hi"))], { authorization: "" });
    expect(answer.headers).toMatchObject({
      ":status": 200,
      "content-type": "application/grpc+proto",
      "grpc-status": String(Code.Unauthenticated),
      "grpc-message": "no%20token", // percent-encoded, as gRPC specifies
    });
    expect(answer.data).toHaveLength(0);
    expect(answer.trailers).toBeNull();
  });

  it("refuses a message with the compressed flag set, since no grpc-encoding was agreed", async () => {
    const answer = await call([frame(Buffer.from("hi"), 1)]);
    expect(answer.data).toHaveLength(0);
    expect(answer.headers["grpc-status"]).toBe(String(Code.Internal));
    expect(answer.headers["grpc-message"]).toMatch(/compressed/);
  });

  it("ends a call that outlives its grpc-timeout with DEADLINE_EXCEEDED", async () => {
    const started = performance.now();
    const answer = await call([], { authorization: "wait", "grpc-timeout": "50m" });
    expect(answer.headers["grpc-status"]).toBe(String(Code.DeadlineExceeded));
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
  });

  it("leaves other requests to the server's request listener", async () => {
    const answer = await call([], { "content-type": "application/grpc-web+proto" });
    expect(answer.headers[":status"]).toBe(404);
  });
});
