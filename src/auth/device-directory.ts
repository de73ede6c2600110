import type { Clock } from "../ports/clock.js";
import type { DeviceStore } from "../ports/db.js";

/**
 * The key of each (user, device name) pair, recording the device the first time it is seen. Every authenticated call
 * needs it, so recent keys are kept in memory (a key never changes once given).
 */
export class DeviceDirectory {
  private readonly known = new Map<string, string>();

  constructor(
    private readonly db: DeviceStore,
    private readonly clock: Clock,
    private readonly maxCached = 100_000,
  ) {}

  async resolve(userId: string, deviceName: string): Promise<string> {
    const id = `${userId}\n${deviceName}`;
    const cached = this.known.get(id);
    if (cached !== undefined) {
      // Refresh its place so the least recently used pair is the one evicted.
      this.known.delete(id);
      this.known.set(id, cached);
      return cached;
    }
    const key = await this.db.registerDevice(userId, deviceName, this.clock.now());
    this.known.set(id, key);
    if (this.known.size > this.maxCached) this.known.delete(this.known.keys().next().value!);
    return key;
  }
}
