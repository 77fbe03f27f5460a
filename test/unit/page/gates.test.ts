/*
 * The page fast paths test one field of the handle (PageAllocator.gate), which mirrors what only
 * this slot or the heap's creation sets: detach, a reentry hook or trace handler, this slot's pcp
 * section (C_PCP_BUSY), and fault injection. A handle that attaches to a heap with fault injection
 * must close its gate too: its pcp list is no way around the injected failures.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";

const MiB = 1 << 20;

test("fault injection reaches an attached handle's order-0 pairs: its pcp list does not serve them past the injection", () => {
  const h = Heap.create({ size: 16 * MiB, cpus: 2, faultInjection: { rate: 0.5, seed: 7 } });
  const h2 = Heap.attach(h.buffer);
  // Pages for h2's pcp list: h allocates them (retrying injected failures), h2 frees them.
  const pages: number[] = [];
  while (pages.length < 16) {
    const p = h.allocPages(0);
    if (p !== 0) pages.push(p);
  }
  for (const p of pages) h2.freePages(p, 0);
  const before = h.stats().vmstat.failInjected;
  let failed = 0;
  const got: number[] = [];
  for (let i = 0; i < 16; i++) {
    const p = h2.allocPages(0);
    if (p === 0) failed++;
    else got.push(p);
  }
  const injected = h.stats().vmstat.failInjected - before;
  assert.ok(failed > 0, "some of h2's allocations failed by injection, though its pcp list had pages");
  assert.equal(injected, failed, "every failure was an injected one");
  for (const p of got) h2.freePages(p, 0);
  h2.detach();
  h.validate();
  h.detach();
});
