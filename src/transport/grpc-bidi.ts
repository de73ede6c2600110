import type * as http from "node:http";
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { compressedFlag } from "@connectrpc/connect/protocol";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import type { Logger } from "pino";
import { logLevelFor } from "./interceptors.js";
import type { Shutdown } from "./shutdown.js";

/**
 * A bidirectional gRPC method served straight on the HTTP/2 stream, beside connect-es. Why: a device stream writes
 * one message per event, and connect-es passes each one through a chain of (down-compiled) async generators, its
 * interceptors' and its own; at thousands of deliveries per second that chain and its garbage were most of the
 * server's CPU. Here the messages a device stream has ready at once are pre-encoded into one buffer and written with
 * one write. Only the plain case takes this path: gRPC over HTTP/2 with binary protobuf and no compression; anything
 * else (gRPC-Web, the Connect protocol, JSON, compressed requests) goes to connect-es as before. A grpc-timeout ends
 * the call with DEADLINE_EXCEEDED, as there. Auth, logging, metrics, error mapping and the shutdown signal behave as
 * the interceptors do for the same call.
 */
export interface BidiRoute {
  /** "/package.Service/Method" */
  path: string;
  /**
   * Checks the call's credentials (throws to refuse the call) and returns who it is, and how to run it: request
   * messages (serialized, without the gRPC prefix) in; out, chunks of one or more complete gRPC messages (length
   * prefixes included), each written to the stream with one write, either yielded or, while the call waits for the
   * next chunk, given to `write` (which returns false once the stream's buffer is full).
   */
  start(authorization: string | null): Promise<{
    user: string;
    device: string;
    run(
      requests: AsyncIterable<Uint8Array>,
      signal: AbortSignal,
      write: (chunk: Uint8Array) => boolean,
    ): AsyncIterable<Uint8Array>;
  }>;
}

export interface BidiOptions {
  logger: Logger;
  onCallEnd?: (call: { procedure: string; code: string; seconds: number }) => void;
  toConnectError: (error: unknown, signal?: AbortSignal) => ConnectError;
  readMaxBytes: number;
}

type Request = http.IncomingMessage | http2.Http2ServerRequest;

/** Returns a handler that serves the routes' plain gRPC calls and returns false for every other request. */
export function grpcBidiHandler(
  routes: readonly BidiRoute[],
  options: BidiOptions,
  shutdown: Shutdown,
): (req: Request, res: unknown) => boolean {
  const byPath = new Map(routes.map((route) => [route.path, route]));
  return (req, res) => {
    if (req.method !== "POST" || !("stream" in req)) return false;
    const route = byPath.get(req.url ?? "");
    if (!route) return false;
    const type = req.headers["content-type"];
    if (type !== "application/grpc" && type !== "application/grpc+proto") return false;
    const encoding = req.headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    void serve(route, req as http2.Http2ServerRequest, res as http2.Http2ServerResponse, options, shutdown);
    return true;
  };
}

async function serve(
  route: BidiRoute,
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  options: BidiOptions,
  shutdown: Shutdown,
): Promise<void> {
  const started = performance.now();
  const procedure = route.path.slice(1);
  // Aborts when the call is over or the client went away, and with UNAVAILABLE when the server shuts down.
  const call = new AbortController();
  const cancelShutdown = shutdown.onShutdown(() => call.abort(shutdown.signal.reason));
  const timeout = parseTimeout(headerValue(req.headers["grpc-timeout"]), Number.MAX_SAFE_INTEGER);
  const deadline =
    timeout.timeoutMs === undefined
      ? undefined
      : setTimeout(() => call.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded)), timeout.timeoutMs);
  res.once("close", () => {
    cancelShutdown();
    clearTimeout(deadline);
    call.abort();
  });

  let caller: { user?: string; device?: string } = {};
  let failure: ConnectError | undefined;
  try {
    if (timeout.error) throw timeout.error;
    const opened = await route.start(headerValue(req.headers.authorization));
    caller = opened;
    const write = (chunk: Uint8Array): boolean => {
      if (res.destroyed || res.writableEnded) return false;
      if (!res.headersSent) res.writeHead(200, { "content-type": "application/grpc+proto" });
      return res.write(chunk);
    };
    for await (const chunk of opened.run(requestMessages(req, options.readMaxBytes), call.signal, write)) {
      if (res.destroyed || res.writableEnded) break;
      if (!write(chunk)) await drained(res);
    }
  } catch (error) {
    failure = options.toConnectError(error, call.signal);
  }

  if (!res.destroyed && !res.writableEnded) {
    const status: Record<string, string> = {};
    setTrailerStatus(new Headers(), failure).forEach((value, key) => (status[key] = value));
    if (res.headersSent) {
      stopSendingOnceAnswered(res.stream, "after trailers");
      res.addTrailers(status);
      res.end();
    } else {
      // Trailers-only: the status travels in the one HEADERS frame, as connect-es answers a call that failed early.
      res.writeHead(200, { "content-type": "application/grpc+proto", ...status });
      res.end();
      stopSendingOnceAnswered(res.stream, "now");
    }
  } else if (!failure && !res.writableFinished) {
    failure = new ConnectError("the client went away", Code.Canceled);
  }

  const code = failure?.code;
  const entry = {
    procedure,
    code: code === undefined ? "ok" : codeToString(code),
    ms: Math.round(performance.now() - started),
    user: caller.user,
    device: caller.device,
    error: failure?.message,
  };
  options.logger[logLevelFor(code)](entry, "rpc");
  options.onCallEnd?.({ procedure, code: entry.code, seconds: (performance.now() - started) / 1000 });
}

/** Request messages read ahead of the handler before reading pauses (HTTP/2 flow control then holds the client). */
const READ_AHEAD_MESSAGES = 16;

/**
 * The request's gRPC messages as they arrive: split out of each DATA chunk in the stream's 'data' handler
 * (readMaxBytes checked per message) and handed over through one queue. Why not the stream's async iterator piped
 * through connect-es's envelope transform: each message then passed two more layers of async generators, which at
 * an ack per delivery cost more than the ack itself. Reading pauses while READ_AHEAD_MESSAGES wait.
 */
function requestMessages(req: http2.Http2ServerRequest, readMaxBytes: number): AsyncIterable<Uint8Array> {
  const queue: Uint8Array[] = [];
  let partial: Buffer = Buffer.alloc(0); // the start of a message whose rest has not arrived
  let ended: { error?: unknown } | undefined;
  let wake: (() => void) | null = null;
  const notify = () => {
    const resume = wake;
    wake = null;
    resume?.();
  };
  const end = (error?: unknown) => {
    if (ended) return;
    ended = { error };
    // Nothing more is read: after a refused frame, HTTP/2 flow control holds the client until the stream is reset.
    req.off("data", onData).pause();
    notify();
  };
  const onData = (chunk: Buffer) => {
    const data = partial.length > 0 ? Buffer.concat([partial, chunk]) : chunk;
    let at = 0;
    while (data.length - at >= 5) {
      const length = data.readUInt32BE(at + 1);
      if (length > readMaxBytes) {
        return end(
          new ConnectError(`message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted),
        );
      }
      if ((data[at]! & compressedFlag) !== 0) {
        return end(new ConnectError("received a compressed message without grpc-encoding", Code.Internal));
      }
      if (data.length - at - 5 < length) break;
      queue.push(data.subarray(at + 5, at + 5 + length));
      at += 5 + length;
    }
    partial = data.subarray(at);
    if (queue.length >= READ_AHEAD_MESSAGES) req.pause();
    notify();
  };
  req.on("data", onData);
  req.once("end", () =>
    end(partial.length > 0 ? new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument) : undefined),
  );
  req.once("error", end);
  req.once("close", () => end(new ConnectError("the client went away", Code.Canceled)));

  return {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const message = queue.shift();
        if (message) {
          if (queue.length < READ_AHEAD_MESSAGES && req.isPaused()) req.resume();
          yield message;
        } else if (ended) {
          if (ended.error) throw ended.error;
          return;
        } else {
          await new Promise<void>((resolve) => (wake = resolve));
        }
      }
    },
  };
}

/**
 * Once the answer is out, resets the stream with NO_ERROR if the client has not finished sending (the call ended on
 * the server's side: a refused frame, a slow or replaced stream), so it stops, as gRPC servers do: the rest of a frame
 * refused from its length prefix is never sent. A trailers-only answer is out with its HEADERS frame; trailers go from
 * Node's own wantTrailers listener on setImmediate, so a reset queued after it follows them (Node has no event for
 * "trailers written", and connect-node does the same).
 */
function stopSendingOnceAnswered(stream: http2.ServerHttp2Stream, when: "now" | "after trailers"): void {
  const reset = () => {
    if (stream.state.remoteClose === 0) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  };
  if (when === "now") reset();
  else stream.once("wantTrailers", () => setImmediate(reset));
}

function headerValue(value: string | string[] | undefined): string | null {
  return Array.isArray(value) ? (value[0] ?? null) : (value ?? null);
}

function drained(res: http2.Http2ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done).off("close", done);
      resolve();
    };
    res.once("drain", done).once("close", done);
  });
}
