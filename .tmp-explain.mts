import { openTestDb } from "./test/support/db.ts";
const kind = process.argv[2] as "postgres" | "pglite";
const t = await openTestDb(kind);
const { db, driver } = t;
await db.ensurePartitions(new Date(Date.now() - 33 * 86400000), 36);
// 2000 devices, 33 days, 200 messages a day in 20 chats, each message to 10 devices.
await driver.query(`INSERT INTO messages (chat_id, message_id, created_at, seq, sender_user_id, body)
  SELECT md5('c' || (m % 20))::uuid, md5('m' || d || '-' || m)::uuid, date_trunc('hour', now()) - d * interval '1 day', m, 'u', '\\x00'::bytea
  FROM generate_series(0, 32) d, generate_series(1, 2000) m`);
await driver.query(`INSERT INTO inbox (device_key, event_id, created_at, chat_id, message_id)
  SELECT ((m % 20) * 100 + k), nextval('inbox_event_id_seq'), date_trunc('hour', now()) - d * interval '1 day', md5('c' || (m % 20))::uuid, md5('m' || d || '-' || m)::uuid
  FROM generate_series(32, 0, -1) d, generate_series(1, 2000) m, generate_series(1, 10) k`);
await driver.query("ANALYZE");
console.log(await driver.query("select count(*) from inbox"));
const explain = async (label: string, sql: string, params: unknown[]) => {
  // EXPLAIN ANALYZE on a generic plan too, as prepared statements end up with one.
  const rows = await driver.query<Record<string, string>>(`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) ${sql}`, params);
  console.log("==", label); for (const r of rows) console.log(Object.values(r)[0]);
};
for (const mode of ["auto", "force_generic_plan"]) {
  await driver.transaction(async (tx) => {
    await tx.query(`SET LOCAL plan_cache_mode = ${mode}`);
    await tx.query("PREPARE r1(bigint, bigint, int) AS SELECT i.event_id, (SELECT m.body FROM messages m WHERE m.chat_id = i.chat_id AND m.message_id = i.message_id AND m.created_at = i.created_at) AS body FROM inbox i WHERE i.device_key = $1 AND i.event_id > $2 ORDER BY i.event_id LIMIT $3");
    const rows = await tx.query<Record<string, string>>("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) EXECUTE r1(105, 0, 100)");
    console.log("==", mode); for (const r of rows) console.log(Object.values(r)[0]);
    await tx.query("DEALLOCATE r1");
  });
}
const ids = (await driver.query<any>("SELECT event_id FROM inbox WHERE device_key = 105 ORDER BY event_id LIMIT 3")).map((r: any) => r.event_id);
await explain("ack", `DELETE FROM inbox WHERE device_key = $1::bigint AND event_id = ANY($2::bigint[]) RETURNING chat_id, message_id, created_at`, ["105", ids]);
const keys = await driver.query<any>("SELECT chat_id, message_id, created_at FROM inbox WHERE device_key = 106 LIMIT 3");
await explain("orphans", `DELETE FROM messages m USING unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS g(chat_id, message_id, created_at) WHERE m.chat_id = g.chat_id AND m.message_id = g.message_id AND m.created_at = g.created_at AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = g.message_id AND i.created_at = g.created_at)`, [keys.map((k: any) => k.chat_id), keys.map((k: any) => k.message_id), keys.map((k: any) => k.created_at)]);
await t.close();
process.exit(0);
