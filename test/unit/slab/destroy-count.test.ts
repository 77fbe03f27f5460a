/*
 * destroy() counts a cache's live objects while other slots work on their sheaves: it reads their
 * pcs lines and hands as they are. A sheaf a slot has just freed out of its hand (its first word is
 * then the free tag, not a count) and a sheaf that a slot swapping its main and spare shows in both
 * words for a moment were each counted as free objects: the count came out too low, even negative,
 * and destroy() released a cache whose objects were still live (and stats() showed a negative count).
 * The test writes the other slot's words as such an instant leaves them, then asks.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";
import { layersOf } from "../../../src/layers.js";
import { C_FREEING, C_FREEING_TAKING, K_HDR_WORDS, O_FREE_TAG, PCS_HAND, PCS_MAIN, PCS_SPARE, PCS_WORDS, S_SIZE } from "../../../src/core/layout.js";

for (const instant of ["a hand naming a sheaf freed meanwhile", "main and spare naming one sheaf"] as const) {
  test(`destroy() of a cache with a live object is EBUSY, and stats() counts it, with another slot's ${instant}`, () => {
    const heap = Heap.create({ size: 8 << 20, cpus: 4 });
    const other = Heap.attach(heap.buffer);
    try {
      const cache = heap.createCache("dc", 64);
      const theirs = other.findCache("dc")!;
      const slab = layersOf(heap).slab;
      const id = heap.cacheNames().indexOf("dc");
      const pcs = slab.cacheWOf(id) + K_HDR_WORDS + other.cpu * PCS_WORDS;
      const xs: number[] = [];
      for (let i = 0; i < 10; i++) xs.push(theirs.alloc());
      for (const x of xs) theirs.free(x);
      const sheaf = slab.i32[pcs + PCS_MAIN]!;
      assert.ok(slab.i32[(sheaf >> 2) + S_SIZE]! >= 10, "their main sheaf holds the objects they freed");
      let word: number;
      if (instant === "a hand naming a sheaf freed meanwhile") {
        theirs.shrink(); // the sheaf goes back to the sheaf cache: its first word is the free tag now
        word = pcs + PCS_HAND;
      } else {
        word = pcs + PCS_SPARE;
      }
      const live = cache.alloc();
      const saved = slab.i32[word]!;
      slab.i32[word] = sheaf;
      assert.equal(cache.stats().activeObjects, 1, "one live object");
      assert.throws(() => cache.destroy(), /EBUSY: cache dc still has 1 live object/);
      slab.i32[word] = saved;
      cache.free(live);
      heap.validate();
      cache.destroy();
      heap.validate();
    } finally {
      other.detach();
      heap.detach();
    }
  });
}

for (const doing of ["freeing", "allocating"] as const) {
  test(`destroy() while another slot is ${doing} the cache's only object (its C_FREEING): ${doing === "freeing" ? "the object is free: destroy succeeds" : "the object is live: EBUSY"}`, () => {
    const heap = Heap.create({ size: 8 << 20, cpus: 4 });
    const other = Heap.attach(heap.buffer);
    try {
      const cache = heap.createCache("df", 64);
      const x = other.findCache("df")!.alloc();
      const mem = layersOf(heap).mem;
      const w = mem.pcpOf(other.cpu) + C_FREEING;
      // As the slot leaves it: the object tagged and named, on no list yet (a kfree's slow path or
      // the drain of a kfreeNolock it deferred; or an allocation that has popped it).
      mem.i32[x >> 2] = x ^ O_FREE_TAG;
      mem.i32[w] = doing === "freeing" ? x : x | C_FREEING_TAKING;
      if (doing === "allocating") {
        assert.throws(() => cache.destroy(), /EBUSY: cache df still has 1 live object/);
        mem.i32[w] = 0;
        mem.i32[x >> 2] = 0;
        other.kfree(x);
        cache.destroy();
      } else {
        // Before, the count took it for live: EBUSY until the other slot's free was done.
        cache.destroy();
        mem.i32[w] = 0; // the free goes on: the object reaches a sheaf
        other.kfree(x);
      }
      other.detach();
      heap.shrink();
      heap.validate();
      assert.equal(heap.findCache("df"), null);
    } finally {
      heap.detach();
    }
  });
}
