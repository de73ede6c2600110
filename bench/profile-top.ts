/**
 * Summarizes a V8 CPU profile (node --cpu-prof; `BENCH_CPU_PROF=1 npm run bench` writes them to bench/results/profiles):
 * the functions with the most self time, and self time by package. Given a sampled heap profile (.heapprofile, from
 * bench/heap-sample.ts), the same by bytes allocated.
 *
 *   npx tsx bench/profile-top.ts bench/results/profiles/<file>.cpuprofile [top=30]
 */
import { readFileSync } from "node:fs";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame }[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}
interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapNode[];
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error("usage: npx tsx bench/profile-top.ts <file.cpuprofile | file.heapprofile> [top]");
  process.exit(2);
}
const parsed = JSON.parse(readFileSync(file, "utf8")) as CpuProfile | { head: HeapNode };
const top = Number(topArg ?? 30);
/** Each call frame's self time (µs) or self bytes, one entry per profile node. */
const self: [CallFrame, number][] = [];
let header: string;
let unit: string;
if ("head" in parsed) {
  const walk = (node: HeapNode) => {
    self.push([node.callFrame, node.selfSize]);
    node.children.forEach(walk);
  };
  walk(parsed.head);
  const bytes = self.reduce((sum, [, size]) => sum + size, 0);
  header = `heap profile: ${(bytes / 1e6).toFixed(1)} MB sampled`;
  unit = "bytes allocated";
} else {
  const byId = new Map<number, number>();
  parsed.samples.forEach((id, i) => byId.set(id, (byId.get(id) ?? 0) + (parsed.timeDeltas[i] ?? 0)));
  for (const node of parsed.nodes) self.push([node.callFrame, byId.get(node.id) ?? 0]);
  const us = self.reduce((sum, [, time]) => sum + time, 0);
  header = `profile: ${(us / 1e6).toFixed(1)} s of samples over ${((parsed.endTime - parsed.startTime) / 1e6).toFixed(1)} s`;
  unit = "self time";
}
const total = self.reduce((sum, [, amount]) => sum + amount, 0);

const where = (url: string): string => {
  if (!url) return "(native/V8)";
  const nm = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith("node:")) return url.split("/")[0]!.replace(/^node:internal.*/, "node:internal");
  const src = /\/work\/[^/]+\/(.*)$/.exec(url);
  return src ? src[1]! : url;
};

const fns = new Map<string, number>();
const pkgs = new Map<string, number>();
for (const [{ functionName, url, lineNumber }, amount] of self) {
  const key = `${functionName || "(anonymous)"}  ${where(url)}:${lineNumber + 1}`;
  fns.set(key, (fns.get(key) ?? 0) + amount);
  const place = where(url);
  const pkg = /^\(/.test(functionName) && !url ? functionName : place.startsWith("(") ? place : place.replace(/\/[^/]*$/, "");
  pkgs.set(pkg, (pkgs.get(pkg) ?? 0) + amount);
}
const pct = (amount: number) => `${((amount / total) * 100).toFixed(1).padStart(5)} %`;
console.log(header);
console.log(`\n${unit} by package or directory:`);
for (const [k, v] of [...pkgs].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`  ${pct(v)}  ${k}`);
console.log(`\ntop ${top} functions by ${unit}:`);
for (const [k, v] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(v)}  ${k}`);
