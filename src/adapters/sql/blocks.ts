import type { BlockRecord } from "../../ports/db.js";
import type { SqlDriver } from "../../ports/sql.js";

/** Sorts before every user id (they start with a letter or digit), so "after no user" needs no second statement. */
const BEFORE_ALL_USERS = "";

/** Db.blockUser: a block already there keeps its time. */
export async function blockUser(
  driver: SqlDriver,
  blockerUserId: string,
  blockedUserId: string,
  at: Date,
): Promise<void> {
  await driver.query(
    `INSERT INTO blocks (blocker_user_id, blocked_user_id, blocked_at) VALUES ($1::text, $2::text, $3::timestamptz)
     ON CONFLICT (blocker_user_id, blocked_user_id) DO NOTHING`,
    [blockerUserId, blockedUserId, at],
  );
}

export async function unblockUser(driver: SqlDriver, blockerUserId: string, blockedUserId: string): Promise<void> {
  await driver.query("DELETE FROM blocks WHERE blocker_user_id = $1::text AND blocked_user_id = $2::text", [
    blockerUserId,
    blockedUserId,
  ]);
}

export async function listBlockedUsers(
  driver: SqlDriver,
  userId: string,
  afterUserId: string | null,
  limit: number,
): Promise<BlockRecord[]> {
  const rows = await driver.query<{ blocked_user_id: string; blocked_at: Date }>(
    `SELECT blocked_user_id, blocked_at FROM blocks
      WHERE blocker_user_id = $1::text AND blocked_user_id > $2::text
      ORDER BY blocked_user_id
      LIMIT $3::int`,
    [userId, afterUserId ?? BEFORE_ALL_USERS, limit],
  );
  return rows.map((row) => ({ userId: row.blocked_user_id, blockedAt: row.blocked_at }));
}

export async function blockersAmong(driver: SqlDriver, userId: string, userIds: readonly string[]): Promise<string[]> {
  const rows = await driver.query<{ blocker_user_id: string }>(
    `SELECT blocker_user_id FROM blocks
      WHERE blocked_user_id = $1::text AND blocker_user_id = ANY($2::text[])
      ORDER BY blocker_user_id`,
    [userId, userIds],
  );
  return rows.map((row) => row.blocker_user_id);
}
