import { accessSync, constants } from "node:fs";
import { randomBytes } from "node:crypto";
import { parseRedisUrl } from "./adapters/redis/connect.js";
import { attachmentBytesRule as attachmentBytes, idPattern, participantsRule as participants } from "./api-rules.js";
import { defaultTtlSeconds, parseTtl } from "./auth/tokens.js";

/** Everything the server reads from its environment, validated once at start (README.md: "Configuration"). */
export interface Config {
  port: number;
  host: string;
  /** How clients reach this server (for the local blob store's URLs); unset: the address it listens on. */
  publicUrl?: string;
  dataDir: string;
  /** Unset: PGlite in dataDir. */
  databaseUrl?: string;
  /** Unset: a single node. */
  redisUrl?: string;
  /** Unset: local blobs in dataDir. */
  s3?: S3Config;
  /** Unset: generated once and kept in dataDir (see resolveAuthSecret). */
  authSecret?: string;
  /** Verifies asymmetric tokens against this key set, next to the HS256 secret. */
  authJwksUrl?: string;
  /** The longest lifetime (exp - iat) of a token the server accepts, in seconds. */
  maxTokenLifetimeSeconds: number;
  retentionDays: number;
  /** How long a Subscribe stream may be quiet before the server sends an empty response to keep it open. */
  subscribeKeepAliveSeconds: number;
  nodeId: string;
  /** Unset: cleartext (h2c and HTTP/1.1 on one port). */
  tls?: { certFile: string; keyFile: string };
  logLevel: LogLevel;
  nodeEnv: string;
  /** Who may use POST /dev/token (see createDevTokenHandler): nobody, clients on this machine, or anyone. */
  devSignIn: DevSignIn;
  limits: Limits;
}

export interface S3Config {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface Limits {
  maxParticipants: number;
  maxInboxEvents: number;
  /** Events buffered for one slow stream before the server ends it. */
  streamQueueLimit: number;
  maxAttachmentBytes: number;
  /** Sends that may share one transaction (group commit). */
  sendBatchMax: number;
  /** Messages one device may send a minute. The write limits count across the nodes when Redis is set. */
  sendsPerMinute: number;
  /** Chats created plus participant changes one device may make an hour. */
  chatChangesPerDevicePerHour: number;
  /** The same for all of one user's devices together. */
  chatChangesPerUserPerHour: number;
  /** Upload grants (CreateAttachment calls) one user may get an hour. */
  uploadsPerHour: number;
  /** Bytes those grants may declare in all, per user an hour. */
  uploadBytesPerHour: number;
  /** Ack frames one stream may send a minute; AckEvents calls one device may make a minute. */
  acksPerMinute: number;
  /** MarkRead calls and frames one device may make a minute. */
  readsPerMinute: number;
  /** SetTyping calls and frames one device may make a minute. */
  typingPerMinute: number;
  /** Devices one user may have: every message to the user is an inbox entry per device. */
  maxDevicesPerUser: number;
}

export const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];

export const devSignInModes = ["off", "local", "any"] as const;
export type DevSignIn = (typeof devSignInModes)[number];

/** Thrown by loadConfig with one line per bad variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const read = new Reader(env, problems);

  const s3Vars = ["S3_ENDPOINT", "S3_BUCKET", "S3_REGION", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"] as const;
  const s3 = read.allOrNone(s3Vars);
  const tls = read.allOrNone(["TLS_CERT_FILE", "TLS_KEY_FILE"] as const);
  if (tls) {
    for (const name of ["TLS_CERT_FILE", "TLS_KEY_FILE"] as const) read.readableFile(name);
  }
  const nodeEnv = read.string("NODE_ENV") ?? "development";

  const config: Config = {
    port: read.integer("PORT", 8080, 0, 65535),
    host: read.string("HOST") ?? "0.0.0.0",
    publicUrl: read.url("PUBLIC_URL", ["http:", "https:"]),
    dataDir: read.string("DATA_DIR") ?? "./data",
    databaseUrl: read.url("DATABASE_URL", ["postgres:", "postgresql:"]),
    redisUrl: read.redisUrl("REDIS_URL"),
    s3: s3 && {
      endpoint: read.url("S3_ENDPOINT", ["http:", "https:"]) ?? "",
      bucket: s3.S3_BUCKET,
      region: s3.S3_REGION,
      accessKeyId: s3.S3_ACCESS_KEY_ID,
      secretAccessKey: s3.S3_SECRET_ACCESS_KEY,
    },
    authSecret: read.secret("AUTH_SECRET", 32),
    authJwksUrl: read.url("AUTH_JWKS_URL", ["https:", "http:"]),
    maxTokenLifetimeSeconds: read.span("MAX_TOKEN_LIFETIME", defaultTtlSeconds),
    retentionDays: read.integer("RETENTION_DAYS", 30, 1),
    subscribeKeepAliveSeconds: read.integer("SUBSCRIBE_KEEPALIVE_SECONDS", 25, 1),
    nodeId: read.matching("NODE_ID", idPattern) ?? `node-${randomBytes(6).toString("hex")}`,
    tls: tls && { certFile: tls.TLS_CERT_FILE, keyFile: tls.TLS_KEY_FILE },
    logLevel: read.oneOf("LOG_LEVEL", logLevels) ?? "info",
    nodeEnv,
    // `npm start` signs in on localhost with no setting; nothing else can mint tokens unless told to.
    devSignIn: read.oneOf("DEV_SIGN_IN", devSignInModes) ?? (nodeEnv === "production" ? "off" : "local"),
    limits: {
      // Capped at what the API's validation rules allow (api-rules.ts): a value above them is a start-up error.
      maxParticipants: read.integer("MAX_PARTICIPANTS", 100, participants.min, participants.max, participants.rule),
      maxInboxEvents: read.integer("MAX_INBOX_EVENTS", 100_000, 1),
      streamQueueLimit: read.integer("STREAM_QUEUE_LIMIT", 10_000, 1),
      maxAttachmentBytes: read.integer(
        "MAX_ATTACHMENT_BYTES",
        attachmentBytes.max,
        1,
        attachmentBytes.max,
        attachmentBytes.rule,
      ),
      sendBatchMax: read.integer("SEND_BATCH_MAX", 256, 1),
      sendsPerMinute: read.integer("SEND_LIMIT_PER_MINUTE", 600, 1),
      // A phone creates a few chats a day, and adding a group's members is a call each: 60 an hour sets up a group of
      // 50 at once, where one device made 1,800 changes a minute, each an event in up to 99 others' inboxes.
      chatChangesPerDevicePerHour: read.integer("CHAT_CHANGE_LIMIT_PER_DEVICE_PER_HOUR", 60, 1),
      chatChangesPerUserPerHour: read.integer("CHAT_CHANGE_LIMIT_PER_USER_PER_HOUR", 120, 1),
      // 100 photos or twenty 100 MiB videos an hour is a busy user; one user got 1,927 grants of 100 MiB a minute.
      uploadsPerHour: read.integer("UPLOAD_LIMIT_PER_HOUR", 100, 1),
      uploadBytesPerHour: read.integer("UPLOAD_BYTES_LIMIT_PER_HOUR", 2 * 1024 ** 3, 1),
      // Clients ack about once a second, and once per 1,000 events while a backlog drains (100 for a full inbox);
      // 20 a second leaves room for clients that ack as soon as they are idle.
      acksPerMinute: read.integer("ACK_LIMIT_PER_MINUTE", 1200, 1),
      // A reader marks a chat read as messages arrive in it, at most about as often as a device acks.
      readsPerMinute: read.integer("READ_LIMIT_PER_MINUTE", 1200, 1),
      // Clients renew typing every few seconds while the user types; one a second leaves room for starts and stops.
      typingPerMinute: read.integer("TYPING_LIMIT_PER_MINUTE", 60, 1),
      // A phone, a tablet, a few computers and browsers; one user had registered 2,000 device names.
      maxDevicesPerUser: read.integer("MAX_DEVICES_PER_USER", 8, 1),
    },
  };
  if (config.limits.uploadBytesPerHour < config.limits.maxAttachmentBytes) {
    const most = config.limits.maxAttachmentBytes;
    problems.push(`UPLOAD_BYTES_LIMIT_PER_HOUR must be at least MAX_ATTACHMENT_BYTES (${most}): the largest never fit`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** Reads variables, treating empty as unset, and records a problem naming the variable for every bad value. */
class Reader {
  constructor(
    private readonly env: Env,
    private readonly problems: string[],
  ) {}

  string(name: string): string | undefined {
    const value = this.env[name]?.trim();
    return value === "" ? undefined : value;
  }

  /** `maxRule` names the API rule the maximum comes from, for the message. */
  integer(name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER, maxRule?: string): number {
    const text = this.string(name);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!/^\d+$/.test(text) || value < min || value > max) {
      const limit = maxRule ? `${max}, the most the API allows (${maxRule})` : `${max}`;
      this.problems.push(`${name} must be an integer from ${min} to ${limit}, got "${text}"`);
      return fallback;
    }
    return value;
  }

  /** A span of time as `palaver token --ttl` takes it (30d, 12h, 90m, 3600s, 2w), in seconds. */
  span(name: string, fallback: number): number {
    const text = this.string(name);
    if (text === undefined) return fallback;
    let seconds = 0;
    try {
      seconds = parseTtl(text);
    } catch {
      // reported below
    }
    if (seconds < 1) {
      this.problems.push(`${name} must be a span such as 30d, 12h, 90m, 3600s or 2w, got "${text}"`);
      return fallback;
    }
    return seconds;
  }

  url(name: string, protocols: string[]): string | undefined {
    const text = this.string(name);
    if (text === undefined) return undefined;
    let protocol: string | undefined;
    try {
      protocol = new URL(text).protocol;
    } catch {
      // reported below
    }
    if (!protocol || !protocols.includes(protocol)) {
      this.problems.push(`${name} must be a ${protocols.map((p) => p.slice(0, -1)).join(" or ")} URL`);
      return undefined;
    }
    return text;
  }

  /** One Redis (`redis://`, `rediss://`) or a Redis Cluster's seed nodes (`redis+cluster://host:port,host:port`). */
  redisUrl(name: string): string | undefined {
    const text = this.string(name);
    if (text === undefined || parseRedisUrl(text)) return text;
    this.problems.push(
      `${name} must be a redis or rediss URL, or redis+cluster://host:port,host:port,… (rediss+cluster with TLS)`,
    );
    return undefined;
  }

  matching(name: string, pattern: RegExp): string | undefined {
    const text = this.string(name);
    if (text !== undefined && !pattern.test(text)) {
      this.problems.push(`${name} must match ${pattern.source}, got "${text}"`);
      return undefined;
    }
    return text;
  }

  oneOf<T extends string>(name: string, values: readonly T[]): T | undefined {
    const text = this.string(name);
    if (text !== undefined && !values.includes(text as T)) {
      this.problems.push(`${name} must be one of ${values.join(", ")}, got "${text}"`);
      return undefined;
    }
    return text as T | undefined;
  }

  /** Secrets are never echoed back in the message. */
  secret(name: string, minLength: number): string | undefined {
    const text = this.string(name);
    if (text !== undefined && text.length < minLength) {
      this.problems.push(`${name} must be at least ${minLength} characters`);
      return undefined;
    }
    return text;
  }

  allOrNone<N extends string>(names: readonly N[]): Record<N, string> | undefined {
    const set = names.filter((name) => this.string(name) !== undefined);
    if (set.length === 0) return undefined;
    if (set.length < names.length) {
      const missing = names.filter((name) => !set.includes(name));
      this.problems.push(`${names.join(", ")} are set together or not at all; missing ${missing.join(", ")}`);
      return undefined;
    }
    return Object.fromEntries(names.map((name) => [name, this.string(name)])) as Record<N, string>;
  }

  readableFile(name: string): void {
    const path = this.string(name);
    if (path === undefined) return;
    try {
      accessSync(path, constants.R_OK);
    } catch {
      this.problems.push(`${name} names a file that cannot be read: ${path}`);
    }
  }
}
