import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { DeviceRemovalsSchema } from "../../../gen/palaver/cluster/v1/device_removals_pb.js";
import { HandoffBatchSchema } from "../../../gen/palaver/cluster/v1/handoff_pb.js";
import { type NoticeBatch, NoticeBatchSchema } from "../../../gen/palaver/cluster/v1/notices_pb.js";
import type { Fanout, RemovedDevice } from "../../ports/db.js";
import type { Bus, Notice } from "../../ports/routing.js";

/** The one channel every node subscribes to, for removed devices (a protobuf DeviceRemovals). */
const REMOVALS_CHANNEL = "palaver:device-removals";
/**
 * The one channel every node subscribes to for notices (a protobuf NoticeBatch): a notice is for users, whose devices
 * may be on any node, and it is small and never stored, so every node takes every batch and keeps its own users'.
 */
const NOTICES_CHANNEL = "palaver:notices";

/**
 * One Redis pub/sub channel per node. Hand-offs to the same node within one turn of the event loop go out as one
 * publish (a protobuf HandoffBatch). Pub/sub keeps nothing: what a node misses (it was down, Redis restarted) is
 * still in the inbox. Removed devices and notices go to every node on shared channels. Subscribing needs its own
 * connection, so the bus takes two clients.
 */
export class RedisBus implements Bus {
  private readonly pending = new Map<string, Fanout[]>();
  private readonly pendingNotices: Notice[] = [];
  private flushScheduled = false;

  constructor(
    readonly nodeId: string,
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    private readonly logger: Logger,
  ) {}

  subscribe(handler: (fanouts: Fanout[]) => void, link: Parameters<Bus["subscribe"]>[1]): Promise<void> {
    return this.listen(nodeChannel(this.nodeId), (message) => handler(decode(message)), link, "hand-off");
  }

  subscribeRemovals(handler: (devices: RemovedDevice[]) => void, link: { resumed(): void }): Promise<void> {
    const removals = (message: Buffer) => handler(decodeRemovals(message));
    return this.listen(REMOVALS_CHANNEL, removals, { interrupted: () => {}, resumed: () => link.resumed() }, "removal");
  }

  subscribeNotices(handler: (notices: Notice[]) => void): Promise<void> {
    const notices = (message: Buffer) => {
      const batch = fromBinary(NoticeBatchSchema, message);
      if (batch.nodeId !== this.nodeId) handler(decodeNotices(batch));
    };
    // Notices lost while the channel is down are not caught up: they are never stored.
    return this.listen(NOTICES_CHANNEL, notices, { interrupted: () => {}, resumed: () => {} }, "notice batch");
  }

  publishNotices(notices: readonly Notice[]): void {
    this.pendingNotices.push(...notices);
    this.scheduleFlush();
  }

  announceRemovals(devices: readonly RemovedDevice[]): void {
    this.publisher.publish(REMOVALS_CHANNEL, encodeRemovals(devices)).catch((error: unknown) => {
      this.logger.warn({ err: error, devices: devices.length }, "announcing removed devices failed");
    });
  }

  /** Subscribes to one channel, telling `link` when the subscription is lost and when it is live again. */
  private async listen(
    channel: string,
    onMessage: (message: Buffer) => void,
    link: Parameters<Bus["subscribe"]>[1],
    what: string,
  ): Promise<void> {
    let lost = false;
    this.subscriber.on("close", () => {
      if (lost) return;
      lost = true;
      link.interrupted();
    });
    this.subscriber.on("ready", () => {
      if (!lost) return;
      lost = false;
      // ioredis subscribes again by itself; this waits for the channel to be live before saying so. (A failure closes
      // the connection, and the next "ready" tries again.)
      this.subscriber.subscribe(channel).then(
        () => link.resumed(),
        (error: unknown) => this.logger.warn({ err: error }, "subscribing again after a reconnect failed"),
      );
    });
    this.subscriber.on("messageBuffer", (from: Buffer, message: Buffer) => {
      if (from.toString() !== channel) return;
      try {
        onMessage(message);
      } catch (error) {
        this.logger.warn({ err: error }, `dropped a malformed ${what}`);
      }
    });
    // ioredis re-subscribes by itself after a reconnect.
    await this.subscriber.subscribe(channel);
  }

  publish(nodeId: string, fanouts: Fanout[]): void {
    let queue = this.pending.get(nodeId);
    if (!queue) this.pending.set(nodeId, (queue = []));
    queue.push(...fanouts);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  async close(): Promise<void> {
    this.flush();
    this.subscriber.disconnect();
    await this.publisher.quit().catch(() => this.publisher.disconnect());
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const [nodeId, fanouts] of this.pending) {
      this.publisher.publish(nodeChannel(nodeId), encode(fanouts)).catch((error: unknown) => {
        this.logger.warn({ err: error, nodeId }, "hand-off publish failed; the inbox keeps the events");
      });
    }
    this.pending.clear();
    if (this.pendingNotices.length > 0) {
      const batch = encodeNotices(this.nodeId, this.pendingNotices.splice(0));
      this.publisher.publish(NOTICES_CHANNEL, batch).catch((error: unknown) => {
        this.logger.warn({ err: error }, "notice publish failed; those notices are not seen on other nodes");
      });
    }
  }
}

function nodeChannel(nodeId: string): string {
  return `palaver:node:{${nodeId}}`;
}

function encode(fanouts: Fanout[]): Buffer {
  const batch = create(HandoffBatchSchema, {
    handoffs: fanouts.map((f) => ({
      body: f.body,
      deliveries: f.entries.map((e) => ({ deviceKey: BigInt(e.deviceKey), eventId: e.eventId })),
      sentAtMs: BigInt(f.sentAtMs ?? 0),
    })),
  });
  return Buffer.from(toBinary(HandoffBatchSchema, batch));
}

function decode(message: Buffer): Fanout[] {
  return fromBinary(HandoffBatchSchema, message).handoffs.map((h) => ({
    body: h.body,
    entries: h.deliveries.map((d) => ({ deviceKey: d.deviceKey.toString(), eventId: d.eventId })),
    sentAtMs: h.sentAtMs === 0n ? undefined : Number(h.sentAtMs),
  }));
}

function encodeRemovals(devices: readonly RemovedDevice[]): Buffer {
  const message = create(DeviceRemovalsSchema, {
    devices: devices.map((d) => ({ deviceKey: BigInt(d.deviceKey), userId: d.userId, deviceName: d.deviceName })),
  });
  return Buffer.from(toBinary(DeviceRemovalsSchema, message));
}

function decodeRemovals(message: Buffer): RemovedDevice[] {
  return fromBinary(DeviceRemovalsSchema, message).devices.map((d) => ({
    deviceKey: d.deviceKey.toString(),
    userId: d.userId,
    deviceName: d.deviceName,
  }));
}

function encodeNotices(nodeId: string, notices: readonly Notice[]): Buffer {
  const batch = create(NoticeBatchSchema, {
    nodeId,
    notices: notices.map((n) => ({
      event: n.body,
      userIds: [...n.userIds],
      exceptDeviceKey: BigInt(n.exceptDeviceKey ?? 0),
    })),
  });
  return Buffer.from(toBinary(NoticeBatchSchema, batch));
}

function decodeNotices(batch: NoticeBatch): Notice[] {
  return batch.notices.map((n) => ({
    body: n.event,
    userIds: n.userIds,
    exceptDeviceKey: n.exceptDeviceKey === 0n ? undefined : n.exceptDeviceKey.toString(),
  }));
}
