/*
 * reclaimSlot's reading of a dead slot's object bulk hand (C_BULK_OBJ, C_BULK_NR; slab/bulk.ts),
 * one case each: the test writes the hand of a second handle's slot as a slot killed at that
 * instant of a cache.allocBulk would have left it, then reclaims that slot.
 *   - killed inside bulkTake, between the hand's stores and its main sheaf's count: the object is
 *     in the hand and still the top of the sheaf. It stays in the sheaf, free; before, it was freed
 *     from the hand too and handed out twice.
 *   - killed between the head's store and the count's: the chain is one longer than its count. The
 *     chain is what holds; before, the hand was reported broken and its objects lost.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";
import { C_BULK_NR, C_BULK_OBJ, K_HDR_WORDS, O_FREE_TAG, O_NEXT, PCS_MAIN, PCS_WORDS, S_OBJS, S_SIZE } from "../../../src/core/layout.js";
import { layersOf } from "../../../src/layers.js";

for (const instant of ["inside bulkTake: in the hand and on top of the main sheaf", "between the head's store and the count's"] as const) {
  test(`a dead slot's bulk hand ${instant}: reclaimSlot leaves every object in one place`, () => {
    const heap = Heap.create({ size: 8 << 20, cpus: 3 });
    const other = Heap.attach(heap.buffer);
    try {
      const cache = heap.createCache("bh", 64);
      const theirs = other.findCache("bh")!;
      const errors: string[] = [];
      heap.onError = (e) => {
        errors.push(e.message);
      };
      const xs: number[] = [];
      for (let i = 0; i < 20; i++) xs.push(theirs.alloc());
      for (const x of xs) theirs.free(x);
      const slab = layersOf(heap).slab;
      const id = heap.cacheNames().indexOf("bh");
      const sw = slab.i32[slab.cacheWOf(id) + K_HDR_WORDS + other.cpu * PCS_WORDS + PCS_MAIN]! >> 2;
      const n = slab.i32[sw + S_SIZE]!;
      const p = layersOf(heap).mem.pcpOf(other.cpu);
      const i32 = slab.i32;
      if (instant === "inside bulkTake: in the hand and on top of the main sheaf") {
        const top = i32[sw + S_OBJS + n - 1]!;
        i32[(top >> 2) + O_NEXT] = 0;
        i32[p + C_BULK_OBJ] = top;
        i32[p + C_BULK_NR] = 1;
      } else {
        // Two objects taken off the sheaf (the count 1: the second's count store not made).
        const a = i32[sw + S_OBJS + n - 1]!;
        const b = i32[sw + S_OBJS + n - 2]!;
        i32[sw + S_SIZE] = n - 2;
        i32[(a >> 2) + O_NEXT] = 0;
        i32[(b >> 2) + O_NEXT] = a;
        i32[p + C_BULK_OBJ] = b;
        i32[p + C_BULK_NR] = 1;
        assert.equal(i32[a >> 2], a ^ O_FREE_TAG, "taken objects keep their tag");
      }
      heap.reclaimSlot(other.cpu);
      assert.deepEqual(errors, [], "nothing reported broken");
      heap.validate();
      const got: number[] = [];
      for (let i = 0; i < 400; i++) got.push(cache.alloc());
      assert.equal(new Set(got).size, got.length, "nothing handed out twice");
      for (const x of got) cache.free(x);
      heap.shrink();
      heap.validate();
      assert.equal(heap.stats().slabs.find((s) => s.name === "bh")!.activeObjects, 0, "no object left allocated");
    } finally {
      heap.detach();
    }
  });
}
