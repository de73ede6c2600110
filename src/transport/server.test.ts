import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type ConnectRouter } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { ChatService, ConnectRequestSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { transportFor, wireProtocols } from "../../test/support/server-clients.js";
import { startServer, type Server } from "./server.js";

/** A stand-in ChatService: enough RPC shapes to exercise the transport, none of the features. */
function echoRoutes(router: ConnectRouter): void {
  router.service(ChatService, {
    getChat: (req) => ({ chat: { chatId: req.chatId, name: "echo" } }),
    listChats: (req) => ({
      chats: Array.from({ length: req.pageSize }, (_, i) => ({ chatId: `chat-${i}`, name: "x".repeat(1000) })),
    }),
    async *subscribe() {
      for (let i = 1n; i <= 3n; i++) yield { event: { eventId: i } };
    },
    sendMessage: (req) => ({ messageId: String(req.text.length) }),
    async *connect(requests) {
      for await (const request of requests) yield { frame: { case: "result", value: { requestId: request.requestId } } };
    },
  });
}

const uuid = "6f1c1c8e-4a53-4f0e-9d3c-0c2f2b7f0a11";

describe("one port, every protocol", () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer({
      host: "127.0.0.1",
      port: 0,
      routes: echoRoutes,
      fallback: (req, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end(`plain ${req.url}`);
      },
    });
  });
  afterAll(() => server.close(0));

  it("reports the port it got", () => {
    expect(server.port).toBeGreaterThan(0);
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
  });

  it.each(wireProtocols)("serves unary and server-stream calls to %s", async (protocol) => {
    const client = createClient(ChatService, transportFor(protocol, server.url));
    expect((await client.getChat({ chatId: uuid })).chat?.chatId).toBe(uuid);
    const events = [];
    for await (const response of client.subscribe({})) events.push(response.event?.eventId);
    expect(events).toEqual([1n, 2n, 3n]);
  });

  it.each(wireProtocols)("carries a large response over %s", async (protocol) => {
    const client = createClient(ChatService, transportFor(protocol, server.url));
    const { chats } = await client.listChats({ pageSize: 1000 });
    expect(chats).toHaveLength(1000);
  });

  it.each(wireProtocols)("takes a large request over %s", async (protocol) => {
    const client = createClient(ChatService, transportFor(protocol, server.url));
    const text = "y".repeat(64 * 1024);
    expect((await client.sendMessage({ chatId: uuid, clientMessageId: "m", text })).messageId).toBe(String(text.length));
  });

  it("runs many streams at once on one HTTP/2 connection", async () => {
    const client = createClient(ChatService, transportFor("grpc over h2c", server.url));
    const counts = await Promise.all(
      Array.from({ length: 200 }, async () => {
        let count = 0;
        for await (const _ of client.subscribe({})) count += 1;
        return count;
      }),
    );
    expect(counts.every((count) => count === 3)).toBe(true);
  });

  it("serves bidi streams over h2c", async () => {
    const client = createClient(ChatService, transportFor("grpc over h2c", server.url));
    async function* frames() {
      for (const requestId of ["a", "b", "c"]) {
        yield create(ConnectRequestSchema, { requestId, command: { case: "getChat", value: { chatId: uuid } } });
      }
    }
    const ids = [];
    for await (const response of client.connect(frames())) {
      if (response.frame.case === "result") ids.push(response.frame.value.requestId);
    }
    expect(ids).toEqual(["a", "b", "c"]);
  });

  it("hands other paths to the fallback over HTTP/1.1 and h2c", async () => {
    const h1 = await new Promise<string>((resolve, reject) => {
      http.get(`${server.url}/healthz`, (res) => res.setEncoding("utf8").once("data", resolve)).on("error", reject);
    });
    expect(h1).toBe("plain /healthz");

    const session = http2.connect(server.url);
    try {
      const h2 = await new Promise<string>((resolve, reject) => {
        const stream = session.request({ ":path": "/metrics" });
        stream.setEncoding("utf8").once("data", resolve).on("error", reject);
      });
      expect(h2).toBe("plain /metrics");
    } finally {
      session.close();
    }
  });

  it("sniffs the protocol from first bytes that arrive in pieces", async () => {
    // A proxy that forwards the first bytes one at a time, so the sniffer sees a partial preface or request line.
    const proxy = net.createServer((client) => {
      const upstream = net.connect(server.port, "127.0.0.1");
      let first = true;
      client.on("data", async (chunk: Buffer) => {
        if (!first) return void upstream.write(chunk);
        first = false;
        client.pause();
        for (const byte of chunk.subarray(0, 30)) {
          upstream.write(Buffer.of(byte));
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        upstream.write(chunk.subarray(30));
        client.resume();
      });
      upstream.pipe(client);
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    try {
      for (const protocol of ["grpc over h2c", "connect over http/1.1"] as const) {
        const client = createClient(ChatService, transportFor(protocol, url));
        expect((await client.getChat({ chatId: uuid })).chat?.name).toBe("echo");
      }
    } finally {
      proxy.close();
    }
  });
});

describe("connections", () => {
  it("fails to start on a port that is taken", async () => {
    const first = await startServer({ host: "127.0.0.1", port: 0, routes: echoRoutes });
    try {
      await expect(startServer({ host: "127.0.0.1", port: first.port, routes: echoRoutes })).rejects.toMatchObject({
        code: "EADDRINUSE",
      });
    } finally {
      await first.close(0);
    }
  });

  it("keeps an HTTP/2 session that answers PINGs and drops one that does not", async () => {
    const server = await startServer({ host: "127.0.0.1", port: 0, routes: echoRoutes, pingIntervalMs: 50 });
    try {
      const client = createClient(ChatService, transportFor("grpc over h2c", server.url));
      await client.getChat({ chatId: uuid });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect((await client.getChat({ chatId: uuid })).chat?.name).toBe("echo");

      // A peer that opens HTTP/2 (preface and an empty SETTINGS frame) and then goes silent.
      const silent = net.connect(server.port, "127.0.0.1");
      silent.on("data", () => {}).on("error", () => {});
      silent.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
      const started = performance.now();
      await new Promise((resolve) => silent.once("close", resolve));
      expect(performance.now() - started).toBeLessThan(1_000);
    } finally {
      await server.close(0);
    }
  });
});


// Needs the openssl command (Debian's openssl package) to make a certificate.
describe("with TLS", () => {
  let server: Server;
  let ca: Buffer;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "palaver-tls-"));
    const [certFile, keyFile] = [join(dir, "cert.pem"), join(dir, "key.pem")];
    execFileSync("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"],
      ...["-keyout", keyFile, "-out", certFile, "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
    ], { stdio: "ignore" });
    ca = readFileSync(certFile);
    server = await startServer({ host: "127.0.0.1", port: 0, tls: { certFile, keyFile }, routes: echoRoutes });
  });
  afterAll(() => server?.close(0));

  it("serves HTTP/2 and HTTP/1.1 on one port, chosen by ALPN", async () => {
    expect(server.url).toBe(`https://127.0.0.1:${server.port}`);
    for (const transport of [
      createGrpcTransport({ baseUrl: server.url, nodeOptions: { ca } }),
      createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", nodeOptions: { ca } }),
    ]) {
      expect((await createClient(ChatService, transport).getChat({ chatId: uuid })).chat?.name).toBe("echo");
    }
  });
});

describe("health", () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer({ host: "127.0.0.1", port: 0, routes: echoRoutes });
  });
  afterAll(() => server.close(0));

  it("checks the server and each served service", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    expect((await health.check({ service: "" })).status).toBe(Status.SERVING);
    expect((await health.check({ service: ChatService.typeName })).status).toBe(Status.SERVING);
    await expect(health.check({ service: "nope.Service" })).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("watches a service until its status changes", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const abort = new AbortController();
    const seen: Status[] = [];
    const watching = (async () => {
      try {
        for await (const { status } of health.watch({ service: ChatService.typeName }, { signal: abort.signal })) {
          seen.push(status);
          if (status === Status.SERVING) server.health.set(ChatService.typeName, Status.NOT_SERVING);
          if (status === Status.NOT_SERVING) abort.abort();
        }
      } catch (error) {
        if (ConnectError.from(error).code !== Code.Canceled) throw error;
      }
    })();
    await watching;
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING]);
    server.health.set(ChatService.typeName, Status.SERVING);
  });

  it("answers a watch of an unknown service with SERVICE_UNKNOWN and keeps it open", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const abort = new AbortController();
    for await (const { status } of health.watch({ service: "later.Service" }, { signal: abort.signal })) {
      expect(status).toBe(Status.SERVICE_UNKNOWN);
      break;
    }
  });
});

describe("close", () => {
  it("ends open streams, reports NOT_SERVING and returns promptly while a client holds an HTTP/2 session", async () => {
    const server = await startServer({
      host: "127.0.0.1",
      port: 0,
      routes: (router) =>
        router.service(ChatService, {
          getChat: () => ({}),
          // Like the real Subscribe: one event, then wait until the call or the server ends.
          async *subscribe(_req, context) {
            yield { event: { eventId: 1n } };
            await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
            throw context.signal.reason;
          },
        }),
    });
    const transport = createGrpcTransport({ baseUrl: server.url });
    const chat = createClient(ChatService, transport);
    await chat.getChat({}); // leaves an idle HTTP/2 session behind

    const stream = chat.subscribe({})[Symbol.asyncIterator]();
    expect((await stream.next()).value?.event?.eventId).toBe(1n);
    const streamEnd = stream.next().then(
      () => "ended",
      (error) => ConnectError.from(error).code,
    );
    const watch = createClient(Health, transport).watch({ service: "" })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.status).toBe(Status.SERVING);

    const started = performance.now();
    await server.close(10_000);
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(server.shuttingDown.aborted).toBe(true);
    expect(await streamEnd).toBe(Code.Unavailable);
    expect((await watch.next()).value?.status).toBe(Status.NOT_SERVING);
  });

  it("lets a unary call in flight finish", async () => {
    let release!: () => void;
    const started = new Promise<void>((resolve) => {
      release = resolve;
    });
    const server = await startServer({
      host: "127.0.0.1",
      port: 0,
      routes: (router) =>
        router.service(ChatService, {
          async getChat(req, context) {
            release();
            await new Promise((resolve) => setTimeout(resolve, 200));
            return { chat: { chatId: req.chatId, name: context.signal.aborted ? "aborted" : "finished" } };
          },
        }),
    });
    const chat = createClient(ChatService, createGrpcTransport({ baseUrl: server.url }));
    const call = chat.getChat({ chatId: uuid });
    await started;
    await server.close(10_000);
    expect((await call).chat?.name).toBe("finished");
  });

  it("drops a stream that does not end by itself once the grace period is over", async () => {
    const server = await startServer({
      host: "127.0.0.1",
      port: 0,
      routes: (router) =>
        router.service(ChatService, {
          async *subscribe() {
            yield { event: { eventId: 1n } };
            await new Promise(() => {}); // ignores every signal
          },
        }),
    });
    const stream = createClient(ChatService, transportFor("connect over http/1.1", server.url))
      .subscribe({})
      [Symbol.asyncIterator]();
    await stream.next();
    const started = performance.now();
    await server.close(200);
    expect(performance.now() - started).toBeLessThan(1_500);
    await expect(stream.next()).rejects.toBeInstanceOf(ConnectError);
  });
});
