import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Presence } from "../../ports/routing.js";

// Deletes the device's record only when this node still holds it (a newer connection elsewhere must not be erased).
const releaseScript = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export interface RedisPresenceOptions {
  nodeId: string;
  /** A record lives this long unless its node refreshes it: how long a dead node's devices stay routed to it. */
  ttlSeconds: number;
  /** How often this node refreshes its records (well under ttlSeconds). */
  heartbeatMs: number;
}

/** How long restore() waits between attempts while Redis does not answer. */
const RESTORE_RETRY_MS = 200;

/**
 * Where each connected device is, in Redis: one key per device (`palaver:dev:{key}` → node id) with an expiry that
 * this node's heartbeat keeps pushing back. Keys are per device so they spread over Redis Cluster slots. When Redis
 * comes back empty after a restart, the heartbeat, the reconnect handler and restore() write every record again.
 */
export class RedisPresence implements Presence {
  private readonly held = new Set<string>();
  private readonly heartbeat: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly redis: Redis,
    private readonly options: RedisPresenceOptions,
    private readonly logger: Logger,
  ) {
    this.heartbeat = setInterval(() => void this.refreshAll(), options.heartbeatMs).unref();
    redis.on("ready", () => void this.refreshAll());
  }

  async claim(deviceKey: string): Promise<void> {
    this.held.add(deviceKey);
    await this.redis.set(deviceRecord(deviceKey), this.options.nodeId, "EX", this.options.ttlSeconds);
  }

  async release(deviceKey: string): Promise<void> {
    this.held.delete(deviceKey);
    await this.redis.eval(releaseScript, 1, deviceRecord(deviceKey), this.options.nodeId);
  }

  async locate(deviceKeys: readonly string[]): Promise<Map<string, string>> {
    // One GET per key in one pipeline, rather than MGET, so it also works when the keys live in different cluster slots.
    const pipeline = this.redis.pipeline();
    for (const key of deviceKeys) pipeline.get(deviceRecord(key));
    const replies = (await pipeline.exec()) ?? [];
    const nodes = new Map<string, string>();
    replies.forEach(([error, node], i) => {
      if (!error && typeof node === "string") nodes.set(deviceKeys[i]!, node);
    });
    return nodes;
  }

  async restore(): Promise<void> {
    for (;;) {
      try {
        await this.writeAll();
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
    const keys = [...this.held];
    this.held.clear();
    if (keys.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const key of keys) pipeline.eval(releaseScript, 1, deviceRecord(key), this.options.nodeId);
    await pipeline.exec();
  }

  private async refreshAll(): Promise<void> {
    if (this.redis.status !== "ready") return;
    try {
      await this.writeAll();
    } catch (error) {
      this.logger.warn({ err: error }, "presence heartbeat failed");
    }
  }

  private async writeAll(): Promise<void> {
    if (this.held.size === 0) return;
    const pipeline = this.redis.pipeline();
    for (const key of this.held) pipeline.set(deviceRecord(key), this.options.nodeId, "EX", this.options.ttlSeconds);
    const replies = (await pipeline.exec()) ?? [];
    const failed = replies.find(([error]) => error);
    if (failed) throw failed[0];
  }
}

function deviceRecord(deviceKey: string): string {
  return `palaver:dev:{${deviceKey}}`;
}
