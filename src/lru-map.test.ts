import { describe, expect, it } from "vitest";
import { LruMap } from "./lru-map.js";

describe("LruMap", () => {
  it("drops the least recently used entry past its size: a read or a write counts as a use", () => {
    const map = new LruMap<string, number>(2);
    map.set("a", 1);
    map.set("b", 2);
    expect(map.get("a")).toBe(1); // b is now the least recently used
    map.set("c", 3);
    expect([map.get("a"), map.get("b"), map.get("c")]).toEqual([1, undefined, 3]);
    map.set("a", 4); // c is now the least recently used
    map.set("d", 5);
    expect([map.get("a"), map.get("c"), map.get("d")]).toEqual([4, undefined, 5]);
  });
});
