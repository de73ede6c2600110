import { readFile } from "node:fs/promises";
import * as http from "node:http";
import * as http2 from "node:http2";
import type * as net from "node:net";
import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter, type ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { createCleartextListener } from "./cleartext.js";
import { HealthStatus, registerHealth, ServingStatus } from "./health.js";
import { type BidiOptions, type BidiRoute, grpcBidiHandler, serveStreamsFirst, type StreamHandler } from "./grpc-bidi.js";
import { registerReflection } from "./reflection.js";
import { Shutdown } from "./shutdown.js";
import { LISTEN_BACKLOG } from "../tunables.js";

/** A plain Node request listener, for HTTP/1.1 and HTTP/2 alike. */
export type NodeHandlerFn = NonNullable<ConnectNodeAdapterOptions["fallback"]>;

export interface ServerOptions {
  /** Default 0.0.0.0. */
  host?: string;
  /** 0 picks a free port; the server reports the real one. */
  port: number;
  /** Unset: cleartext, h2c and HTTP/1.1 on the one port. */
  tls?: { certFile: string; keyFile: string };
  /** Registers the services; health and reflection are added for whatever they register. */
  routes: (router: ConnectRouter) => void;
  /** Wrap every RPC, outermost first (see createInterceptors). */
  interceptors?: Interceptor[];
  /** Plain HTTP for paths that are not RPCs: /metrics, /healthz, signed blob URLs. Default: 404. */
  fallback?: NodeHandlerFn;
  /** Bidirectional gRPC methods served on the HTTP/2 stream itself, before connect-es (see grpc-bidi.ts). */
  bidiRoutes?: BidiRoute[];
  /** With bidiRoutes: the error mapping and call logging the interceptors use. */
  bidiOptions?: Omit<BidiOptions, "readMaxBytes">;
  /** An HTTP/2 PING goes out this often and a session that left the previous one unanswered is dropped; also the
   * TCP keep-alive delay. Default 30 s. */
  pingIntervalMs?: number;
}

export interface Server {
  readonly port: number;
  readonly url: string;
  /** grpc.health.v1 status; the app may mark a service NOT_SERVING while a dependency is down. */
  readonly health: HealthStatus;
  /** Aborts (reason: UNAVAILABLE "server is shutting down") when close begins. Streaming handlers see it in their
   * context signal too, so they can end their streams cleanly; unary calls keep their signal and finish. */
  readonly shuttingDown: AbortSignal;
  /** Stops accepting, reports NOT_SERVING, ends streams, waits up to graceMs for calls in flight, then drops every
   * connection that is left. Resolves when the port is closed. */
  close(graceMs?: number): Promise<void>;
}

/** Larger messages are refused: the API's biggest request (a 64 KiB text) is far below, as is gRPC's 4 MiB default. */
const readMaxBytes = 4 * 1024 * 1024;

/** Many long-lived streams per connection, each allowed to run ahead of the client's reads by a useful amount. */
const h2Settings: http2.Settings = { maxConcurrentStreams: 1000, initialWindowSize: 1024 * 1024 };
const h2SessionWindowBytes = 16 * 1024 * 1024;

export async function startServer(options: ServerOptions): Promise<Server> {
  const pingIntervalMs = options.pingIntervalMs ?? 30_000;
  const shutdown = new Shutdown();
  const health = new HealthStatus();
  const rpc = connectNodeAdapter({
    routes: (router) => {
      options.routes(router);
      const served = servicesOf(router);
      for (const service of served) health.set(service.typeName, ServingStatus.SERVING);
      health.set("", ServingStatus.SERVING);
      registerHealth(router, health);
      registerReflection(router, [...served, Health]);
    },
    interceptors: [...(options.interceptors ?? []), abortStreamsOn(shutdown)],
    fallback: options.fallback,
    readMaxBytes,
  });

  const bidi =
    options.bidiRoutes && options.bidiOptions
      ? grpcBidiHandler(options.bidiRoutes, { ...options.bidiOptions, readMaxBytes }, shutdown)
      : undefined;

  // Calls in flight, so close can tell when the last one has finished.
  let active = 0;
  let onIdle: (() => void) | undefined;
  /** Counts a call until the first of `events` on its response (or stream). */
  const count = (response: { once(event: string, listener: () => void): unknown }, events: string[]) => {
    active += 1;
    let counted = true;
    const over = () => {
      if (!counted) return;
      counted = false;
      active -= 1;
      if (active === 0) onIdle?.();
    };
    for (const event of events) response.once(event, over);
  };
  const handler: NodeHandlerFn = (req, res) => {
    // A call is over once its response is written ("finish"), even while an HTTP/2 client keeps its request side
    // open, or when the stream is torn down first ("close").
    count(res as http.ServerResponse, ["finish", "close"]);
    if (!("stream" in req)) {
      // HTTP/1.1 clients must not reuse a connection that is about to go away.
      if (shutdown.signal.aborted) res.setHeader("connection", "close");
      else closeUnlessBodyRead(req, res as http.ServerResponse);
    }
    rpc(req, res);
  };
  // The bidi routes' streams, taken before Node makes a request and response of them; over when the stream closes.
  const bidiStreams: StreamHandler | undefined =
    bidi &&
    ((stream, headers) => {
      if (!bidi(stream, headers)) return false;
      count(stream, ["close"]);
      return true;
    });

  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<net.Socket>();
  const trackSession = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.setLocalWindowSize(h2SessionWindowBytes);
    keepAlive(session, pingIntervalMs);
    if (shutdown.signal.aborted) session.close();
  };
  const trackSocket = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };

  let listener: net.Server;
  let h1: http.Server | undefined;
  if (options.tls) {
    const [cert, key] = await Promise.all([readFile(options.tls.certFile), readFile(options.tls.keyFile)]);
    // With TLS, ALPN chooses between h2 and http/1.1 and Node serves both itself.
    const secure = http2.createSecureServer({ cert, key, allowHTTP1: true, settings: h2Settings }, handler);
    if (bidiStreams) serveStreamsFirst(secure, bidiStreams);
    secure.on("session", trackSession);
    listener = secure;
    listener.on("connection", (socket: net.Socket) => {
      socket.setKeepAlive(true, pingIntervalMs);
      trackSocket(socket);
    });
  } else {
    h1 = http.createServer(handler);
    const h2 = http2.createServer({ settings: h2Settings }, handler);
    if (bidiStreams) serveStreamsFirst(h2, bidiStreams);
    h2.on("session", trackSession);
    listener = createCleartextListener(h1, h2, pingIntervalMs);
    listener.on("connection", trackSocket);
    // http.Server starts checking its header and request timeouts (slow clients) when it starts listening; this one
    // never listens itself, it serves the sockets handed over.
    h1.emit("listening");
  }

  await new Promise<void>((resolve, reject) => {
    const failed = (error: Error) => {
      h1?.close();
      reject(error);
    };
    listener.once("error", failed);
    // Thousands of devices connect at once after a deploy or a node's death; see LISTEN_BACKLOG. The kernel caps it at
    // net.core.somaxconn.
    listener.listen({ port: options.port, host: options.host ?? "0.0.0.0", backlog: LISTEN_BACKLOG }, () => {
      listener.off("error", failed);
      resolve();
    });
  });
  const { port, address } = listener.address() as AddressInfo;
  const scheme = options.tls ? "https" : "http";

  let closing: Promise<void> | undefined;
  const close = async (graceMs: number) => {
    health.setAll(ServingStatus.NOT_SERVING);
    const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
    shutdown.begin(new ConnectError("server is shutting down", Code.Unavailable));
    // GOAWAY: no new streams; a session closes itself once its last stream has ended.
    for (const session of sessions) session.close();

    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    const idle = active === 0 ? Promise.resolve() : new Promise<void>((resolve) => (onIdle = resolve));
    await Promise.race([idle, expired]);
    clearTimeout(timer);

    for (const session of sessions) destroyQuietly(session);
    for (const socket of sockets) destroyQuietly(socket);
    await closed;
    // Stops http.Server's timeout checks (it was never listening, so it has no port to close).
    h1?.close();
  };

  return {
    port,
    url: `${scheme}://${urlHost(options.host ?? "0.0.0.0", address)}:${port}`,
    health,
    shuttingDown: shutdown.signal,
    close: (graceMs = 10_000) => (closing ??= close(graceMs)),
  };
}

/**
 * HTTP/1.1 cannot refuse a request's body and keep the connection: to reuse it, Node reads whatever an answer left
 * unread to the end, however long the client makes it (connect-node reads 256 KiB, then keeps reading for half a
 * second before it closes). So an answer sent before the body was read (a refusal: 401, 404, 413, 429) says
 * `connection: close`, and Node closes the connection as soon as it is out, the rest of the body unread. Node picks
 * that header from shouldKeepAlive when the answer is written: off up front, back on once the body was read to the end.
 */
function closeUnlessBodyRead(req: http.IncomingMessage, res: http.ServerResponse): void {
  const length = req.headers["content-length"];
  if (req.headers["transfer-encoding"] === undefined && (length === undefined || length === "0")) return;
  const keepAlive = res.shouldKeepAlive;
  res.shouldKeepAlive = false;
  req.once("end", () => {
    if (!res.headersSent) res.shouldKeepAlive = keepAlive;
  });
}

/** Every service the routes registered, once each. */
function servicesOf(router: ConnectRouter): DescService[] {
  const byName = new Map(router.handlers.map((handler) => [handler.service.typeName, handler.service]));
  return [...byName.values()];
}

/**
 * Links the shutdown signal into the context signal of streaming calls only: open streams are told to end when the
 * server closes, while unary calls in flight keep running to completion.
 */
function abortStreamsOn(shutdown: Shutdown): Interceptor {
  return (next) => (req) => {
    if (!req.stream) return next(req);
    const linked = new AbortController();
    const cancel = shutdown.onShutdown(() => linked.abort(shutdown.signal.reason));
    // The call's own signal aborts when the call ends, however it ends, which also releases the shutdown callback.
    const onEnd = () => {
      cancel();
      linked.abort(req.signal.reason);
    };
    if (req.signal.aborted) onEnd();
    else req.signal.addEventListener("abort", onEnd, { once: true });
    return next({ ...req, signal: linked.signal });
  };
}

/**
 * Destroys a session or socket whatever state it is in: Node's http2 can throw an internal assertion when a session
 * over a JavaScript stream is destroyed mid-write, and shutdown must go on regardless.
 */
function destroyQuietly(target: { destroy(): unknown }): void {
  try {
    target.destroy();
  } catch {
    // Already torn down as far as it can be.
  }
}

/** PINGs a session at each interval; one that has not answered the previous PING by then is gone, so drop it. */
function keepAlive(session: http2.ServerHttp2Session, intervalMs: number): void {
  let unanswered = false;
  const timer = setInterval(() => {
    if (session.destroyed) return;
    if (unanswered) {
      destroyQuietly(session);
      return;
    }
    unanswered = true;
    session.ping((error) => {
      if (!error) unanswered = false;
    });
  }, intervalMs);
  timer.unref();
  session.once("close", () => clearInterval(timer));
}

/** Where a client on this machine reaches a server bound to host. */
function urlHost(host: string, address: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::") return "[::1]";
  return address.includes(":") ? `[${address}]` : address;
}
