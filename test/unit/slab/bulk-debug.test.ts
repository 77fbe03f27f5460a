/*
 * cache.allocBulk chains the objects it has taken through their O_NEXT word until it returns (the
 * bulk hand, so that reclaimSlot can free the batch of a killed worker). In a debug cache whose
 * objects are asked for fewer than 8 bytes that word is redzone: the chain must not be written
 * there, or every later free of those objects reports a clobbered redzone.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";

for (const size of [1, 4, 6, 7, 8, 12]) {
  test(`debug cache of ${size}-byte objects: allocBulk then freeBulk, no redzone report, every page back`, () => {
    const h = Heap.create({ size: 4 << 20, cpus: 2, debug: true });
    const errors: string[] = [];
    h.onError = (e) => errors.push(String(e));
    const c = h.createCache(`bulk-debug-${size}`, size);
    const out = new Uint32Array(11);
    assert.equal(c.allocBulk(11, out), 11);
    for (const a of out) assert.equal(h.ksize(a) >= size, true);
    c.freeBulk(Array.from(out));
    assert.deepEqual(errors, []);
    c.destroy();
    h.shrink();
    h.validate();
    const st = h.stats();
    assert.equal(st.freePages, st.totalPages);
    h.detach();
  });
}
