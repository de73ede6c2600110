import { Refusal } from "../errors.js";
import type { Clock } from "../ports/clock.js";
import {
  type DeviceName,
  type DeviceRegistration,
  type DeviceSignIn,
  type DeviceStore,
  deviceNameKey,
} from "../ports/db.js";
import { GroupCommitter } from "../features/group-commit.js";
import { LruMap } from "../lru-map.js";

export interface DeviceDirectoryOptions {
  /** Most devices looked up or registered by one statement. */
  maxBatch: number;
  /** Registration statements running at once. */
  maxInFlight: number;
  /** Keys kept in memory. */
  maxCached?: number;
  /** Told each batch's size (a metric). */
  onBatch?: (size: number) => void;
  /** The most devices a user may have (MAX_DEVICES_PER_USER); unset, any number. */
  maxDevicesPerUser?: number;
}

/** A device's key, and the time its tokens must be issued at or after (its user removed it then), if any. */
interface KnownDevice {
  deviceKey: string;
  tokensNotBefore: Date | null;
}

/**
 * The key of each (user, device name) pair, recording the device the first time it is seen. Every authenticated call
 * needs it, so recent keys are kept in memory (a key never changes while its device exists; a removed device is
 * forgotten here on every node, see Devices). Misses share statements (group commit, as sends and acks do): 10,000
 * phones connecting at once are a few dozen statements, not 10,000 transactions, and the streams of one device that
 * miss together wait for one lookup.
 */
export class DeviceDirectory {
  private readonly known: LruMap<string, KnownDevice>;
  /** Lookups submitted and not yet answered, by pair and token time. */
  private readonly pending = new Map<string, Promise<KnownDevice>>();
  private readonly committer: GroupCommitter<DeviceSignIn, DeviceRegistration>;
  private readonly maxDevicesPerUser: number;
  /** Counts the calls of forget(): a lookup that ran across one may have read a device that is gone. */
  private forgets = 0;

  constructor(db: Pick<DeviceStore, "registerDevices">, clock: Clock, options: DeviceDirectoryOptions) {
    this.known = new LruMap(options.maxCached ?? 100_000);
    this.maxDevicesPerUser = options.maxDevicesPerUser ?? Number.MAX_SAFE_INTEGER;
    this.committer = new GroupCommitter(
      (batch: DeviceSignIn[]) => db.registerDevices(batch, clock.now(), this.maxDevicesPerUser),
      options.maxBatch,
      options.maxInFlight,
      { onBatch: options.onBatch },
    );
  }

  /**
   * The key of the device a token names (`issuedAt`: the token's `iat`). Refuses a token issued before the device's
   * removal by its user (UNAUTHENTICATED), and a new device of a user who has the most allowed (FAILED_PRECONDITION).
   */
  async resolve(userId: string, deviceName: string, issuedAt?: Date): Promise<string> {
    for (;;) {
      const forgets = this.forgets;
      const device = await this.lookUp({ userId, deviceName, issuedAt });
      // A device removed while it was looked up may be what the lookup read: look again.
      if (this.forgets !== forgets) continue;
      if (device.tokensNotBefore && !(issuedAt! >= device.tokensNotBefore)) throw removed();
      return device.deviceKey;
    }
  }

  /** Forgets these devices (they were removed): their next call looks them up again. */
  forget(devices: readonly DeviceName[]): void {
    this.forgets++;
    for (const device of devices) this.known.delete(deviceNameKey(device));
  }

  /** Forgets every device: removals may have been missed (the cluster's bus was down). */
  forgetAll(): void {
    this.forgets++;
    this.known.clear();
  }

  private lookUp(device: DeviceSignIn): Promise<KnownDevice> {
    const id = deviceNameKey(device);
    const cached = this.known.get(id);
    if (cached !== undefined) return Promise.resolve(cached);
    // Tokens of one device but of different ages may be answered differently (a removal refuses the older).
    const lookupId = `${id}@${device.issuedAt?.getTime() ?? ""}`;
    let lookup = this.pending.get(lookupId);
    if (!lookup) {
      const forgets = this.forgets;
      lookup = this.committer
        .submit(device)
        .then((registration) => {
          if (registration.kind === "removed") throw removed();
          if (registration.kind === "too_many_devices") throw this.tooManyDevices(device.userId);
          const known = { deviceKey: registration.deviceKey, tokensNotBefore: registration.tokensNotBefore };
          if (this.forgets === forgets) this.known.set(id, known);
          return known;
        })
        // A failed lookup is forgotten with it: the next call tries again.
        .finally(() => this.pending.delete(lookupId));
      this.pending.set(lookupId, lookup);
    }
    return lookup;
  }

  private tooManyDevices(userId: string): Refusal {
    return new Refusal(
      "not_ready",
      `user ${userId} already has ${this.maxDevicesPerUser} devices, the most allowed (MAX_DEVICES_PER_USER): ` +
        "remove one (AccountService.RemoveDevice, from another of them) before adding this one",
    );
  }
}

function removed(): Refusal {
  return new Refusal(
    "unauthenticated",
    "this device was removed by its user after the token was issued: sign in again for a new token",
  );
}
