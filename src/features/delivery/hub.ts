import type { Logger } from "pino";
import { Refusal } from "../../errors.js";
import type { Fanout, InboxEntry, InboxStore } from "../../ports/db.js";
import type { Bus, Notice, Presence } from "../../ports/routing.js";
import type { Metrics } from "../operations/metrics.js";
import { DeviceStream, type DeviceStreamOptions } from "./device-stream.js";
import type { InboxCap } from "./inbox-cap.js";

/** Removed devices' keys kept to refuse late streams: far more than are removed in the moment a stream takes to open. */
const REMOVED_KEYS_KEPT = 10_000;

export interface HandOffRetry {
  /** How long after a hand-off failed (Redis, or a shard of it, unreachable) it is tried again. */
  delayMs: number;
  /** How long a failed hand-off is kept trying; after that its devices have likely reconnected and read their inbox. */
  forMs: number;
  /** Most failed hand-offs kept at once (the inbox has the rest). */
  max: number;
}

export interface Routing {
  presence: Presence;
  bus: Bus;
}

/**
 * Holds this node's open device streams and pushes freshly stored events to them: to the stream on this node, or,
 * with routing (several nodes), through the bus to the node that holds the device, one publish per node. Pushing is
 * best effort by design: an event that does not arrive live stays in the inbox and comes with the next connect.
 */
export class DeliveryHub {
  private readonly streams = new Map<string, DeviceStream>();
  /** The same streams by user id, for notices. */
  private readonly byUser = new Map<string, Set<DeviceStream>>();
  /** Devices whose streams opened since takeSeenDevices() last asked. */
  private readonly opened = new Set<string>();
  /** Keys of recently removed devices, oldest first: a stream that opens for one after its removal ends at once. */
  private readonly removed = new Set<string>();
  /** Whether hand-offs from other nodes are interrupted, and how many times they have been. */
  private busDown = false;
  private busOutages = 0;

  constructor(
    private readonly db: InboxStore,
    private readonly streamOptions: DeviceStreamOptions,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    private readonly routing: Routing | null,
    private readonly inboxCap: InboxCap | null,
    private readonly retry: HandOffRetry,
  ) {}

  /** Hand-offs that failed, oldest first, with when they first failed; tried again every retry.delayMs. */
  private failedHandOffs: { fanout: Fanout; entries: InboxEntry[]; since: number }[] = [];
  private retryTimer: NodeJS.Timeout | null = null;

  /** Starts taking hand-offs from other nodes. */
  async start(): Promise<void> {
    await this.routing?.bus.subscribeNotices((notices) => {
      this.notifyHere(notices);
    });
    await this.routing?.bus.subscribe((fanouts) => this.receive(fanouts), {
      // While the bus is down, other nodes' events for these devices are lost on the way; once it is back, each
      // stream reads what it missed from the inbox.
      interrupted: () => {
        this.busDown = true;
        this.busOutages++;
        for (const stream of this.streams.values()) stream.markGap();
      },
      resumed: () => void this.catchUpAfterOutage(),
    });
  }

  /**
   * Waits until this node's presence records are written again (Redis may have come back empty), and only then reads
   * the inboxes: a sender that looked a device up before that found no node and left the event in the inbox, where
   * this read finds it; a sender after that hands it over.
   */
  private async catchUpAfterOutage(): Promise<void> {
    const outage = this.busOutages;
    try {
      await this.routing!.presence.restore();
    } catch (error) {
      this.logger.warn({ err: error }, "presence restore after a bus outage failed; the streams catch up anyway");
    }
    if (this.busOutages !== outage) return; // interrupted again: the next resume catches up
    this.busDown = false;
    for (const stream of this.streams.values()) {
      stream.catchUp().catch((error: unknown) => this.logger.warn({ err: error }, "catch-up after a bus outage failed"));
    }
  }

  get connectedDevices(): number {
    return this.streams.size;
  }

  /**
   * Opens the device's stream, ending the one it had (a device has one stream; the newer wins). The stream is
   * registered (and its presence claimed) before it reads its inbox, so nothing stored meanwhile is missed.
   */
  async open(device: { deviceKey: string; userId: string }): Promise<DeviceStream> {
    const { deviceKey, userId } = device;
    if (this.removed.has(deviceKey)) throw deviceRemoved();
    this.opened.add(deviceKey);
    const stream = new DeviceStream(deviceKey, userId, this.db, this.streamOptions);
    const previous = this.streams.get(deviceKey);
    this.streams.set(deviceKey, stream);
    if (previous) this.forgetUserStream(previous);
    let userStreams = this.byUser.get(userId);
    if (!userStreams) this.byUser.set(userId, (userStreams = new Set()));
    userStreams.add(stream);
    previous?.end(new Refusal("replaced", "this device opened a newer stream, which replaces this one"));
    if (this.busDown) stream.markGap();
    if (this.routing) {
      try {
        await this.routing.presence.claim(deviceKey);
      } catch (error) {
        // Live delivery from other nodes waits for the next heartbeat; the inbox still has everything.
        this.logger.warn({ err: error, deviceKey }, "presence claim failed");
      }
    }
    return stream;
  }

  close(stream: DeviceStream): void {
    stream.end();
    if (this.streams.get(stream.deviceKey) !== stream) return;
    this.streams.delete(stream.deviceKey);
    this.forgetUserStream(stream);
    this.routing?.presence.release(stream.deviceKey).catch((error: unknown) => {
      this.logger.warn({ err: error, deviceKey: stream.deviceKey }, "presence release failed");
    });
  }

  private forgetUserStream(stream: DeviceStream): void {
    const userStreams = this.byUser.get(stream.userId);
    userStreams?.delete(stream);
    if (userStreams?.size === 0) this.byUser.delete(stream.userId);
  }

  /**
   * Writes a notice (a receipt, typing) to the open streams of its users: this node's at once, other nodes' through the
   * bus. Never stored: a device offline now does not get it later.
   */
  notify(notices: readonly Notice[]): void {
    this.notifyHere(notices);
    this.routing?.bus.publishNotices(notices);
  }

  /** A stream's notices of one batch go out together, in one write rather than one each. */
  private notifyHere(notices: readonly Notice[]): void {
    const byStream = new Map<DeviceStream, Uint8Array[]>();
    for (const notice of notices) {
      for (const userId of notice.userIds) {
        for (const stream of this.byUser.get(userId) ?? []) {
          if (stream.deviceKey === notice.exceptDeviceKey) continue;
          const bodies = byStream.get(stream);
          if (bodies) bodies.push(notice.body);
          else byStream.set(stream, [notice.body]);
        }
      }
    }
    for (const [stream, bodies] of byStream) stream.pushNotices(bodies);
  }

  /** Ends every stream, e.g. at shutdown: clients reconnect (to another node) and resume from their inbox. */
  endAll(reason: Refusal): void {
    for (const stream of this.streams.values()) stream.end(reason);
  }

  /** Ends the streams of removed devices with UNAUTHENTICATED, and any that opens for one of them later. */
  endRemoved(deviceKeys: readonly string[]): void {
    for (const deviceKey of deviceKeys) {
      this.removed.add(deviceKey);
      this.streams.get(deviceKey)?.end(deviceRemoved());
    }
    // The keys only guard against a stream that authenticated just before the removal and opens just after it.
    for (const oldest of this.removed) {
      if (this.removed.size <= REMOVED_KEYS_KEPT) break;
      this.removed.delete(oldest);
    }
  }

  /** The devices that had a stream open on this node since the last call (those open now included). */
  takeSeenDevices(): string[] {
    const seen = [...new Set([...this.opened, ...this.streams.keys()])];
    this.opened.clear();
    return seen;
  }

  /** The devices with a stream open on this node. */
  get openDevices(): string[] {
    return [...this.streams.keys()];
  }

  /**
   * Pushes a stored event to every recipient device that is connected somewhere: this node's streams at once, other
   * nodes' devices through the bus.
   */
  async deliver(fanout: Fanout): Promise<void> {
    this.inboxCap?.written(fanout.entries);
    const remote: InboxEntry[] = [];
    for (const entry of fanout.entries) {
      const stream = this.streams.get(entry.deviceKey);
      if (stream) stream.pushEvent(fanout, entry.eventId);
      else remote.push(entry);
    }
    if (this.routing && remote.length > 0) await this.handOff(fanout, remote);
  }

  /**
   * Hands the entries' devices their event through their nodes. When Redis does not answer (restarting, or a shard
   * failing over while the others serve), the hand-off is tried again for a while: the receiving node may not have
   * noticed anything (its channel's shard is fine), so nothing else would bring it the event before a reconnect.
   */
  private async handOff(fanout: Fanout, entries: InboxEntry[], since = Date.now()): Promise<void> {
    const { presence, bus } = this.routing!;
    let nodes: Map<string, string>;
    try {
      nodes = await presence.locate(entries.map((e) => e.deviceKey));
    } catch (error) {
      return this.handOffFailed(error, fanout, entries, since);
    }
    const perNode = new Map<string, InboxEntry[]>();
    for (const entry of entries) {
      const node = nodes.get(entry.deviceKey);
      if (!node || node === bus.nodeId) continue;
      let list = perNode.get(node);
      if (!list) perNode.set(node, (list = []));
      list.push(entry);
    }
    for (const [node, list] of perNode) {
      // Not awaited: the sender's answer does not wait for Redis to take the publish. One that fails (a Redis Cluster
      // shard still coming back, after the receiving node had caught up from its inbox) is tried again like a failed
      // lookup, for that node's entries; a device that gets an event twice drops the repeat.
      bus
        .publish(node, [{ body: fanout.body, entries: list, sentAtMs: fanout.sentAtMs }])
        .then(() => this.metrics.handoffs.inc({ direction: "out" }, list.length))
        .catch((error: unknown) => this.handOffFailed(error, fanout, list, since));
    }
  }

  private handOffFailed(error: unknown, fanout: Fanout, entries: InboxEntry[], since: number): void {
    this.logger.warn({ err: error }, "hand-off to other nodes failed; tried again shortly (the inbox keeps the events)");
    if (this.failedHandOffs.length >= this.retry.max) this.failedHandOffs.shift();
    this.failedHandOffs.push({ fanout, entries, since });
    this.retryTimer ??= setTimeout(() => void this.retryHandOffs(), this.retry.delayMs).unref();
  }

  private async retryHandOffs(): Promise<void> {
    this.retryTimer = null;
    const cutoff = Date.now() - this.retry.forMs;
    const due = this.failedHandOffs.filter((h) => h.since > cutoff);
    this.failedHandOffs = [];
    // In order, each once; one that fails again goes back in the list (and schedules the next round).
    for (const { fanout, entries, since } of due) await this.handOff(fanout, entries, since);
  }

  private receive(fanouts: Fanout[]): void {
    for (const fanout of fanouts) {
      for (const entry of fanout.entries) this.streams.get(entry.deviceKey)?.pushEvent(fanout, entry.eventId);
      this.metrics.handoffs.inc({ direction: "in" }, fanout.entries.length);
    }
  }
}

function deviceRemoved(): Refusal {
  return new Refusal("unauthenticated", "this device was removed from its user's devices: sign in again");
}
