/**
 * A small TypeScript client for Palaver devices over the generated ChatService client: a native device on the
 * bidirectional Connect stream, a browser-like device on Subscribe plus unary calls. Used by `palaver demo`, the
 * tests and the benchmarks; other languages generate their own clients from proto/.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Client, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  ChatService,
  type CommandResult,
  type ConnectRequest,
  ConnectRequestSchema,
} from "../../gen/palaver/chat/v1/chat_pb.js";
import type { Event } from "../../gen/palaver/chat/v1/event_pb.js";

/** A generated ChatService client over gRPC on HTTP/2 (what native devices use). */
export function grpcChatClient(baseUrl: string, token: string): Client<typeof ChatService> {
  return createClient(ChatService, grpcTransport(baseUrl, token));
}

/** A generated ChatService client over the Connect protocol on HTTP/1.1 (what browsers use). */
export function connectChatClient(baseUrl: string, token: string): Client<typeof ChatService> {
  return createClient(ChatService, connectTransport(baseUrl, token));
}

export function grpcTransport(baseUrl: string, token: string) {
  return createGrpcTransport({ baseUrl, interceptors: [bearer(token)] });
}

export function connectTransport(baseUrl: string, token: string) {
  return createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(token)] });
}

function bearer(token: string): Interceptor {
  return (next) => async (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

type Command = MessageInitShape<typeof ConnectRequestSchema>["command"];

/** Events a device received, with helpers to wait for more. Shared by the Connect and Subscribe test devices. */
abstract class EventLog {
  readonly events: Event[] = [];
  /** When each of `events` arrived (ms since the epoch), index by index. */
  readonly arrivals: number[] = [];
  /** Set when the stream ended: null when cleanly, else its error. */
  ended: ConnectError | null | undefined;
  private waiters: (() => void)[] = [];

  protected record(event: Event): void {
    this.events.push(event);
    this.arrivals.push(Date.now());
    this.notify();
  }

  protected finish(error: ConnectError | null): void {
    this.ended = error;
    this.notify();
  }

  private notify(): void {
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

/** A native device: one bidirectional Connect stream over gRPC (HTTP/2) carrying its commands and its events. */
export class ConnectDevice extends EventLog {
  private readonly outbox: ConnectRequest[] = [];
  private wakeOutbox: (() => void) | null = null;
  private closed = false;
  private nextId = 0;
  private readonly pending = new Map<string, (result: CommandResult) => void>();
  private readonly abort = new AbortController();

  constructor(client: Client<typeof ChatService>) {
    super();
    void this.run(client);
  }

  static open(baseUrl: string, token: string): ConnectDevice {
    return new ConnectDevice(grpcChatClient(baseUrl, token));
  }

  /** Sends one command frame and resolves with its result frame. */
  command(command: Command): Promise<CommandResult> {
    const requestId = `r${++this.nextId}`;
    return new Promise((resolve) => {
      this.pending.set(requestId, resolve);
      this.outbox.push(create(ConnectRequestSchema, { requestId, command }));
      this.wakeOutbox?.();
    });
  }

  /** Acks every stored event received so far. */
  async ackAll(): Promise<void> {
    const eventIds = this.stored.map((e) => e.eventId);
    if (eventIds.length > 0) await this.command({ case: "ackEvents", value: { eventIds } });
  }

  /** Half-closes the request side; the server then ends the stream. */
  endRequests(): void {
    this.closed = true;
    this.wakeOutbox?.();
  }

  /** Drops the connection at once, as a device that loses its network. */
  disconnect(): void {
    this.abort.abort();
  }

  private async *frames(): AsyncGenerator<ConnectRequest> {
    for (;;) {
      while (this.outbox.length > 0) yield this.outbox.shift()!;
      if (this.closed) return;
      await new Promise<void>((resolve) => (this.wakeOutbox = resolve));
    }
  }

  private async run(client: Client<typeof ChatService>): Promise<void> {
    try {
      for await (const response of client.connect(this.frames(), { signal: this.abort.signal })) {
        if (response.frame.case === "event") this.record(response.frame.value);
        if (response.frame.case === "result") {
          this.pending.get(response.frame.value.requestId)?.(response.frame.value);
          this.pending.delete(response.frame.value.requestId);
        }
      }
      this.finish(null);
    } catch (error) {
      this.finish(ConnectError.from(error));
    } finally {
      // The server ended the stream: close the request side too, so the call is over on both ends.
      this.endRequests();
    }
  }
}

/** A browser-like device: Subscribe (server stream over the Connect protocol on HTTP/1.1) plus unary calls. */
export class SubscribeDevice extends EventLog {
  readonly client: Client<typeof ChatService>;
  private readonly abort = new AbortController();

  constructor(baseUrl: string, token: string) {
    super();
    this.client = connectChatClient(baseUrl, token);
    void this.run();
  }

  disconnect(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    try {
      for await (const response of this.client.subscribe({}, { signal: this.abort.signal })) {
        if (response.event) this.record(response.event);
      }
      this.finish(null);
    } catch (error) {
      this.finish(ConnectError.from(error));
    }
  }
}

