import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveAuthSecret } from "../../src/auth/secret.js";
import { createTokenVerifier } from "../../src/auth/tokens.js";

const run = promisify(execFile);

/** The `palaver` command as a user runs it (the package's bin), on embedded defaults in a fresh DATA_DIR. */
describe("the palaver command", () => {
  let dataDir: string;
  const palaver = (...args: string[]) =>
    run(process.execPath, ["bin/palaver.js", ...args], { env: { ...process.env, DATA_DIR: dataDir, DATABASE_URL: "" } });
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "palaver-cli-"));
  });
  afterAll(() => rm(dataDir, { recursive: true, force: true }));

  it("mints a token the server's secret verifies", async () => {
    const { stdout } = await palaver("token", "--user", "alice", "--device", "laptop");
    const verify = createTokenVerifier({ secret: await resolveAuthSecret({ dataDir }) });
    expect(await verify(stdout.trim())).toMatchObject({ userId: "alice", deviceName: "laptop" });
  });

  it("mints no longer-lived token than the server accepts (MAX_TOKEN_LIFETIME), unless told to", async () => {
    const env = { ...process.env, DATA_DIR: dataDir, MAX_TOKEN_LIFETIME: "1h" };
    const lifetime = async (...args: string[]) => {
      const { stdout } = await run(process.execPath, ["bin/palaver.js", "token", "--user", "a", "--device", "b", ...args], { env });
      const { iat, exp } = decodeJwt(stdout.trim());
      return exp! - iat!;
    };
    expect(await lifetime()).toBe(3600);
    expect(await lifetime("--ttl", "2h")).toBe(7200);
  });

  it("refuses a token without a device, with usage", async () => {
    const failure = await palaver("token", "--user", "alice").then(() => null, (e: { code: number; stderr: string }) => e);
    expect(failure?.code).toBe(2);
    expect(failure?.stderr).toContain("usage:");
  });

  it("runs the retention job once and reports what it did", async () => {
    const { stdout } = await palaver("retention", "run");
    const report = JSON.parse(stdout);
    expect(report.partitionsCreated.length).toBeGreaterThanOrEqual(8);
    expect(report.partitionsDropped).toEqual([]);
  });
});
