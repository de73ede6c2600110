import { DAY_MS } from "../../ports/clock.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";

/** The partitioned tables, in the order their partitions are created and dropped. */
export const PARENTS = ["messages", "inbox"] as const;
const PARTITION_NAME = /^(messages|inbox)_p(\d{8})$/;
/** Advisory lock key that keeps two servers from changing partitions at once ("part" in ASCII). */
const PARTITION_LOCK = 0x70617274;
/**
 * Attaching and dropping partitions waits for running transactions on the parent table; meanwhile later queries queue
 * behind it. Give up instead of stalling traffic: the retention job retries on its next run.
 */
const LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'";

/**
 * Creates the messages and inbox partitions of `from`'s UTC day and the `days` days after it that do not exist yet,
 * and returns their names. A new partition is created empty and then attached, which (unlike CREATE TABLE …
 * PARTITION OF) does not lock out reads and writes of the parent table.
 */
export async function ensurePartitions(driver: SqlDriver, from: Date, days: number): Promise<string[]> {
  const first = startOfUtcDay(from);
  const wanted = Array.from({ length: days + 1 }, (_, i) => new Date(first.getTime() + i * DAY_MS)).flatMap((day) =>
    PARENTS.map((parent) => ({ parent, day, name: partitionName(parent, day) })),
  );
  const existing = await partitionNames(driver);
  if (wanted.every(({ name }) => existing.has(name))) return [];

  return driver.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(${PARTITION_LOCK})`);
    await tx.query(LOCK_TIMEOUT);
    const attached = await partitionNames(tx);
    const created: string[] = [];
    for (const { parent, day, name } of wanted) {
      if (attached.has(name)) continue;
      const end = new Date(day.getTime() + DAY_MS);
      await tx.query(`CREATE TABLE ${name} (LIKE ${parent})`);
      await tx.query(
        `ALTER TABLE ${parent} ATTACH PARTITION ${name}
           FOR VALUES FROM ('${day.toISOString()}') TO ('${end.toISOString()}')`,
      );
      created.push(name);
    }
    return created;
  });
}

/**
 * Drops the partitions of the days before `cutoff`'s UTC day, a day per transaction, after marking every device that
 * still had an inbox entry in that day for a retention resync. Returns the dropped partitions' names.
 */
export async function dropPartitionsBefore(driver: SqlDriver, cutoff: Date): Promise<string[]> {
  const cutoffKey = dayKey(startOfUtcDay(cutoff));
  const days = new Set<string>();
  for (const name of await partitionNames(driver)) {
    const key = PARTITION_NAME.exec(name)?.[2];
    if (key !== undefined && key < cutoffKey) days.add(key);
  }

  const dropped: string[] = [];
  for (const key of [...days].sort()) {
    const names = await driver.transaction(async (tx) => {
      await tx.query(`SELECT pg_advisory_xact_lock(${PARTITION_LOCK})`);
      await tx.query(LOCK_TIMEOUT);
      const present = await partitionNames(tx);
      const inbox = `inbox_p${key}`;
      if (present.has(inbox)) {
        await tx.query(
          `UPDATE devices SET resync_cause = 'retention'
            WHERE device_key IN (SELECT device_key FROM ${inbox})`,
        );
      }
      const doomed = PARENTS.map((parent) => `${parent}_p${key}`).filter((name) => present.has(name));
      for (const name of doomed) await tx.query(`DROP TABLE ${name}`);
      return doomed;
    });
    dropped.push(...names);
  }
  return dropped;
}

/** The partitions of messages and inbox in the current schema. */
async function partitionNames(db: SqlQuery): Promise<Set<string>> {
  const rows = await db.query<{ name: string }>(
    `SELECT c.relname AS name
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent IN ('messages'::regclass, 'inbox'::regclass)`,
  );
  return new Set(rows.map((row) => row.name).filter((name) => PARTITION_NAME.test(name)));
}

function partitionName(parent: (typeof PARENTS)[number], day: Date): string {
  return `${parent}_p${dayKey(day)}`;
}

export function startOfUtcDay(date: Date): Date {
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
}

/** YYYYMMDD of a UTC day; sorts as the days do. */
export function dayKey(day: Date): string {
  return day.toISOString().slice(0, 10).replace(/-/g, "");
}
