/*
 * Slot and cache generations across their wrap at 2^31 and 2^32 (startCountersAt starts them near
 * it): attach/detach cycles with no reclaimSlot anywhere must never find a fresh handle's slot
 * "reclaimed by another agent", and cache create/destroy cycles must never find a fresh cache
 * handle destroyed.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../../src/index.js";
import { startCountersAt } from "../../../src/rcu/check.js";

const STARTS: Array<[string, number]> = [
  ["2^31 - 32", 0x7fffffe0],
  ["2^31 - 16", 0x7ffffff0],
  ["2^31 - 8", 0x7ffffff8],
  ["2^32 - 8", 2 ** 32 - 8],
];

describe("slot and cache generations across their wrap", () => {
  for (const [name, start] of STARTS) {
    test(`attach/detach cycles from ${name}: every fresh handle works`, () => {
      const h = Heap.create({ size: 4 << 20, cpus: 4 });
      startCountersAt(h, start);
      const free0 = h.stats().freePages;
      let cycles = 0;
      for (let i = 0; i < 48; i++) {
        const a = Heap.attach(h.buffer);
        assert.equal(a.attached, true, `cycle ${i}: a fresh handle of slot ${a.cpu} is not attached`);
        const x = a.kmalloc(10);
        a.kfree(x);
        const p = a.allocPages(0);
        assert.notEqual(p, 0);
        a.freePages(p, 0);
        a.detach();
        cycles++;
      }
      assert.equal(cycles, 48);
      assert.deepEqual(h.attachedSlots(), [0]);
      h.shrink();
      h.validate();
      assert.equal(h.stats().freePages, free0);
    });

    test(`cache create/destroy cycles from ${name}: every fresh cache handle works`, () => {
      const h = Heap.create({ size: 4 << 20, cpus: 2 });
      startCountersAt(h, start);
      for (let i = 0; i < 48; i++) {
        const c = h.createCache("gen-wrap", 48);
        const x = c.alloc();
        assert.notEqual(x, 0, `cycle ${i}`);
        c.free(x);
        c.destroy();
        assert.throws(() => c.alloc(), { code: "EINVAL" });
      }
      h.validate();
    });
  }
});
