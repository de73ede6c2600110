import postgres from "postgres";
import { DependencyUnavailableError } from "../../errors.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import { isConnectionFailure } from "./connection-errors.js";
import { refusedValue } from "./data-errors.js";
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
type Sql = postgres.Sql<Types>;
type Client = Sql | postgres.TransactionSql<Types>;

/**
 * A SqlDriver over a postgres.js pool. A call that fails because Postgres cannot be reached, or dropped the
 * connection, throws DependencyUnavailableError; connections open lazily, so calls work again once Postgres is back.
 *
 * Two defects of postgres.js 3.4.9 around lost connections are worked around here (porsager/postgres#1133, #1208,
 * PRs #1209, #1215): a transaction whose connection died must not send anything more (its ROLLBACK would be written to
 * a closed socket from a timer, an uncaught TypeError that ends the process, or run on the reconnected connection),
 * and a connection that closed with a write pending never flushes again (every later use times out). So a lost
 * transaction is abandoned rather than rolled back (the server rolls it back), and after a connection failure the
 * pool is replaced by a fresh one.
 */
export function createPostgresDriver(url: string, options: PostgresDriverOptions = {}): SqlDriver {
  const pools = new PoolHolder(() =>
    postgres(url, {
      max: options.poolSize ?? 10,
      connect_timeout: options.connectTimeoutSeconds ?? 10,
      types: {
        bigint: postgres.BigInt,
        // As Uint8Array rather than postgres.js's Buffer, like the PGlite driver.
        bytea: { to: 17, from: [17], serialize: byteaText, parse: byteaFromText },
      },
      connection: {
        // Every statement here is short; JIT compiling one whose estimated cost passes jit_above_cost took 0.6 s
        // (an ack batch's message cleanup, bench/README.md), to save microseconds.
        jit: "off",
        ...(options.searchPath === undefined ? {} : { search_path: options.searchPath }),
      },
      // Fetching array types on connect leaves an unhandled rejection (a crash) when the connection drops meanwhile.
      // Array parameters are sent as literals anyway (params.ts), and results aggregate to json instead of arrays.
      fetch_types: false,
      // Migrations' "IF NOT EXISTS" notices are expected; postgres.js would print them.
      onnotice: () => {},
    }),
  );

  return {
    query: (text, params = []) => pools.use((sql) => run(sql, text, params)),
    transaction: (fn) => pools.use((sql) => transaction(sql, fn)),
    exec: (script) => pools.use(async (sql) => void (await sql.unsafe(script))),
    close: () => pools.close(),
  };
}

/** The current pool, replaced after a connection failure; replaced pools end in the background. */
class PoolHolder {
  private current: Sql;
  private closed = false;
  private readonly ending = new Set<Promise<void>>();

  constructor(private readonly open: () => Sql) {
    this.current = open();
  }

  async use<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    const sql = this.current;
    try {
      return await fn(sql);
    } catch (error) {
      if (!isConnectionFailure(error)) throw error;
      this.replace(sql);
      throw new DependencyUnavailableError("postgres", { cause: error });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.retire(this.current, 5);
    await Promise.all(this.ending);
  }

  private replace(failed: Sql): void {
    // Concurrent failures of one pool replace it once; calls after close() fail as the ended pool's do.
    if (failed !== this.current || this.closed) return;
    this.current = this.open();
    this.retire(failed, 2);
  }

  /** Ends the pool once its calls are done, or after `seconds` (a lost transaction never is). */
  private retire(sql: Sql, seconds: number): void {
    const ended = sql.end({ timeout: seconds }).catch(() => {});
    this.ending.add(ended);
    void ended.finally(() => this.ending.delete(ended));
  }
}

/**
 * Runs fn in sql.begin. Once a statement fails for a lost connection, or begin reports the connection closed, the
 * transaction is lost: it rejects at once, and fn's further statements, and its completion, never settle, so that
 * postgres.js sends neither ROLLBACK nor COMMIT on that connection.
 */
async function transaction<T>(sql: Sql, fn: (tx: SqlQuery) => Promise<T>): Promise<T> {
  let lostWith: { error: unknown } | undefined;
  let abort!: (error: unknown) => void;
  const aborted = new Promise<never>((_, reject) => (abort = reject));
  const lose = (error: unknown): Promise<never> => {
    lostWith ??= { error };
    abort(lostWith.error);
    return new Promise<never>(() => {});
  };

  const begun = sql.begin(async (tx) => {
    const result = await fn({
      query: async (text, params = []) => {
        if (lostWith) return lose(lostWith.error);
        try {
          return await run(tx, text, params);
        } catch (error) {
          if (isConnectionFailure(error)) return lose(error);
          throw error;
        }
      },
    });
    return lostWith ? lose(lostWith.error) : result;
  }) as Promise<T>;
  // begin rejects as soon as its connection closes, possibly while fn still runs.
  begun.catch((error: unknown) => {
    if (isConnectionFailure(error)) lostWith ??= { error };
  });
  return Promise.race([begun, aborted]);
}

async function run<Row>(client: Client, text: string, params: readonly unknown[]): Promise<Row[]> {
  try {
    // Named prepared statements are cached per connection, so only the fixed, parameterized statements use them;
    // one-off DDL (partition names change daily) goes unprepared.
    const rows = await client.unsafe(text, encodeParams(params) as postgres.ParameterOrJSON<Types[keyof Types]>[], {
      prepare: params.length > 0,
    });
    return rows as unknown as Row[];
  } catch (error) {
    throw refusedValue(error);
  }
}
