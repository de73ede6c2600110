/** The API takes at most this many ids per AckEvents call. */
const MAX_PER_CALL = 1000;

/**
 * Acks events once they are shown and stored, a batch at a time. A failed ack is kept and tried again: until the
 * server has it, the event stays in this device's inbox and comes back after a reconnect (where it is deduplicated).
 */
export class AckQueue {
  private readonly pending = new Set<bigint>();
  private timer: number | undefined;
  private flushing = false;

  constructor(
    private readonly send: (eventIds: bigint[]) => Promise<void>,
    /** Runs before each batch goes out: the events must be stored before the server forgets them. */
    private readonly beforeSend: () => void,
    private readonly delayMs = 250,
  ) {}

  add(eventId: bigint): void {
    if (eventId === 0n) return; // signals, receipts and typing are not stored, so there is nothing to ack
    this.pending.add(eventId);
    this.schedule(this.delayMs);
  }

  get size(): number {
    return this.pending.size;
  }

  /** Sends what is waiting now rather than after the delay: the stream just came back, so the server is reachable. */
  flushNow(): void {
    if (this.pending.size === 0) return;
    window.clearTimeout(this.timer);
    this.timer = undefined;
    this.schedule(0);
  }

  stop(): void {
    window.clearTimeout(this.timer);
  }

  private schedule(ms: number): void {
    if (this.timer !== undefined || this.flushing) return;
    this.timer = window.setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
  }

  private async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    this.flushing = true;
    const batch = [...this.pending].slice(0, MAX_PER_CALL);
    let retryIn = 0;
    try {
      this.beforeSend();
      await this.send(batch);
      for (const id of batch) this.pending.delete(id);
    } catch {
      retryIn = 3000;
    } finally {
      this.flushing = false;
    }
    if (this.pending.size > 0) this.schedule(retryIn || this.delayMs);
  }
}
