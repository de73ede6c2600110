/**
 * Preloaded into a server node (BENCH_NODE_ARGS="--import ./bench/heap-sample.ts"), samples what the server allocates
 * over a window with V8's sampling heap profiler and writes it as a .heapprofile (Chrome DevTools reads it; so does
 * `npx tsx bench/profile-top.ts <file>`). BENCH_HEAP_SAMPLE picks what is kept:
 *
 * - `all`: every sampled allocation, whatever became of it (where the garbage comes from: scavenges scale with it);
 * - `promoted`: only what outlived the young generation (left out: what a scavenge collected), the survivors that make
 *   scavenges slow and major collections necessary.
 *
 * BENCH_HEAP_SAMPLE_WINDOW="65:20" (the default) starts 65 s after the node starts and samples for 20 s: in a full
 * profile `steady` run that is inside the measured step. The file goes to BENCH_HEAP_SAMPLE_OUT (default
 * `<tmpdir>/palaver-<pid>.heapprofile`).
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const mode = process.env.BENCH_HEAP_SAMPLE;
if (mode !== "all" && mode !== "promoted") throw new Error(`BENCH_HEAP_SAMPLE must be "all" or "promoted", not ${mode}`);
const [startSeconds, seconds] = (process.env.BENCH_HEAP_SAMPLE_WINDOW ?? "65:20").split(":").map(Number);
const out = process.env.BENCH_HEAP_SAMPLE_OUT ?? join(tmpdir(), `palaver-${process.pid}.heapprofile`);

const session = new Session();
session.connect();
setTimeout(async () => {
  await session.post("HeapProfiler.enable");
  await session.post("HeapProfiler.startSampling", {
    samplingInterval: 16384,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: mode === "all",
  });
  setTimeout(async () => {
    const { profile } = await session.post("HeapProfiler.stopSampling");
    writeFileSync(out, JSON.stringify(profile));
  }, seconds! * 1000).unref();
}, startSeconds! * 1000).unref();
