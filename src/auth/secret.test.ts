import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveAuthSecret } from "./secret.js";

const freshDir = () => join(mkdtempSync(join(tmpdir(), "palaver-secret-")), "data");
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

describe("resolveAuthSecret", () => {
  it("uses AUTH_SECRET when it is set, writing nothing", async () => {
    const dataDir = freshDir();
    expect(text(await resolveAuthSecret({ authSecret: "s".repeat(32), dataDir }))).toBe("s".repeat(32));
    await expect(readFile(join(dataDir, "auth-secret"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("creates a secret in DATA_DIR once, readable by its owner only, and keeps using it", async () => {
    const dataDir = freshDir();
    const first = await resolveAuthSecret({ dataDir });
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(statSync(join(dataDir, "auth-secret")).mode & 0o777).toBe(0o600);
    expect(text(await resolveAuthSecret({ dataDir }))).toBe(text(first));
  });

  it("gives concurrent starters the same secret", async () => {
    const dataDir = freshDir();
    const secrets = await Promise.all(Array.from({ length: 8 }, () => resolveAuthSecret({ dataDir })));
    expect(new Set(secrets.map(text)).size).toBe(1);
  });

  it("refuses a secret file that is too short", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "palaver-secret-"));
    writeFileSync(join(dataDir, "auth-secret"), "short\n");
    await expect(resolveAuthSecret({ dataDir })).rejects.toThrow("at least 32 characters");
  });
});
