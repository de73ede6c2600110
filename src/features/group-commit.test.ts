import { describe, expect, it } from "vitest";
import { DependencyUnavailableError } from "../errors.js";
import { Metrics } from "./operations/metrics.js";
import { type GroupCommitOptions, GroupCommitter } from "./group-commit.js";

function deferred() {
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  return { done, release };
}

/** A committer of strings that records its batches and holds the first one's write until `gate` is released. */
function firstBatchHeld(maxBatch: number, maxInFlight: number, options: GroupCommitOptions<string>) {
  const batches: string[][] = [];
  const gate = deferred();
  const committer = new GroupCommitter<string, string>(
    async (items) => {
      batches.push(items);
      if (batches.length === 1) await gate.done;
      return items;
    },
    maxBatch,
    maxInFlight,
    options,
  );
  return { committer, batches, gate };
}

describe("GroupCommitter", () => {
  it("writes a lone item at once, then batches what arrived meanwhile", async () => {
    const batches: number[][] = [];
    const gate = deferred();
    const committer = new GroupCommitter<number, string>(
      async (items) => {
        batches.push(items);
        if (batches.length === 1) await gate.done;
        return items.map((n) => `r${n}`);
      },
      10,
      1,
    );
    const first = committer.submit(1);
    const rest = [2, 3, 4].map((n) => committer.submit(n));
    gate.release();
    expect(await Promise.all([first, ...rest])).toEqual(["r1", "r2", "r3", "r4"]);
    expect(batches).toEqual([[1], [2, 3, 4]]);
  });

  it("with gatherMs, holds a lone item for company, and starts a batch at once when the queue fills it", async () => {
    const batches: number[][] = [];
    const committer = (gatherMs: number) =>
      new GroupCommitter<number, number>(
        async (items) => {
          batches.push(items);
          return items;
        },
        3,
        1,
        { gatherMs },
      );
    const turn = () => new Promise((resolve) => setImmediate(resolve));

    const waiting = committer(200);
    const lone = waiting.submit(1);
    await turn();
    expect(batches).toEqual([]); // nothing written yet: the item waits for company
    const company = waiting.submit(2);
    expect(await Promise.all([lone, company])).toEqual([1, 2]);
    expect(batches).toEqual([[1, 2]]);

    // A full batch does not wait: written long before a minute's gathering would end.
    const filling = committer(60_000);
    const full = Promise.all([3, 4, 5].map((n) => filling.submit(n)));
    const later = new Promise((resolve) => setTimeout(resolve, 2_000, "waited"));
    expect(await Promise.race([full, later])).toEqual([3, 4, 5]);
    expect(batches).toEqual([[1, 2], [3, 4, 5]]);
  });

  it("caps batch size and runs up to maxInFlight batches at once", async () => {
    let concurrent = 0;
    let peak = 0;
    const sizes: number[] = [];
    const committer = new GroupCommitter<number, number>(
      async (items) => {
        sizes.push(items.length);
        peak = Math.max(peak, ++concurrent);
        await new Promise((r) => setTimeout(r, 5));
        concurrent--;
        return items;
      },
      3,
      2,
    );
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => committer.submit(i)));
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(3);
    expect(peak).toBe(2);
  });

  it("fails every item of a failed batch and keeps serving later ones", async () => {
    let calls = 0;
    const committer = new GroupCommitter<number, number>(
      async (items) => {
        if (calls++ === 0) throw new Error("db down");
        return items;
      },
      10,
      1,
    );
    await expect(committer.submit(1)).rejects.toThrow("db down");
    await expect(committer.submit(2)).resolves.toBe(2);
  });

  it("splits a failed batch until the failing item stands alone: only it fails, the rest is written", async () => {
    const writes: string[][] = [];
    const gate = deferred();
    const committer = new GroupCommitter<string, string>(
      async (items) => {
        writes.push(items);
        if (writes.length === 1) await gate.done;
        if (items.includes("bad")) throw new Error("invalid byte sequence");
        return items;
      },
      10,
      1,
    );
    const first = committer.submit("x");
    const batch = ["a", "b", "bad", "c", "d"].map((item) => committer.submit(item).catch((e: Error) => e.message));
    gate.release();
    expect(await Promise.all([first, ...batch])).toEqual(["x", "a", "b", "invalid byte sequence", "c", "d"]);
    expect(writes).toEqual([["x"], ["a", "b", "bad", "c", "d"], ["a", "b", "bad"], ["a", "b"], ["bad"], ["c", "d"]]);
  });

  it("holds a failed batch's keys while it is split: later items of those keys wait for it", async () => {
    const writes: string[][] = [];
    const busy = deferred();
    const half = deferred();
    const committer = new GroupCommitter<string, string>(
      async (items) => {
        writes.push(items);
        if (items[0] === "x" || items[0] === "y") await busy.done;
        if (items.length === 1 && items[0] === "a1") await half.done;
        if (items.length > 1) throw new Error("one of these is bad");
        return items;
      },
      10,
      2,
      { keyOf: (item) => item[0]! },
    );
    // Both slots busy, so a1 and b1 queue up and go together.
    const occupied = ["x", "y"].map((item) => committer.submit(item));
    const split = ["a1", "b1"].map((item) => committer.submit(item));
    busy.release();
    await Promise.all(occupied);
    await new Promise((resolve) => setTimeout(resolve, 10));
    const later = committer.submit("a2");
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(writes).toEqual([["x"], ["y"], ["a1", "b1"], ["a1"]]);
    half.release();
    expect(await Promise.all([...split, later])).toEqual(["a1", "b1", "a2"]);
    expect(writes.slice(4)).toEqual([["b1"], ["a2"]]);
  });

  it("fails a whole batch at once when the database is unavailable, without retrying", async () => {
    let writes = 0;
    const gate = deferred();
    const committer = new GroupCommitter<number, number>(
      async (items) => {
        if (writes++ === 0) {
          await gate.done;
          return items;
        }
        throw new DependencyUnavailableError("postgres");
      },
      10,
      1,
    );
    const first = committer.submit(0);
    const batch = [1, 2, 3].map((n) => committer.submit(n).catch((e: unknown) => e));
    gate.release();
    await first;
    for (const outcome of await Promise.all(batch)) expect(outcome).toBeInstanceOf(DependencyUnavailableError);
    expect(writes).toBe(2);
  });

  it("keeps a key out of concurrent batches: its items wait for the batch that holds it, in order", async () => {
    const { committer, batches, gate } = firstBatchHeld(10, 2, { keyOf: (item) => item[0]! });
    const first = committer.submit("a1");
    const others = ["a2", "b1", "a3"].map((item) => committer.submit(item));
    // "b1" goes in a second batch at once; "a2" and "a3" wait for the batch that holds "a".
    await others[1];
    expect(batches).toEqual([["a1"], ["b1"]]);
    gate.release();
    expect(await Promise.all([first, ...others])).toEqual(["a1", "a2", "b1", "a3"]);
    expect(batches).toEqual([["a1"], ["b1"], ["a2", "a3"]]);
  });

  it("counts a batch's size as sizeOf says: a large item goes alone, and a key's items keep their order past one that did not fit", async () => {
    // Items are "<key><size>": "a4" is key a, size 4.
    const { committer, batches, gate } = firstBatchHeld(5, 1, {
      keyOf: (item) => item[0]!,
      sizeOf: (item) => Number(item.slice(1)),
    });
    const first = committer.submit("x9");
    const rest = ["a2", "b4", "b1", "c3", "a1", "d7"].map((item) => committer.submit(item));
    gate.release();
    expect(await Promise.all([first, ...rest])).toEqual(["x9", "a2", "b4", "b1", "c3", "a1", "d7"]);
    // "b4" does not fit beside "a2", so "b1" waits behind it while "c3" fills the batch; "d7" goes alone.
    expect(batches).toEqual([["x9"], ["a2", "c3"], ["b4", "b1"], ["a1"], ["d7"]]);
  });

  it("tells its onBatch observer each batch's size, into the batch-size histogram under the committer's name", async () => {
    const metrics = new Metrics(() => 0);
    const gate = deferred();
    let calls = 0;
    const committer = new GroupCommitter<string, string>(
      async (items) => {
        if (calls++ === 0) await gate.done;
        return items;
      },
      10,
      2,
      { keyOf: (item) => item[0]!, onBatch: metrics.batchObserver("sends") },
    );
    const first = committer.submit("a1");
    const rest = ["a2", "a3", "b1"].map((item) => committer.submit(item));
    await rest[2]; // "b1" went alone; "a2" and "a3" wait for "a1"'s batch
    gate.release();
    await Promise.all([first, ...rest]);
    const { values } = await metrics.batchSize.get();
    const sent = (suffix: string, le?: number) =>
      values.find((v) => {
        const labels: Record<string, unknown> = v.labels;
        const name = `palaver_group_commit_batch_size${suffix}`;
        return v.metricName === name && labels.committer === "sends" && labels.le === le;
      })?.value;
    expect(sent("_count")).toBe(3);
    expect(sent("_sum")).toBe(4);
    expect(sent("_bucket", 1)).toBe(2);
  });
});
