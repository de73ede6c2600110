/**
 * The little of a SQL driver that the storage code needs, so one set of SQL serves both real Postgres (postgres.js)
 * and the embedded PGlite. Parameters are positional ($1, $2, …); arrays bind to Postgres arrays (cast them in SQL:
 * `$1::uuid[]`). bigint columns come back as JS bigint, timestamptz as Date, bytea as Uint8Array, json parsed; array
 * columns are not parsed alike by both drivers, so aggregate results to json instead. A statement that fails on a value
 * Postgres cannot store (a data exception: NUL in text, a number out of range) throws Refusal "invalid".
 */
export interface SqlQuery {
  query<Row extends Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<Row[]>;
}

export interface SqlDriver extends SqlQuery {
  /** Runs fn in one transaction (READ COMMITTED); commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: SqlQuery) => Promise<T>): Promise<T>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(script: string): Promise<void>;
  close(): Promise<void>;
}
