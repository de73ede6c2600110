import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { DeviceRemovalsSchema } from "../../../gen/palaver/cluster/v1/device_removals_pb.js";
import { HandoffBatchSchema } from "../../../gen/palaver/cluster/v1/handoff_pb.js";
import { type NoticeBatch, NoticeBatchSchema } from "../../../gen/palaver/cluster/v1/notices_pb.js";
import type { Fanout, RemovedDevice } from "../../ports/db.js";
import type { Bus, Notice } from "../../ports/routing.js";
import type { RedisLink } from "./connect.js";

/** The one channel every node subscribes to, for removed devices (a protobuf DeviceRemovals). */
const REMOVALS_CHANNEL = "palaver:device-removals";
/**
 * The one channel every node subscribes to for notices (a protobuf NoticeBatch): a notice is for users, whose devices
 * may be on any node, and it is small and never stored, so every node takes every batch and keeps its own users'.
 */
const NOTICES_CHANNEL = "palaver:notices";
/** How often a node whose subscriptions were interrupted checks whether each is back. */
const PROBE_MS = 200;

/** What a subscribed channel tells its subscriber about its connection. */
interface ChannelEvents {
  interrupted(): void;
  resumed(): void;
}

/**
 * One Redis pub/sub channel per node. Hand-offs to the same node within one turn of the event loop go out as one
 * publish (a protobuf HandoffBatch). Pub/sub keeps nothing: what a node misses (it was down, Redis restarted) is
 * still in the inbox. Removed devices and notices go to every node on shared channels.
 *
 * When a connection carrying subscriptions is lost, every channel counts as interrupted, and is resumed only once a
 * probe this node publishes on it comes back through its subscription: proof, on one Redis or a cluster whose shard
 * failed over, that messages published from then on arrive.
 */
export class RedisBus implements Bus {
  /** Per node, the fanouts of this tick's publish and its outcome, which every publish() of the tick returns. */
  private readonly pending = new Map<string, PendingPublish>();
  private readonly pendingNotices: Notice[] = [];
  private flushScheduled = false;
  private readonly channels = new Map<string, { events: ChannelEvents; live: boolean }>();
  /** What this node publishes to check a channel: starts with "p" (0x70), which none of the protobuf batches does. */
  private readonly probe: Buffer;
  private probing: NodeJS.Timeout | null = null;

  constructor(
    readonly nodeId: string,
    private readonly redis: RedisLink,
    private readonly logger: Logger,
  ) {
    this.probe = Buffer.from(`probe:${nodeId}`);
    redis.onSubscriptionLost(() => this.interrupted());
  }

  subscribe(handler: (fanouts: Fanout[]) => void, link: ChannelEvents): Promise<void> {
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
    this.redis.publish(REMOVALS_CHANNEL, encodeRemovals(devices)).catch((error: unknown) => {
      this.logger.warn({ err: error, devices: devices.length }, "announcing removed devices failed");
    });
  }

  private async listen(
    channel: string,
    onMessage: (message: Buffer) => void,
    events: ChannelEvents,
    what: string,
  ): Promise<void> {
    this.channels.set(channel, { events, live: true });
    await this.redis.subscribe(channel, (message) => {
      if (message[0] === this.probe[0]) {
        if (message.equals(this.probe)) this.probeArrived(channel);
        return; // another node's probe
      }
      try {
        onMessage(message);
      } catch (error) {
        this.logger.warn({ err: error }, `dropped a malformed ${what}`);
      }
    });
  }

  private interrupted(): void {
    for (const state of this.channels.values()) {
      if (!state.live) continue;
      state.live = false;
      state.events.interrupted();
    }
    this.probing ??= setInterval(() => this.probeInterrupted(), PROBE_MS);
  }

  private probeInterrupted(): void {
    const waiting = [...this.channels].filter(([, state]) => !state.live);
    if (waiting.length === 0) {
      clearInterval(this.probing!);
      this.probing = null;
      return;
    }
    // Fails while Redis is away; the next round tries again.
    for (const [channel] of waiting) this.redis.publish(channel, this.probe).catch(() => {});
  }

  private probeArrived(channel: string): void {
    const state = this.channels.get(channel);
    if (!state || state.live) return;
    state.live = true;
    state.events.resumed();
  }

  publish(nodeId: string, fanouts: Fanout[]): Promise<void> {
    let queued = this.pending.get(nodeId);
    if (!queued) this.pending.set(nodeId, (queued = { fanouts: [], published: Promise.withResolvers<void>() }));
    queued.fanouts.push(...fanouts);
    this.scheduleFlush();
    return queued.published.promise;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /** Sends what is queued and stops probing; the Redis link is its owner's to close (presence shares it). */
  async close(): Promise<void> {
    this.flush();
    if (this.probing) clearInterval(this.probing);
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const [nodeId, { fanouts, published }] of this.pending) {
      this.redis.publish(nodeChannel(nodeId), encode(fanouts)).then(() => published.resolve(), published.reject);
    }
    this.pending.clear();
    if (this.pendingNotices.length > 0) {
      const batch = encodeNotices(this.nodeId, this.pendingNotices.splice(0));
      this.redis.publish(NOTICES_CHANNEL, batch).catch((error: unknown) => {
        this.logger.warn({ err: error }, "notice publish failed; those notices are not seen on other nodes");
      });
    }
  }
}

interface PendingPublish {
  fanouts: Fanout[];
  /** Settles with the publish. */
  published: PromiseWithResolvers<void>;
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
