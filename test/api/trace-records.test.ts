/*
 * The figures of the object events (README, Tracing): `size` is the bytes asked for, `allocSize`
 * the bytes the block holds (its size class, a named cache's stride, a large kmalloc's block),
 * `gfp` the flags of an allocation; `cache` names the cache.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { GFP, Heap, type TraceRecord } from "../../src/index.js";

test("kmalloc, kmem_cache_alloc and their frees carry size, allocSize, cache and (allocations) gfp", () => {
  const h = Heap.create({ size: 16 << 20, cpus: 2 });
  const c = h.createCache("rec-40", 40, { align: 16 });
  const got: TraceRecord[] = [];
  for (const ev of ["kmalloc", "kfree", "kmem_cache_alloc", "kmem_cache_free"] as const) h.trace.on(ev, (r) => got.push(r));
  const a = h.kmalloc(100, GFP.ZERO);
  const big = h.kmalloc(20000);
  const n = h.kmallocNolock(30);
  const o = c.alloc(GFP.NOWAIT);
  h.kfree(a);
  h.kfree(big);
  h.kfreeNolock(n);
  c.free(o);
  h.trace.clear();
  const pick = (r: TraceRecord) => ({ event: r.event, size: r.size, allocSize: r.allocSize, cache: r.cache, gfp: r.gfp });
  assert.deepEqual(got.map(pick), [
    { event: "kmalloc", size: 100, allocSize: 128, cache: "kmalloc-128", gfp: GFP.ZERO },
    { event: "kmalloc", size: 20000, allocSize: 32768, cache: undefined, gfp: GFP.KERNEL },
    { event: "kmalloc", size: 30, allocSize: 32, cache: "kmalloc-32", gfp: GFP.KERNEL },
    { event: "kmem_cache_alloc", size: 40, allocSize: 48, cache: "rec-40", gfp: GFP.NOWAIT },
    { event: "kfree", size: 128, allocSize: 128, cache: "kmalloc-128", gfp: undefined },
    { event: "kfree", size: 32768, allocSize: 32768, cache: undefined, gfp: undefined },
    { event: "kfree", size: 32, allocSize: 32, cache: "kmalloc-32", gfp: undefined },
    { event: "kmem_cache_free", size: 40, allocSize: 48, cache: "rec-40", gfp: undefined },
  ]);
  assert.deepEqual([got[0]!.addr, got[1]!.addr, got[2]!.addr, got[3]!.addr], [a, big, n, o]);
  c.destroy();
  h.shrink();
  h.validate();
  h.detach();
});

test("in debug mode allocSize is still the size class (the stride also holds redzones and metadata)", () => {
  const h = Heap.create({ size: 16 << 20, cpus: 2, debug: true });
  const got: TraceRecord[] = [];
  h.trace.on("kmalloc", (r) => got.push(r));
  const a = h.kmalloc(70);
  const b = h.kmalloc(5000);
  h.trace.clear();
  assert.deepEqual(got.map((r) => [r.size, r.allocSize]), [[70, 96], [5000, 8192]]);
  h.kfree(a);
  h.kfree(b);
  h.validate();
  h.detach();
});
