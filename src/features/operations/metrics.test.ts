import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Metrics } from "./metrics.js";

describe("Metrics", () => {
  it("are the ones the README's metrics table lists", async () => {
    const readme = readFileSync(new URL("../../../README.md", import.meta.url), "utf8");
    const table = readme.slice(readme.indexOf("### Metrics"), readme.indexOf("## Configuration"));
    const listed = new Set([...table.matchAll(/`(palaver_[a-z_]+)`/g)].map((m) => m[1]!));
    const served = (await new Metrics(() => 0).registry.getMetricsAsJSON())
      .map((metric) => metric.name)
      .filter((name) => !name.startsWith("palaver_process_"));
    expect([...listed].sort()).toEqual(served.sort());
  });

  it("count a retention run and what it dropped, or a failed run", async () => {
    const metrics = new Metrics(() => 0);
    metrics.countRetentionRun({
      partitionsCreated: ["messages_20300101", "inbox_20300101"],
      partitionsDropped: ["messages_20291201"],
      inboxesTrimmed: 3,
      idempotencyKeysForgotten: 4,
      attachmentsDeleted: 5,
      devicesRemoved: 6,
    });
    metrics.countRetentionRun(undefined);
    const text = await metrics.registry.metrics();
    for (const line of [
      'palaver_retention_runs_total{outcome="ok"} 1',
      'palaver_retention_runs_total{outcome="error"} 1',
      "palaver_retention_partitions_created_total 2",
      "palaver_retention_partitions_dropped_total 1",
      "palaver_retention_inboxes_trimmed_total 3",
      "palaver_retention_idempotency_keys_forgotten_total 4",
      "palaver_retention_attachments_deleted_total 5",
      "palaver_retention_devices_removed_total 6",
    ]) {
      expect(text).toContain(`\n${line}\n`);
    }
  });
});
