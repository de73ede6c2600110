import { createClient, createCluster } from "redis";
import type { Logger } from "pino";

/** What a node uses a Redis connection for: presence, limits and publishing (commands), or its channels (subscriber). */
export type RedisRole = "commands" | "subscriber";


export interface RedisConnectionOptions {
  nodeId: string;
  logger: Logger;
  /** Told of every error a connection reports (Metrics.redisErrors). */
  onError?: (role: RedisRole) => void;
  /** Told each time a connection, having lost Redis, begins to reconnect (Metrics.redisReconnects). */
  onReconnect?: (role: RedisRole) => void;
}

/**
 * A node's link to Redis, one server or a cluster alike: a commands connection, and pub/sub on channels. On one Redis,
 * pub/sub is classic PUBLISH/SUBSCRIBE on a connection of its own; on a cluster it is sharded (SPUBLISH/SSUBSCRIBE,
 * Redis 7): a channel lives on the shard that owns its slot, so a publish costs that shard alone rather than every
 * shard, and node-redis follows a channel when its slot moves or its shard fails over.
 */
export interface RedisLink {
  get(key: string): Promise<string | null>;
  /** SET, with an expiry when `ttlSeconds` is given. */
  set(key: string, value: string, ttlSeconds?: number): Promise<void>;
  /** EVAL of a script on its keys (one slot on a cluster). */
  evaluate(script: string, keys: string[], args: string[]): Promise<unknown>;
  /** The node-redis client itself, for rate-limiter-flexible's RateLimiterRedis (it drives node-redis's API). */
  readonly limiterStore: object;
  publish(channel: string, message: Buffer): Promise<unknown>;
  /** Delivers the channel's messages to `listener`, again after every reconnect (node-redis subscribes again). */
  subscribe(channel: string, listener: (message: Buffer) => void): Promise<void>;
  /**
   * Calls `listener` whenever a connection that carries subscriptions was lost: messages published meanwhile were
   * missed. (Whether the subscriptions are back is for the caller to check, by a message of its own.)
   */
  onSubscriptionLost(listener: () => void): void;
  /** Calls `listener` each time the commands connection is (again) ready, e.g. after Redis came back empty. */
  onReady(listener: () => void): void;
  close(): Promise<void>;
}

/**
 * `REDIS_URL`: `redis://` or `rediss://` for one Redis; `redis+cluster://host:port,host:port,…` (`rediss+cluster://`
 * with TLS) for a Redis Cluster, naming some of its nodes to discover the rest from (credentials, given before the
 * first host, apply to every node). Returns the node URLs, or null when the text is neither.
 */
export function parseRedisUrl(text: string): { cluster: boolean; urls: string[] } | null {
  const match = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^/?#]+)\/?$/.exec(text);
  if (match) {
    const [, scheme, credentials, hosts] = match;
    const urls = hosts!.split(",").map((host) => `${scheme}://${credentials ? `${credentials}@` : ""}${host}`);
    return urls.every(isRedisUrl) ? { cluster: true, urls } : null;
  }
  return isRedisUrl(text) ? { cluster: false, urls: [text] } : null;
}

function isRedisUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === "redis:" || url.protocol === "rediss:") && url.hostname !== "";
  } catch {
    return false;
  }
}

/**
 * Tries again 50 ms after a loss, then a little later each time, every half second at most, forever: live routing
 * is back within about that long of Redis, and a few connection attempts a second cost Redis nothing.
 */
const reconnectStrategy = (retries: number) => Math.min(50 * (retries + 1), 500);

/** Connects to the Redis or Redis Cluster `REDIS_URL` names (parseRedisUrl), logging and counting what goes wrong. */
export async function connectRedis(redisUrl: string, options: RedisConnectionOptions): Promise<RedisLink> {
  const parsed = parseRedisUrl(redisUrl);
  if (!parsed) throw new Error(`REDIS_URL is not a Redis or Redis Cluster URL: ${redisUrl}`);
  const { nodeId, logger } = options;
  const failed = (role: RedisRole) => (error: Error) => {
    options.onError?.(role);
    logger.warn({ err: error, role }, "redis connection error");
  };
  // Commands fail at once while Redis is away (routing is best effort, and the limits fall back to memory) rather
  // than queue up; subscriptions wait for it.
  const clientOptions = (role: RedisRole) => ({
    name: `palaver-${nodeId}-${role}`, // names the node and role in CLIENT LIST
    disableOfflineQueue: role === "commands",
    socket: { reconnectStrategy },
  });
  return parsed.cluster
    ? connectCluster(parsed.urls, clientOptions("commands"), failed, options)
    : connectOne(parsed.urls[0]!, clientOptions, failed, options);
}

async function connectOne(
  url: string,
  clientOptions: (role: RedisRole) => object,
  failed: (role: RedisRole) => (error: Error) => void,
  options: RedisConnectionOptions,
): Promise<RedisLink> {
  const commands = createClient({ url, ...clientOptions("commands") });
  const subscriber = commands.duplicate(clientOptions("subscriber"));
  for (const [client, role] of [
    [commands, "commands"],
    [subscriber, "subscriber"],
  ] as const) {
    client.on("error", failed(role));
    client.on("reconnecting", () => options.onReconnect?.(role));
  }
  await Promise.all([commands.connect(), subscriber.connect()]);
  return {
    ...keyCommands(commands),
    limiterStore: commands,
    publish: (channel, message) => commands.publish(channel, message),
    subscribe: (channel, listener) => subscriber.subscribe(channel, listener, true),
    onSubscriptionLost: (listener) => subscriber.on("reconnecting", listener),
    onReady: (listener) => commands.on("ready", listener),
    async close() {
      await Promise.allSettled([commands.close(), subscriber.close()]);
    },
  };
}

async function connectCluster(
  urls: string[],
  defaults: object,
  failed: (role: RedisRole) => (error: Error) => void,
  options: RedisConnectionOptions,
): Promise<RedisLink> {
  // One cluster client: node-redis keeps a connection per shard for commands and one per shard for its sharded
  // subscriptions, and moves a subscription when its slot moves. Its node events stand for both roles' connections.
  const cluster = createCluster({ rootNodes: urls.map((url) => ({ url })), defaults });
  cluster.on("error", failed("commands"));
  cluster.on("node-error", failed("commands"));
  cluster.on("node-reconnecting", () => options.onReconnect?.("commands"));
  await cluster.connect();
  return {
    ...keyCommands(cluster),
    limiterStore: cluster,
    publish: (channel, message) => cluster.sPublish(channel, message),
    subscribe: (channel, listener) => cluster.sSubscribe(channel, listener, true),
    onSubscriptionLost(listener) {
      cluster.on("node-reconnecting", listener);
      cluster.on("node-disconnect", listener);
      cluster.on("sharded-channel-moved-error", listener);
    },
    onReady: (listener) => cluster.on("node-ready", listener),
    async close() {
      await cluster.close();
    },
  };
}

/** The key commands presence uses, the same on one Redis and on a cluster (which routes each by its key's slot). */
function keyCommands(client: {
  get(key: string): Promise<string | null>;
  set(key: string, value: string, options?: { EX: number }): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}): Pick<RedisLink, "get" | "set" | "evaluate"> {
  return {
    get: (key) => client.get(key),
    async set(key, value, ttlSeconds) {
      await client.set(key, value, ttlSeconds === undefined ? undefined : { EX: ttlSeconds });
    },
    evaluate: (script, keys, args) => client.eval(script, { keys, arguments: args }),
  };
}
