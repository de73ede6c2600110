import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Config } from "../config.js";

const secretFileName = "auth-secret";

/**
 * The HS256 key, as the server and `palaver token` both use it: AUTH_SECRET when set, else the secret kept in
 * DATA_DIR (created 0700), created (mode 0600) by whichever process needs it first. Nodes of a cluster must share
 * AUTH_SECRET.
 */
export async function resolveAuthSecret(config: Pick<Config, "authSecret" | "dataDir">): Promise<Uint8Array> {
  if (config.authSecret !== undefined) return new TextEncoder().encode(config.authSecret);
  const path = join(config.dataDir, secretFileName);
  const existing = await readSecretFile(path);
  if (existing) return existing;

  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  // Write the whole file under a private name, then link it into place: a concurrent starter either wins the link
  // or reads the complete file the winner linked, never a half-written one.
  const draft = `${path}.${process.pid}.${randomBytes(4).toString("hex")}`;
  await writeFile(draft, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600, flag: "wx" });
  try {
    await link(draft, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    await unlink(draft);
  }
  const created = await readSecretFile(path);
  if (!created) throw new Error(`${path} vanished right after it was created`);
  return created;
}

async function readSecretFile(path: string): Promise<Uint8Array | undefined> {
  let text: string;
  try {
    text = (await readFile(path, "utf8")).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  if (text.length < 32) throw new Error(`${path} must hold a secret of at least 32 characters`);
  return new TextEncoder().encode(text);
}
