/*
 * A stale cache handle's slow path counts its slot in and out of the descriptor (PCS_USERS) without
 * the cache-table lock, and another agent may make a new cache in that descriptor in between.
 * createCache zeroed the whole descriptor, the slot's count with it, so the stale path's
 * decrement left -1 for good: the new cache, once destroyed, was never released (it stayed in
 * cacheNames() and used up a descriptor). The test stands in for the stale path's increment and
 * decrement around the createCache, as cacheEnter does.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";
import { K_HDR_WORDS, PCS_USERS, PCS_WORDS } from "../../../src/core/layout.js";
import { layersOf } from "../../../src/layers.js";

test("a slot counted in a descriptor while another agent creates a cache there: the new cache is released after its destroy", () => {
  const heap = Heap.create({ size: 4 << 20, cpus: 2 });
  const other = Heap.attach(heap.buffer);
  const inner = layersOf(heap).mem;
  const before = heap.cacheNames().filter(Boolean).length;
  for (let round = 0; round < 8; round++) {
    const fa = heap.createCache("fa", 40);
    const stale = other.findCache("fa");
    assert.ok(stale !== null);
    const id = heap.cacheNames().indexOf("fa");
    assert.ok(id >= 0);
    fa.free(fa.alloc());
    fa.destroy();
    assert.equal(heap.cacheNames().includes("fa"), false, `round ${round}: fa released`);
    // The stale handle's slot counts itself in (cacheEnter's Atomics.add) ...
    const users = inner.cacheWOf(id) + K_HDR_WORDS + other.cpu * PCS_WORDS + PCS_USERS;
    Atomics.add(inner.i32, users, 1);
    // ... another agent makes a cache in the same descriptor ...
    const fb = heap.createCache("fb", 200);
    assert.equal(heap.cacheNames().indexOf("fb"), id, "the descriptor is reused");
    // ... the stale path sees the state and counts itself out, as cacheEnter does on EINVAL.
    Atomics.sub(inner.i32, users, 1);
    assert.equal(inner.i32[users], 0, `round ${round}: the slot's count in the descriptor`);
    assert.throws(() => stale.alloc(), { code: "EINVAL" });
    fb.free(fb.alloc());
    fb.destroy();
    assert.equal(heap.cacheNames().includes("fb"), false, `round ${round}: fb released after its destroy`);
    assert.equal(heap.findCache("fb"), null);
  }
  other.detach();
  heap.shrink();
  heap.validate();
  assert.equal(heap.cacheNames().filter(Boolean).length, before);
});
