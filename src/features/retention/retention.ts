import type { Logger } from "pino";
import type { BlobStore } from "../../ports/blob-store.js";
import { type Clock, DAY_MS } from "../../ports/clock.js";
import type { RetentionStore } from "../../ports/db.js";
import { attachmentLifetimeDays } from "../attachments/attachments.js";

export interface RetentionOptions {
  retentionDays: number;
  /** Inbox events a device may have waiting; past that its oldest are dropped and it is told to resync. */
  maxInboxEvents: number;
  /** Daily partitions created ahead of today, so a send never waits on DDL. */
  partitionsAhead: number;
  /** How long idempotency keys are kept (at least 24 h). */
  idempotencyMs: number;
  /**
   * Removes the devices not seen since the cutoff and says how many (Devices.removeNotSeenSince). Unset in a one-off
   * run (`palaver retention run`): the servers' own runs remove devices, since they can tell every node.
   */
  removeDevicesNotSeenSince?: (cutoff: Date) => Promise<number>;
}

export interface RetentionReport {
  partitionsCreated: string[];
  partitionsDropped: string[];
  inboxesTrimmed: number;
  idempotencyKeysForgotten: number;
  attachmentsDeleted: number;
  devicesRemoved: number;
}

/**
 * The retention job: makes the coming days' partitions, drops whole daily partitions once they are older than the
 * retention period (never row by row), caps inboxes, forgets old idempotency keys, deletes expired attachments and
 * their objects, and removes the devices that have not connected for the retention period. It runs on a timer in
 * every server and once from `palaver retention run`; every step is idempotent, so nodes running it at the same time
 * do no harm.
 */
export class Retention {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: RetentionStore,
    /** Where expired attachments' objects are deleted. */
    private readonly blobs: Pick<BlobStore, "delete">,
    private readonly clock: Clock,
    private readonly options: RetentionOptions,
    private readonly logger: Logger,
    /** Told of every run: its report, or undefined when it failed (Metrics.countRetentionRun). */
    private readonly onRun: (report: RetentionReport | undefined) => void = () => {},
  ) {}

  /** Creates today's and the coming days' partitions: what a server needs before its first send. */
  async prepare(): Promise<void> {
    await this.db.ensurePartitions(this.clock.now(), this.options.partitionsAhead);
  }

  async run(): Promise<RetentionReport> {
    let report: RetentionReport | undefined;
    try {
      report = await this.runSteps();
      return report;
    } finally {
      this.onRun(report);
    }
  }

  private async runSteps(): Promise<RetentionReport> {
    const now = this.clock.now();
    const cutoff = new Date(now.getTime() - this.options.retentionDays * DAY_MS);
    const partitionsCreated = await this.db.ensurePartitions(now, this.options.partitionsAhead);
    const partitionsDropped = await this.db.dropPartitionsBefore(cutoff);
    const inboxesTrimmed = await this.db.trimInboxes(this.options.maxInboxEvents);
    const idempotencyKeysForgotten = await this.db.forgetSendsBefore(
      new Date(now.getTime() - this.options.idempotencyMs),
    );
    const attachmentsDeleted = await this.deleteExpiredAttachments(
      new Date(now.getTime() - attachmentLifetimeDays(this.options.retentionDays) * DAY_MS),
    );
    const devicesRemoved = (await this.options.removeDevicesNotSeenSince?.(cutoff)) ?? 0;
    const report = {
      partitionsCreated,
      partitionsDropped,
      inboxesTrimmed,
      idempotencyKeysForgotten,
      attachmentsDeleted,
      devicesRemoved,
    };
    this.logger.info(report, "retention run");
    return report;
  }

  /** Runs the job now and then every `intervalMs` until stop(). A failed run is logged and retried next time. */
  start(intervalMs: number): void {
    const tick = () => {
      this.run()
        .catch((error: unknown) => this.logger.error({ err: error }, "retention run failed"))
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, intervalMs).unref();
        });
    };
    this.timer = setTimeout(tick, intervalMs).unref();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async deleteExpiredAttachments(keptBefore: Date): Promise<number> {
    let deleted = 0;
    for (;;) {
      const expired = await this.db.deleteAttachmentsKeptBefore(keptBefore, 1000);
      if (expired.length === 0) return deleted;
      await this.blobs.delete(expired.map((a) => a.objectKey));
      deleted += expired.length;
    }
  }
}
