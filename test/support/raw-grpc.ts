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
  const session = http2.connect(baseUrl);
  try {
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc+proto",
      te: "trailers",
      authorization: `Bearer ${token}`,
    });
    stream.end(Buffer.concat(requests.map(frame)));
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    const status = await new Promise<number>((resolve, reject) => {
      stream.on("trailers", (trailers) => resolve(Number(trailers["grpc-status"])));
      stream.on("error", reject);
    });
    return { messages: unframe(Buffer.concat(chunks)), status };
  } finally {
    session.close();
  }
}

function frame(message: Uint8Array): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

function unframe(bytes: Buffer): Uint8Array[] {
  const messages: Uint8Array[] = [];
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = bytes.readUInt32BE(at + 1);
    messages.push(bytes.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return messages;
}
