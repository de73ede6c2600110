import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectRequestSchema, ConnectResponseSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { testBackends } from "../support/db.js";
import { captureLogs } from "../support/log-capture.js";
import { grpcFrame, type RawAnswer, rawHttp2Request, unframeWithFlags } from "../support/raw-grpc.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

interface Status {
  code: number;
  message: string;
}

/** The flag of gRPC-Web's trailers frame, and of the Connect protocol's end-of-stream message. */
const GRPC_WEB_TRAILERS = 0x80;
const CONNECT_END_STREAM = 0x02;

/** The Connect stream's protocols, each with where its answer carries the status. */
const protocols: { name: string; headers: Record<string, string>; compressionAgreed: boolean; status(answer: RawAnswer): Status }[] = [
  {
    name: "gRPC (served on the HTTP/2 stream)",
    headers: { "content-type": "application/grpc" },
    compressionAgreed: false,
    status: (answer) => grpcStatus(answer.trailers ?? answer.headers),
  },
  {
    name: "gRPC with gzip agreed (served by connect-es)",
    headers: { "content-type": "application/grpc", "grpc-encoding": "gzip" },
    compressionAgreed: true,
    status: (answer) => grpcStatus(answer.trailers ?? answer.headers),
  },
  {
    name: "gRPC-Web",
    headers: { "content-type": "application/grpc-web+proto" },
    compressionAgreed: false,
    status(answer) {
      if (answer.headers["grpc-status"] !== undefined) return grpcStatus(answer.headers);
      const trailers = unframeWithFlags(answer.data).find(({ flags }) => flags & GRPC_WEB_TRAILERS)!.message.toString();
      return grpcStatus(Object.fromEntries(trailers.split("\r\n").filter(Boolean).map((line) => line.split(/:\s*/, 2))));
    },
  },
  {
    name: "Connect",
    headers: { "content-type": "application/connect+proto" },
    compressionAgreed: false,
    status(answer) {
      const end = unframeWithFlags(answer.data).find(({ flags }) => flags & CONNECT_END_STREAM)!.message.toString();
      const { error } = JSON.parse(end) as { error?: { code: string; message: string } };
      return error ? { code: codeFromString(error.code)!, message: error.message } : { code: 0, message: "" };
    },
  },
];

function grpcStatus(fields: Record<string, unknown>): Status {
  return { code: Number(fields["grpc-status"]), message: decodeURIComponent(String(fields["grpc-message"] ?? "")) };
}

/** The request ids of the command results in an answer's messages. */
function resultIds(answer: RawAnswer): string[] {
  return unframeWithFlags(answer.data)
    .filter(({ flags }) => flags === 0)
    .map(({ message }) => fromBinary(ConnectResponseSchema, message).frame)
    .flatMap((frame) => (frame.case === "result" ? [frame.value.requestId] : []));
}

const listChats = toBinary(
  ConnectRequestSchema,
  create(ConnectRequestSchema, { requestId: "first", command: { case: "listChats", value: {} } }),
);

describe.each(testBackends().slice(0, 1))("a Connect stream refusing a frame, on %s", (backend) => {
  let server: TestServer;
  const logs = captureLogs("warn");
  beforeAll(async () => {
    server = await startTestServer(backend, {}, { logger: logs.logger });
  });
  afterAll(() => server?.close());

  /** Opens a Connect stream, sends a good command then the chunks, and returns the answer. */
  async function connectWith(headers: Record<string, string>, chunks: Buffer[], options: { keepOpen?: boolean } = {}) {
    const token = await server.token(uniqueUser("raw"), "phone");
    return rawHttp2Request(
      server.url,
      { ":path": "/palaver.chat.v1.ChatService/Connect", authorization: `Bearer ${token}`, ...headers },
      [grpcFrame(listChats), ...chunks],
      options,
    );
  }

  describe.each(protocols)("over $name", (protocol) => {
    it("ends with INVALID_ARGUMENT on a frame that is not a ConnectRequest, after answering the commands before it", async () => {
      // Field 1 (request_id) announces 5 bytes and carries 1.
      const answer = await connectWith(protocol.headers, [grpcFrame(Buffer.from([0x0a, 0x05, 0x61]))]);
      expect(protocol.status(answer)).toMatchObject({ code: Code.InvalidArgument, message: expect.stringMatching(/^parse binary: /) });
      expect(resultIds(answer)).toEqual(["first"]);
    });

    // Only where no compression was agreed: with gzip agreed, a compressed frame is a valid one.
    if (!protocol.compressionAgreed) {
      it("ends with INTERNAL on a frame flagged compressed when no encoding was agreed", async () => {
        const answer = await connectWith(protocol.headers, [grpcFrame(listChats, 0x01)]);
        expect(protocol.status(answer)).toMatchObject({ code: Code.Internal, message: expect.stringMatching(/compressed/) });
      });
    }

    it("ends with RESOURCE_EXHAUSTED on a frame over 4 MiB, told from its length prefix before the frame arrives", async () => {
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(100 * 1024 * 1024, 1);
      // The prefix and a few bytes of the frame, and the request left open: the answer cannot wait for the rest.
      const answer = await connectWith(protocol.headers, [Buffer.concat([prefix, Buffer.alloc(16)])], { keepOpen: true });
      expect(protocol.status(answer)).toEqual({
        code: Code.ResourceExhausted,
        message: "message size 104857600 is larger than configured readMaxBytes 4194304",
      });
    });
  });

  it("logs none of these client mistakes at error level", () => {
    expect(logs.lines.filter(({ level }) => Number(level) >= 50)).toEqual([]);
  });
});
