import { chmod, mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { PGlite, types, type Transaction } from "@electric-sql/pglite";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import { refusedValue } from "./data-errors.js";
import { byteaFromText, byteaText, encodeParams } from "./params.js";

/** The JS types the postgres.js driver returns: int8 as bigint; bytea through Buffer (faster than PGlite's own). */
const pgliteTypeOptions = {
  parsers: {
    [types.INT8]: (text: string) => BigInt(text),
    [types.BYTEA]: byteaFromText,
  },
  serializers: {
    [types.BYTEA]: byteaText,
  },
};

/** Opens (or creates) the embedded database in dataDir, readable by this user only; undefined keeps it in memory. */
export async function createPgliteDriver(dataDir: string | undefined): Promise<SqlDriver> {
  if (dataDir !== undefined) await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const pg = await PGlite.create(dataDir, pgliteTypeOptions);
  if (dataDir !== undefined) await makePrivate(dataDir);
  return pgliteSqlDriver(pg, { ownsInstance: true });
}

/**
 * Takes every other user's access to the directory and what it holds. PGlite's file system ignores the process umask:
 * it leaves initdb's files 0666 and writes some at each start 0644. What it writes later sits in a 0700 directory.
 */
async function makePrivate(dir: string): Promise<void> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  await chmod(dir, 0o700);
  for (const entry of entries) await chmod(join(entry.parentPath, entry.name), entry.isDirectory() ? 0o700 : 0o600);
}

/**
 * Opens an in-memory PGlite configured like createPgliteDriver's, for tests that share one instance. Starting from
 * `loadDataDir` (a dumpDataDir() tarball) skips initdb, the slow part of creating one.
 */
export function createPgliteInstance(loadDataDir?: Blob): Promise<PGlite> {
  return PGlite.create(undefined, { ...pgliteTypeOptions, loadDataDir });
}

export interface PgliteDriverOptions {
  /** Close the PGlite instance when the driver closes. */
  ownsInstance: boolean;
  /** Run every call with this search_path (several drivers can then share one instance, a schema each). */
  searchPath?: string;
}

/**
 * A SqlDriver over a PGlite instance. PGlite is one connection: its transaction() holds a mutex that its query() and
 * exec() also take, so a call made outside a transaction waits for the running one instead of joining it. Code inside
 * fn must use the tx it is given: calling the driver itself there would wait for ever.
 */
export function pgliteSqlDriver(pg: PGlite, options: PgliteDriverOptions): SqlDriver {
  const scope =
    options.searchPath === undefined ? null : `SET LOCAL search_path TO "${options.searchPath.replace(/"/g, '""')}"`;

  async function transaction<T>(fn: (tx: SqlQuery) => Promise<T>): Promise<T> {
    return pg.transaction(async (tx) => {
      if (scope !== null) await tx.exec(scope);
      return fn({ query: (text, params = []) => run(tx, text, params) });
    });
  }

  return {
    // With a search_path each call is its own transaction, since the session is shared.
    query: (text, params = []) =>
      scope === null ? run(pg, text, params) : transaction((tx) => tx.query(text, params)),
    transaction,
    exec: async (script) => {
      if (scope === null) await pg.exec(script);
      else await pg.transaction(async (tx) => void (await tx.exec(`${scope};\n${script}`)));
    },
    close: async () => {
      if (options.ownsInstance) await pg.close();
    },
  };
}

async function run<Row>(client: PGlite | Transaction, text: string, params: readonly unknown[]): Promise<Row[]> {
  try {
    return (await client.query<Row>(text, encodeParams(params))).rows;
  } catch (error) {
    throw refusedValue(error);
  }
}
