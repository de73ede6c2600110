import { Refusal } from "../../errors.js";

/**
 * A Postgres "data exception" (SQLSTATE class 22: NUL in text, a number out of its column type's range, input a type
 * cannot parse) means a value the call brought cannot be stored: the caller's mistake, so a refusal (INVALID_ARGUMENT)
 * rather than a server error. The API's rules refuse such values before they reach a statement; this is the net
 * behind them. Postgres's own text is left out, since it can quote the value.
 */
export function refusedValue(error: unknown): unknown {
  const code = sqlState(error);
  if (typeof code !== "string" || !code.startsWith("22")) return error;
  return new Refusal("invalid", `the request holds a value the database cannot store (SQLSTATE ${code})`);
}

/** The SQLSTATE (or driver code) a database error carries, as both drivers put it in `code`. */
export function sqlState(error: unknown): unknown {
  return typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined;
}
