/**
 * Group commit: callers submit one item each; items that arrive while earlier batches are being written wait and go
 * together in the next batch. One transaction per batch instead of per item is where send throughput comes from,
 * and under light load a batch is a single item written at once (no timer adds latency).
 */
export class GroupCommitter<Item, Result> {
  private queue: { item: Item; resolve: (r: Result) => void; reject: (e: unknown) => void }[] = [];
  private inFlight = 0;

  constructor(
    /** Writes a batch; returns one result per item, in order. A throw fails every item of the batch. */
    private readonly writeBatch: (items: Item[]) => Promise<Result[]>,
    private readonly maxBatch: number,
    /** Batches written at once (a connection pool can take several; PGlite is one connection). */
    private readonly maxInFlight: number,
  ) {}

  submit(item: Item): Promise<Result> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.flush();
    });
  }

  private flush(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      void this.write(batch);
    }
  }

  private async write(batch: typeof this.queue): Promise<void> {
    try {
      const results = await this.writeBatch(batch.map((entry) => entry.item));
      batch.forEach((entry, i) => entry.resolve(results[i]!));
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    } finally {
      this.inFlight--;
      this.flush();
    }
  }
}
