import type * as http from "node:http";
import type * as http2 from "node:http2";
import * as net from "node:net";

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
      // The session binds to the socket's native handle (no JavaScript stream in the write path: every frame of
      // every stream otherwise went through a Duplex wrapper, the top cost under load). Node's Http2Session first
      // feeds itself what the socket has buffered (nodejs/node#34532), so the sniffed bytes go back into the paused
      // socket's buffer and arrive before anything the handle reads later.
      socket.pause();
      socket.unshift(head);
      // The listener keeps sockets half-open for http.Server, which ends them itself; Http2Session does not, so a
      // client's FIN must close the socket, or its session and streams would stay open until a PING went unanswered.
      socket.allowHalfOpen = false;
      h2.emit("connection", socket);
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
