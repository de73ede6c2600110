import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { registerDevice } from "../../../test/support/store-fixtures.js";
import { loadMigrations } from "./migrate.js";
import { createPgliteDriver } from "./pglite-driver.js";
import { SqlDb } from "./sql-db.js";

it("keeps a migrated database in its data directory across a reopen", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "palaver-pglite-"));
  try {
    const first = new SqlDb(await createPgliteDriver(dataDir));
    await first.migrate();
    const key = await registerDevice(first, "alice", "phone", new Date());
    await first.close();

    const driver = await createPgliteDriver(dataDir);
    const again = new SqlDb(driver);
    await again.migrate();
    expect(await registerDevice(again, "alice", "phone", new Date())).toBe(key);
    expect(await driver.query("SELECT count(*) AS n FROM schema_migrations")).toEqual([{ n: BigInt((await loadMigrations()).length) }]);
    await again.close();
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
