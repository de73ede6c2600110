import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { DependencyUnavailableError, Refusal, type RefusalKind } from "../errors.js";

const RETRY_AFTER = "retry-after";

/** The Connect code a client sees for each of the domain's refusals (docs/protocol.md explains each). */
const codeOf: Record<RefusalKind, Code> = {
  invalid: Code.InvalidArgument,
  not_found: Code.NotFound,
  forbidden: Code.PermissionDenied,
  not_ready: Code.FailedPrecondition,
  rate_limited: Code.ResourceExhausted,
  unauthenticated: Code.Unauthenticated,
  replaced: Code.Aborted,
  too_slow: Code.ResourceExhausted,
  shutting_down: Code.Unavailable,
};

/**
 * The one mapping from what the server throws to what a client sees, for unary calls, streams and single Connect
 * frames alike: a refusal becomes its code (a rate limit with a `retry-after` header or trailer, in seconds), an
 * unavailable dependency UNAVAILABLE (safe to retry), an abort caused by the call ending keeps the call's reason, and
 * anything else is logged with its stack and hidden behind INTERNAL. ConnectErrors (from connect-es, protovalidate)
 * pass through.
 */
export function toConnectError(error: unknown, logger: Logger, signal?: AbortSignal): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof Refusal) {
    const metadata = error.retryAfterSeconds === undefined ? undefined : { [RETRY_AFTER]: String(error.retryAfterSeconds) };
    return new ConnectError(error.message, codeOf[error.kind], metadata, undefined, error);
  }
  if (error instanceof DependencyUnavailableError) {
    logger.warn({ dependency: error.dependency, err: error.cause }, error.message);
    return new ConnectError(
      `${error.dependency} is temporarily unavailable; retry shortly`,
      Code.Unavailable,
      undefined,
      undefined,
      error,
    );
  }
  if (signal?.aborted && (error === signal.reason || (error instanceof Error && error.name === "AbortError"))) {
    return ConnectError.from(signal.reason);
  }
  // A request stream cut short: the client reset its stream or dropped the connection while the handler read it.
  if (error instanceof Error && (error as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE") {
    return new ConnectError("the client went away", Code.Canceled, undefined, undefined, error);
  }
  logger.error({ err: error }, "unexpected error in rpc handler");
  return new ConnectError("internal error", Code.Internal, undefined, undefined, error);
}

/** The seconds after which an error says its call may succeed if repeated, if it says so. */
export function retryAfterSeconds(error: ConnectError): number | undefined {
  const value = Number(error.metadata.get(RETRY_AFTER) ?? Number.NaN);
  return Number.isInteger(value) && value > 0 ? value : undefined;
}
