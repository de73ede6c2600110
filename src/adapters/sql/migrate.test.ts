import { describe, expect, it } from "vitest";
import { type Backend, openTestDb, testBackends } from "../../../test/support/db.js";
import { loadMigrations } from "./migrate.js";
import { createPostgresDriver } from "./postgres-driver.js";
import { SqlDb } from "./sql-db.js";

describe.each(testBackends())("migrations on %s", (backend: Backend) => {
  it("run once: migrating again changes nothing", async () => {
    const { db, driver, close } = await openTestDb(backend);
    try {
      const before = await driver.query("SELECT version, name FROM schema_migrations ORDER BY version");
      expect(before).toEqual((await loadMigrations()).map(({ version, name }) => ({ version, name })));
      expect(before[0]).toEqual({ version: 1, name: "0001_init.sql" });
      await db.migrate();
      expect(await driver.query("SELECT version, name FROM schema_migrations ORDER BY version")).toEqual(before);
    } finally {
      await close();
    }
  });
});

describe.runIf(process.env.DATABASE_URL)("migrations on postgres", () => {
  it("are safe when several servers start at once", async () => {
    const schema = `test_migrate_${process.pid}_${Date.now()}`;
    const drivers = Array.from({ length: 4 }, () =>
      createPostgresDriver(process.env.DATABASE_URL!, { poolSize: 2, searchPath: schema }),
    );
    try {
      await drivers[0]!.exec(`CREATE SCHEMA ${schema}`);
      await Promise.all(drivers.map((driver) => new SqlDb(driver).migrate()));
      expect(await drivers[0]!.query("SELECT count(*)::int AS n FROM schema_migrations")).toEqual([{ n: (await loadMigrations()).length }]);
      expect(await drivers[0]!.query("SELECT to_regclass('inbox') IS NOT NULL AS ok")).toEqual([{ ok: true }]);
    } finally {
      await drivers[0]!.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await Promise.all(drivers.map((driver) => driver.close()));
    }
  });
});
