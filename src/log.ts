import { pino, stdSerializers, type DestinationStream, type Logger } from "pino";
import type { Config } from "./config.js";

export type { Logger };

/**
 * The server's one logger: JSON lines on stdout, each tagged with the node id so a cluster's logs can be merged.
 * Tests pass a destination to capture the lines.
 */
export function createLogger(config: Pick<Config, "logLevel" | "nodeId">, destination?: DestinationStream): Logger {
  const options = { level: config.logLevel, base: { node: config.nodeId }, serializers: { err: loggedError } };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * The fields a logged error keeps besides its type, message and stack (its causes' appended to both): what failed and
 * where. Every other field stays out of the logs, since clients' content rides on them: PGlite puts the statement and
 * its parameters on its errors (`query`, `params`), postgres.js too in debug mode (`parameters`), Postgres the failing
 * row (`detail`, `where`), a Redis client a command's arguments (`command`, a hand-off's message bodies among them).
 */
const loggedFields = [
  // Node's system errors
  ["code", "errno", "syscall", "address", "port"],
  // Postgres errors as PGlite and postgres.js name their fields (both use `code` for the SQLSTATE)
  ["severity", "routine", "constraint", "table", "column", "schema"],
  ["constraint_name", "table_name", "column_name", "schema_name"],
].flat();

/** pino's error serializer, keeping only loggedFields of an error's own. */
function loggedError(err: unknown): unknown {
  const full = stdSerializers.err(err as Error) as unknown as Record<string, unknown>;
  if (full === err) return err; // not an error
  const kept: Record<string, unknown> = { type: full.type, message: full.message, stack: full.stack };
  for (const field of loggedFields) if (full[field] !== undefined) kept[field] = full[field];
  if (err instanceof AggregateError) kept.aggregateErrors = err.errors.map(loggedError);
  return kept;
}
