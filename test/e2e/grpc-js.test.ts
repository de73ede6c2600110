import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConnectRequestSchema,
  ConnectResponseSchema,
  CreateChatRequestSchema,
  CreateChatResponseSchema,
  type ConnectResponse,
} from "../../gen/palaver/chat/v1/chat_pb.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

const serialize = <D extends DescMessage>(schema: D) => (message: MessageShape<D>) => Buffer.from(toBinary(schema, message));
const deserialize = <D extends DescMessage>(schema: D) => (bytes: Buffer) => fromBinary(schema, bytes);

/** A plain gRPC client (grpc-js, not Connect's) proves any gRPC stack can use Palaver. */
describe.each(testBackends().slice(0, 1))("a grpc-js client on %s", (backend) => {
  let server: TestServer;
  let client: grpc.Client;
  beforeAll(async () => {
    server = await startTestServer(backend);
    client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  });
  afterAll(async () => {
    client?.close();
    await server?.close();
  });

  const metadata = (token: string) => {
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${token}`);
    return md;
  };

  it("creates a chat with a unary call and sends and receives on the Connect stream", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const aliceToken = await server.token(alice!, "cli");
    const created = await new Promise<MessageShape<typeof CreateChatResponseSchema>>((resolve, reject) =>
      client.makeUnaryRequest(
        "/palaver.chat.v1.ChatService/CreateChat",
        serialize(CreateChatRequestSchema),
        deserialize(CreateChatResponseSchema),
        create(CreateChatRequestSchema, { name: "grpc-js", participantUserIds: [bob!] }),
        metadata(aliceToken),
        (error, response) => (error ? reject(error) : resolve(response!)),
      ),
    );
    const chatId = created.chat!.chatId;

    const bobStream = client.makeBidiStreamRequest(
      "/palaver.chat.v1.ChatService/Connect",
      serialize(ConnectRequestSchema),
      deserialize(ConnectResponseSchema),
      metadata(await server.token(bob!, "cli")),
    );
    const received: ConnectResponse[] = [];
    const drained = new Promise<void>((resolve) =>
      bobStream.on("data", (frame: ConnectResponse) => {
        received.push(frame);
        if (frame.frame.case === "event" && frame.frame.value.kind.case === "inboxDrained") resolve();
      }),
    );
    bobStream.on("error", () => {});
    await drained;

    bobStream.write(create(ConnectRequestSchema, {
      requestId: "send-1",
      command: { case: "sendMessage", value: { chatId, clientMessageId: "g1", text: "from grpc-js" } },
    }));
    await expect.poll(() => received.some((f) => f.frame.case === "result" && f.frame.value.requestId === "send-1")).toBe(true);
    const result = received.find((f) => f.frame.case === "result")!;
    expect(result.frame.case === "result" && result.frame.value.outcome.case).toBe("sendMessage");
    bobStream.cancel();
  });
});
