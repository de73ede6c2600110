import type { Event } from "../../../gen/palaver/chat/v1/event_pb.js";
import type { CommandResult } from "../../../gen/palaver/chat/v1/chat_pb.js";
import { Refusal } from "../../errors.js";
import type { Fanout, InboxStore } from "../../ports/db.js";
import { inboxDrainedEvent, resyncEvent } from "./events.js";

/**
 * What a device stream sends: a stored event (its bytes as stored, shared by every device it goes to, given this
 * device's event id only when written), a signal made here (Resync, InboxDrained), a notice (a receipt or typing: an
 * event encoded once for all the devices it goes to) — signals and notices are never stored, never acked — or a
 * command's result.
 */
export type StreamFrame =
  | { kind: "event"; eventId: bigint; body: Uint8Array; sentAtMs?: number }
  | { kind: "signal"; event: Event }
  | { kind: "notice"; body: Uint8Array }
  | { kind: "result"; result: CommandResult };
type EventFrame = Extract<StreamFrame, { kind: "event" }>;

/** Writes frames to the transport at once; false when the write filled the transport's buffer. */
export type FrameSink = (frames: StreamFrame[]) => boolean;

export interface DeviceStreamOptions {
  /** Frames waiting for a slow reader before the stream is ended with RESOURCE_EXHAUSTED. */
  queueLimit: number;
  /** Inbox events read per page while draining the backlog. */
  pageSize: number;
  /** Most frames handed to the transport at once (see frames()). */
  batchSize: number;
  /**
   * How many of the newest event ids the stream remembers having sent, so a second push of one is dropped: a send
   * that committed before the stream opened can have its live push arrive after the backlog already carried it, and a
   * retried send pushes its event again.
   */
  recentIds: number;
  /**
   * How long after catching up from a bus outage the stream still remembers every id sent since the outage began:
   * another node's failed hand-offs are tried again for that long (DeliveryHub), and may bring an event the catch-up
   * already read from the inbox.
   */
  lateHandOffMs: number;
}

/**
 * One open event stream of one device (Connect or Subscribe). It sends, in order: a Resync when the device's unacked
 * events were dropped, the inbox backlog oldest first, InboxDrained, then live events. Live events that arrive while
 * the backlog is being read wait, and are dropped only when the backlog already sent them, so the overlap neither loses
 * nor repeats events. Frames are pulled by the transport as it writes them, so a slow reader slows the backlog; live
 * frames queue up to `queueLimit`, past which the stream ends with RESOURCE_EXHAUSTED (the events stay in the inbox).
 */
export class DeviceStream {
  private readonly ready: StreamFrame[] = [];
  private heldDuringDrain: EventFrame[] | null = [];
  /** Ids of the events sent or queued on this stream, oldest first (all of the backlog while it drains). */
  private readonly sentIds = new Set<bigint>();
  private wake: (() => void) | null = null;
  /** undefined while open; null when ended cleanly; the error to end with otherwise. */
  private ending: Error | null | undefined;
  /** Set by finish(): end once the queued frames are out, cleanly (null) or with this error. */
  private finishing: { error: Error | null } | undefined;
  /** The highest event id sent or queued on this stream. */
  private maxSentId = 0n;
  /**
   * While other nodes' hand-offs are interrupted, and for lateHandOffMs after the catch-up (`until`): where the gap
   * began, and every id sent since.
   */
  private gap: { after: bigint; sent: Set<bigint>; until?: number } | null = null;
  /** Where live frames are written directly (writeDirectlyTo), and whether its last write filled its buffer. */
  private sink: FrameSink | null = null;
  private sinkFull = false;

  constructor(
    readonly deviceKey: string,
    readonly userId: string,
    private readonly db: InboxStore,
    private readonly options: DeviceStreamOptions,
  ) {}

  /** A live event for this device: the stored event (shared by its recipients), and this device's event id for it. */
  pushEvent(fanout: Pick<Fanout, "body" | "sentAtMs">, eventId: bigint): void {
    if (this.gap?.until !== undefined && Date.now() > this.gap.until) this.gap = null;
    if (this.ending !== undefined || this.sentIds.has(eventId) || this.gap?.sent.has(eventId)) return;
    const frame: EventFrame = { kind: "event", eventId, body: fanout.body, sentAtMs: fanout.sentAtMs };
    if (this.heldDuringDrain) {
      this.heldDuringDrain.push(frame);
      this.checkBound(this.heldDuringDrain.length + this.ready.length);
      return;
    }
    this.remember(eventId);
    this.enqueue([frame]);
  }

  /**
   * Lets the transport take live frames the moment they come: while the stream is live, nothing is queued and the
   * transport waits for frames, a frame goes straight to `sink` instead of waking the loop that pulls frames(). At one
   * event per device at a time (the common case) that saves a promise and several generator resumptions per event.
   * When the sink reports its buffer full, frames queue and go through frames() again, which waits for the transport.
   */
  writeDirectlyTo(sink: FrameSink): void {
    this.sink = sink;
  }

  pushResult(result: CommandResult): void {
    if (this.ending === undefined) this.enqueue([{ kind: "result", result }]);
  }

  /** Notices (see StreamFrame), written together: sent as soon as the stream can, between backlog pages too. */
  pushNotices(bodies: readonly Uint8Array[]): void {
    if (this.ending === undefined) this.enqueue(bodies.map((body) => ({ kind: "notice", body })));
  }

  /** Ends the stream: cleanly without an error, else with it (a Refusal, or the call's own reason). The first call wins. */
  end(error: Error | null = null): void {
    if (this.ending !== undefined) return;
    this.ending = error;
    this.heldDuringDrain = null;
    this.notify();
  }

  /**
   * Hand-offs from other nodes stopped (events may be missed from here): remember where. Also while the backlog
   * drains, since the drain reads only what was stored before its last page.
   */
  markGap(): void {
    if (!this.gap) this.gap = { after: this.maxSentId, sent: new Set() };
    else this.gap.until = undefined; // an outage again soon after the last: one gap, from where the first began
  }

  /** Hand-offs are back: send what the inbox got since the gap began and this stream has not sent. */
  async catchUp(): Promise<void> {
    const gap = this.gap;
    if (!gap) return;
    try {
      for (let after = gap.after; this.ending === undefined; ) {
        const page = await this.db.readInbox(this.deviceKey, after, this.options.pageSize);
        for (const event of page) {
          this.pushEvent(event, event.eventId); // drops what this stream sent since the gap began
          after = event.eventId;
        }
        if (page.length < this.options.pageSize) break;
      }
    } finally {
      if (this.gap === gap) gap.until = Date.now() + this.options.lateHandOffMs;
    }
  }

  /**
   * Ends the stream once the frames already queued (answers to the client's last commands) are sent: cleanly, or with
   * the error (the client's request stream broke off).
   */
  finish(error: Error | null = null): void {
    this.finishing ??= { error };
    this.notify();
  }

  get ended(): boolean {
    return this.ending !== undefined;
  }

  /**
   * The stream's frames, in batches: what is ready at once (a backlog page, or the live events and results queued since
   * the transport last wrote) goes out together, up to `batchSize` frames, so the transport writes a batch with one
   * write and the generators between here and the socket resume once per batch rather than once per event.
   */
  async *frames(): AsyncGenerator<StreamFrame[]> {
    // The backlog is read by a generator of its own, done with once it is sent: a generator suspended in the live loop
    // below keeps whatever its locals last held, which for the backlog's pages was their events for as long as the
    // device stayed connected.
    const backlog = yield* this.backlog();
    this.throwIfEnded();
    const ready = this.takeReady(this.options.batchSize);
    ready.push({ kind: "signal", event: inboxDrainedEvent(backlog) });
    yield ready;
    this.goLive();
    for (;;) {
      while (this.ready.length > 0 && this.ending === undefined) yield this.takeReady(this.options.batchSize);
      this.throwIfEnded();
      // The transport asks for more only once it has written what it had and its buffer drained.
      this.sinkFull = false;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** A Resync if due, then the inbox oldest first (frames ready meanwhile go along); returns how many events it sent. */
  private async *backlog(): AsyncGenerator<StreamFrame[], number> {
    const opened = await this.db.openInbox(this.deviceKey, this.options.pageSize);
    if (opened.resync) yield [{ kind: "signal", event: resyncEvent(opened.resync) }];
    let backlog = 0;
    for (let after = 0n, first = true; ; first = false) {
      const page = first ? opened.events : await this.db.readInbox(this.deviceKey, after, this.options.pageSize);
      for (let start = 0; start < page.length; start += this.options.batchSize) {
        // Results of commands that arrived meanwhile go first, as they would between any two events. Checked for the
        // end before they are taken: a finished stream ends once they are out, not instead of sending them.
        this.throwIfEnded();
        const batch = this.takeReady(this.options.batchSize);
        for (const event of page.slice(start, start + this.options.batchSize)) {
          this.markSent(event.eventId);
          // Sent as stored: the backlog is not decoded and re-encoded (see eventField).
          batch.push({ kind: "event", eventId: event.eventId, body: event.body });
          after = event.eventId;
          backlog++;
        }
        yield batch;
      }
      if (page.length < this.options.pageSize) return backlog;
    }
  }

  private goLive(): void {
    const held = this.heldDuringDrain ?? [];
    this.heldDuringDrain = null;
    for (const frame of held) {
      if (this.sentIds.has(frame.eventId)) continue;
      this.remember(frame.eventId);
      this.ready.push(frame);
    }
    this.remember();
  }

  /** Records an id as sent, keeping only the newest `recentIds` (the backlog's newest stay: they race live pushes). */
  private remember(eventId?: bigint): void {
    if (eventId !== undefined) this.markSent(eventId);
    for (const oldest of this.sentIds) {
      if (this.sentIds.size <= this.options.recentIds) break;
      this.sentIds.delete(oldest);
    }
  }

  /** Records an id as sent or queued on this stream (and, during a bus outage, as not to be caught up again). */
  private markSent(eventId: bigint): void {
    this.sentIds.add(eventId);
    this.gap?.sent.add(eventId);
    if (eventId > this.maxSentId) this.maxSentId = eventId;
  }

  /** Up to `max` of the frames ready to send, oldest first; none once the stream has ended. */
  private takeReady(max: number): StreamFrame[] {
    if (this.ending !== undefined) return [];
    return this.ready.splice(0, max);
  }

  private throwIfEnded(): void {
    if (this.finishing && this.ready.length === 0) this.end(this.finishing.error);
    if (this.ending === undefined) return;
    if (this.ending) throw this.ending;
    throw new StreamEnded();
  }

  private enqueue(frames: StreamFrame[]): void {
    // The transport is idle in the live loop (it waits for frames and its buffer has room): write at once.
    if (this.sink && this.wake && !this.sinkFull && this.ready.length === 0) {
      if (!this.sink(frames)) this.sinkFull = true;
      return;
    }
    this.ready.push(...frames);
    this.checkBound(this.ready.length + (this.heldDuringDrain?.length ?? 0));
    this.notify();
  }

  private checkBound(waiting: number): void {
    if (waiting > this.options.queueLimit) {
      this.end(
        new Refusal(
          "too_slow",
          `more than ${this.options.queueLimit} events waiting for this slow stream: it is closed and the events stay in the inbox; reconnect to receive them`,
        ),
      );
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}

/** Thrown out of frames() when the stream was ended cleanly; the RPC handler returns normally on it. */
export class StreamEnded extends Error {
  constructor() {
    super("stream ended");
    this.name = "StreamEnded";
  }
}
