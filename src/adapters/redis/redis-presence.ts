import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Presence } from "../../ports/routing.js";
import type { RedisLink } from "./connect.js";

// Deletes a device's record only when it still names the given holder (a newer connection elsewhere must not be
// erased).
const releaseScript = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export interface RedisPresenceOptions {
  nodeId: string;
  /** This node's liveness key lives this long unless refreshed: how long a dead node's devices stay routed to it. */
  ttlSeconds: number;
  /** How often this node refreshes its liveness key (well under ttlSeconds). */
  heartbeatMs: number;
  /** How long locate() trusts what it last read of a node's liveness. */
  livenessCacheMs: number;
}

/** How long restore() waits between attempts while Redis does not answer, and how often failed claims are retried. */
const RESTORE_RETRY_MS = 200;

/**
 * Where each connected device is, in Redis. A device's record (`palaver:dev:{key}` → this node's holder id) is
 * written when its stream opens and deleted when it closes; it has no expiry. Whether the node is still there is one
 * key per node (`palaver:alive:{node}` → holder id) that its heartbeat keeps alive, so Redis writes grow with
 * connects and disconnects, not with the devices connected. The holder id is the node id and a value drawn at start:
 * records left by a node that died count as offline once its liveness key expires, and stay offline when a node with
 * the same id starts again (which deletes such a record when it comes upon one; a record of a node that is simply gone
 * stays until its device connects again, a hundred bytes). Keys are per device and per node, so they spread over
 * Redis Cluster slots. When Redis comes back empty after a restart, restore() writes the liveness key and then every
 * record of this node again.
 */
export class RedisPresence implements Presence {
  private readonly held = new Set<string>();
  /** Held devices whose record a claim failed to write (Redis, or the shard of its key, did not answer). */
  private readonly unwritten = new Set<string>();
  private rewriting: NodeJS.Timeout | null = null;
  private readonly holder: string;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly liveness = new Map<string, Liveness>();
  /** Numbers each locate(), telling what it read itself from what an earlier one read in the same millisecond. */
  private lookups = 0;
  private closed = false;

  constructor(
    private readonly redis: RedisLink,
    private readonly options: RedisPresenceOptions,
    private readonly logger: Logger,
  ) {
    this.holder = `${options.nodeId}/${randomBytes(6).toString("hex")}`;
    this.heartbeat = setInterval(() => void this.beat(), options.heartbeatMs).unref();
    redis.onReady(() => void this.beat());
  }

  /** Says this node is alive, before any record names it. */
  async start(): Promise<void> {
    await this.writeAlive();
  }

  /**
   * Writes the device's record. When Redis does not answer, the record is written again every RESTORE_RETRY_MS until
   * it is (or the device is released): no heartbeat rewrites records, so a failed claim would otherwise leave the
   * device unrouted until it reconnects.
   */
  async claim(deviceKey: string): Promise<void> {
    this.held.add(deviceKey);
    try {
      await this.redis.set(deviceRecord(deviceKey), this.holder);
    } catch (error) {
      this.unwritten.add(deviceKey);
      this.rewriting ??= setInterval(() => void this.writeUnwritten(), RESTORE_RETRY_MS).unref();
      throw error;
    }
  }

  private async writeUnwritten(): Promise<void> {
    for (const deviceKey of this.unwritten) {
      if (!this.held.has(deviceKey)) this.unwritten.delete(deviceKey);
    }
    const keys = [...this.unwritten];
    const written = await Promise.allSettled(keys.map((key) => this.redis.set(deviceRecord(key), this.holder)));
    written.forEach((result, i) => {
      if (result.status === "fulfilled") this.unwritten.delete(keys[i]!);
    });
    if (this.unwritten.size === 0 && this.rewriting) {
      clearInterval(this.rewriting);
      this.rewriting = null;
    }
  }

  async release(deviceKey: string): Promise<void> {
    this.held.delete(deviceKey);
    await this.deleteRecord(deviceKey, this.holder);
  }

  async locate(deviceKeys: readonly string[]): Promise<Map<string, string>> {
    // One GET per key (node-redis writes those of one turn together), so the keys may live in different slots.
    const holders = await Promise.all(deviceKeys.map((key) => this.redis.get(deviceRecord(key))));
    const named = holders.flatMap((h) => (typeof h === "string" ? [h] : []));
    const lookup = ++this.lookups;
    const cachedSince = Date.now() - this.options.livenessCacheMs;
    const alive = await this.aliveHolders(named.map(nodeOf), lookup, (known) => known.readAt < cachedSince);
    // A record of another run than the one last read alive, or of a node last read dead, may be newer than that read
    // (the node started again, or wrote its records back after Redis lost them): its liveness is read again before
    // the record is judged, or a device's fresh record would be skipped, or deleted as an earlier run's.
    const doubtful = named.filter((h) => alive.get(nodeOf(h)) !== h).map(nodeOf);
    if (doubtful.length > 0) {
      const reread = await this.aliveHolders(doubtful, lookup, (known) => known.lookup !== lookup);
      for (const [node, holder] of reread) alive.set(node, holder);
    }
    const nodes = new Map<string, string>();
    holders.forEach((holder, i) => {
      if (typeof holder !== "string") return;
      const node = nodeOf(holder);
      if (alive.get(node) === holder) nodes.set(deviceKeys[i]!, node);
      // Left by an earlier run of a node that is running again. (A node without a liveness key may only be cut off
      // from Redis for a moment: its records stay.)
      else if (alive.get(node)) this.deleteRecord(deviceKeys[i]!, holder).catch(() => {});
    });
    return nodes;
  }

  async restore(): Promise<void> {
    for (;;) {
      try {
        // The liveness key first: a record is only ever found with its node alive.
        await this.writeAlive();
        await Promise.all([...this.held].map((key) => this.redis.set(deviceRecord(key), this.holder)));
        return;
      } catch (error) {
        if (this.closed) throw error;
        await new Promise((resolve) => setTimeout(resolve, RESTORE_RETRY_MS));
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.rewriting) clearInterval(this.rewriting);
    const keys = [...this.held];
    this.held.clear();
    // Gone at once for everyone, rather than when the liveness key expires.
    await Promise.all([
      this.redis.evaluate(releaseScript, [aliveKey(this.options.nodeId)], [this.holder]),
      ...keys.map((key) => this.deleteRecord(key, this.holder)),
    ]);
  }

  /** The holder id alive (as last read by `lookup`, reading again what is `stale`) of each node that has one. */
  private async aliveHolders(
    nodes: string[],
    lookup: number,
    stale: (known: Liveness) => boolean,
  ): Promise<Map<string, string>> {
    const now = Date.now();
    const toRead = [...new Set(nodes)].filter((node) => {
      const known = this.liveness.get(node);
      return !known || stale(known);
    });
    const read = await Promise.all(toRead.map((node) => this.redis.get(aliveKey(node))));
    toRead.forEach((node, i) => {
      const holder = read[i];
      this.liveness.set(node, { holder: typeof holder === "string" ? holder : null, readAt: now, lookup });
    });
    const alive = new Map<string, string>();
    for (const node of nodes) {
      const holder = this.liveness.get(node)?.holder;
      if (holder) alive.set(node, holder);
    }
    return alive;
  }

  private async beat(): Promise<void> {
    if (this.closed) return;
    try {
      await this.writeAlive();
    } catch (error) {
      this.logger.warn({ err: error }, "presence heartbeat failed");
    }
  }

  private async writeAlive(): Promise<void> {
    await this.redis.set(aliveKey(this.options.nodeId), this.holder, this.options.ttlSeconds);
  }

  private async deleteRecord(deviceKey: string, holder: string): Promise<void> {
    await this.redis.evaluate(releaseScript, [deviceRecord(deviceKey)], [holder]);
  }
}

/** A node's liveness as last read: the holder id alive (or null: none), when, and by which lookup. */
interface Liveness {
  holder: string | null;
  readAt: number;
  lookup: number;
}

function deviceRecord(deviceKey: string): string {
  return `palaver:dev:{${deviceKey}}`;
}

function aliveKey(nodeId: string): string {
  return `palaver:alive:{${nodeId}}`;
}

/** The node id of a holder id (`node/instance`; node ids have no "/"). */
function nodeOf(holder: string): string {
  return holder.slice(0, holder.lastIndexOf("/"));
}
