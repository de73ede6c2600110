import type { Logger } from "pino";
import { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";
import type { Clock } from "../../ports/clock.js";
import type { DeviceName, DeviceRecord, DeviceStore, RemovedDevice } from "../../ports/db.js";
import type { Bus } from "../../ports/routing.js";
import type { DeliveryHub } from "../delivery/hub.js";

/** What a node keeps of device keys (auth's DeviceDirectory): a removed device must not stay in it. */
export interface DeviceKeyCache {
  forget(devices: readonly DeviceName[]): void;
  forgetAll(): void;
}

/** Stale devices removed by one statement: a first run after a long pause does not hold one huge transaction. */
const REMOVAL_BATCH = 1000;

/**
 * A user's devices: listing them, unlinking one, and removing those that have not connected for the retention
 * period. A removed device is gone from every node: its key from each node's cache and its stream from the node that
 * holds it, on this node at once and on the others through the bus.
 */
export class Devices {
  constructor(
    private readonly db: DeviceStore,
    private readonly hub: DeliveryHub,
    private readonly keys: DeviceKeyCache,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly bus: Pick<Bus, "announceRemovals" | "subscribeRemovals"> | null = null,
  ) {}

  /** Starts hearing of the devices other nodes remove. */
  async start(): Promise<void> {
    await this.bus?.subscribeRemovals((devices) => this.forgetHere(devices), {
      resumed: () => void this.catchUpAfterOutage(),
    });
  }

  list(caller: Caller): Promise<DeviceRecord[]> {
    return this.db.listDevices(caller.userId);
  }

  /** Unlinks one of the caller's user's devices: its inbox goes, its stream ends, its tokens issued until now fail. */
  async remove(caller: Caller, deviceName: string): Promise<void> {
    const removed = await this.db.removeDevice({ userId: caller.userId, deviceName }, this.clock.now());
    if (!removed) throw new Refusal("not_found", `user ${caller.userId} has no device ${deviceName}`);
    this.announce([removed]);
  }

  /**
   * The retention job's step: records which devices had a stream open on this node since its last run, then removes
   * the devices no node saw since `cutoff`. Returns how many it removed.
   */
  async removeNotSeenSince(cutoff: Date): Promise<number> {
    await this.db.markDevicesSeen(this.hub.takeSeenDevices(), this.clock.now());
    for (let removed = 0; ; ) {
      const devices = await this.db.removeDevicesSeenBefore(cutoff, REMOVAL_BATCH);
      if (devices.length > 0) this.announce(devices);
      removed += devices.length;
      if (devices.length < REMOVAL_BATCH) return removed;
    }
  }

  private announce(devices: RemovedDevice[]): void {
    this.forgetHere(devices);
    this.bus?.announceRemovals(devices);
  }

  private forgetHere(devices: readonly RemovedDevice[]): void {
    this.keys.forget(devices);
    this.hub.endRemoved(devices.map((device) => device.deviceKey));
  }

  /** Removals announced while the bus was down were missed: forget every key, and end the streams of gone devices. */
  private async catchUpAfterOutage(): Promise<void> {
    this.keys.forgetAll();
    try {
      const open = this.hub.openDevices;
      const existing = new Set(await this.db.existingDevices(open));
      this.hub.endRemoved(open.filter((deviceKey) => !existing.has(deviceKey)));
    } catch (error) {
      this.logger.warn({ err: error }, "checking open streams for removed devices after a bus outage failed");
    }
  }
}
