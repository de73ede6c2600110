/**
 * The routing ports: where each connected device is, and how an event reaches a device held by another node.
 * One node needs neither (every device is local); several nodes share Redis. Both are accelerators: an event they
 * lose is still in the device's inbox and is delivered on its next connect.
 */
import type { Fanout, RemovedDevice } from "./db.js";

export interface Presence {
  /** Records that this node holds the device (refreshed by a heartbeat until released). */
  claim(deviceKey: string): Promise<void>;
  /** Forgets the device, if this node still holds it. */
  release(deviceKey: string): Promise<void>;
  /** The node holding each of these devices, for those some node holds. */
  locate(deviceKeys: readonly string[]): Promise<Map<string, string>>;
  /** Writes every record this node holds again (the store may have lost them), retrying until it takes them. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

/** An event that is never stored (a receipt, typing), for the online devices of some users, wherever they are. */
export interface Notice {
  /** A serialized palaver.chat.v1.Event with event_id 0, written to each stream as it is. */
  body: Uint8Array;
  userIds: readonly string[];
  /** The device whose action caused it, which does not get it. */
  exceptDeviceKey?: string;
}

export interface Bus {
  readonly nodeId: string;
  /**
   * Hands this node's handler the fanouts other nodes publish for its devices (a hand-off), and says when the channel
   * was lost (hand-offs meanwhile are lost) and when it is back.
   */
  subscribe(handler: (fanouts: Fanout[]) => void, link: { interrupted(): void; resumed(): void }): Promise<void>;
  /**
   * Queues fanouts (each with only that node's inbox entries) for one node's channel; fanouts queued in the same tick
   * go out in one publish. Resolves once Redis took that publish, rejects when it failed (the caller may try again;
   * the inbox keeps the events either way).
   */
  publish(nodeId: string, fanouts: Fanout[]): Promise<void>;
  /**
   * Tells every node, this one included, that these devices were removed, so that each forgets their keys and ends
   * their streams. Best effort, as hand-offs are: a node that lost the channel meanwhile is told `resumed` and checks.
   */
  announceRemovals(devices: readonly RemovedDevice[]): void;
  /**
   * Queues notices for every other node (one shared channel; those queued in the same tick go out in one publish).
   * Best effort: a notice lost on the way is simply not seen, as it would not be by a device offline at the time.
   */
  publishNotices(notices: readonly Notice[]): void;
  /** Hands this node's handler the notices other nodes publish. */
  subscribeNotices(handler: (notices: Notice[]) => void): Promise<void>;
  /** Hands this node's handler the removals every node announces, and says when the channel is back after a loss. */
  subscribeRemovals(handler: (devices: RemovedDevice[]) => void, link: { resumed(): void }): Promise<void>;
  close(): Promise<void>;
}
