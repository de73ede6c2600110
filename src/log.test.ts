import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestDb, type TestDb, testBackends } from "../test/support/db.js";
import { captureLogs } from "../test/support/log-capture.js";

const secret = "Surprise party for Bob, do not tell";

describe.each(testBackends())("logged errors of %s", (backend) => {
  let testDb: TestDb;
  /** The error a statement fails with when it carries the secret as a parameter. */
  let failure: unknown;
  beforeAll(async () => {
    testDb = await openTestDb(backend);
    await testDb.driver.exec("CREATE TABLE plans (name text CONSTRAINT plans_name_unique UNIQUE)");
    await testDb.driver.query("INSERT INTO plans VALUES ($1)", [secret]);
    failure = await testDb.driver.query("INSERT INTO plans VALUES ($1)", [secret]).then(
      () => expect.fail("the duplicate was stored"),
      (error: unknown) => error,
    );
  });
  afterAll(() => testDb?.close());

  it("show what failed and where, never the statement's parameters or the row (the driver's error carries both)", () => {
    expect(JSON.stringify(failure, Object.getOwnPropertyNames(failure))).toContain(secret);
    const logs = captureLogs();
    logs.logger.error({ err: failure }, "statement failed");
    expect(logs.text()).not.toContain(secret);
    expect(logs.lines[0]!.err).toMatchObject({
      code: "23505",
      message: expect.stringContaining("plans_name_unique"),
      stack: expect.any(String),
    });
  });

  it("keep the same out of an error's causes and of an aggregate's errors", () => {
    const logs = captureLogs();
    logs.logger.error({ err: new Error("storing the batch failed", { cause: failure }) }, "batch failed");
    logs.logger.error({ err: new AggregateError([failure], "every attempt failed") }, "attempts failed");
    expect(logs.text()).not.toContain(secret);
    expect(logs.lines[0]!.err).toMatchObject({ message: expect.stringMatching(/^storing the batch failed: .*plans_name_unique/) });
    expect(logs.lines[1]!.err).toMatchObject({ aggregateErrors: [{ code: "23505" }] });
  });
});

it("keeps a Redis command's arguments (a hand-off's message bodies) out of the logs", () => {
  // A Redis client may put the failed command on its reply errors (ioredis did).
  const error = Object.assign(new Error("ERR max number of clients reached"), {
    command: { name: "publish", args: ["palaver:node-a", secret] },
  });
  const logs = captureLogs();
  logs.logger.warn({ err: error }, "hand-off publish failed");
  expect(logs.text()).not.toContain(secret);
  expect(logs.lines[0]!.err).toMatchObject({ type: "Error", message: "ERR max number of clients reached" });
});
