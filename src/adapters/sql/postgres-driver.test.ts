import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { DependencyUnavailableError } from "../../errors.js";
import type { SqlDriver } from "../../ports/sql.js";
import { isConnectionFailure } from "./connection-errors.js";
import { createPostgresDriver } from "./postgres-driver.js";

const databaseUrl = process.env.DATABASE_URL;

async function expectUnavailable(driver: SqlDriver): Promise<void> {
  await expect(driver.query("SELECT 1")).rejects.toBeInstanceOf(DependencyUnavailableError);
  await expect(driver.transaction((tx) => tx.query("SELECT 1"))).rejects.toBeInstanceOf(DependencyUnavailableError);
  await expect(driver.exec("SELECT 1")).rejects.toBeInstanceOf(DependencyUnavailableError);
}

/**
 * A TCP proxy to Postgres that the test can take down (dropping every connection) and bring back on the same port,
 * or have drop new connections as soon as they are set up (on the client's first message after the startup one).
 */
async function startProxy(target: URL) {
  const sockets = new Set<Socket>();
  let server: Server;
  const state = { dropAfterStartup: false };
  const listen = async (port: number) => {
    server = createServer((client) => {
      const upstream = connect(Number(target.port || 5432), target.hostname);
      let chunks = 0;
      client.on("data", () => {
        if (state.dropAfterStartup && ++chunks === 2) client.destroy();
      });
      for (const socket of [client, upstream]) {
        sockets.add(socket);
        socket.on("error", () => {});
        socket.on("close", () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(socket);
        });
      }
      client.pipe(upstream).pipe(client);
    });
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    return (server.address() as AddressInfo).port;
  };
  const port = await listen(0);
  const url = new URL(target);
  url.host = `127.0.0.1:${port}`;
  return {
    url: url.toString(),
    state,
    async down() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
    up: () => listen(port),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe("postgres driver", () => {
  it("classifies connection failures, and only those", () => {
    for (const code of ["ECONNREFUSED", "ECONNRESET", "CONNECTION_CLOSED", "CONNECT_TIMEOUT", "08006", "57P01", "57P03", "53300"]) {
      expect(isConnectionFailure(Object.assign(new Error(code), { code }))).toBe(true);
    }
    expect(isConnectionFailure(new AggregateError([Object.assign(new Error(), { code: "ECONNREFUSED" })]))).toBe(true);
    expect(isConnectionFailure(Object.assign(new Error("timeout"), { code: "25P03", severity: "FATAL" }))).toBe(true);
    for (const code of ["23505", "42P01", "40P01", "UNDEFINED_VALUE", undefined]) {
      expect(isConnectionFailure(Object.assign(new Error("x"), { code }))).toBe(false);
    }
  });

  it("answers DependencyUnavailableError when nothing listens at the address", async () => {
    const driver = createPostgresDriver("postgres://postgres@127.0.0.1:1/none", { connectTimeoutSeconds: 2 });
    try {
      await expectUnavailable(driver);
    } finally {
      await driver.close();
    }
    // And after close() too, without opening anything new.
    await expectUnavailable(driver);
  });

  it.runIf(databaseUrl)("fails calls while Postgres is away and recovers by itself when it is back", async () => {
    const proxy = await startProxy(new URL(databaseUrl!));
    const driver = createPostgresDriver(proxy.url, { poolSize: 2, connectTimeoutSeconds: 2 });
    try {
      expect(await driver.query("SELECT 1 AS one")).toEqual([{ one: 1 }]);

      // Connections drop in the middle of a transaction…
      let dropped!: () => void;
      const inTransaction = new Promise<void>((resolve) => (dropped = resolve));
      const transaction = driver
        .transaction(async (tx) => {
          await tx.query("SELECT 1");
          dropped();
          await tx.query("SELECT pg_sleep(5)");
        })
        .catch((error: unknown) => error);
      await inTransaction;
      await proxy.down();
      expect(await transaction).toBeInstanceOf(DependencyUnavailableError);
      // …and new ones are refused.
      await expectUnavailable(driver);

      await proxy.up();
      expect(await driver.query("SELECT 1 AS one")).toEqual([{ one: 1 }]);
      expect(await driver.transaction((tx) => tx.query("SELECT 2 AS two"))).toEqual([{ two: 2 }]);
    } finally {
      await driver.close();
      await proxy.close();
    }
  });

  it.runIf(databaseUrl)("answers DependencyUnavailableError when a connection drops right after it is set up", async () => {
    const proxy = await startProxy(new URL(databaseUrl!));
    const driver = createPostgresDriver(proxy.url, { poolSize: 1, connectTimeoutSeconds: 2 });
    try {
      proxy.state.dropAfterStartup = true;
      await expectUnavailable(driver);
      proxy.state.dropAfterStartup = false;
      expect(await driver.query("SELECT 1 AS one")).toEqual([{ one: 1 }]);
    } finally {
      await driver.close();
      await proxy.close();
    }
  });

  it.runIf(databaseUrl)("survives repeated outages under load without crashing, then serves every call", async () => {
    const proxy = await startProxy(new URL(databaseUrl!));
    const driver = createPostgresDriver(proxy.url, { poolSize: 4, connectTimeoutSeconds: 2 });
    let stop = false;
    const failures: unknown[] = [];
    const workers = Array.from({ length: 8 }, async (_, w) => {
      while (!stop) {
        try {
          if (w % 2) await driver.query("SELECT $1::int AS w", [w]);
          else {
            await driver.transaction(async (tx) => {
              await tx.query("SELECT pg_sleep(0.001)");
              await tx.query("SELECT $1::int", [w]);
            });
          }
          failures.length = 0;
        } catch (error) {
          failures.push(error);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
    });
    try {
      for (let outage = 0; outage < 4; outage++) {
        await new Promise((resolve) => setTimeout(resolve, 150));
        await proxy.down();
        await new Promise((resolve) => setTimeout(resolve, 100));
        await proxy.up();
      }
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(failures.every((error) => error instanceof DependencyUnavailableError)).toBe(true);
      const calls = Array.from({ length: 20 }, (_, i) => driver.transaction((tx) => tx.query("SELECT $1::int AS i", [i])));
      expect((await Promise.all(calls)).flat()).toHaveLength(20);
    } finally {
      stop = true;
      await Promise.all(workers);
      await driver.close();
      await proxy.close();
    }
  });

  it.runIf(databaseUrl)("sends nothing more for a transaction whose session the server ended while it was idle", async () => {
    const schema = `test_idle_${process.pid}_${Date.now()}`;
    const driver = createPostgresDriver(databaseUrl!, { poolSize: 1, searchPath: schema });
    try {
      await driver.exec(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (n int)`);
      const lost = driver
        .transaction(async (tx) => {
          await tx.query("SET LOCAL idle_in_transaction_session_timeout = '100ms'");
          await new Promise((resolve) => setTimeout(resolve, 400));
          await tx.query("INSERT INTO t VALUES (1)");
        })
        .catch((error: unknown) => error);
      expect(await lost).toBeInstanceOf(DependencyUnavailableError);
      // The same pool slot serves the next transaction, and the lost one's insert is not in it.
      await driver.transaction((tx) => tx.query("INSERT INTO t VALUES (2)"));
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await driver.query("SELECT n FROM t")).toEqual([{ n: 2 }]);
    } finally {
      await driver.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await driver.close();
    }
  });

  it.runIf(databaseUrl)("never JIT-compiles a statement, however costly the planner thinks it", async () => {
    const driver = createPostgresDriver(databaseUrl!, { poolSize: 1 });
    try {
      // Planned at a billion rows (a generate_series whose end the planner does not know is 1,000 rows to it): far
      // past jit_above_cost, though it counts eight.
      const [row] = await driver.query<{ "QUERY PLAN": [{ Plan: { "Total Cost": number }; JIT?: unknown }] }>(
        `EXPLAIN (ANALYZE, FORMAT JSON)
         SELECT count(*) FROM generate_series(1, (SELECT $1::int)) a, generate_series(1, (SELECT $1::int)) b,
                              generate_series(1, (SELECT $1::int)) c`,
        [2],
      );
      const [{ cost: threshold }] = (await driver.query<{ cost: string }>(
        "SELECT current_setting('jit_above_cost') AS cost",
      )) as [{ cost: string }];
      const [explained] = row!["QUERY PLAN"];
      expect(explained.Plan["Total Cost"]).toBeGreaterThan(Number(threshold));
      expect(explained.JIT).toBeUndefined();
    } finally {
      await driver.close();
    }
  });

  it.runIf(databaseUrl)("answers DependencyUnavailableError when the server terminates the connection", async () => {
    const driver = createPostgresDriver(databaseUrl!, { poolSize: 1 });
    const admin = createPostgresDriver(databaseUrl!, { poolSize: 1 });
    try {
      const [{ pid }] = (await driver.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")) as [{ pid: number }];
      const sleeping = driver.query("SELECT pg_sleep(10)").catch((error: unknown) => error);
      const sleepingNow = () =>
        admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1::int AND query LIKE '%pg_sleep%'", [pid]);
      await expect.poll(async () => (await sleepingNow()).length).toBe(1);
      await admin.query("SELECT pg_terminate_backend($1::int)", [pid]);
      expect(await sleeping).toBeInstanceOf(DependencyUnavailableError);
      expect(await driver.query("SELECT 1 AS one")).toEqual([{ one: 1 }]);
    } finally {
      await Promise.all([driver.close(), admin.close()]);
    }
  });
});
