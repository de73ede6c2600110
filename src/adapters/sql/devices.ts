import {
  type DeviceName,
  type DeviceRecord,
  type DeviceRegistration,
  type DeviceSignIn,
  deviceNameKey,
  type RemovedDevice,
} from "../../ports/db.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";

/**
 * The key of each pair ($1, $2: parallel arrays), if it has one, when its user last removed it, if ever, and for a pair
 * without a key how many devices its user has: one row per pair, by its 1-based place in the arrays. A read: a known
 * device, the common case, costs no write.
 */
const FIND_DEVICES = `
  SELECT w.ord, d.device_key, r.tokens_not_before,
         CASE WHEN d.device_key IS NULL THEN (SELECT count(*) FROM devices o WHERE o.user_id = w.user_id) END AS devices
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(user_id, device_name, ord)
    LEFT JOIN devices d ON d.user_id = w.user_id AND d.device_name = w.device_name
    LEFT JOIN device_removals r ON r.user_id = w.user_id AND r.device_name = w.device_name`;

/**
 * Holds the registration of these users' ($1) new devices to one transaction at a time until this one ends, so the
 * count of a user's devices cannot change between the statement that counts it and the insert. Taken in one order by
 * every transaction, so they never wait on each other in a cycle.
 */
const LOCK_USERS = `
  SELECT pg_advisory_xact_lock(l.k)
    FROM (SELECT DISTINCT hashtextextended(u, 0) AS k FROM unnest($1::text[]) AS u ORDER BY 1) l`;

/**
 * Registers the pairs ($1, $2, with their tokens' issue times $3) that are still unknown, under the users' locks:
 * those whose token is not older than their removal by the user, as long as their user stays within $5 devices (the
 * pairs of a user counted in name order). $4 is the time. A pair the retention job removed takes its resync cause
 * back. Returns one row per pair as FIND_DEVICES does; a null key is a pair not registered.
 */
const CREATE_DEVICES = `
  WITH wanted AS (
    SELECT w.ord, w.user_id, w.device_name, w.issued_at
      FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS w(user_id, device_name, issued_at, ord)
  ), fresh AS (
    SELECT w.user_id, w.device_name, r.resync_cause,
           row_number() OVER (PARTITION BY w.user_id ORDER BY w.device_name COLLATE "C") AS nth
      FROM wanted w
      LEFT JOIN device_removals r ON r.user_id = w.user_id AND r.device_name = w.device_name
     WHERE NOT EXISTS (SELECT FROM devices d WHERE d.user_id = w.user_id AND d.device_name = w.device_name)
       AND (r.tokens_not_before IS NULL OR w.issued_at >= r.tokens_not_before)
  ), created AS (
    INSERT INTO devices (user_id, device_name, created_at, last_seen_at, resync_cause)
    SELECT f.user_id, f.device_name, $4::timestamptz, $4::timestamptz, f.resync_cause
      FROM fresh f
     WHERE f.nth + (SELECT count(*) FROM devices d WHERE d.user_id = f.user_id) <= $5::bigint
    RETURNING device_key, user_id, device_name
  ), taken AS (
    UPDATE device_removals r SET resync_cause = NULL
      FROM created c
     WHERE r.user_id = c.user_id AND r.device_name = c.device_name AND r.resync_cause IS NOT NULL
  )
  SELECT w.ord, coalesce(d.device_key, c.device_key) AS device_key, r.tokens_not_before
    FROM wanted w
    LEFT JOIN devices d ON d.user_id = w.user_id AND d.device_name = w.device_name
    LEFT JOIN created c ON c.user_id = w.user_id AND c.device_name = w.device_name
    LEFT JOIN device_removals r ON r.user_id = w.user_id AND r.device_name = w.device_name`;

type DeviceRow = { ord: bigint; device_key: bigint | null; tokens_not_before: Date | null; devices?: bigint | null };

/** Db.registerDevices: one read for the batch, and for the devices it did not find one transaction. */
export async function registerDevices(
  driver: SqlDriver,
  devices: readonly DeviceSignIn[],
  now: Date,
  maxPerUser: number,
): Promise<DeviceRegistration[]> {
  // Each pair once (a device's streams may share a batch), with its newest token: the one that may register it.
  const placeOf = new Map<string, number>();
  const pairs: DeviceSignIn[] = [];
  const places = devices.map((device) => {
    const id = deviceNameKey(device);
    let place = placeOf.get(id);
    if (place === undefined) {
      placeOf.set(id, (place = pairs.length));
      pairs.push({ ...device });
    } else if (device.issuedAt && !(pairs[place]!.issuedAt! >= device.issuedAt)) {
      pairs[place]!.issuedAt = device.issuedAt;
    }
    return place;
  });
  if (pairs.length === 0) return [];
  const rows = new Array<DeviceRow>(pairs.length);
  const userIds = pairs.map((pair) => pair.userId);
  const found = await driver.query<DeviceRow>(FIND_DEVICES, [userIds, pairs.map((pair) => pair.deviceName)]);
  for (const row of found) rows[Number(row.ord) - 1] = row;
  // Pairs the read already refuses (an old token, a user at the limit) cost no transaction: a refused device that keeps
  // calling stays a read per call.
  const olderThanRemoval = (place: number) => {
    const tokensNotBefore = rows[place]!.tokens_not_before;
    return tokensNotBefore !== null && !(pairs[place]!.issuedAt! >= tokensNotBefore);
  };
  const unknown = rows.flatMap((row, place) =>
    row.device_key === null && !olderThanRemoval(place) && Number(row.devices) < maxPerUser ? [place] : [],
  );
  if (unknown.length > 0) {
    const users = unknown.map((place) => pairs[place]!.userId);
    const created = await driver.transaction(async (tx) => {
      await tx.query(LOCK_USERS, [users]);
      return tx.query<DeviceRow>(CREATE_DEVICES, [
        users,
        unknown.map((place) => pairs[place]!.deviceName),
        unknown.map((place) => pairs[place]!.issuedAt ?? null),
        now,
        maxPerUser,
      ]);
    });
    for (const row of created) rows[unknown[Number(row.ord) - 1]!] = row;
  }
  return places.map((place) => {
    const { device_key: deviceKey, tokens_not_before: tokensNotBefore } = rows[place]!;
    if (deviceKey !== null) return { kind: "device", deviceKey: String(deviceKey), tokensNotBefore };
    if (olderThanRemoval(place)) return { kind: "removed", tokensNotBefore: tokensNotBefore! };
    return { kind: "too_many_devices" };
  });
}

export async function listDevices(driver: SqlDriver, userId: string): Promise<DeviceRecord[]> {
  const rows = await driver.query<{ device_name: string; created_at: Date; last_seen_at: Date }>(
    "SELECT device_name, created_at, last_seen_at FROM devices WHERE user_id = $1::text ORDER BY device_name",
    [userId],
  );
  return rows.map((row) => ({ deviceName: row.device_name, createdAt: row.created_at, lastSeenAt: row.last_seen_at }));
}

export async function markDevicesSeen(driver: SqlDriver, deviceKeys: readonly string[], at: Date): Promise<void> {
  if (deviceKeys.length === 0) return;
  // Rows locked in key order, as removals lock them: nodes marking overlapping devices never deadlock.
  await driver.query(
    `WITH seen AS (
       SELECT device_key FROM devices
        WHERE device_key = ANY($1::bigint[]) AND last_seen_at < $2::timestamptz
        ORDER BY device_key
          FOR UPDATE
     )
     UPDATE devices d SET last_seen_at = $2::timestamptz FROM seen WHERE d.device_key = seen.device_key`,
    [deviceKeys, at],
  );
}

export async function existingDevices(driver: SqlDriver, deviceKeys: readonly string[]): Promise<string[]> {
  if (deviceKeys.length === 0) return [];
  const rows = await driver.query<{ device_key: bigint }>(
    "SELECT device_key FROM devices WHERE device_key = ANY($1::bigint[])",
    [deviceKeys],
  );
  return rows.map((row) => String(row.device_key));
}

/** What a removal leaves to do: the devices, and the messages that lost inbox entries (deleted once none is left). */
interface Removal {
  devices: RemovedDevice[];
  messages: { chat_id: string; message_id: string; created_at: Date }[];
}

/** Which devices a removal takes: one its user names, or those not seen since a cutoff (at most `limit`). */
export type RemovalOf =
  | { kind: "by_user"; device: DeviceName; at: Date }
  | { kind: "not_seen"; cutoff: Date; limit: number };

/**
 * Removes devices in one transaction: their rows (locked in key order), what their pairs keep, and their inbox
 * entries. A send whose statement read the device before the removal may still write it an entry: no one reads it,
 * and it goes with its day's partition.
 */
export function removeDevices(driver: SqlDriver, of: RemovalOf): Promise<Removal> {
  // $1 and $2 pick the devices; the pairs keep $3, the time before which their tokens are refused (a removal by the
  // user), or $4, the resync cause of a device that comes back (a removal by the retention job).
  const { which, params } =
    of.kind === "by_user"
      ? {
          which: "user_id = $1::text AND device_name = $2::text",
          params: [of.device.userId, of.device.deviceName, of.at, null],
        }
      : {
          which: "last_seen_at < $1::timestamptz ORDER BY device_key LIMIT $2::int",
          params: [of.cutoff, of.limit, null, "retention"],
        };
  return driver.transaction(async (tx: SqlQuery) => {
    const gone = await tx.query<{ device_key: bigint; user_id: string; device_name: string }>(
      `WITH doomed AS (
         SELECT device_key FROM devices WHERE ${which} FOR UPDATE
       ), gone AS (
         DELETE FROM devices d USING doomed WHERE d.device_key = doomed.device_key
         RETURNING d.device_key, d.user_id, d.device_name
       ), kept AS (
         INSERT INTO device_removals (user_id, device_name, tokens_not_before, resync_cause)
         SELECT user_id, device_name, $3::timestamptz, $4::text FROM gone
         ON CONFLICT (user_id, device_name) DO UPDATE
           SET tokens_not_before = coalesce(excluded.tokens_not_before, device_removals.tokens_not_before),
               resync_cause = excluded.resync_cause
       )
       SELECT device_key, user_id, device_name FROM gone ORDER BY device_key`,
      params,
    );
    if (gone.length === 0) return { devices: [], messages: [] };
    const messages = await tx.query<Removal["messages"][number]>(
      "DELETE FROM inbox WHERE device_key = ANY($1::bigint[]) RETURNING chat_id, message_id, created_at",
      [gone.map((row) => row.device_key)],
    );
    const devices = gone.map((row) => ({
      deviceKey: String(row.device_key),
      userId: row.user_id,
      deviceName: row.device_name,
    }));
    return { devices, messages };
  });
}
