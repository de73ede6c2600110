import type * as http from "node:http";
import type * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";

/** What every HTTP/2 client sends first when it speaks h2c with prior knowledge (RFC 9113 §3.4). */
const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** A connection that sends nothing is dropped after this long. */
const firstBytesTimeoutMs = 10_000;

/**
 * One cleartext port for h2c (gRPC, bidi streams) and HTTP/1.1 (browsers, curl): Node's http2 ignores allowHTTP1
 * without TLS, so the first bytes are sniffed for the HTTP/2 preface and the socket is handed to the matching server.
 */
export function createCleartextListener(h1: http.Server, h2: http2.Http2Server, keepAliveMs: number): net.Server {
  // The same socket options http.Server uses for itself.
  return net.createServer(
    { allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: keepAliveMs },
    (socket) => dispatch(socket, h1, h2),
  );
}

function dispatch(socket: net.Socket, h1: http.Server, h2: http2.Http2Server): void {
  let head: Buffer = Buffer.alloc(0);
  const silent = () => socket.destroy();
  const ended = () => socket.destroy();
  const onError = () => socket.destroy();
  const onData = (chunk: Buffer) => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    const compared = Math.min(head.length, h2Preface.length);
    const http2 = head.subarray(0, compared).equals(h2Preface.subarray(0, compared));
    if (http2 && head.length < h2Preface.length) return;

    socket.off("data", onData).off("end", ended).off("timeout", silent).off("error", onError).setTimeout(0);
    if (http2) {
      h2.emit("connection", new ReplaySocket(socket, head));
    } else {
      // http.Server reads from the socket's JavaScript stream until its parser takes over the handle, and
      // unshifted bytes are delivered first on resume: the request is parsed from its first byte, in order.
      socket.pause();
      socket.unshift(head);
      h1.emit("connection", socket);
      socket.resume();
    }
  };
  socket.setTimeout(firstBytesTimeoutMs).on("timeout", silent).on("end", ended).on("error", onError).on("data", onData);
}

/**
 * The socket as the HTTP/2 session should see it: the sniffed bytes first, then everything else that arrives.
 * http2 binds to a socket's native handle when it has one, which would skip the bytes already read, so this wrapper
 * deliberately has none and http2 reads it as a JavaScript stream. Reads pause the socket while the session is not
 * reading (backpressure), writes wait for the socket to drain, and each direction ends on its own (half-close).
 */
class ReplaySocket extends Duplex {
  private readonly socket: net.Socket;

  constructor(socket: net.Socket, head: Buffer) {
    super({ allowHalfOpen: true });
    this.socket = socket;
    this.push(head);
    socket.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.on("end", () => this.push(null));
    socket.on("error", (error) => this.destroy(error));
    socket.on("close", () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.socket.write(chunk)) return callback();
    // A socket that closes before it drains would otherwise leave this write pending for ever.
    const settle = () => {
      this.socket.off("drain", settle).off("close", settle);
      callback(this.socket.destroyed ? new Error("socket closed before the write drained") : null);
    };
    this.socket.once("drain", settle).once("close", settle);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy(error ?? undefined);
    callback(error);
  }
}
