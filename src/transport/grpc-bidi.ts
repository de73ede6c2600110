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
 * one write, on Node's own stream object: the compatibility layer's request and response (another readable stream
 * for every incoming frame, another wrapper for every write) are never made for these calls. Only the plain case
 * takes this path: gRPC over HTTP/2 with binary protobuf and no compression; anything else (gRPC-Web, the Connect
 * protocol, JSON, compressed requests) goes to connect-es as before. A grpc-timeout ends the call with
 * DEADLINE_EXCEEDED, as there. Auth, logging, metrics, error mapping and the shutdown signal behave as the
 * interceptors do for the same call.
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

/** Takes a new HTTP/2 stream and returns true, or returns false and leaves it alone. */
export type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

/** Returns a handler that serves the routes' plain gRPC calls and leaves every other stream alone. */
export function grpcBidiHandler(routes: readonly BidiRoute[], options: BidiOptions, shutdown: Shutdown): StreamHandler {
  const byPath = new Map(routes.map((route) => [route.path, route]));
  return (stream, headers) => {
    if (headers[":method"] !== "POST") return false;
    const route = byPath.get(headers[":path"] ?? "");
    if (!route) return false;
    const type = headers["content-type"];
    if (type !== "application/grpc" && type !== "application/grpc+proto") return false;
    const encoding = headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    void serve(route, stream, headers, options, shutdown);
    return true;
  };
}

/**
 * Lets `handle` take each new stream of the server's sessions first; the streams it leaves go to Node's compatibility
 * layer (request and response, the server's request listener), which the server installed as its own "stream"
 * listener.
 */
export function serveStreamsFirst(server: http2.Http2Server | http2.Http2SecureServer, handle: StreamHandler): void {
  const compat = server.listeners("stream") as ((...args: unknown[]) => void)[];
  server.removeAllListeners("stream");
  server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
    if (handle(stream, headers)) return;
    for (const listener of compat) listener.call(server, stream, headers, ...rest);
  });
}

async function serve(
  route: BidiRoute,
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  options: BidiOptions,
  shutdown: Shutdown,
): Promise<void> {
  const started = performance.now();
  const procedure = route.path.slice(1);
  // Aborts when the call is over or the client went away, and with UNAVAILABLE when the server shuts down.
  const call = new AbortController();
  const cancelShutdown = shutdown.onShutdown(() => call.abort(shutdown.signal.reason));
  const timeout = parseTimeout(headerValue(headers["grpc-timeout"]), Number.MAX_SAFE_INTEGER);
  const deadline =
    timeout.timeoutMs === undefined
      ? undefined
      : setTimeout(() => call.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded)), timeout.timeoutMs);
  stream.once("close", () => {
    cancelShutdown();
    clearTimeout(deadline);
    call.abort();
  });
  // A reset or a broken session surfaces as "close" (above) and in the request reader; without a listener it would
  // be thrown.
  stream.on("error", () => {});

  let caller: { user?: string; device?: string } = {};
  let failure: ConnectError | undefined;
  try {
    if (timeout.error) throw timeout.error;
    const opened = await route.start(headerValue(headers.authorization));
    caller = opened;
    const write = (chunk: Uint8Array): boolean => {
      if (stream.destroyed || stream.writableEnded) return false;
      // The status goes in trailers, sent when Node asks for them (wantTrailers) once the last DATA frame is out.
      if (!stream.headersSent) stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
      return stream.write(chunk);
    };
    for await (const chunk of opened.run(requestMessages(stream, options.readMaxBytes), call.signal, write)) {
      if (stream.destroyed || stream.writableEnded) break;
      if (!write(chunk)) await drained(stream);
    }
  } catch (error) {
    failure = options.toConnectError(error, call.signal);
  }

  if (!stream.destroyed && !stream.writableEnded) {
    const status: http2.OutgoingHttpHeaders = {};
    setTrailerStatus(new Headers(), failure).forEach((value, key) => (status[key] = value));
    if (stream.headersSent) {
      stream.once("wantTrailers", () => {
        stream.sendTrailers(status);
        stopSendingOnceAnswered(stream);
      });
      stream.end();
    } else {
      // Trailers-only: the status travels in the one HEADERS frame, as connect-es answers a call that failed early.
      stream.respond({ ":status": 200, "content-type": "application/grpc+proto", ...status }, { endStream: true });
      stopSendingOnceAnswered(stream);
    }
  } else if (!failure && !stream.writableFinished) {
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
 * (readMaxBytes checked per message) and handed over through one queue, by an iterator written out rather than an
 * async generator. Why: a device sends a frame every second or so, and whatever waits for the next one lives that
 * long, past the young generation; an async generator (and one more per layer above it) left several promises and
 * requests behind per frame, most of what the server promoted to the old generation under load (bench/README.md).
 * Here a frame that finds the reader waiting costs one promise. Reading pauses while READ_AHEAD_MESSAGES wait, and
 * stops when the reader stops early (return).
 */
function requestMessages(stream: http2.ServerHttp2Stream, readMaxBytes: number): AsyncIterableIterator<Uint8Array> {
  const queue: Uint8Array[] = [];
  let partial: Buffer = Buffer.alloc(0); // the start of a message whose rest has not arrived
  let ended: { error?: unknown } | undefined;
  type Result = IteratorResult<Uint8Array> | Promise<never>;
  /** The reader waiting for a message: its promise's resolve (given a rejected promise, it rejects). */
  let waiting: ((result: Result) => void) | null = null;
  /** Whether the reader can be answered now: a message is queued, or reading has ended. */
  const ready = () => queue.length > 0 || ended !== undefined;
  /** Hands the next message to a waiting reader, or the end once nothing is queued. */
  const hand = () => {
    if (!waiting || !ready()) return;
    const reader = waiting;
    waiting = null;
    reader(take());
  };
  /** The next message, or the end (a rejected promise when it ended with an error); call only when ready(). */
  const take = (): Result => {
    const message = queue.shift();
    if (message) {
      resumeIfRoom();
      return { value: message, done: false };
    }
    return ended?.error ? Promise.reject(ended.error) : { value: undefined, done: true };
  };
  const resumeIfRoom = () => {
    if (!ended && queue.length < READ_AHEAD_MESSAGES && stream.isPaused()) stream.resume();
  };
  const end = (error?: unknown) => {
    if (ended) return;
    ended = { error };
    // Nothing more is read: after a refused frame, HTTP/2 flow control holds the client until the stream is reset.
    stream.off("data", onData).pause();
    hand();
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
    if (queue.length >= READ_AHEAD_MESSAGES) stream.pause();
    hand();
  };
  stream.on("data", onData);
  stream.once("end", () =>
    end(partial.length > 0 ? new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument) : undefined),
  );
  stream.once("error", end);
  stream.once("close", () => end(new ConnectError("the client went away", Code.Canceled)));

  return {
    next() {
      if (ready()) return Promise.resolve(take());
      return new Promise<IteratorResult<Uint8Array>>((resolve) => (waiting = resolve));
    },
    return() {
      queue.length = 0;
      end();
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/**
 * Once the answer is out (its last HEADERS frame submitted), resets the stream with NO_ERROR if the client has not
 * finished sending (the call ended on the server's side: a refused frame, a slow or replaced stream), so it stops, as
 * gRPC servers do: the rest of a frame refused from its length prefix is never sent. The reset waits a turn of the
 * event loop, so the session writes the answer before it.
 */
function stopSendingOnceAnswered(stream: http2.ServerHttp2Stream): void {
  setImmediate(() => {
    if (!stream.destroyed && stream.state.remoteClose === 0) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  });
}

function headerValue(value: string | string[] | undefined): string | null {
  return Array.isArray(value) ? (value[0] ?? null) : (value ?? null);
}

function drained(stream: http2.ServerHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done).off("close", done);
      resolve();
    };
    stream.once("drain", done).once("close", done);
  });
}
