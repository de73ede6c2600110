/**
 * Test devices that behave like real clients of a cluster: a recipient keeps one Connect stream open, reconnects
 * through the load balancer whenever it ends, acks what it got, and dedupes by event_id across its streams; a sender
 * retries a send with the same client_message_id until it is acknowledged.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Event } from "../../gen/palaver/chat/v1/event_pb.js";
import { ConnectDevice, grpcChatClient } from "../../src/client/device.js";
import { sleep } from "./processes.js";

/** Resolves with the command's result, or undefined if the stream ends (or timeoutMs passes) first. */
async function commandOrEnd(device: ConnectDevice, command: Parameters<ConnectDevice["command"]>[0], timeoutMs = 5000) {
  let timer: NodeJS.Timeout | undefined;
  const ended = new Promise<undefined>((resolve) => {
    const started = Date.now();
    timer = setInterval(() => {
      if (device.ended !== undefined || Date.now() - started > timeoutMs) resolve(undefined);
    }, 25);
  });
  try {
    return await Promise.race([device.command(command), ended]);
  } finally {
    clearInterval(timer);
  }
}

export interface StreamEnd {
  at: number;
  code: Code | undefined;
  message: string;
}

/** A received message event, as the app above the client would see it once. */
export interface Received {
  eventId: bigint;
  messageId: string;
  chatId: string;
  clientMessageId: string;
  /** When it first arrived, and on which of this device's streams (0 = the first). */
  at: number;
  stream: number;
}

/**
 * A device on a Connect stream that stays connected: its first stream goes where the test places it, every later one
 * through `reconnectUrl` (the load balancer). Received events are folded in every few ms.
 */
export class Recipient {
  readonly streams: ConnectDevice[] = [];
  /** Message events by event_id, each counted once however often it came. */
  readonly received = new Map<bigint, Received>();
  /** Times an event_id came again on a later stream (redelivered from the inbox because its ack was lost). */
  duplicatesSuppressed = 0;
  /** Event ids that came twice on one stream: must stay empty. */
  readonly duplicatesOnOneStream: string[] = [];
  readonly ends: StreamEnd[] = [];
  /** When each stream's InboxDrained arrived, by stream index. */
  readonly drainedAt: (number | undefined)[] = [];

  private readonly perStream: Set<bigint>[] = [];
  private readonly folded: number[] = [];
  private readonly acked = new Set<bigint>();
  private acking = false;
  private lastAck = 0;
  private timer: NodeJS.Timeout | undefined;
  private reconnecting = false;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly token: string,
    private readonly reconnectUrl: string,
    private readonly options = { ackEveryMs: 300, reconnectDelayMs: 150 },
  ) {}

  /** Opens the first stream at `url` and waits for its InboxDrained. */
  async connect(url: string): Promise<void> {
    this.open(url);
    this.timer = setInterval(() => this.tick(), 20);
    await this.current.waitForDrained(15_000);
  }

  get current(): ConnectDevice {
    return this.streams.at(-1)!;
  }

  /** Whether the current stream is open and past its backlog. */
  get live(): boolean {
    return this.current.ended === undefined && this.drainedAt[this.streams.length - 1] !== undefined;
  }

  /** Drops the current stream at once, as a device losing its network; the tick then reconnects through the LB. */
  dropConnection(): void {
    this.current.disconnect();
  }

  /** Resolves once the current stream is live again after `since` (a reconnect finished); returns when. */
  async waitLive(since: number, timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.streams.length - 1;
      const at = this.drainedAt[i];
      if (at !== undefined && at >= since && this.current.ended === undefined) return at;
      if (Date.now() > deadline) throw new Error(`${this.name} is not live again after ${timeoutMs} ms (${this.describe()})`);
      await sleep(25);
    }
  }

  hasMessages(messageIds: Iterable<string>): boolean {
    const have = new Set([...this.received.values()].map((r) => r.messageId));
    for (const id of messageIds) if (!have.has(id)) return false;
    return true;
  }

  /** Ends the device: no more reconnects, the stream is closed. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.current?.disconnect();
  }

  describe(): string {
    return `${this.streams.length} streams, ${this.received.size} messages, ends: ${this.ends
      .map((e) => (e.code === undefined ? "ok" : Code[e.code]))
      .join(",")}`;
  }

  private open(url: string): void {
    this.perStream.push(new Set());
    this.folded.push(0);
    this.drainedAt.push(undefined);
    this.streams.push(ConnectDevice.open(url, this.token));
  }

  private tick(): void {
    this.streams.forEach((stream, i) => this.fold(stream, i));
    const current = this.current;
    if (current.ended !== undefined && !this.reconnecting && !this.stopped) {
      const error = current.ended;
      this.ends.push({ at: Date.now(), code: error?.code, message: error?.rawMessage ?? "ended" });
      this.reconnecting = true;
      setTimeout(() => {
        this.reconnecting = false;
        if (!this.stopped) this.open(this.reconnectUrl);
      }, this.options.reconnectDelayMs);
    }
    if (Date.now() - this.lastAck >= this.options.ackEveryMs) void this.ack();
  }

  /** Takes the events a stream got since the last fold. */
  private fold(stream: ConnectDevice, index: number): void {
    const events = stream.events;
    for (let k = this.folded[index]!; k < events.length; k++) this.take(events[k]!, stream.arrivals[k]!, index);
    this.folded[index] = events.length;
  }

  private take(event: Event, at: number, stream: number): void {
    if (event.kind.case === "inboxDrained") {
      this.drainedAt[stream] ??= at;
      return;
    }
    if (event.eventId === 0n) return;
    const seenHere = this.perStream[stream]!;
    if (seenHere.has(event.eventId)) this.duplicatesOnOneStream.push(`stream ${stream}: event ${event.eventId}`);
    seenHere.add(event.eventId);
    if (event.kind.case !== "newMessage") return;
    if (this.received.has(event.eventId)) {
      this.duplicatesSuppressed++;
      return;
    }
    const message = event.kind.value;
    this.received.set(event.eventId, {
      eventId: event.eventId,
      messageId: message.messageId,
      chatId: event.chatId,
      clientMessageId: message.clientMessageId,
      at,
      stream,
    });
  }

  /** Acks what the current stream delivered and nobody acked yet; a lost ack only means a redelivery later. */
  private async ack(): Promise<void> {
    if (this.acking || !this.live) return;
    const seen = this.perStream[this.streams.length - 1]!;
    const ids = [...seen].filter((id) => !this.acked.has(id)).slice(0, 1000);
    this.lastAck = Date.now();
    if (ids.length === 0) return;
    this.acking = true;
    try {
      const result = await commandOrEnd(this.current, { case: "ackEvents", value: { eventIds: ids } });
      if (result?.outcome.case === "ackEvents") for (const id of ids) this.acked.add(id);
    } finally {
      this.acking = false;
    }
  }
}

export interface Ack {
  clientMessageId: string;
  messageId: string;
  seq: bigint;
  /** When the first attempt started and when the acknowledgement came. */
  startedAt: number;
  ackedAt: number;
  attempts: number;
}

export interface SendStats {
  attempts: number;
  acked: number;
  /** Failed attempts by Connect code name (retried with the same client_message_id). */
  failures: Record<string, number>;
  /** The first error message seen for each code. */
  samples: Record<string, string>;
  /** Sends given up on (never acknowledged within the retry budget). */
  abandoned: string[];
}

/** Unary SendMessage with retries, as a client that must not lose a message: same client_message_id every time. */
export class Sender {
  // One HTTP/2 connection per sender; after it fails, the client's next call opens a new one (through the LB: to a
  // live node).
  private readonly client: ReturnType<typeof grpcChatClient>;
  readonly stats: SendStats = { attempts: 0, acked: 0, failures: {}, samples: {}, abandoned: [] };

  constructor(
    readonly name: string,
    token: string,
    url: string,
  ) {
    this.client = grpcChatClient(url, token);
  }

  /** An authenticated call, which records the sender's device (as the server does with any device it first sees). */
  async register(chatId: string): Promise<void> {
    await this.client.getChat({ chatId });
  }

  /** Sends until acknowledged or `budgetMs` has passed; errors that retrying cannot fix are thrown. */
  async send(chatId: string, clientMessageId: string, budgetMs = 30_000): Promise<Ack | undefined> {
    const startedAt = Date.now();
    for (let attempt = 1; ; attempt++) {
      this.stats.attempts++;
      try {
        const res = await this.client.sendMessage({ chatId, clientMessageId, text: clientMessageId }, { timeoutMs: 5000 });
        this.stats.acked++;
        return { clientMessageId, messageId: res.messageId, seq: res.seq, startedAt, ackedAt: Date.now(), attempts: attempt };
      } catch (error) {
        const { code, rawMessage } = ConnectError.from(error);
        const name = Code[code] ?? String(code);
        this.stats.failures[name] = (this.stats.failures[name] ?? 0) + 1;
        this.stats.samples[name] ??= rawMessage;
        if ([Code.InvalidArgument, Code.PermissionDenied, Code.NotFound, Code.Unauthenticated].includes(code)) throw error;
        if (Date.now() - startedAt > budgetMs) {
          this.stats.abandoned.push(clientMessageId);
          return undefined;
        }
        await sleep(Math.min(100 * attempt, 500));
      }
    }
  }
}

/** Senders sending to one chat in a loop until stopped; every acknowledged send is recorded. */
export class Traffic {
  readonly acks: Ack[] = [];
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly senders: Sender[],
    private readonly chatId: string,
    private readonly pauseMs = 10,
  ) {}

  start(): void {
    this.running = true;
    this.loops = this.senders.map(async (sender) => {
      for (let i = 0; this.running; i++) {
        const ack = await sender.send(this.chatId, `${sender.name}-${i}`);
        if (ack) this.acks.push(ack);
        await sleep(this.pauseMs);
      }
    });
  }

  /** Stops starting sends and waits for the ones in progress to be acknowledged (or abandoned). */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** The first acknowledgement after `t` (when sending worked again after a fault). */
  firstAckAfter(t: number): number | undefined {
    const times = this.acks.map((a) => a.ackedAt).filter((at) => at > t);
    return times.length > 0 ? Math.min(...times) : undefined;
  }

  /** The longest time any one send took from its first attempt to its acknowledgement. */
  get longestSendMs(): number {
    return Math.max(0, ...this.acks.map((a) => a.ackedAt - a.startedAt));
  }

  get stats(): SendStats {
    const total: SendStats = { attempts: 0, acked: 0, failures: {}, samples: {}, abandoned: [] };
    for (const { stats } of this.senders) {
      total.attempts += stats.attempts;
      total.acked += stats.acked;
      total.abandoned.push(...stats.abandoned);
      for (const [code, n] of Object.entries(stats.failures)) total.failures[code] = (total.failures[code] ?? 0) + n;
      Object.assign(total.samples, { ...stats.samples, ...total.samples });
    }
    return total;
  }
}
