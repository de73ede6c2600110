import { readdir, readFile } from "node:fs/promises";
import type { SqlDriver } from "../../ports/sql.js";

const MIGRATIONS_DIR = new URL("./migrations/", import.meta.url);
const FILE_NAME = /^(\d{4})_[a-z0-9_]+\.sql$/;
/** Advisory lock key that serializes migrations of servers starting at once ("palv" in ASCII). */
const MIGRATION_LOCK = 0x70616c76;

interface Migration {
  version: number;
  name: string;
  sql: string;
}

/**
 * Runs the migrations in src/adapters/sql/migrations that schema_migrations does not list, in version order. Each
 * runs as one script, and a multi-statement script is one implicit transaction: it takes the advisory lock, records
 * its version (a server that lost the race fails on that key and rolls back) and changes the schema, all or nothing.
 */
export async function runMigrations(driver: SqlDriver): Promise<void> {
  await driver.exec(
    `SELECT pg_advisory_xact_lock(${MIGRATION_LOCK});
     CREATE TABLE IF NOT EXISTS schema_migrations (
       version    integer PRIMARY KEY,
       name       text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  const applied = await appliedVersions(driver);
  for (const migration of await loadMigrations()) {
    if (applied.has(migration.version)) continue;
    try {
      await driver.exec(
        `SELECT pg_advisory_xact_lock(${MIGRATION_LOCK});
         INSERT INTO schema_migrations (version, name) VALUES (${migration.version}, '${migration.name}');
         ${migration.sql}`,
      );
    } catch (error) {
      if (!(await appliedVersions(driver)).has(migration.version)) throw error;
    }
  }
}

async function appliedVersions(driver: SqlDriver): Promise<Set<number>> {
  const rows = await driver.query<{ version: number }>("SELECT version FROM schema_migrations");
  return new Set(rows.map((row) => row.version));
}

/** The migrations this build carries, in version order. */
export async function loadMigrations(): Promise<Migration[]> {
  const names = (await readdir(MIGRATIONS_DIR)).filter((name) => FILE_NAME.test(name)).sort();
  return Promise.all(
    names.map(async (name) => ({
      version: Number(FILE_NAME.exec(name)![1]),
      name,
      sql: await readFile(new URL(name, MIGRATIONS_DIR), "utf8"),
    })),
  );
}
