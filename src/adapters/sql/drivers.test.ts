import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Backend, openTestDb, type TestDb, testBackends } from "../../../test/support/db.js";
import { Refusal } from "../../errors.js";

// What SqlDb relies on from either driver (src/ports/sql.ts).
describe.each(testBackends())("SqlDriver on %s", (backend: Backend) => {
  let testDb: TestDb;
  beforeAll(async () => {
    testDb = await openTestDb(backend);
    await testDb.driver.exec("CREATE TABLE driver_check (n int NOT NULL); CREATE TABLE driver_other (n int)");
  });
  afterAll(() => testDb?.close());

  it("returns int8 as bigint, timestamptz as Date, bytea as Uint8Array, uuid as string and json parsed", async () => {
    const at = new Date("2026-11-28T10:11:12.345Z");
    const id = randomUUID();
    const [row] = await testDb.driver.query(
      `SELECT $1::bigint AS big, $2::timestamptz AS at, $3::bytea AS bytes, $4::uuid AS id, 7::int AS small,
              NULL::bigint AS nothing, json_build_array('b', 'a') AS texts`,
      [9_007_199_254_740_993n, at, new Uint8Array([0, 1, 255]), id],
    );
    expect(row).toEqual({
      big: 9_007_199_254_740_993n,
      at,
      bytes: new Uint8Array([0, 1, 255]),
      id,
      small: 7,
      nothing: null,
      texts: ["b", "a"],
    });
    expect(Buffer.isBuffer(row!.bytes)).toBe(false);
  });

  it("binds arrays of bigint, text, Date and bytes, with nulls and characters that need escaping", async () => {
    const at = new Date("2026-11-28T00:00:00.001Z");
    const rows = await testDb.driver.query(
      `SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::bytea[]) WITH ORDINALITY
                AS u(b, t, at, bytes, i)
        ORDER BY i`,
      [
        [1n, -2n, null],
        ['a "quoted", {braced} value', "back\\slash", "NULL"],
        [at, null, at],
        [new Uint8Array([1, 2]), new Uint8Array([]), null],
      ],
    );
    expect(rows).toEqual([
      { b: 1n, t: 'a "quoted", {braced} value', at, bytes: new Uint8Array([1, 2]), i: 1n },
      { b: -2n, t: "back\\slash", at: null, bytes: new Uint8Array([]), i: 2n },
      { b: null, t: "NULL", at, bytes: null, i: 3n },
    ]);
  });

  it("commits a transaction when fn resolves and rolls it back when fn throws", async () => {
    const { driver } = testDb;
    const committed = await driver.transaction((tx) => tx.query("INSERT INTO driver_check VALUES (1) RETURNING n"));
    expect(committed).toEqual([{ n: 1 }]);
    await expect(
      driver.transaction(async (tx) => {
        await tx.query("INSERT INTO driver_check VALUES (2)");
        throw new Error("changed my mind");
      }),
    ).rejects.toThrow("changed my mind");
    expect(await driver.query("SELECT n FROM driver_check ORDER BY n")).toEqual([{ n: 1 }]);
  });

  it("keeps a statement made outside a transaction out of it", async () => {
    const { driver } = testDb;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let inserted!: () => void;
    const insertedYet = new Promise<void>((resolve) => (inserted = resolve));
    const rolledBack = driver.transaction(async (tx) => {
      await tx.query("INSERT INTO driver_other VALUES (1)");
      inserted();
      await gate;
      throw new Error("roll back");
    });
    await insertedYet;
    // Joining the open transaction would see its uncommitted row.
    const outside = driver.query<{ n: number }>("SELECT count(*)::int AS n FROM driver_other");
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    await expect(rolledBack).rejects.toThrow("roll back");
    expect(await outside).toEqual([{ n: 0 }]);
  });

  it("turns a value the database cannot store into a refusal, in a transaction and out of one", async () => {
    const { driver } = testDb;
    const invalid = (sqlState: string) => ({
      kind: "invalid",
      message: expect.stringContaining(`SQLSTATE ${sqlState}`),
    });
    await expect(driver.query("SELECT $1::text", ["a\u0000b"])).rejects.toMatchObject(invalid("22021"));
    await expect(driver.query("SELECT $1::bigint[]", [[1n, 2n ** 64n - 1n]])).rejects.toMatchObject(invalid("22003"));
    await expect(
      driver.transaction(async (tx) => {
        await tx.query("INSERT INTO driver_other VALUES (7)");
        await tx.query("SELECT $1::uuid", ["not-a-uuid"]);
      }),
    ).rejects.toBeInstanceOf(Refusal);
    expect(await driver.query("SELECT count(*)::int AS n FROM driver_other WHERE n = 7")).toEqual([{ n: 0 }]);
  });

  it("surfaces SQL errors as they are", async () => {
    await expect(testDb.driver.query("SELECT * FROM no_such_table")).rejects.toMatchObject({ code: "42P01" });
    await expect(testDb.driver.exec("SELECT 1; SELECT * FROM no_such_table")).rejects.toThrow(/no_such_table/);
  });
});
