import { toBinary, type DescExtension, type DescFile, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** What one reflection request asks, in the shape v1 and v1alpha share. */
type Question =
  | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: undefined; value?: undefined };

type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/**
 * Serves grpc.reflection v1 and v1alpha (grpcurl, buf curl and Postman still ask either) for the given services,
 * describing them with the descriptors embedded in the generated code and every file they import.
 */
export function registerReflection(router: ConnectRouter, services: readonly DescService[]): void {
  const index = new DescriptorIndex([...services, v1.ServerReflection, v1alpha.ServerReflection]);
  router.service(v1.ServerReflection, { serverReflectionInfo: (requests) => converse(index, requests) });
  router.service(v1alpha.ServerReflection, { serverReflectionInfo: (requests) => converse(index, requests) });
}

async function* converse<R extends { host: string; messageRequest: Question }>(
  index: DescriptorIndex,
  requests: AsyncIterable<R>,
) {
  // Like grpc-go, send each dependency once per stream; the file asked for is always sent.
  const sent = new Set<string>();
  for await (const request of requests) {
    yield { validHost: request.host, originalRequest: request, messageResponse: index.answer(request.messageRequest, sent) };
  }
}

class DescriptorIndex {
  private readonly serviceNames: string[];
  private readonly files = new Map<string, DescFile>();
  private readonly fileOfSymbol = new Map<string, DescFile>();
  private readonly extensionsOf = new Map<string, DescExtension[]>();
  private readonly encoded = new Map<string, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.serviceNames = [...new Set(services.map((s) => s.typeName))].sort();
    for (const service of services) this.addFile(service.file);
  }

  answer(question: Question, sent: Set<string>): Answer {
    switch (question.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.serviceNames.map((name) => ({ name })) } };
      case "fileByFilename":
        return this.fileResponse(this.files.get(question.value), `file "${question.value}"`, sent);
      case "fileContainingSymbol":
        return this.fileResponse(this.fileOfSymbol.get(question.value), `symbol "${question.value}"`, sent);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = question.value;
        const extension = this.extensionsOf.get(containingType)?.find((e) => e.number === extensionNumber);
        return this.fileResponse(extension?.file, `extension ${extensionNumber} of "${containingType}"`, sent);
      }
      case "allExtensionNumbersOfType": {
        if (!this.fileOfSymbol.has(question.value)) return notFound(`type "${question.value}"`);
        const numbers = (this.extensionsOf.get(question.value) ?? []).map((e) => e.number);
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: question.value, extensionNumber: numbers } };
      }
      case undefined:
        return { case: "errorResponse", value: { errorCode: Code.InvalidArgument, errorMessage: "empty request" } };
    }
  }

  /** The file first, then the files it imports, transitively, that this stream has not seen yet. */
  private fileResponse(file: DescFile | undefined, what: string, sent: Set<string>): Answer {
    if (!file) return notFound(what);
    const out: Uint8Array[] = [];
    const queue = [file];
    const visited = new Set<string>();
    for (let current = queue.shift(); current; current = queue.shift()) {
      const name = current.proto.name;
      if (visited.has(name)) continue;
      visited.add(name);
      if (current === file || !sent.has(name)) {
        sent.add(name);
        out.push(this.encode(current));
      }
      queue.push(...current.dependencies);
    }
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  }

  private encode(file: DescFile): Uint8Array {
    let bytes = this.encoded.get(file.proto.name);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.encoded.set(file.proto.name, bytes);
    }
    return bytes;
  }

  private addFile(file: DescFile): void {
    if (this.files.has(file.proto.name)) return;
    this.files.set(file.proto.name, file);
    for (const dependency of file.dependencies) this.addFile(dependency);
    for (const message of file.messages) this.addMessage(message);
    for (const enumeration of file.enums) this.addEnum(enumeration.typeName, enumeration.values, file);
    for (const extension of file.extensions) this.addExtension(extension);
    for (const service of file.services) {
      this.fileOfSymbol.set(service.typeName, file);
      for (const method of service.methods) this.fileOfSymbol.set(`${service.typeName}.${method.name}`, file);
    }
  }

  private addMessage(message: DescMessage): void {
    const { file, typeName } = message;
    this.fileOfSymbol.set(typeName, file);
    for (const field of message.fields) this.fileOfSymbol.set(`${typeName}.${field.name}`, file);
    for (const oneof of message.oneofs) this.fileOfSymbol.set(`${typeName}.${oneof.name}`, file);
    for (const nested of message.nestedMessages) this.addMessage(nested);
    for (const enumeration of message.nestedEnums) this.addEnum(enumeration.typeName, enumeration.values, file);
    for (const extension of message.nestedExtensions) this.addExtension(extension);
  }

  /** Enum values are scoped next to their enum, as in protobuf's own name resolution. */
  private addEnum(typeName: string, values: readonly { name: string }[], file: DescFile): void {
    this.fileOfSymbol.set(typeName, file);
    const scope = typeName.includes(".") ? typeName.slice(0, typeName.lastIndexOf(".") + 1) : "";
    for (const value of values) this.fileOfSymbol.set(scope + value.name, file);
  }

  private addExtension(extension: DescExtension): void {
    this.fileOfSymbol.set(extension.typeName, extension.file);
    const list = this.extensionsOf.get(extension.extendee.typeName) ?? [];
    list.push(extension);
    this.extensionsOf.set(extension.extendee.typeName, list);
  }
}

function notFound(what: string): Answer {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: `${what} not found` } };
}
