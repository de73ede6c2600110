import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// The layers of docs/architecture.md and which way they may depend: a newcomer (or a refactor) that points an arrow
// the wrong way finds out here, not in review.
const srcDir = dirname(fileURLToPath(import.meta.url));

/** Every import of the layer's non-test files that matches `forbidden`, as "file: specifier". */
function importsOf(layer: string, forbidden: RegExp): string[] {
  const found: string[] = [];
  const dir = join(srcDir, layer);
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".ts") || entry.name.endsWith(".test.ts")) continue;
    const file = join(entry.parentPath, entry.name);
    const text = readFileSync(file, "utf8");
    for (const [, specifier] of text.matchAll(/^(?:import|export)[^;]*?from\s+"([^"]+)"/gms)) {
      // Relative imports are compared by where they land inside src/.
      const target = specifier!.startsWith(".") ? relative(srcDir, resolve(dirname(file), specifier!)) : specifier!;
      if (forbidden.test(target)) found.push(`${relative(srcDir, file)}: ${specifier}`);
    }
  }
  return found;
}

describe("layers", () => {
  it("the domain (features, auth, ports) imports neither the wire nor an adapter", () => {
    const wireOrAdapter = /^(@connectrpc\/|transport\/|adapters\/|web\/|app\.js$|redis$|@redis\/|postgres$|@electric-sql\/|@aws-sdk\/)/;
    expect([
      ...importsOf("features", wireOrAdapter),
      ...importsOf("auth", wireOrAdapter),
      ...importsOf("ports", wireOrAdapter),
    ]).toEqual([]);
  });

  it("ports import only other ports and the generated protocol types", () => {
    expect(importsOf("ports", /^(?!ports\/|\.\.\/gen\/|(\.\.\/)*gen\/)/)).toEqual([]);
  });

  it("adapters do not reach into the features or the wire", () => {
    expect(importsOf("adapters", /^(features\/|transport\/|app\.js$)/)).toEqual([]);
  });

  it("the check sees a forbidden import when there is one", () => {
    // The transport layer does import connect-es and the features: the same scan must report that.
    expect(importsOf("transport", /^@connectrpc\//).length).toBeGreaterThan(0);
    expect(importsOf("transport", /^features\//).length).toBeGreaterThan(0);
  });
});
