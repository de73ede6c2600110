import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["test/cluster/**", "node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: one worker per core, and suites share a PGlite instance per worker.
    pool: "forks",
    // One S3 server (SeaweedFS) for the whole run (the S3 suites each take a fresh bucket), and one build of the web
    // client for the browser suites.
    globalSetup: ["test/support/s3-server.ts", "test/support/web-build.ts"],
    maxWorkers: 2,
  },
});
