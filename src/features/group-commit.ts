import { DependencyUnavailableError } from "../errors.js";

export interface GroupCommitOptions<Item> {
  /**
   * What an item locks while its batch is written (a send: its chat). An item whose key an in-flight batch holds
   * waits for the next batch, so batches written at once never wait on each other's row locks: under load,
   * overlapping batches had serialized behind each other's chat locks, each holding them for several round trips.
   */
  keyOf?: (item: Item) => string;
  /** How much of maxBatch an item takes (default 1): an ack frame counts its event ids. */
  sizeOf?: (item: Item) => number;
  /** Told each batch's size as it starts to be written (Metrics.batchObserver); unset: nothing is observed. */
  onBatch?: (size: number) => void;
  /**
   * How long the oldest queued item may wait for company before its batch starts, unless the queue fills a batch
   * first (default 0: as soon as a batch may start). A statement has a fixed cost (planning, executor start-up,
   * commit) that a busy server otherwise pays for batches of two or three.
   */
  gatherMs?: number;
}

/**
 * Group commit: callers submit one item each; items that arrive while earlier batches are being written wait and go
 * together in the next batch. One transaction per batch instead of per item is where send throughput comes from,
 * and under light load a batch is a single item written at once, unless gatherMs has it wait that long for company.
 * An item that fails its batch fails alone: the rest of the batch is written without it.
 */
export class GroupCommitter<Item, Result> {
  private queue: { item: Item; resolve: (r: Result) => void; reject: (e: unknown) => void; at: number }[] = [];
  private inFlight = 0;
  /** Starts the waiting batch once its oldest item has waited gatherMs. */
  private gatherTimer: NodeJS.Timeout | undefined;

  constructor(
    /** Writes a batch; returns one result per item, in order. A throw fails the batch (see settle). */
    private readonly writeBatch: (items: Item[]) => Promise<Result[]>,
    /** The most a batch holds, in items or as sizeOf counts them; an item larger than that goes alone. */
    private readonly maxBatch: number,
    /** Batches written at once (a connection pool can take several; PGlite is one connection). */
    private readonly maxInFlight: number,
    /** The batch's lock keys and size observer (see GroupCommitOptions). */
    options: GroupCommitOptions<Item> = {},
  ) {
    this.keyOf = options.keyOf;
    this.sizeOf = options.sizeOf;
    this.onBatch = options.onBatch;
    this.gatherMs = options.gatherMs ?? 0;
  }

  private readonly keyOf?: (item: Item) => string;
  private readonly sizeOf?: (item: Item) => number;
  private readonly onBatch?: (size: number) => void;
  private readonly gatherMs: number;

  /** Keys held by the batches in flight, with how many of their items hold each. */
  private readonly busy = new Map<string, number>();

  submit(item: Item): Promise<Result> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject, at: this.gatherMs > 0 ? performance.now() : 0 });
      this.flush();
    });
  }

  private flush(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      if (this.gatherMs > 0 && this.queue.length < this.maxBatch) {
        const waitMs = this.queue[0]!.at + this.gatherMs - performance.now();
        if (waitMs > 0) {
          this.gatherTimer ??= setTimeout(() => {
            this.gatherTimer = undefined;
            this.flush();
          }, waitMs);
          return;
        }
      }
      // What is left once this batch is taken waits afresh (below).
      clearTimeout(this.gatherTimer);
      this.gatherTimer = undefined;
      const batch = this.take();
      if (batch.length === 0) return;
      this.inFlight++;
      this.onBatch?.(batch.length);
      void this.write(batch);
    }
  }

  /**
   * Queued items in order, up to maxBatch of them (as sizeOf counts), skipping those whose key a batch in flight
   * holds; an item skipped (held, or too large for what is left) holds its key for the items after it, so a key's
   * items keep their order. Marks the batch's keys busy.
   */
  private take(): typeof this.queue {
    const { keyOf, sizeOf } = this;
    if (!keyOf && !sizeOf) return this.queue.splice(0, this.maxBatch);
    const batch: typeof this.queue = [];
    const rest: typeof this.queue = [];
    const skipped = new Set<string>();
    let size = 0;
    for (const entry of this.queue) {
      const key = keyOf?.(entry.item);
      const itemSize = sizeOf?.(entry.item) ?? 1;
      const fits = batch.length === 0 || size + itemSize <= this.maxBatch;
      if (fits && (key === undefined || (!this.busy.has(key) && !skipped.has(key)))) {
        batch.push(entry);
        size += itemSize;
      } else {
        rest.push(entry);
        if (key !== undefined) skipped.add(key);
      }
    }
    // A key taken by this batch is busy for the items after it too (they keep their order in the next batch).
    if (keyOf) {
      for (const entry of batch) {
        const key = keyOf(entry.item);
        this.busy.set(key, (this.busy.get(key) ?? 0) + 1);
      }
    }
    this.queue = rest;
    return batch;
  }

  private async write(batch: typeof this.queue): Promise<void> {
    try {
      await this.settle(batch);
    } finally {
      if (this.keyOf) {
        for (const entry of batch) {
          const key = this.keyOf(entry.item);
          const held = this.busy.get(key)! - 1;
          if (held === 0) this.busy.delete(key);
          else this.busy.set(key, held);
        }
      }
      this.inFlight--;
      this.flush();
    }
  }

  /**
   * Writes the items and settles each. A batch that fails for anything but an outage may fail for one item's data (a
   * value the database refuses, a constraint it breaks): it is split in halves, written one after the other so the
   * items keep their order, until the failing items stand alone and only they fail. An outage fails every item at
   * once, as each would fail alike and retrying would only add load. The batch's keys stay held meanwhile.
   */
  private async settle(batch: typeof this.queue): Promise<void> {
    let results: Result[];
    try {
      results = await this.writeBatch(batch.map((entry) => entry.item));
    } catch (error) {
      if (batch.length === 1 || error instanceof DependencyUnavailableError) {
        for (const entry of batch) entry.reject(error);
        return;
      }
      const half = Math.ceil(batch.length / 2);
      await this.settle(batch.slice(0, half));
      await this.settle(batch.slice(half));
      return;
    }
    batch.forEach((entry, i) => entry.resolve(results[i]!));
  }
}
