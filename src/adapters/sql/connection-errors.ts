/** Socket errors, and postgres.js's own codes for a connection that closed, ended or timed out. */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);

/** SQLSTATEs outside class 08 that still mean "the server is going away or not taking connections". */
const SERVER_GONE_CODES = new Set(["57P01", "57P02", "57P03", "53300"]);

/**
 * Whether the error means Postgres could not be reached or dropped the connection (retrying later may work). Any
 * FATAL error counts: the server ends the session after one (an idle-in-transaction timeout, for instance).
 */
export function isConnectionFailure(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, severity, errors } = error as { code?: unknown; severity?: unknown; errors?: unknown };
  if (severity === "FATAL" || severity === "PANIC") return true;
  if (typeof code === "string") {
    if (NETWORK_CODES.has(code) || SERVER_GONE_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code)) return true;
  }
  // Node's happy-eyeballs connect reports an AggregateError of the per-address failures.
  return Array.isArray(errors) && errors.some(isConnectionFailure);
}
