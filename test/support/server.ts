import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { type App, startApp } from "../../src/app.js";
import { type MintOptions, mintToken } from "../../src/auth/tokens.js";
import { loadConfig } from "../../src/config.js";
import type { Clock } from "../../src/ports/clock.js";
import type { InboxEvent } from "../../src/ports/db.js";
import { type Backend, openTestDb, type TestDbOptions } from "./db.js";
import { registerDevice } from "./store-fixtures.js";

/** The real clock, plus however far a test has moved it ahead (retention). */
export class TestClock implements Clock {
  private offsetMs = 0;
  now(): Date {
    return new Date(Date.now() + this.offsetMs);
  }
  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

export interface TestServer {
  app: App;
  url: string;
  port: number;
  clock: TestClock;
  token(userId: string, deviceName: string, options?: MintOptions): Promise<string>;
  deviceKey(userId: string, deviceName: string): Promise<string>;
  /** The events waiting in the device's inbox, oldest first. */
  inbox(userId: string, deviceName: string): Promise<InboxEvent[]>;
  /** Messages (not chat updates) the chat still has stored. */
  messageCount(chatId: string): Promise<number>;
  /** Attachment records the user created. */
  attachmentCount(uploaderUserId: string): Promise<number>;
  /**
   * Another node on the same database, token secret and clock (with REDIS_URL in `env`, the two are a cluster),
   * closed with this one.
   */
  addNode(env?: Record<string, string>): Promise<{ url: string }>;
  /** Which of messages and inbox have a partition for the given day. */
  partitionsOf(day: Date): Promise<string[]>;
  close(): Promise<void>;
}

/** A user id no other test uses. */
export function uniqueUser(name: string): string {
  return `${name}-${randomBytes(4).toString("hex")}`;
}

export interface TestServerOptions extends TestDbOptions {
  /** The server's logger, for tests that read what it logs (default: the config's, on stdout). */
  logger?: Logger;
}

/**
 * A real Palaver server on a free loopback port, on its own database (a fresh schema on Postgres, or PGlite), with
 * local blobs in a temporary directory. `env` overrides configuration as the environment would.
 */
export async function startTestServer(
  backend: Backend,
  env: Record<string, string> = {},
  options: TestServerOptions = {},
): Promise<TestServer> {
  const testDb = await openTestDb(backend, options);
  const dataDir = await mkdtemp(join(tmpdir(), "palaver-test-"));
  const authSecret = randomBytes(32).toString("base64url");
  // No dev sign-in unless a suite asks for it: the server warns at start while it is on.
  const configOf = (nodeEnv: Record<string, string>) =>
    loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      AUTH_SECRET: authSecret,
      LOG_LEVEL: "warn",
      DEV_SIGN_IN: "off",
      ...nodeEnv,
    });
  const clock = new TestClock();
  const app = await startApp(configOf(env), { db: testDb.db, clock, logger: options.logger });
  const otherNodes: App[] = [];
  const secret = new TextEncoder().encode(authSecret);
  const count = async (sql: string, params: unknown[]) => (await testDb.driver.query<{ n: number }>(sql, params))[0]!.n;
  return {
    app,
    url: app.server.url,
    port: app.server.port,
    clock,
    token: (userId, deviceName, options) => mintToken(secret, { userId, deviceName }, options),
    deviceKey: (userId, deviceName) => registerDevice(app.db, userId, deviceName, clock.now()),
    inbox: async (userId, deviceName) =>
      app.db.readInbox(await registerDevice(app.db, userId, deviceName, clock.now()), 0n, 100_000),
    messageCount: (chatId) => count("SELECT count(*)::int AS n FROM messages WHERE chat_id = $1 AND seq IS NOT NULL", [chatId]),
    attachmentCount: (userId) =>
      count("SELECT count(*)::int AS n FROM attachments WHERE uploader_user_id = $1", [userId]),
    async addNode(nodeEnv = {}) {
      const node = await startApp(configOf({ ...env, ...nodeEnv }), { db: testDb.db, clock });
      otherNodes.push(node);
      return { url: node.server.url };
    },
    async partitionsOf(day) {
      const rows = await testDb.driver.query<{ parent: string }>(
        `SELECT parent.relname AS parent
           FROM pg_inherits i
           JOIN pg_class child ON child.oid = i.inhrelid
           JOIN pg_class parent ON parent.oid = i.inhparent
           JOIN pg_namespace ns ON ns.oid = child.relnamespace
          WHERE ns.nspname = current_schema()
            AND parent.relname IN ('messages', 'inbox')
            AND child.relname LIKE '%' || to_char($1::timestamptz AT TIME ZONE 'UTC', 'YYYYMMDD')
          ORDER BY 1`,
        [day],
      );
      return rows.map((r) => r.parent);
    },
    async close() {
      await Promise.all(otherNodes.map((node) => node.close()));
      await app.close();
      await testDb.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
