/*
 * Slab decay: a cache keeps up to K_MAX_EMPTY empty slabs instead of min_partial, so that a batch
 * freed and allocated again reuses its slabs; a decay step releases half of the empty slabs that no
 * allocation needed since the last step; direct reclaim takes back everything above min_partial
 * before an allocation fails; shrink keeps none. Every figure is exact (one agent, a fixed script).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap, type SlabStats } from "../../../src/index.js";
import { SLAB_EMPTY_MAX_PAGES } from "../../../src/slab/sizes.js";

const MiB = 1 << 20;

function cacheStats(h: Heap, name: string): SlabStats {
  const s = h.stats().slabs.find((c) => c.name === name);
  assert.ok(s, `no cache ${name}`);
  return s;
}

test("a batch freed and allocated again reuses the kept empty slabs; they stay within the bound", () => {
  const h = Heap.create({ size: 128 * MiB, cpus: 2 });
  const c = h.createCache("decay-256", 256);
  // The bound: SLAB_EMPTY_MAX_PAGES of order-0 slabs (1/64 of this zone is more).
  const bound = SLAB_EMPTY_MAX_PAGES;
  assert.ok(h.stats().totalPages >>> 6 > bound);
  const objs: number[] = [];
  const round = (): { built: number; freed: number } => {
    const v0 = h.stats().vmstat;
    for (let i = 0; i < 8192; i++) objs.push(c.alloc());
    for (const o of objs.splice(0)) c.free(o);
    const v1 = h.stats().vmstat;
    return { built: v1.slabAlloc - v0.slabAlloc, freed: v1.slabFree - v0.slabFree };
  };
  const first = round();
  const s1 = cacheStats(h, "decay-256");
  console.log(`# first batch of 8192: ${first.built} slabs built, ${first.freed} freed; ${s1.slabs} slabs left, ${s1.emptySlabs} empty`);
  assert.equal(s1.activeObjects, 0);
  // 8192 objects of 16 a slab: 512 slabs, and four slabs of the sheaf cache (12 sheaves each) for
  // the sheaves (the barn of 256-byte objects keeps up to 39 full and 39 empty ones: BARN_BYTES).
  assert.equal(first.built, 516);
  // The free phase ran past SLAB_DECAY_TICKS frees to the slabs: its decay steps released empty
  // slabs that stayed empty for a whole period. The script is deterministic: these are its
  // exact figures, within the bound.
  assert.equal(first.freed, 260);
  assert.equal(s1.slabs, 512 - 260);
  assert.equal(s1.emptySlabs, 187);
  assert.ok(s1.emptySlabs <= bound);
  const second = round();
  const s2 = cacheStats(h, "decay-256");
  console.log(`# second batch: ${second.built} slabs built, ${second.freed} freed; ${s2.slabs} slabs left, ${s2.emptySlabs} empty`);
  // The kept slabs and the objects in sheaves and barn serve half of the batch; the slabs the
  // decay released are built again, and the decay steps of the free phase keep within the bound.
  assert.equal(second.built, 260);
  assert.equal(second.freed, 211);
  assert.equal(s2.slabs, 301);
  assert.equal(s2.emptySlabs, 234);
  assert.ok(s2.emptySlabs <= bound);
  h.validate();
  c.shrink();
  assert.equal(cacheStats(h, "decay-256").emptySlabs, 0, "shrink keeps no empty slab");
  h.validate();
  h.detach();
});

test("the decay releases empty slabs no allocation needed, down to min_partial", () => {
  const h = Heap.create({ size: 128 * MiB, cpus: 2 });
  const c = h.createCache("decay-idle", 256);
  const objs: number[] = [];
  for (let i = 0; i < 8192; i++) objs.push(c.alloc());
  for (const o of objs.splice(0)) c.free(o);
  const kept = cacheStats(h, "decay-idle").emptySlabs;
  // Small batches that need few slabs: the large set of empty slabs is never used again, so each
  // decay step (every SLAB_DECAY_TICKS frees to the slabs) releases half of what stayed empty above min_partial.
  const freed0 = h.stats().vmstat.slabFree;
  for (let r = 0; r < 200; r++) {
    for (let i = 0; i < 1024; i++) objs.push(c.alloc());
    for (const o of objs.splice(0)) c.free(o);
  }
  const s = cacheStats(h, "decay-idle");
  const released = h.stats().vmstat.slabFree - freed0;
  console.log(`# ${kept} empty slabs kept after the large batch; after 200 small batches ${s.emptySlabs} (${released} slabs released)`);
  // The script is deterministic: these are its exact figures.
  assert.equal(kept, 187);
  // The batches stop at the barn (1024 objects: 40 sheaves), whose puts tick the decay too.
  assert.equal(s.emptySlabs, 5, `the decay released the unused empty slabs: ${s.emptySlabs} of ${kept} left`);
  assert.equal(released, 181);
  assert.ok(s.emptySlabs >= 5, "min_partial (5 for 256-byte objects) stays");
  h.validate();
  h.detach();
});

test("direct reclaim takes back the kept empty slabs above min_partial before an allocation fails", () => {
  const h = Heap.create({ size: 16 * MiB, cpus: 2 });
  const c = h.createCache("decay-reclaim", 256);
  const objs: number[] = [];
  for (let i = 0; i < 2048; i++) objs.push(c.alloc());
  for (const o of objs.splice(0)) c.free(o);
  const before = cacheStats(h, "decay-reclaim");
  assert.ok(before.emptySlabs > 5, `empty slabs kept: ${before.emptySlabs}`);
  const pages: number[] = [];
  for (let p = h.allocPages(0); p !== 0; p = h.allocPages(0)) pages.push(p);
  const after = cacheStats(h, "decay-reclaim");
  console.log(`# ${before.emptySlabs} empty slabs kept; after the heap ran out of pages: ${after.emptySlabs}`);
  // min_partial of a 256-byte cache: ilog2(256) / 2 = 4, clamped to 5.
  assert.equal(after.emptySlabs, 5);
  assert.ok(h.stats().vmstat.directReclaim > 0);
  for (const p of pages) h.freePages(p, 0);
  h.validate();
  h.detach();
});
