import type { Clock } from "../ports/clock.js";
import { type DeviceName, type DeviceStore, deviceNameKey } from "../ports/db.js";
import { GroupCommitter } from "../features/group-commit.js";

export interface DeviceDirectoryOptions {
  /** Most devices looked up or registered by one statement. */
  maxBatch: number;
  /** Registration statements running at once. */
  maxInFlight: number;
  /** Keys kept in memory. */
  maxCached?: number;
  /** Told each batch's size (a metric). */
  onBatch?: (size: number) => void;
}

/**
 * The key of each (user, device name) pair, recording the device the first time it is seen. Every authenticated call
 * needs it, so recent keys are kept in memory (a key never changes once given). Misses share statements (group commit,
 * as sends and acks do): 10,000 phones connecting at once are a few dozen statements, not 10,000 transactions, and the
 * streams of one device that miss together wait for one lookup.
 */
export class DeviceDirectory {
  /** Least recently used first. */
  private readonly known = new Map<string, string>();
  /** Lookups submitted and not yet answered, by pair. */
  private readonly pending = new Map<string, Promise<string>>();
  private readonly committer: GroupCommitter<DeviceName, string>;
  private readonly maxCached: number;

  constructor(db: DeviceStore, clock: Clock, options: DeviceDirectoryOptions) {
    this.maxCached = options.maxCached ?? 100_000;
    this.committer = new GroupCommitter(
      (batch: DeviceName[]) => db.registerDevices(batch, clock.now()),
      options.maxBatch,
      options.maxInFlight,
      { onBatch: options.onBatch },
    );
  }

  resolve(userId: string, deviceName: string): Promise<string> {
    const id = deviceNameKey({ userId, deviceName });
    const cached = this.known.get(id);
    if (cached !== undefined) {
      // Refresh its place so the least recently used pair is the one evicted.
      this.known.delete(id);
      this.known.set(id, cached);
      return Promise.resolve(cached);
    }
    let lookup = this.pending.get(id);
    if (!lookup) {
      lookup = this.committer
        .submit({ userId, deviceName })
        .then((key) => {
          this.known.set(id, key);
          if (this.known.size > this.maxCached) this.known.delete(this.known.keys().next().value!);
          return key;
        })
        // A failed lookup is forgotten with it: the next call tries again.
        .finally(() => this.pending.delete(id));
      this.pending.set(id, lookup);
    }
    return lookup;
  }
}
