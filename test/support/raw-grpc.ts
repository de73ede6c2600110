import http2 from "node:http2";

/**
 * One gRPC call over raw HTTP/2: sends every request message and half-closes at once (as a scripted client such as
 * grpcurl fed from a pipe does), then reads every response message and the grpc-status trailer.
 */
export async function rawGrpcCall(
  baseUrl: string,
  path: string,
  token: string,
  requests: Uint8Array[],
): Promise<{ messages: Uint8Array[]; status: number }> {
  const answer = await rawHttp2Request(
    baseUrl,
    { ":path": path, "content-type": "application/grpc+proto", authorization: `Bearer ${token}` },
    [Buffer.concat(requests.map((request) => grpcFrame(request)))],
  );
  return { messages: unframe(answer.data), status: Number(answer.trailers?.["grpc-status"]) };
}

export interface RawAnswer {
  headers: http2.IncomingHttpHeaders;
  data: Buffer;
  trailers: http2.IncomingHttpHeaders | null;
}

/**
 * One POST over raw HTTP/2 with the given headers: writes each chunk (the next once the previous is flushed), then
 * half-closes unless `keepOpen` (a client that still owes the rest of a frame), and collects the answer until the
 * server closes the stream.
 */
export async function rawHttp2Request(
  baseUrl: string,
  headers: http2.OutgoingHttpHeaders,
  chunks: Uint8Array[],
  options: { keepOpen?: boolean } = {},
): Promise<RawAnswer> {
  const session = http2.connect(baseUrl);
  try {
    const stream = session.request({ ":method": "POST", te: "trailers", ...headers });
    const data: Buffer[] = [];
    const answer = new Promise<RawAnswer>((resolve, reject) => {
      let responseHeaders: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders | null = null;
      stream.on("response", (h) => (responseHeaders = h));
      stream.on("data", (chunk: Buffer) => data.push(chunk));
      stream.on("trailers", (t) => (trailers = t));
      // A server that refuses a request it has not read to the end resets the stream once it answered.
      stream.on("error", () => {});
      stream.on("close", () => {
        if (responseHeaders[":status"] === undefined) reject(new Error(`the stream closed unanswered (${stream.rstCode})`));
        else resolve({ headers: responseHeaders, data: Buffer.concat(data), trailers });
      });
    });
    for (const chunk of chunks) await new Promise<void>((resolve) => stream.write(chunk, () => resolve()));
    if (!options.keepOpen) stream.end();
    return await answer;
  } finally {
    session.close();
  }
}

/** gRPC's 5-byte prefix (flags, big-endian length) and the message; the Connect and gRPC-Web streams share it. */
export function grpcFrame(message: Uint8Array, flags = 0): Buffer {
  const header = Buffer.alloc(5);
  header[0] = flags;
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

/** The messages of a gRPC body, each with its flags. */
export function unframeWithFlags(bytes: Buffer): { flags: number; message: Buffer }[] {
  const messages: { flags: number; message: Buffer }[] = [];
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = bytes.readUInt32BE(at + 1);
    messages.push({ flags: bytes[at]!, message: bytes.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return messages;
}

function unframe(bytes: Buffer): Uint8Array[] {
  return unframeWithFlags(bytes).map(({ message }) => message);
}
