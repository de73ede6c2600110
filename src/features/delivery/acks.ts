import type { Caller } from "../../ports/caller.js";
import type { DeviceAck, InboxStore } from "../../ports/db.js";
import { GroupCommitter } from "../group-commit.js";

export interface AcksOptions {
  /** Most devices' acks deleted by one statement. */
  maxBatch: number;
  /** Ack statements running at once. */
  maxInFlight: number;
  /** Told each batch's size (a metric). */
  onBatch?: (size: number) => void;
}

/**
 * Acking: a device's handled events leave its inbox, and a message leaves storage once every device it was stored for
 * has acked it. Acks of concurrent streams share one DELETE (group commit, as sends do): thousands of devices acking
 * every few seconds were thousands of statements a second competing with sends for the connection pool.
 */
export class Acks {
  private readonly committer: GroupCommitter<DeviceAck, undefined>;

  constructor(db: InboxStore, options: AcksOptions) {
    this.committer = new GroupCommitter(
      async (batch: DeviceAck[]) => {
        await db.ackEvents(batch);
        return batch.map(() => undefined);
      },
      options.maxBatch,
      options.maxInFlight,
      { onBatch: options.onBatch },
    );
  }

  /** Removes these events from the caller's inbox; ids that are not in it are ignored. */
  async ack(caller: Caller, eventIds: readonly bigint[]): Promise<void> {
    await this.committer.submit({ deviceKey: caller.deviceKey, eventIds });
  }
}
