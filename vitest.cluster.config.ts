import { defineConfig } from "vitest/config";

/**
 * The cluster suite (issue 4): three real nodes, HAProxy, and real Redis and Postgres restarts on the machine's
 * services. One worker, one file at a time, and never alongside `npm test` (it stops the Postgres other suites use).
 */
export default defineConfig({
  test: {
    include: ["test/cluster/**/*.test.ts"],
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Fault tests must not be retried into passing.
    retry: 0,
    globalSetup: ["test/cluster/build-server.ts"],
  },
});
