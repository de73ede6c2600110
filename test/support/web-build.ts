import { fileURLToPath } from "node:url";
import { build } from "vite";

/**
 * vitest globalSetup: builds the web client into web/dist, where the server serves it from, once before any suite
 * starts. Suites running side by side must not build it themselves: a build empties web/dist first, so a page another
 * suite loads at that moment finds its scripts gone.
 */
export default async function setup(): Promise<void> {
  await build({ configFile: fileURLToPath(new URL("../../web/vite.config.ts", import.meta.url)), logLevel: "warn" });
}
