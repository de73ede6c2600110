import { randomBytes } from "node:crypto";
import { readFile, rename, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { PGlite } from "@electric-sql/pglite";
import { createPgliteInstance, pgliteSqlDriver } from "../../src/adapters/sql/pglite-driver.js";
import { createPostgresDriver } from "../../src/adapters/sql/postgres-driver.js";
import { MemoryDb } from "../../src/adapters/memory/memory-db.js";
import { SqlDb } from "../../src/adapters/sql/sql-db.js";
import type { SqlDriver } from "../../src/ports/sql.js";

export type Backend = "pglite" | "postgres";

/** PGlite always; Postgres too when DATABASE_URL names a database the tests may create schemas in. */
export function testBackends(): Backend[] {
  return process.env.DATABASE_URL ? ["pglite", "postgres"] : ["pglite"];
}

export interface TestDb {
  db: SqlDb;
  /** The driver under db, scoped to the same schema (for assertions on tables). */
  driver: SqlDriver;
  /** Drops the schema and closes the driver. */
  close(): Promise<void>;
}

export interface TestDbOptions {
  /** Reach Postgres at this URL instead of DATABASE_URL's (e.g. through a proxy a test can cut). */
  postgresUrl?: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * A migrated database no other test sees: a schema of its own, on the Postgres of DATABASE_URL or on this worker's
 * one in-memory PGlite (creating a PGlite costs seconds; a schema costs milliseconds). Partitions exist from
 * yesterday through two days ahead.
 */
export async function openTestDb(backend: Backend, options: TestDbOptions = {}): Promise<TestDb> {
  const schema = `test_${process.pid}_${randomBytes(6).toString("hex")}`;
  const driver =
    backend === "postgres"
      ? postgresDriver(schema, options.postgresUrl)
      : pgliteSqlDriver(await sharedPglite(), { ownsInstance: false, searchPath: schema });
  await driver.exec(`CREATE SCHEMA ${schema}`);
  const db = new SqlDb(driver);
  await db.migrate();
  await db.ensurePartitions(new Date(Date.now() - DAY_MS), 3);
  return {
    db,
    driver,
    async close() {
      try {
        await driver.exec(`DROP SCHEMA ${schema} CASCADE`);
      } finally {
        await driver.close();
      }
    },
  };
}

/** The in-memory Db for fast unit tests, with partitions from yesterday through two days ahead like openTestDb's. */
export async function openMemoryDb(): Promise<MemoryDb> {
  const db = new MemoryDb();
  await db.ensurePartitions(new Date(Date.now() - DAY_MS), 3);
  return db;
}

function postgresDriver(schema: string, url = process.env.DATABASE_URL): SqlDriver {
  if (!url) throw new Error("DATABASE_URL is not set");
  return createPostgresDriver(url, { poolSize: 4, searchPath: schema });
}

/** On globalThis, so test files that share a worker process (isolate: false) share the instance too. */
const PGLITE_KEY = Symbol.for("palaver.test.pglite");

function sharedPglite(): Promise<PGlite> {
  const holder = globalThis as { [PGLITE_KEY]?: Promise<PGlite> };
  holder[PGLITE_KEY] ??= openPgliteFromTemplate();
  return holder[PGLITE_KEY];
}

/**
 * Most of a PGlite's start is initdb. The first worker to need one dumps a fresh data directory to a tarball in the
 * temp directory (named by PGlite's version); every later start loads it instead, several times faster.
 */
async function openPgliteFromTemplate(): Promise<PGlite> {
  const pgliteMain = createRequire(import.meta.url).resolve("@electric-sql/pglite");
  const packageJson = join(dirname(pgliteMain), "..", "package.json");
  const { version } = JSON.parse(await readFile(packageJson, "utf8")) as { version: string };
  const template = join(tmpdir(), `palaver-pglite-${version}.tar`);
  const saved = await readFile(template).catch(() => null);
  if (saved) {
    const loaded = await createPgliteInstance(new Blob([saved])).catch(() => null);
    if (loaded) return loaded;
  }
  const pg = await createPgliteInstance();
  const dump = Buffer.from(await (await pg.dumpDataDir("none")).arrayBuffer());
  // Written aside and renamed, so a worker never reads half a template.
  const partial = `${template}.${process.pid}`;
  await writeFile(partial, dump);
  await rename(partial, template);
  return pg;
}
