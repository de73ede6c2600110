import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/**
 * The server's Prometheus metrics, in a registry of its own (several servers can share a process in tests).
 * Features get this object and count what they do; /metrics exposes it.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly sends = new Counter({
    name: "palaver_sends_total",
    help: "SendMessage calls that stored a message (stored) or answered a retry (duplicate)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly deliveries = new Counter({
    name: "palaver_deliveries_total",
    help: "Events pushed live to a device stream on this node (backlog not included)",
    registers: [this.registry],
  });
  readonly deliveryLatency = new Histogram({
    name: "palaver_delivery_latency_seconds",
    help: "From a message's sent_at to its live push being written to a recipient device's stream",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly backlog = new Histogram({
    name: "palaver_inbox_backlog_events",
    help: "Inbox depth of a device when its stream opened (events sent before InboxDrained)",
    buckets: [0, 1, 10, 100, 1000, 10_000, 100_000],
    registers: [this.registry],
  });
  readonly handoffs = new Counter({
    name: "palaver_bus_handoffs_total",
    help: "Events handed to another node's devices through the bus (out) or received from other nodes (in)",
    labelNames: ["direction"] as const,
    registers: [this.registry],
  });
  readonly rpcs = new Counter({
    name: "palaver_rpcs_total",
    help: "RPCs by procedure and final status code",
    labelNames: ["procedure", "code"] as const,
    registers: [this.registry],
  });
  readonly rpcSeconds = new Histogram({
    name: "palaver_rpc_duration_seconds",
    help: "RPC duration by procedure (streams: their whole life)",
    labelNames: ["procedure"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10, 60, 600],
    registers: [this.registry],
  });

  readonly dbSeconds = new Histogram({
    name: "palaver_db_call_duration_seconds",
    help: "Database call latency by operation (the Db port's method) and outcome (ok, error)",
    labelNames: ["operation", "outcome"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: "palaver_group_commit_batch_size",
    help: "Items written together in one group-commit batch, by committer (sends, acks, devices)",
    labelNames: ["committer"] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    registers: [this.registry],
  });
  readonly redisErrors = new Counter({
    name: "palaver_redis_errors_total",
    help: "Errors a Redis connection reported, by its role (commands, subscriber)",
    labelNames: ["role"] as const,
    registers: [this.registry],
  });
  readonly redisReconnects = new Counter({
    name: "palaver_redis_reconnects_total",
    help: "Reconnects a Redis connection began after losing Redis, by its role (commands, subscriber)",
    labelNames: ["role"] as const,
    registers: [this.registry],
  });
  readonly retentionRuns = new Counter({
    name: "palaver_retention_runs_total",
    help: "Retention job runs on this node by outcome (ok, error)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly retentionPartitionsCreated = new Counter({
    name: "palaver_retention_partitions_created_total",
    help: "Daily partitions (of messages and inbox) the retention job created ahead",
    registers: [this.registry],
  });
  readonly retentionPartitionsDropped = new Counter({
    name: "palaver_retention_partitions_dropped_total",
    help: "Daily partitions (of messages and inbox) the retention job dropped past RETENTION_DAYS",
    registers: [this.registry],
  });
  readonly retentionInboxesTrimmed = new Counter({
    name: "palaver_retention_inboxes_trimmed_total",
    help: "Device inboxes cut back to MAX_INBOX_EVENTS, by the retention job or as events were written",
    registers: [this.registry],
  });
  readonly retentionIdempotencyKeysForgotten = new Counter({
    name: "palaver_retention_idempotency_keys_forgotten_total",
    help: "Idempotency keys (client_message_id) the retention job forgot",
    registers: [this.registry],
  });
  readonly retentionAttachmentsDeleted = new Counter({
    name: "palaver_retention_attachments_deleted_total",
    help: "Expired attachments the retention job deleted with their stored bytes",
    registers: [this.registry],
  });
  readonly retentionDevicesRemoved = new Counter({
    name: "palaver_retention_devices_removed_total",
    help: "Devices the retention job removed because they had not connected for RETENTION_DAYS",
    registers: [this.registry],
  });

  constructor(connectedDevices: () => number) {
    new Gauge({
      name: "palaver_connected_devices",
      help: "Device streams open on this node",
      registers: [this.registry],
      collect() {
        this.set(connectedDevices());
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: "palaver_process_" });
  }

  countCall(call: { procedure: string; code: string; seconds: number }): void {
    this.rpcs.inc({ procedure: call.procedure, code: call.code });
    this.rpcSeconds.observe({ procedure: call.procedure }, call.seconds);
  }

  /** For adapters/observed.ts around the Db port. */
  observeDbCall(call: { operation: string; outcome: "ok" | "error"; seconds: number }): void {
    this.dbSeconds.observe({ operation: call.operation, outcome: call.outcome }, call.seconds);
  }

  /** What a GroupCommitter's `onBatch` option takes: observes each batch's size under the committer's name. */
  batchObserver(committer: "sends" | "acks" | "reads" | "devices"): (size: number) => void {
    const child = this.batchSize.labels({ committer });
    return (size) => child.observe(size);
  }

  /** For the retention job: a report after a run that finished, undefined after one that failed. */
  countRetentionRun(report: RetentionCounts | undefined): void {
    this.retentionRuns.inc({ outcome: report ? "ok" : "error" });
    if (!report) return;
    this.retentionPartitionsCreated.inc(report.partitionsCreated.length);
    this.retentionPartitionsDropped.inc(report.partitionsDropped.length);
    this.retentionInboxesTrimmed.inc(report.inboxesTrimmed);
    this.retentionIdempotencyKeysForgotten.inc(report.idempotencyKeysForgotten);
    this.retentionAttachmentsDeleted.inc(report.attachmentsDeleted);
    this.retentionDevicesRemoved.inc(report.devicesRemoved);
  }
}

/** What one retention run did (features/retention's RetentionReport). */
export interface RetentionCounts {
  partitionsCreated: readonly string[];
  partitionsDropped: readonly string[];
  inboxesTrimmed: number;
  idempotencyKeysForgotten: number;
  attachmentsDeleted: number;
  devicesRemoved: number;
}
