/**
 * The server's fixed tunables, each with why it has its value. What an operator sets is config (src/config.ts, the
 * README's table); what the API allows is the proto (src/api-rules.ts); the rest lives here, wired in app.ts.
 */

const SECOND_MS = 1000;
const MINUTE_MS = 60 * SECOND_MS;
const HOUR_MS = 60 * MINUTE_MS;

// Serving (transport/server.ts)

/** Connections the kernel queues for accept: 10,000 devices reconnecting at once overflowed Node's 511 (bench/README.md). */
export const LISTEN_BACKLOG = 4096;

/**
 * Sends one Connect stream may have in flight (docs/protocol.md): enough to store a device's burst in one batch; past
 * it the stream reads no more frames until one is answered. It bounds the results a pipelining client can have waiting
 * at once, which count towards STREAM_QUEUE_LIMIT like events do.
 */
export const SENDS_IN_FLIGHT_PER_STREAM = 16;

// Delivery (features/delivery/hub.ts)

/** Inbox entries read per query while a stream drains its backlog: few round trips, bounded memory per stream. */
export const INBOX_PAGE_SIZE = 500;
/**
 * Most frames a stream hands the transport at once, written with one write: a burst or a backlog page goes out in few
 * writes, while one write's buffer stays at tens of KiB for typical messages.
 */
export const STREAM_BATCH_FRAMES = 64;
/**
 * Newest event ids a stream remembers, to drop a second push of one (backlog/live overlap, retried sends). A second
 * push comes within moments of the first, and clients dedupe by event id anyway; each id costs about 64 bytes of
 * heap for as long as the device stays connected (a full set of 256 was 16 KiB, more than the rest of the connection).
 */
export const STREAM_RECENT_IDS = 64;

// Routing over Redis (adapters/redis/redis-presence.ts)

/** How long a node's liveness key lives without a refresh: a dead node's devices count as offline after this. */
export const PRESENCE_TTL_SECONDS = 30;
/** How often a node refreshes its liveness key: a third of the TTL, so two missed beats do not lose its devices. */
export const PRESENCE_HEARTBEAT_MS = 10 * SECOND_MS;
/**
 * How long a node trusts what it read of another node's liveness when routing: a read per send batch saved, for a
 * second more before a dead node's devices count as offline. A record that disagrees with what was read (another run
 * of that node, or a node read dead) has its node's liveness read again at once.
 */
export const PRESENCE_LIVENESS_CACHE_MS = SECOND_MS;

/**
 * A hand-off that failed because Redis (or one shard of a Redis Cluster, failing over) did not answer is tried again
 * every half second for 30 s (by then its devices' presence is back or they reconnected), at most 10,000 at once
 * (about 2 KiB each): the receiving node may have seen no outage of its own, so nothing else would bring it the event
 * before a reconnect.
 */
export const HANDOFF_RETRY = { delayMs: 500, forMs: 30 * SECOND_MS, max: 10_000 };

/**
 * How far past MAX_INBOX_EVENTS an inbox may grow between trims as events are written (features/delivery/inbox-cap.ts),
 * per node writing to it: 1 % of 100,000 is a trim per thousand events, each a scan of one device's inbox.
 */
export const INBOX_CAP_SLACK = 0.01;
/** Devices whose written entries a node counts for the inbox cap: about 100 bytes each. */
export const INBOX_CAP_DEVICES = 200_000;

// Group commit (features/group-commit.ts)

/** Send batches written at once on Postgres: a pool takes a few, and more only queue behind the chats' row locks. */
export const SEND_BATCHES_IN_FLIGHT_POSTGRES = 4;
/**
 * Chats whose last seq a node remembers, so a batch to them is one statement (adapters/sql/store-messages.ts): the
 * chats it sent to most recently; about 160 bytes each. A forgotten chat's next batch costs a transaction.
 */
export const LAST_SEQS_CHATS = 100_000;
/**
 * How long a send waits for others to share its statement: a statement's fixed cost in Postgres (planning, executor
 * start-up, commit) is about a third of its CPU at 1,000 sends/s, where batches were of two or three sends. A lone
 * send under light load is answered up to this much later (bench/README.md, "Sends gathered for 10 ms").
 */
export const SEND_GATHER_MS = 10;
/** Send batches written at once on PGlite: it is one connection, so a second batch would only wait. */
export const SEND_BATCHES_IN_FLIGHT_PGLITE = 1;
/**
 * Event ids one ack statement may delete: one statement per batch is what keeps acks cheap, and under load a batch
 * must take what piled up while the last was written. At 256 ack frames per statement, 9,000 frames a second
 * (1,000 msgs/s into 10,000 devices) fell behind, over half of them still queued when the run ended; counted in ids,
 * a reconnecting device's frame of hundreds of ids does not make a statement of a million (bench/README.md).
 */
export const ACK_BATCH_MAX = 8192;
/** Ack batches written at once: one writing while the next gathers, without taking the pool from sends. */
export const ACK_BATCHES_IN_FLIGHT = 2;
/** Read marks that may share one statement, and those statements at once: as acks, which they resemble. */
export const READ_BATCH_MAX = 256;
export const READ_BATCHES_IN_FLIGHT = 2;

// Receipts and typing (features/receipts, features/typing)

/**
 * How long receipt changes gather before their notices go out: a group's members ack a message within moments of
 * each other, and each of a user's devices acks; a fifth of a second merges those into one notice per (chat, user)
 * and is still well within what a person notices of a tick.
 */
export const RECEIPT_WINDOW_MS = 200;
/** How long a typing notice holds unless renewed: clients renew every 3 s, so one lost renewal does not flicker. */
export const TYPING_LAPSE_MS = 6 * SECOND_MS;

// Tokens (auth/tokens.ts)

/**
 * Tokens a node remembers as verified, and for how long at most (never past their exp): a device's reconnects and
 * unary calls skip the signature check. About 500 bytes each, so 20,000 (twice the devices a 2-core node serves in
 * bench/README.md) are 10 MiB; ten minutes bounds how long a token signed with a key its JWKS dropped is still taken.
 */
export const VERIFIED_TOKENS = { max: 20_000, forMs: 10 * MINUTE_MS };

// Device registration (auth/device-directory.ts)

/**
 * Connects whose device keys (not cached) one statement finds or registers: 10,000 new phones connecting at once were
 * 10,000+ autocommit transactions. 500 pairs make a statement of a few milliseconds (about 4 ms on Postgres), so a
 * connect queued behind a full batch hardly waits, and a batch holds its uncommitted new rows (which a concurrent
 * batch with the same device waits on) only that long.
 */
export const DEVICE_BATCH_MAX = 500;
/** Registration statements running at once: one writing while the next gathers, as acks do; a few, not the pool. */
export const DEVICE_BATCHES_IN_FLIGHT = 2;

// Attachments (features/attachments/attachments.ts)

/** How long a pre-signed upload URL is valid: long enough for a 100 MiB upload on a slow link, short if it leaks. */
export const UPLOAD_URL_SECONDS = (15 * MINUTE_MS) / SECOND_MS;
/** How long a download URL is valid: a client asks again for each view, so an hour covers a long one. */
export const DOWNLOAD_URL_SECONDS = HOUR_MS / SECOND_MS;

// Retention (features/retention/retention.ts)

/** How often every node runs the retention job: day partitions need no finer grain, and runs are idempotent. */
export const RETENTION_INTERVAL_MS = HOUR_MS;
/** Daily partitions created ahead of today, so a send never waits on DDL and a few failed runs in a row do no harm. */
export const PARTITIONS_AHEAD = 3;
/** How long idempotency keys are kept: docs/protocol.md promises at least 24 h; twice that is the margin. */
export const IDEMPOTENCY_MS = 48 * HOUR_MS;
