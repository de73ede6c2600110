import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { AttachmentService } from "../../gen/palaver/chat/v1/attachment_pb.js";
import { ChatService } from "../../gen/palaver/chat/v1/chat_pb.js";
import { transportFor } from "../../test/support/server-clients.js";
import { startServer, type Server } from "./server.js";

/** A request's message_request: v1 and v1alpha have the same shape. */
type Question =
  | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } };

let server: Server;
beforeAll(async () => {
  server = await startServer({
    host: "127.0.0.1",
    port: 0,
    routes: (router) => router.service(ChatService, {}).service(AttachmentService, {}),
  });
});
afterAll(() => server.close(0));

/** Asks the questions in order on one reflection stream, as grpcurl does. */
async function ask(version: "v1" | "v1alpha", ...questions: Question[]) {
  const transport = transportFor("grpc over h2c", server.url);
  async function* requests() {
    for (const messageRequest of questions) yield { host: "", messageRequest };
  }
  const answers = [];
  const responses =
    version === "v1"
      ? createClient(v1.ServerReflection, transport).serverReflectionInfo(requests())
      : createClient(v1alpha.ServerReflection, transport).serverReflectionInfo(requests());
  for await (const response of responses) answers.push(response.messageResponse);
  return answers;
}

/** Orders files so that each comes after the files it imports, as a FileDescriptorSet must be. */
function importsFirst(files: FileDescriptorProto[]): FileDescriptorProto[] {
  const byName = new Map(files.map((file) => [file.name, file]));
  const ordered: FileDescriptorProto[] = [];
  const visit = (file: FileDescriptorProto | undefined) => {
    if (!file || ordered.includes(file)) return;
    for (const name of file.dependency) visit(byName.get(name));
    ordered.push(file);
  };
  files.forEach(visit);
  return ordered;
}

function fileNames(answer: { case?: string; value?: unknown }): string[] {
  expect(answer.case).toBe("fileDescriptorResponse");
  const { fileDescriptorProto } = answer.value as v1.FileDescriptorResponse;
  return fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name);
}

describe.each(["v1", "v1alpha"] as const)("reflection %s", (version) => {
  it("lists the served services, health and reflection included", async () => {
    const [answer] = await ask(version, { case: "listServices", value: "" });
    expect(answer?.case).toBe("listServicesResponse");
    const names = (answer?.value as v1.ListServiceResponse).service.map((s) => s.name);
    expect(names).toEqual([
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "palaver.chat.v1.AttachmentService",
      "palaver.chat.v1.ChatService",
    ]);
  });

  it("describes ChatService with every file it depends on", async () => {
    const [answer] = await ask(version, { case: "fileContainingSymbol", value: "palaver.chat.v1.ChatService" });
    const { fileDescriptorProto } = answer?.value as v1.FileDescriptorResponse;
    const files = fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
    expect(files[0]?.name).toBe("palaver/chat/v1/chat.proto");
    expect(files.map((f) => f.name)).toEqual(
      expect.arrayContaining([
        "buf/validate/validate.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/timestamp.proto",
        "palaver/chat/v1/event.proto",
        "palaver/chat/v1/model.proto",
      ]),
    );
    // The set is complete: it links into a registry that resolves the service and its messages.
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(files) }));
    const service = registry.getService("palaver.chat.v1.ChatService");
    expect(service?.methods.map((m) => m.name)).toContain("SendMessage");
    expect(registry.getMessage("palaver.chat.v1.Event")).toBeDefined();
  });

  it("sends each dependency once per stream, and the asked-for file always", async () => {
    const answers = await ask(
      version,
      { case: "fileContainingSymbol", value: "palaver.chat.v1.ChatService.SendMessage" },
      { case: "fileByFilename", value: "palaver/chat/v1/model.proto" },
      { case: "fileContainingSymbol", value: "palaver.chat.v1.ChatService" },
    );
    expect(fileNames(answers[0]!)[0]).toBe("palaver/chat/v1/chat.proto");
    expect(fileNames(answers[1]!)).toEqual(["palaver/chat/v1/model.proto"]);
    expect(fileNames(answers[2]!)).toEqual(["palaver/chat/v1/chat.proto"]);
  });

  it("finds fields, enum values, nested symbols and extensions", async () => {
    const answers = await ask(
      version,
      { case: "fileContainingSymbol", value: "palaver.chat.v1.CreateChatRequest.participant_user_ids" },
      { case: "fileContainingSymbol", value: "palaver.chat.v1.PARTICIPANT_OPERATION_ADD" },
      { case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.ServingStatus" },
      {
        case: "fileContainingExtension",
        value: { containingType: "google.protobuf.FieldOptions", extensionNumber: 1159 },
      },
      { case: "allExtensionNumbersOfType", value: "google.protobuf.FieldOptions" },
    );
    expect(fileNames(answers[0]!)[0]).toBe("palaver/chat/v1/chat.proto");
    expect(fileNames(answers[1]!)[0]).toBe("palaver/chat/v1/chat.proto");
    expect(fileNames(answers[2]!)[0]).toBe("grpc/health/v1/health.proto");
    expect(fileNames(answers[3]!)[0]).toBe("buf/validate/validate.proto");
    expect(answers[4]).toMatchObject({
      case: "allExtensionNumbersResponse",
      value: { baseTypeName: "google.protobuf.FieldOptions", extensionNumber: [1159, 1160] },
    });
  });

  it("answers an unknown name with NOT_FOUND and keeps the stream open", async () => {
    const answers = await ask(
      version,
      { case: "fileContainingSymbol", value: "palaver.chat.v1.Nope" },
      { case: "fileByFilename", value: "nope.proto" },
      { case: "listServices", value: "" },
    );
    expect(answers[0]).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound } });
    expect(answers[1]).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound } });
    expect(answers[2]?.case).toBe("listServicesResponse");
  });
});
