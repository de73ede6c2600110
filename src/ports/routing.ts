/**
 * The routing ports: where each connected device is, and how an event reaches a device held by another node.
 * One node needs neither (every device is local); several nodes share Redis. Both are accelerators: an event they
 * lose is still in the device's inbox and is delivered on its next connect.
 */

/** An event for some of this node's devices, as one node hands it to another. */
export interface Handoff {
  /** A serialized palaver.chat.v1.Event with event_id 0 (StoredEvent.body). */
  body: Uint8Array;
  deliveries: { deviceKey: string; eventId: bigint }[];
}

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

export interface Bus {
  readonly nodeId: string;
  /**
   * Delivers handoffs to this node's handler, and says when the channel was lost (hand-offs meanwhile are lost) and
   * when it is back.
   */
  subscribe(handler: (handoffs: Handoff[]) => void, link: { interrupted(): void; resumed(): void }): Promise<void>;
  /** Sends handoffs to one node's channel, in one publish. */
  publish(nodeId: string, handoffs: Handoff[]): Promise<void>;
  close(): Promise<void>;
}
