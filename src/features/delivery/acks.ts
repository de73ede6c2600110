import type { Caller } from "../../ports/caller.js";
import { type DeviceAck, deviceNameKey, type InboxStore, type ReceiptChange } from "../../ports/db.js";
import type { RateLimiters } from "../../ports/rate-limiter.js";
import { GroupCommitter } from "../group-commit.js";
import { Limit } from "../rate-limit.js";

export interface AcksOptions {
  /** Most event ids one statement acks (an ack frame larger than that goes alone). */
  maxBatch: number;
  /** Ack statements running at once. */
  maxInFlight: number;
  /** Told each batch's size (a metric). */
  onBatch?: (size: number) => void;
  /** Told the receipts each batch moved (see Receipts). */
  onReceipts: (changes: ReceiptChange[]) => void;
  /** Ack frames one stream may send a minute, and AckEvents calls one device may make a minute. */
  acksPerMinute: number;
}

/** How an ack came: as a frame on the device's Connect stream, or as a unary AckEvents call. */
export type AckChannel = "stream" | "call";

/**
 * Acking: a device's handled events leave its inbox, and a message leaves storage once every device it was stored for
 * has acked it. Acks of concurrent streams share one DELETE (group commit, as sends do): thousands of devices acking
 * every few seconds were thousands of statements a second competing with sends for the connection pool.
 */
export class Acks {
  private readonly committer: GroupCommitter<DeviceAck, undefined>;
  private readonly limits: Record<AckChannel, Limit>;

  constructor(db: InboxStore, limiters: RateLimiters, options: AcksOptions) {
    this.committer = new GroupCommitter(
      async (batch: DeviceAck[]) => {
        options.onReceipts(await db.ackEvents(batch));
        return batch.map(() => undefined);
      },
      options.maxBatch,
      options.maxInFlight,
      // A device's acks wait while a batch with its earlier ones is written: two statements deleting the same entries
      // (an ack repeated) could otherwise meet in Postgres in opposite orders.
      { onBatch: options.onBatch, keyOf: (ack) => ack.deviceKey, sizeOf: (ack) => ack.eventIds.length },
    );
    const points = options.acksPerMinute;
    this.limits = {
      // A device's stream is held by one node (a newer one replaces it), so that node's count is the stream's, and a
      // shared store would only add a round trip to the most frequent frame there is. It survives a reconnect there.
      stream: new Limit(limiters, {
        name: "acks-stream",
        points,
        windowSeconds: 60,
        nodeLocal: true,
        allows: `a stream may send ${points} ack frames a minute`,
      }),
      // Unary calls may reach any node: counted across them.
      call: new Limit(limiters, {
        name: "acks-call",
        points,
        windowSeconds: 60,
        allows: `this device may call AckEvents ${points} times a minute`,
      }),
    };
  }

  /** Removes these events from the caller's inbox; ids that are not in it are ignored. */
  async ack(caller: Caller, eventIds: readonly bigint[], channel: AckChannel): Promise<void> {
    await this.limits[channel].take(deviceNameKey(caller));
    await this.committer.submit({ deviceKey: caller.deviceKey, userId: caller.userId, eventIds });
  }
}
