import type { Logger } from "pino";
import type { InboxEntry, RetentionStore } from "../../ports/db.js";
import type { Metrics } from "../operations/metrics.js";

export interface InboxCapOptions {
  /** MAX_INBOX_EVENTS. */
  maxEvents: number;
  /** Entries this node writes to a device between two trims of its inbox: how far past the cap it can grow. */
  checkEvery: number;
  /** Devices whose counts are kept; past this, the counts start again (they bound memory, not correctness). */
  maxDevices: number;
}

/**
 * Holds device inboxes to MAX_INBOX_EVENTS as events are written, not only at the retention job's hourly trim of
 * every inbox. Counting a device's inbox on each write would cost a scan per recipient, so the node counts the
 * entries it writes per device and, every `checkEvery` of them, trims that device's inbox: its oldest events go and
 * its next stream starts with Resync (INBOX_OVERFLOW). Trims run one statement at a time, off the send path.
 */
export class InboxCap {
  private readonly counts = new Map<string, number>();
  private readonly due = new Set<string>();
  private trimming = false;

  constructor(
    private readonly db: Pick<RetentionStore, "trimInboxes">,
    private readonly options: InboxCapOptions,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** Counts freshly stored inbox entries; trims the inboxes that are due. */
  written(entries: readonly InboxEntry[]): void {
    for (const { deviceKey } of entries) {
      const count = (this.counts.get(deviceKey) ?? 0) + 1;
      if (count < this.options.checkEvery) {
        this.counts.set(deviceKey, count);
      } else {
        this.counts.delete(deviceKey);
        this.due.add(deviceKey);
      }
    }
    if (this.counts.size > this.options.maxDevices) this.counts.clear();
    if (this.due.size > 0 && !this.trimming) void this.trim();
  }

  private async trim(): Promise<void> {
    this.trimming = true;
    try {
      while (this.due.size > 0) {
        const deviceKeys = [...this.due];
        this.due.clear();
        try {
          const trimmed = await this.db.trimInboxes(this.options.maxEvents, deviceKeys);
          this.metrics.retentionInboxesTrimmed.inc(trimmed);
        } catch (error) {
          // The retention job trims every inbox within the hour.
          this.logger.warn({ err: error, devices: deviceKeys.length }, "trimming inboxes at the cap failed");
        }
      }
    } finally {
      this.trimming = false;
    }
  }
}
