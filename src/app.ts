import { createHmac } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { destination, type Logger } from "pino";
import { AccountService } from "../gen/palaver/chat/v1/account_pb.js";
import { AttachmentService } from "../gen/palaver/chat/v1/attachment_pb.js";
import { ChatService } from "../gen/palaver/chat/v1/chat_pb.js";
import { LocalBlobStore } from "./adapters/blob/local-blob-store.js";
import { S3BlobStore } from "./adapters/blob/s3-blob-store.js";
import { observed } from "./adapters/observed.js";
import { memoryRateLimiters, redisRateLimiters } from "./adapters/rate-limiters.js";
import { connectRedis } from "./adapters/redis/connect.js";
import { RedisBus } from "./adapters/redis/redis-bus.js";
import { RedisPresence } from "./adapters/redis/redis-presence.js";
import { createPgliteDriver } from "./adapters/sql/pglite-driver.js";
import { createPostgresDriver } from "./adapters/sql/postgres-driver.js";
import { SqlDb } from "./adapters/sql/sql-db.js";
import { DeviceDirectory } from "./auth/device-directory.js";
import { resolveAuthSecret } from "./auth/secret.js";
import { createTokenVerifier } from "./auth/tokens.js";
import type { Config } from "./config.js";
import { Blocks } from "./features/account/blocks.js";
import { Devices } from "./features/account/devices.js";
import { Attachments, attachmentLifetimeDays } from "./features/attachments/attachments.js";
import { Chats } from "./features/chats/chats.js";
import { DeliveryHub, type Routing } from "./features/delivery/hub.js";
import { Acks } from "./features/delivery/acks.js";
import { Receipts } from "./features/receipts/receipts.js";
import { Typing } from "./features/typing/typing.js";
import { InboxCap } from "./features/delivery/inbox-cap.js";
import { Messaging } from "./features/messaging/messaging.js";
import { Metrics } from "./features/operations/metrics.js";
import { Retention, type RetentionReport } from "./features/retention/retention.js";
import { Refusal } from "./errors.js";
import { createLogger } from "./log.js";
import type { BlobStore } from "./ports/blob-store.js";
import { type Clock, systemClock } from "./ports/clock.js";
import type { Db } from "./ports/db.js";
import type { RateLimiters } from "./ports/rate-limiter.js";
import { accountService } from "./transport/account-service.js";
import { attachmentService } from "./transport/attachment-service.js";
import { chatService } from "./transport/chat-service.js";
import { toConnectError } from "./transport/errors.js";
import { plainHttp, type PlainHandler } from "./transport/http-routes.js";
import { createInterceptors } from "./transport/interceptors.js";
import { type Server, startServer } from "./transport/server.js";
import * as tunables from "./tunables.js";
import { blobCors } from "./web/blob-cors.js";
import { createDevTokenHandler, DEV_TOKEN_SECONDS } from "./web/dev-token.js";
import { createStaticFiles } from "./web/static-files.js";

/** The built web client (`npm run build:web`), served at `/` when present. */
const webDist = fileURLToPath(new URL("../web/dist", import.meta.url));

/** A running Palaver node. */
export interface App {
  readonly config: Config;
  readonly db: Db;
  readonly hub: DeliveryHub;
  readonly retention: Retention;
  readonly server: Server;
  /** Stops accepting, ends streams (clients reconnect elsewhere and resume from their inbox), closes adapters. */
  close(): Promise<void>;
}

/** What tests may supply instead of what the config picks: a database on its own schema, a clock they can move. */
export interface AppOverrides {
  db?: Db;
  clock?: Clock;
  logger?: Logger;
}

/** The composition root: picks the adapters the config asks for, wires the features and starts serving. */
export async function startApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const logger = overrides.logger ?? createLogger(config);
  const clock = overrides.clock ?? systemClock;
  let hub: DeliveryHub | undefined;
  const metrics = new Metrics(() => hub?.connectedDevices ?? 0);
  // Every call of the Db port is timed by method and outcome (palaver_db_call_duration_seconds).
  const db = observed(overrides.db ?? (await openDb(config)), (call) => metrics.observeDbCall(call));
  await db.migrate();
  const secret = await resolveAuthSecret(config);

  let publicUrl = "";
  const blobs = openBlobStore(config, secret, clock, () => publicUrl, logger);
  await blobs.store.init();

  const redis = config.redisUrl ? await openRedis(config.redisUrl, config.nodeId, logger, metrics) : null;
  const routing = redis?.routing ?? null;
  // With Redis the limits on writes are counted once across the nodes; a single node counts in memory.
  const limiters = redis?.limiters ?? memoryRateLimiters;
  hub = new DeliveryHub(
    db,
    {
      queueLimit: config.limits.streamQueueLimit,
      pageSize: tunables.INBOX_PAGE_SIZE,
      batchSize: tunables.STREAM_BATCH_FRAMES,
      recentIds: tunables.STREAM_RECENT_IDS,
      lateHandOffMs: tunables.HANDOFF_RETRY.forMs,
    },
    logger,
    metrics,
    routing,
    new InboxCap(
      db,
      {
        maxEvents: config.limits.maxInboxEvents,
        checkEvery: Math.ceil(config.limits.maxInboxEvents * tunables.INBOX_CAP_SLACK),
        maxDevices: tunables.INBOX_CAP_DEVICES,
      },
      logger,
      metrics,
    ),
    tunables.HANDOFF_RETRY,
  );
  await hub.start();

  const chats = new Chats(db, hub, clock, limiters, {
    maxParticipants: config.limits.maxParticipants,
    changesPerDevicePerHour: config.limits.chatChangesPerDevicePerHour,
    changesPerUserPerHour: config.limits.chatChangesPerUserPerHour,
  });
  const attachments = new Attachments(db, blobs.store, clock, limiters, {
    maxBytes: config.limits.maxAttachmentBytes,
    uploadUrlSeconds: tunables.UPLOAD_URL_SECONDS,
    downloadUrlSeconds: tunables.DOWNLOAD_URL_SECONDS,
    uploadsPerHour: config.limits.uploadsPerHour,
    uploadBytesPerHour: config.limits.uploadBytesPerHour,
  });
  const resolveAttachments = (userId: string, ids: readonly string[]) => attachments.resolveForSend(userId, ids);
  const messaging = new Messaging(db, hub, clock, resolveAttachments, metrics, limiters, {
    maxBatch: config.limits.sendBatchMax,
    sendsPerMinute: config.limits.sendsPerMinute,
    maxInFlight: config.databaseUrl
      ? tunables.SEND_BATCHES_IN_FLIGHT_POSTGRES
      : tunables.SEND_BATCHES_IN_FLIGHT_PGLITE,
    gatherMs: tunables.SEND_GATHER_MS,
  });
  const devices = new DeviceDirectory(db, clock, {
    maxBatch: tunables.DEVICE_BATCH_MAX,
    maxInFlight: tunables.DEVICE_BATCHES_IN_FLIGHT,
    onBatch: metrics.batchObserver("devices"),
    maxDevicesPerUser: config.limits.maxDevicesPerUser,
  });
  const blocks = new Blocks(db, clock);
  // Tells the directory (and, through the bus, every other node's) of each device it removes.
  const userDevices = new Devices(db, hub, devices, clock, logger, routing?.bus);
  await userDevices.start();

  const retention = newRetention(config, db, blobs.store, clock, logger, metrics, (cutoff) =>
    userDevices.removeNotSeenSince(cutoff),
  );
  await retention.prepare();
  retention.start(tunables.RETENTION_INTERVAL_MS);

  const auth = {
    verifyToken: createTokenVerifier({
      secret,
      jwksUrl: config.authJwksUrl,
      maxLifetimeSeconds: config.maxTokenLifetimeSeconds,
      remember: tunables.VERIFIED_TOKENS,
    }),
    resolveDevice: (userId: string, deviceName: string, issuedAt: Date) =>
      devices.resolve(userId, deviceName, issuedAt),
  };
  const notify = hub.notify.bind(hub);
  const receipts = new Receipts(db, notify, limiters, {
    maxBatch: tunables.READ_BATCH_MAX,
    maxInFlight: tunables.READ_BATCHES_IN_FLIGHT,
    readsPerMinute: config.limits.readsPerMinute,
    windowMs: tunables.RECEIPT_WINDOW_MS,
    onBatch: metrics.batchObserver("reads"),
  });
  const typing = new Typing(db, notify, limiters, {
    perMinute: config.limits.typingPerMinute,
    lapseMs: tunables.TYPING_LAPSE_MS,
  });
  const acks = new Acks(db, limiters, {
    maxBatch: tunables.ACK_BATCH_MAX,
    acksPerMinute: config.limits.acksPerMinute,
    maxInFlight: tunables.ACK_BATCHES_IN_FLIGHT,
    onBatch: metrics.batchObserver("acks"),
    onReceipts: (changes) => receipts.changed(changes),
  });
  const chat = chatService({
    hub,
    chats,
    messaging,
    acks,
    receipts,
    typing,
    metrics,
    logger,
    subscribeKeepAliveMs: config.subscribeKeepAliveSeconds * 1000,
  });

  let server: Server | undefined;
  server = await startServer({
    host: config.host,
    port: config.port,
    tls: config.tls,
    interceptors: createInterceptors({ logger, ...auth, onCallEnd: (call) => metrics.countCall(call) }),
    // Plain gRPC Connect streams skip connect-es's per-message pipeline (see transport/grpc-bidi.ts).
    bidiRoutes: [chat.connectRoute(auth)],
    bidiOptions: {
      logger,
      onCallEnd: (call) => metrics.countCall(call),
      toConnectError: (error, signal) => toConnectError(error, logger, signal),
    },
    routes: (router) =>
      router
        .service(ChatService, chat.service)
        .service(AttachmentService, attachmentService(attachments))
        .service(AccountService, accountService(blocks, userDevices)),
    fallback: plainHttp({
      metrics,
      ready: () => !server?.shuttingDown.aborted,
      onError: (err) => logger.error({ err }, "http request failed"),
      next: [
        ...(blobs.httpHandler ? [blobCors, blobs.httpHandler] : []),
        // Development sign-in for the web client; with DEV_SIGN_IN=off (production's default) the path does not exist.
        ...(config.devSignIn === "off"
          ? []
          : [
              createDevTokenHandler(secret, {
                from: config.devSignIn,
                // A token the server would refuse is no sign-in.
                ttlSeconds: Math.min(DEV_TOKEN_SECONDS, config.maxTokenLifetimeSeconds),
              }),
            ]),
        createStaticFiles(webDist),
      ],
    }),
  });
  publicUrl = config.publicUrl ?? server.url;
  logger.info({ url: server.url, database: config.databaseUrl ? "postgres" : "pglite" }, "palaver is serving");
  if (config.devSignIn !== "off") logger.warn({ devSignIn: config.devSignIn }, devSignInWarning[config.devSignIn]);

  return {
    config,
    db,
    hub,
    retention,
    server,
    async close() {
      retention.stop();
      await server.close();
      receipts.flush();
      hub.endAll(new Refusal("shutting_down", "server is shutting down"));
      await redis?.close();
      if (!overrides.db) await db.close();
    },
  };
}

/** Said at start while POST /dev/token hands out a token for any user: no deployment should run so unknowingly. */
const devSignInWarning = {
  local:
    "development sign-in is on: POST /dev/token gives any client on this machine a token for any user " +
    "(DEV_SIGN_IN=local); set DEV_SIGN_IN=off, or NODE_ENV=production, on a shared machine or behind a proxy here",
  any:
    "development sign-in is open to every machine: POST /dev/token gives anyone who reaches this server a token " +
    "for any user (DEV_SIGN_IN=any)",
} as const;

/** `palaver retention run`: the retention job once, against the database and store the config names. */
export async function runRetentionOnce(config: Config): Promise<RetentionReport> {
  // Logs go to stderr: stdout carries the report.
  const logger = createLogger(config, destination(2));
  const db = await openDb(config);
  try {
    await db.migrate();
    const secret = await resolveAuthSecret(config);
    const blobs = openBlobStore(config, secret, systemClock, () => config.publicUrl ?? "", logger);
    return await newRetention(config, db, blobs.store, systemClock, logger).run();
  } finally {
    await db.close();
  }
}

async function openDb(config: Config): Promise<Db> {
  const driver = config.databaseUrl
    ? createPostgresDriver(config.databaseUrl)
    : await createPgliteDriver(join(config.dataDir, "pglite"));
  return new SqlDb(driver);
}

function openBlobStore(
  config: Config,
  authSecret: Uint8Array,
  clock: Clock,
  publicUrl: () => string,
  logger: Logger,
): { store: BlobStore; httpHandler?: PlainHandler } {
  if (config.s3) {
    const expireAfterDays = attachmentLifetimeDays(config.retentionDays);
    return { store: new S3BlobStore({ ...config.s3, expireAfterDays }, clock) };
  }
  // Blob URLs get a key of their own, derived from the token secret, so neither can forge the other.
  const secret = createHmac("sha256", authSecret).update("palaver local blob urls").digest();
  const store = new LocalBlobStore(
    { dir: join(config.dataDir, "blobs"), publicUrl, secret, onError: (err) => logger.error({ err }, "blob request failed") },
    clock,
  );
  return { store, httpHandler: (req, res) => store.handleRequest(req, res) };
}

/** A node's Redis: presence and hand-offs (routing), and the write limits' shared counts on the commands connection. */
async function openRedis(
  redisUrl: string,
  nodeId: string,
  logger: Logger,
  metrics: Metrics,
): Promise<{ routing: Routing; limiters: RateLimiters; close(): Promise<void> }> {
  for (const role of ["commands", "subscriber"] as const) {
    // Both counters start at 0 per role, so a rate over them is defined from the first scrape.
    metrics.redisErrors.inc({ role }, 0);
    metrics.redisReconnects.inc({ role }, 0);
  }
  const redis = await connectRedis(redisUrl, {
    nodeId,
    logger,
    onError: (role) => metrics.redisErrors.inc({ role }),
    onReconnect: (role) => metrics.redisReconnects.inc({ role }),
  });
  const presence = new RedisPresence(
    redis,
    {
      nodeId,
      ttlSeconds: tunables.PRESENCE_TTL_SECONDS,
      heartbeatMs: tunables.PRESENCE_HEARTBEAT_MS,
      livenessCacheMs: tunables.PRESENCE_LIVENESS_CACHE_MS,
    },
    logger,
  );
  await presence.start();
  const bus = new RedisBus(nodeId, redis, logger);
  return {
    routing: { presence, bus },
    limiters: redisRateLimiters(redis),
    async close() {
      await Promise.allSettled([presence.close(), bus.close()]);
      await redis.close();
    },
  };
}

function newRetention(
  config: Config,
  db: Db,
  blobs: BlobStore,
  clock: Clock,
  logger: Logger,
  metrics?: Metrics,
  removeDevicesNotSeenSince?: (cutoff: Date) => Promise<number>,
): Retention {
  return new Retention(
    db,
    blobs,
    clock,
    {
      retentionDays: config.retentionDays,
      maxInboxEvents: config.limits.maxInboxEvents,
      partitionsAhead: tunables.PARTITIONS_AHEAD,
      idempotencyMs: tunables.IDEMPOTENCY_MS,
      removeDevicesNotSeenSince,
    },
    logger,
    (report) => metrics?.countRetentionRun(report),
  );
}
