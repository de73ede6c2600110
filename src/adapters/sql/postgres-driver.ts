import postgres from "postgres";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import { unavailableOnConnectionFailure } from "./connection-errors.js";
import { byteaFromText, byteaText, encodeParams } from "./params.js";

export interface PostgresDriverOptions {
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** Seconds to wait for a connection before the call fails as unavailable (default 10). */
  connectTimeoutSeconds?: number;
  /** Sets the connections' search_path (tests give each database its own schema). */
  searchPath?: string;
}

type Types = { bigint: bigint; bytea: Uint8Array };
type Client = postgres.Sql<Types> | postgres.TransactionSql<Types>;

/**
 * A SqlDriver over a postgres.js pool. Connections open lazily and reopen on the next call after Postgres went away;
 * a call that fails because Postgres cannot be reached throws DependencyUnavailableError.
 */
export function createPostgresDriver(url: string, options: PostgresDriverOptions = {}): SqlDriver {
  const sql = postgres(url, {
    max: options.poolSize ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    types: {
      bigint: postgres.BigInt,
      // As Uint8Array rather than postgres.js's Buffer, like the PGlite driver.
      bytea: { to: 17, from: [17], serialize: byteaText, parse: byteaFromText },
    },
    connection: options.searchPath === undefined ? {} : { search_path: options.searchPath },
    // Migrations' "IF NOT EXISTS" notices are expected; postgres.js would print them.
    onnotice: () => {},
  });

  return {
    query: (text, params = []) => unavailableOnConnectionFailure(() => run(sql, text, params)),
    transaction: <T>(fn: (tx: SqlQuery) => Promise<T>) =>
      unavailableOnConnectionFailure(
        () => sql.begin((tx) => fn({ query: (text, params = []) => run(tx, text, params) })) as Promise<T>,
      ),
    exec: (script) => unavailableOnConnectionFailure(async () => void (await sql.unsafe(script))),
    close: () => sql.end({ timeout: 5 }),
  };
}

async function run<Row>(client: Client, text: string, params: readonly unknown[]): Promise<Row[]> {
  // Named prepared statements are cached per connection, so only the fixed, parameterized statements use them;
  // one-off DDL (partition names change daily) goes unprepared.
  const rows = await client.unsafe(text, encodeParams(params) as postgres.ParameterOrJSON<Types[keyof Types]>[], {
    prepare: params.length > 0,
  });
  return rows as unknown as Row[];
}
