import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator, violationsToProto } from "@bufbuild/protovalidate";
import { Code, ConnectError, type Interceptor, type StreamRequest } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { ServerReflection as ReflectionV1 } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { VerifyToken } from "../auth/tokens.js";
import { Refusal } from "../errors.js";
import type { Caller } from "../ports/caller.js";
import { callerKey } from "./caller.js";
import { toConnectError } from "./errors.js";

/** Services anyone may call without a token: load balancers probe health, tools discover the API. */
const publicServices: readonly string[] = [Health.typeName, ReflectionV1.typeName, ReflectionV1alpha.typeName];

export interface InterceptorOptions {
  logger: Logger;
  verifyToken: VerifyToken;
  /**
   * The key of the caller's device, recording the device the first time it is seen; refuses a token (`issuedAt`: its
   * `iat`) that the device's removal made too old.
   */
  resolveDevice: (userId: string, deviceName: string, issuedAt: Date) => Promise<string>;
  /** Told of every call once it has ended (metrics). */
  onCallEnd?: (call: { procedure: string; code: string; seconds: number }) => void;
}

/** The interceptors that wrap every RPC, outermost first: logging, error mapping, auth, validation. */
export function createInterceptors(options: InterceptorOptions): Interceptor[] {
  return [logging(options.logger, options.onCallEnd), errorMapping(options.logger), auth(options), validation()];
}

/** Logs each call once it has ended: successes at debug, client mistakes at info, server trouble at warn. */
function logging(logger: Logger, onCallEnd: InterceptorOptions["onCallEnd"]): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const finish = (error?: unknown) => {
      const code = error === undefined ? undefined : ConnectError.from(error).code;
      const caller = req.contextValues.get(callerKey);
      const entry = {
        procedure: `${req.service.typeName}/${req.method.name}`,
        code: code === undefined ? "ok" : codeToString(code),
        ms: Math.round(performance.now() - started),
        user: caller?.userId,
        device: caller?.deviceName,
        error: error instanceof Error ? error.message : undefined,
      };
      logger[logLevelFor(code)](entry, "rpc");
      onCallEnd?.({ procedure: entry.procedure, code: entry.code, seconds: (performance.now() - started) / 1000 });
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        finish();
        return res;
      }
      return { ...res, message: observeEnd(res.message, finish) };
    } catch (error) {
      finish(error);
      throw error;
    }
  };
}

export function logLevelFor(code: Code | undefined): "debug" | "info" | "warn" {
  switch (code) {
    case undefined:
    case Code.Canceled:
      return "debug";
    case Code.Internal:
    case Code.Unknown:
    case Code.DataLoss:
    case Code.Unavailable:
    case Code.Unimplemented:
    case Code.DeadlineExceeded:
      return "warn";
    default:
      return "info";
  }
}

/** Turns whatever a handler throws, up front or while streaming, into the ConnectError the client should see. */
function errorMapping(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const map = (error: unknown) => toConnectError(error, logger, req.signal);
    try {
      const res = await next(req);
      return res.stream ? { ...res, message: mapErrors(res.message, map) } : res;
    } catch (error) {
      throw map(error);
    }
  };
}

/** Requires a valid bearer token on every non-public service and puts the Caller into the call's context. */
function auth(options: InterceptorOptions): Interceptor {
  const open = new Set(publicServices);
  return (next) => async (req) => {
    if (open.has(req.service.typeName)) return next(req);
    req.contextValues.set(callerKey, await authenticate(options, req.header.get("authorization")));
    return next(req);
  };
}

/** The caller a bearer token speaks for, its device recorded; throws UNAUTHENTICATED for a missing or bad token. */
export async function authenticate(
  options: Pick<InterceptorOptions, "verifyToken" | "resolveDevice">,
  authorization: string | null,
): Promise<Caller> {
  const { expiresAt, issuedAt, ...subject } = await options.verifyToken(bearerToken(authorization));
  const deviceKey = await options.resolveDevice(subject.userId, subject.deviceName, issuedAt);
  return { ...subject, deviceKey, tokenExpiresAt: expiresAt };
}

function bearerToken(authorization: string | null): string {
  if (authorization === null) {
    throw new Refusal("unauthenticated", "missing token: send the header authorization: Bearer <token>");
  }
  const match = /^Bearer +(\S+) *$/i.exec(authorization);
  if (!match) throw new Refusal("unauthenticated", "authorization header must be: Bearer <token>");
  return match[1];
}

/**
 * Checks the protovalidate rules of unary and server-stream requests. Bidi frames are left to the Connect stream
 * dispatcher, which answers a bad frame with validateOrThrow's error instead of ending the stream.
 */
function validation(): Interceptor {
  return (next) => async (req) => {
    if (!req.stream) {
      validateOrThrow(req.method.input, req.message);
      return next(req);
    }
    if (req.method.methodKind !== "server_streaming") return next(req);
    return next({ ...req, message: validated(req) });
  };
}

async function* validated(req: StreamRequest) {
  for await (const message of req.message) {
    validateOrThrow(req.method.input, message);
    yield message;
  }
}

const validator = createValidator();

/**
 * Throws INVALID_ARGUMENT naming every violated rule ("participant_user_ids: value must contain at least 1 item(s)"),
 * with the violations as a buf.validate.Violations error detail. Rules that fail to compile are a server bug and
 * surface as INTERNAL.
 */
export function validateOrThrow<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): void {
  const result = validator.validate(schema, message);
  if (result.kind === "valid") return;
  if (result.kind === "error") throw result.error;
  const text = result.violations
    .map((violation) => {
      const path = pathToString(violation.field);
      return path ? `${path}: ${violation.message}` : violation.message;
    })
    .join("; ");
  const [details, detailsSchema] = violationsToProto(result.violations);
  throw new ConnectError(text, Code.InvalidArgument, undefined, [{ desc: detailsSchema, value: details }]);
}

/** Passes a stream through and reports once how it ended: an error, or undefined when it completed or was closed. */
async function* observeEnd<T>(source: AsyncIterable<T>, onEnd: (error?: unknown) => void): AsyncGenerator<T> {
  let failure: unknown;
  try {
    yield* source;
  } catch (error) {
    failure = error;
    throw error;
  } finally {
    onEnd(failure);
  }
}

async function* mapErrors<T>(source: AsyncIterable<T>, map: (error: unknown) => Error): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (error) {
    throw map(error);
  }
}
