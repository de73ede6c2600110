/**
 * A small TypeScript client for Palaver devices over the generated ChatService client: a native device on the
 * bidirectional Connect stream, a browser-like device on Subscribe plus unary calls, each renewing its token when
 * given a way to get one. Used by `palaver demo`, the tests and the benchmarks; other languages generate their own
 * clients from proto/.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { decodeJwt } from "jose";
import {
  ChatService,
  type CommandResult,
  type ConnectRequest,
  ConnectRequestSchema,
} from "../../gen/palaver/chat/v1/chat_pb.js";
import type { Event } from "../../gen/palaver/chat/v1/event_pb.js";
import { renewalTime, runAt } from "../token-timers.js";

/** A bearer token, or where to read the current one at each call; empty: no token. */
type Bearer = string | (() => string);

/** A generated ChatService client over gRPC on HTTP/2 (what native devices use). */
export function grpcChatClient(baseUrl: string, token: Bearer = ""): Client<typeof ChatService> {
  return createClient(ChatService, grpcTransport(baseUrl, token));
}

/** A generated ChatService client over the Connect protocol on HTTP/1.1 (what browsers use). */
export function connectChatClient(baseUrl: string, token: Bearer = ""): Client<typeof ChatService> {
  return createClient(ChatService, connectTransport(baseUrl, token));
}

export function grpcTransport(baseUrl: string, token: Bearer = "") {
  return createGrpcTransport({ baseUrl, interceptors: [bearer(token)] });
}

export function connectTransport(baseUrl: string, token: Bearer = "") {
  return createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(token)] });
}

function bearer(token: Bearer): Interceptor {
  return (next) => async (req) => {
    const value = typeof token === "function" ? token() : token;
    if (value) req.header.set("authorization", `Bearer ${value}`);
    return next(req);
  };
}

/**
 * Where a device gets its bearer token: a fixed one, or a function that returns a fresh one at each call (from the
 * identity provider; in tests, minted). Given a function, a device renews its token shortly before it expires and
 * reconnects its stream with the new one, and reconnects the same way when a stream ends UNAUTHENTICATED because
 * its token expired (docs/protocol.md, "Renewing the token").
 */
export type TokenSource = string | (() => Promise<string>);

/** When to renew a token (renewalTime); undefined for one that does not say: its stream ends when it expires. */
function renewalTimeOf(token: string): number | undefined {
  try {
    return renewalTime(decodeJwt(token));
  } catch {
    return undefined;
  }
}

type Command = MessageInitShape<typeof ConnectRequestSchema>["command"];

/**
 * Events a device received, with helpers to wait for more, and the device's streams one after another: one stream
 * with a fixed token; with a token function a new one each time the token is renewed, the stored events a later
 * stream repeats (not acked in time) dropped by event_id. Shared by the Connect and Subscribe test devices.
 */
abstract class EventLog {
  readonly events: Event[] = [];
  /** When each of `events` arrived (ms since the epoch), index by index. */
  readonly arrivals: number[] = [];
  /** How each of the device's streams ended so far, oldest first: null when cleanly, else its error. */
  readonly streamEnds: (ConnectError | null)[] = [];
  /** Set when the device's stream ended for good (not to renew its token): null when cleanly, else its error. */
  ended: ConnectError | null | undefined;
  /** The token the device's calls carry now. */
  protected token = "";
  /** Set once the device is to open no more streams. */
  protected done = false;
  protected readonly abort = new AbortController();
  private waiters: (() => void)[] = [];
  /** Ids of the stored events received on earlier streams. */
  private readonly earlier = new Set<bigint>();

  constructor(private readonly tokens: TokenSource) {}

  /** Drops the connection at once, as a device that loses its network. */
  disconnect(): void {
    this.done = true;
    this.abort.abort();
  }

  /** Runs one stream with the current token to its end; once `renew` aborts (a fresh token is here), ends it. */
  protected abstract streamOnce(renew: AbortSignal): Promise<void>;

  /** Opens the device's stream, and again each time the token is renewed, until one ends for another reason. */
  protected async keepOpen(): Promise<void> {
    const renews = typeof this.tokens === "function";
    try {
      this.token = await this.freshToken();
      for (;;) {
        const renew = new AbortController();
        let fresh: Promise<string> | undefined;
        const renewAt = renews ? renewalTimeOf(this.token) : undefined;
        const cancelRenewal =
          renewAt === undefined
            ? undefined
            : runAt(renewAt, () => {
                // The stream stays up until the new token is here; if none comes, it ends when the old one expires.
                fresh = this.freshToken();
                fresh.then(() => renew.abort(), () => undefined);
              });
        const received = this.events.length;
        let failure: ConnectError | null = null;
        try {
          await this.streamOnce(renew.signal);
        } catch (error) {
          failure = ConnectError.from(error);
        } finally {
          cancelRenewal?.();
        }
        this.streamEnds.push(failure);
        const renewed = renew.signal.aborted && (failure === null || failure.code === Code.Canceled);
        // A stream its server ended when its token expired; one refused at once (a fresh token) is not tried again.
        const expired = failure?.code === Code.Unauthenticated && this.events.length > received;
        if (!renews || this.done || !(renewed || expired)) return this.finish(failure);
        this.token = await (fresh ?? this.freshToken());
        for (const event of this.stored) this.earlier.add(event.eventId);
      }
    } catch (error) {
      this.finish(ConnectError.from(error));
    }
  }

  private freshToken(): Promise<string> {
    return typeof this.tokens === "string" ? Promise.resolve(this.tokens) : this.tokens();
  }

  protected record(event: Event): void {
    if (this.earlier.has(event.eventId)) return; // handled already; its ack had not reached the server
    this.events.push(event);
    this.arrivals.push(Date.now());
    this.notify();
  }

  private finish(error: ConnectError | null): void {
    this.ended = error;
    this.notify();
  }

  protected notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once `done()` holds, checking after every event; rejects after `timeoutMs`. */
  async until(done: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${this.describe()}`);
      if (this.ended !== undefined && !done()) {
        throw new Error(`stream ended (${this.ended?.message ?? "ok"}) before ${what}; got ${this.describe()}`);
      }
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  /** The stored events (messages and chat updates) received so far. */
  get stored(): Event[] {
    return this.events.filter((e) => e.eventId !== 0n);
  }

  get messages() {
    return this.events.flatMap((e) => (e.kind.case === "newMessage" ? [e.kind.value] : []));
  }

  get chatUpdates() {
    return this.events.flatMap((e) => (e.kind.case === "chatUpdate" ? [e.kind.value] : []));
  }

  /** The receipt updates received so far, each with its chat. */
  get receiptUpdates() {
    return this.events.flatMap((e) => (e.kind.case === "receiptUpdate" ? [{ chatId: e.chatId, ...e.kind.value }] : []));
  }

  /** The typing updates received so far, each with its chat. */
  get typingUpdates() {
    return this.events.flatMap((e) => (e.kind.case === "typingUpdate" ? [{ chatId: e.chatId, ...e.kind.value }] : []));
  }

  /**
   * Each participant's receipt in the chat as far as this device has heard (docs/protocol.md, "Receipts"): the
   * receipt updates, and every message, whose sender has received and read the chat up to it; each seq the highest
   * heard. Only what came on the stream: start from GetChat's receipts for what happened before.
   */
  receiptsIn(chatId: string): Map<string, { deliveredSeq: bigint; readSeq: bigint }> {
    const receipts = new Map<string, { deliveredSeq: bigint; readSeq: bigint }>();
    const raise = (userId: string, deliveredSeq: bigint, readSeq: bigint) => {
      const known = receipts.get(userId) ?? { deliveredSeq: 0n, readSeq: 0n };
      receipts.set(userId, {
        deliveredSeq: deliveredSeq > known.deliveredSeq ? deliveredSeq : known.deliveredSeq,
        readSeq: readSeq > known.readSeq ? readSeq : known.readSeq,
      });
    };
    for (const e of this.events) {
      if (e.chatId.toLowerCase() !== chatId.toLowerCase()) continue;
      if (e.kind.case === "receiptUpdate") raise(e.kind.value.userId, e.kind.value.deliveredSeq, e.kind.value.readSeq);
      if (e.kind.case === "newMessage") raise(e.kind.value.senderUserId, e.kind.value.seq, e.kind.value.seq);
    }
    return receipts;
  }

  /**
   * The users typing in the chat at `now` as far as this device has heard: a typing update holds until its lapse, a
   * later stop, or a message from that user.
   */
  typingIn(chatId: string, now = Date.now()): string[] {
    const until = new Map<string, number>();
    this.events.forEach((e, i) => {
      if (e.chatId.toLowerCase() !== chatId.toLowerCase()) return;
      if (e.kind.case === "newMessage") until.delete(e.kind.value.senderUserId);
      if (e.kind.case !== "typingUpdate") return;
      const { userId, typing, lapseAfter } = e.kind.value;
      if (!typing) until.delete(userId);
      else until.set(userId, this.arrivals[i]! + Number(lapseAfter?.seconds ?? 0n) * 1000 + (lapseAfter?.nanos ?? 0) / 1e6);
    });
    return [...until].filter(([, end]) => end > now).map(([userId]) => userId);
  }

  get drained(): boolean {
    return this.events.some((e) => e.kind.case === "inboxDrained");
  }

  waitForDrained(timeoutMs?: number) {
    return this.until(() => this.drained, "InboxDrained", timeoutMs);
  }

  waitForMessages(count: number, timeoutMs?: number) {
    return this.until(() => this.messages.length >= count, `${count} messages`, timeoutMs);
  }

  waitForChatUpdates(count: number, timeoutMs?: number) {
    return this.until(() => this.chatUpdates.length >= count, `${count} chat updates`, timeoutMs);
  }

  waitForEnd(timeoutMs?: number) {
    return this.until(() => this.ended !== undefined, "the stream to end", timeoutMs);
  }

  private describe(): string {
    return `[${this.events.map((e) => `${e.kind.case}#${e.eventId}`).join(", ")}]`;
  }
}

/**
 * A native device: a bidirectional Connect stream (gRPC on HTTP/2 from `open`) carrying its commands and its events.
 * Renewing its token, it half-closes the stream (the server answers what it was sent, then ends it) and opens the next
 * with the new token; commands a stream ended without answering go again on the next (a send is idempotent by its
 * client_message_id). Acks wait for no answer, and are not sent again: a lost one only brings its events again.
 */
export class ConnectDevice extends EventLog {
  /** The server's refusals of the device's acks, oldest first (it answers an ack only to refuse it). */
  readonly ackErrors: ConnectError[] = [];
  /** Commands sent and not answered yet, in the order sent. */
  private readonly unanswered = new Map<string, { frame: ConnectRequest; resolve: (result: CommandResult) => void }>();
  /** The current stream's frames still to send. */
  private outbox: ConnectRequest[] = [];
  private wakeOutbox: (() => void) | null = null;
  private nextId = 0;

  /** A device on `client`, whose transport sends no token of its own: the device sends its token on each stream. */
  constructor(
    private readonly client: Client<typeof ChatService>,
    tokens: TokenSource,
  ) {
    super(tokens);
    void this.keepOpen();
  }

  static open(baseUrl: string, tokens: TokenSource): ConnectDevice {
    return new ConnectDevice(grpcChatClient(baseUrl), tokens);
  }

  /** Sends one command frame and resolves with its result frame. */
  command(command: Command): Promise<CommandResult> {
    const frame = this.send(command);
    return new Promise((resolve) => this.unanswered.set(frame.requestId, { frame, resolve }));
  }

  /**
   * Acks every stored event received so far, with answer_errors_only: the server answers the ack only to refuse it
   * (see `ackErrors`). It has taken the ack once it answers a later command, or ends the stream after a half-close.
   */
  ackAll(): void {
    const eventIds = this.stored.map((e) => e.eventId);
    if (eventIds.length > 0) this.send({ case: "ackEvents", value: { eventIds } }, true);
  }

  private send(command: Command, answerErrorsOnly = false): ConnectRequest {
    const frame = create(ConnectRequestSchema, { requestId: `r${++this.nextId}`, command, answerErrorsOnly });
    this.outbox.push(frame);
    this.wakeOutbox?.();
    return frame;
  }

  /** Half-closes the request side; the server then ends the stream, and the device opens no other. */
  endRequests(): void {
    this.done = true;
    this.wakeOutbox?.();
  }

  protected async streamOnce(renew: AbortSignal): Promise<void> {
    // Each call has an outbox of its own (an ended call's request side may still be read), starting with the commands
    // not answered yet.
    const outbox = (this.outbox = [...this.unanswered.values()].map((c) => c.frame));
    let over = false;
    const wake = () => this.wakeOutbox?.();
    renew.addEventListener("abort", wake);
    const headers = this.token ? { authorization: `Bearer ${this.token}` } : undefined;
    try {
      const frames = this.frames(outbox, () => over || this.done || renew.aborted);
      for await (const response of this.client.connect(frames, { signal: this.abort.signal, headers })) {
        if (response.frame.case === "event") this.record(response.frame.value);
        if (response.frame.case === "result") this.answered(response.frame.value);
      }
    } finally {
      // The server ended the stream: close the request side too, so the call is over on both ends. What was not sent
      // is still unanswered, for the next stream (but for acks, dropped).
      over = true;
      outbox.length = 0;
      renew.removeEventListener("abort", wake);
      wake();
    }
  }

  private answered(result: CommandResult): void {
    const command = this.unanswered.get(result.requestId);
    this.unanswered.delete(result.requestId);
    if (command) command.resolve(result);
    // Nothing waits for an ack's answer: a refusal is kept, a success (a server that answers every frame) needs nothing.
    else if (result.outcome.case === "error") {
      this.ackErrors.push(new ConnectError(result.outcome.value.message, result.outcome.value.code));
      this.notify();
    }
  }

  private async *frames(outbox: ConnectRequest[], closing: () => boolean): AsyncGenerator<ConnectRequest> {
    for (;;) {
      while (outbox.length > 0) yield outbox.shift()!;
      if (closing()) return;
      await new Promise<void>((resolve) => (this.wakeOutbox = resolve));
    }
  }
}

/**
 * A browser-like device: Subscribe (server stream over the Connect protocol on HTTP/1.1) plus unary calls. Renewing
 * its token, it ends the Subscribe call and opens the next with the new token.
 */
export class SubscribeDevice extends EventLog {
  /** Unary calls as this device, with its current token. */
  readonly client: Client<typeof ChatService>;

  constructor(baseUrl: string, tokens: TokenSource) {
    super(tokens);
    this.client = connectChatClient(baseUrl, () => this.token);
    void this.keepOpen();
  }

  protected async streamOnce(renew: AbortSignal): Promise<void> {
    // Subscribe has no request side to close: the call just ends, and what was not acked comes again.
    const signal = AbortSignal.any([this.abort.signal, renew]);
    for await (const response of this.client.subscribe({}, { signal })) {
      if (response.event) this.record(response.event);
    }
  }
}
