/*
 * cache.allocBulk with a kmem_cache_alloc trace handler: the handler sees each object before the
 * caller has it, and may write into it. The batch's bulk hand must not keep its chain in those
 * objects then (a handler's write at the link word was lost, and a handler that wrote there could
 * make a reclaim free an object someone held): every byte the handler writes is what the caller
 * reads.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";

for (const debug of [false, true]) {
  test(`a kmem_cache_alloc handler's writes into each object of a cache.allocBulk are all kept (debug ${debug})`, () => {
    const heap = Heap.create({ size: 4 << 20, cpus: 2, debug });
    const c = heap.createCache("bulk-handler", 32);
    heap.trace.on("kmem_cache_alloc", (r) => {
      for (let k = 0; k < 8; k++) heap.u32[(r.addr! >> 2) + k] = (r.addr! + k) >>> 0;
    });
    const out = new Uint32Array(40);
    assert.equal(c.allocBulk(40, out), 40);
    for (const a of out) for (let k = 0; k < 8; k++) assert.equal(heap.u32[(a >> 2) + k], (a + k) >>> 0, `object ${a} word ${k}`);
    heap.trace.clear();
    c.freeBulk(Array.from(out));
    c.destroy();
    heap.validate();
    heap.detach();
  });
}
