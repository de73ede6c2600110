/**
 * The machine's Postgres alone on Palaver's send write pattern: per message one `messages` row and one `inbox` row per
 * recipient device (event ids from the same sequence), a batch of messages per transaction written with unnest, a few
 * writers at once. No chat locks, no idempotency rows, no Node server: an upper bound that bench/run.ts measures in the
 * same run, so Palaver's sends/s can be read as a share of what the database takes.
 *
 *   npx tsx bench/pg-ceiling.ts [--url postgres://...] [--seconds 10] [--writers 4] [--batch 256] [--recipients 9]
 *
 * It creates (and drops) a fresh database next to the one the URL names (default DATABASE_URL).
 */
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { createPostgresDriver } from "../src/adapters/sql/postgres-driver.js";
import { SqlDb } from "../src/adapters/sql/sql-db.js";

export interface CeilingOptions {
  url: string;
  seconds: number;
  writers: number;
  batch: number;
  recipients: number;
}

export interface CeilingResult extends CeilingOptions {
  sendsPerSecond: number;
  inboxRowsPerSecond: number;
  transactions: number;
  /** Median and worst commit time of one batch, ms. */
  batchMsP50: number;
  batchMsMax: number;
}

const WRITE = `
  WITH m AS (
    INSERT INTO messages (chat_id, message_id, created_at, seq, sender_user_id, sender_device_key, client_message_id, body)
    SELECT x.chat_id, gen_random_uuid(), now(), x.seq, x.user_id, x.device_key, gen_random_uuid()::text, x.body
      FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::bytea[]) AS x(chat_id, seq, user_id, device_key, body)
    RETURNING chat_id, message_id, created_at, sender_device_key
  )
  INSERT INTO inbox (device_key, event_id, created_at, chat_id, message_id)
  SELECT m.sender_device_key * 16 + r, nextval('inbox_event_id_seq'), m.created_at, m.chat_id, m.message_id
    FROM m CROSS JOIN generate_series(1, $6::int) AS r`;

/** A database name beside the URL's, and the URL that reaches it. */
export function siblingDatabase(url: string, name: string): { admin: string; url: string; name: string } {
  const parsed = new URL(url);
  const admin = new URL(url);
  const target = new URL(url);
  target.pathname = `/${name}`;
  if (parsed.pathname === "/" || parsed.pathname === "") admin.pathname = "/postgres";
  return { admin: admin.toString(), url: target.toString(), name };
}

export async function createDatabase(url: string, name: string): Promise<string> {
  const sibling = siblingDatabase(url, name);
  const sql = postgres(sibling.admin, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await sql.unsafe(`CREATE DATABASE "${name}"`);
  } finally {
    await sql.end();
  }
  return sibling.url;
}

export async function dropDatabase(url: string, name: string): Promise<void> {
  const sql = postgres(siblingDatabase(url, name).admin, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } finally {
    await sql.end();
  }
}

export async function measureCeiling(options: CeilingOptions): Promise<CeilingResult> {
  const name = `palaver_pg_ceiling_${process.pid}`;
  const url = await createDatabase(options.url, name);
  try {
    // Palaver's own schema and partitions, so indexes and partition routing are the same.
    const db = new SqlDb(createPostgresDriver(url, { poolSize: 1 }));
    await db.migrate();
    await db.ensurePartitions(new Date(Date.now() - 24 * 3600 * 1000), 2);
    await db.close();

    const sql = postgres(url, { max: options.writers, onnotice: () => {} });
    // One batch's parameters, built once: the database's work is what is measured, not the client's.
    const chats = Array.from({ length: options.batch }, () => randomUUID());
    const body = `\\x${Buffer.alloc(160, 7).toString("hex")}`;
    const params = [
      `{${chats.join(",")}}`,
      `{${chats.map((_, i) => i + 1).join(",")}}`,
      `{${chats.map((_, i) => `user-${i}`).join(",")}}`,
      `{${chats.map((_, i) => i).join(",")}}`,
      `{${chats.map(() => `"${body.replace(/\\/g, "\\\\")}"`).join(",")}}`,
      options.recipients,
    ];
    const batchMs: number[] = [];
    let transactions = 0;
    const deadline = performance.now() + options.seconds * 1000;
    const writer = async () => {
      while (performance.now() < deadline) {
        const started = performance.now();
        await sql.begin((tx) => tx.unsafe(WRITE, params as never[], { prepare: true }));
        batchMs.push(performance.now() - started);
        transactions++;
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: options.writers }, writer));
    const seconds = (performance.now() - started) / 1000;
    await sql.end();
    batchMs.sort((a, b) => a - b);
    const sends = transactions * options.batch;
    return {
      ...options,
      url: options.url.replace(/\/\/[^@]*@/, "//"),
      sendsPerSecond: Math.round(sends / seconds),
      inboxRowsPerSecond: Math.round((sends * options.recipients) / seconds),
      transactions,
      batchMsP50: Math.round(batchMs[Math.floor(batchMs.length / 2)] ?? 0),
      batchMsMax: Math.round(batchMs[batchMs.length - 1] ?? 0),
    };
  } finally {
    await dropDatabase(options.url, name);
  }
}

function argument(name: string, fallback: string | undefined): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

if (import.meta.filename === process.argv[1]) {
  const url = argument("url", process.env.DATABASE_URL);
  if (!url) {
    console.error("pg-ceiling needs --url or DATABASE_URL (a Postgres server where it may create a database)");
    process.exit(2);
  }
  const result = await measureCeiling({
    url,
    seconds: Number(argument("seconds", "10")),
    writers: Number(argument("writers", "4")),
    batch: Number(argument("batch", "256")),
    recipients: Number(argument("recipients", "9")),
  });
  console.log(JSON.stringify(result, null, 2));
}
