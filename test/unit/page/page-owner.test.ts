/*
 * Finding 7 of the trust issue: a page that one agent allocated and another freed (on the free
 * fast path, into the freeing slot's pcp list) must be recorded as that slot's.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, PCP_MAX_ORDER } from "../../../src/index.js";

describe("page owners", () => {
  test("validate() passes on an idle heap after one agent frees pages another allocated, every pcp order", () => {
    const h = Heap.create({ size: 8 << 20, cpus: 4 });
    const h2 = Heap.attach(h.buffer);
    for (let order = 0; order <= PCP_MAX_ORDER; order++) {
      // Warm h2's pcp lists so that its frees take the fast path.
      h2.freePages(h2.allocPages(order), order);
      const pages: number[] = [];
      for (let k = 0; k < 3; k++) pages.push(h.allocPages(order));
      for (const p of pages) h2.freePages(p, order);
      h.validate();
      h2.validate();
      // And back: h frees what h2 allocated.
      const back = h2.allocPages(order);
      h.freePages(h.allocPages(order), order);
      h.freePages(back, order);
      h.validate();
    }
    assert.equal(h.stats().pcp[h2.cpu]! > 0, true, "h2 caches the pages it freed");
    h2.detach();
    h.validate();
  });
});
