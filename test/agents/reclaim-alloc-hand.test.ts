/*
 * A worker killed inside a page allocation, after the allocator took the block and before the call
 * returned its address (issue 11, finding 3: "in allocPages, 4 pages, inHand 0"): the block is
 * still in the allocator's hand, so reclaimSlot frees it and counts it (inHand), and every page
 * comes back. The worker stops in its mm_page_alloc trace handler, the last call inside the
 * allocation; until the fix the block was already an allocated block nobody had been given.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../src/index.js";
import type { AllocKind } from "./workers/alloc-traced.js";
import { firstMessage } from "../support/util.js";

interface Stopped {
  worker: Worker;
  cpu: number;
  addr: number;
  order: number;
}

/** Start a worker on `kind` and wait, with a deadline, until it stops inside the allocation. */
async function stopInside(heap: Heap, kind: AllocKind): Promise<Stopped> {
  const worker = new Worker(new URL("./workers/alloc-traced.js", import.meta.url), { workerData: { buffer: heap.buffer, kind } });
  const m = await firstMessage<{ cpu: number; addr: number; order: number }>(worker, `the ${kind} worker did not stop inside its allocation`);
  return { worker, ...m };
}

for (const [kind, order] of [["allocPages", 3], ["allocPagesNolock", 2], ["kmalloc-large", 6], ["kmalloc-large-event", 6], ["krealloc-large", 6]] as const) {
  test(`a worker killed inside ${kind}, before the address is returned: reclaimSlot frees the block (inHand 1) and every page is free again`, async () => {
    const heap = Heap.create({ size: 8 << 20, cpus: 4 });
    const total = heap.stats().totalPages;
    const w = await stopInside(heap, kind);
    try {
      assert.equal(w.order, order, `the worker stopped inside its order-${order} allocation`);
      assert.ok(w.addr > 0);
      await w.worker.terminate();
      const r = heap.reclaimSlot(w.cpu);
      assert.equal(r.inHand, 1, `the block it was being given is counted as in hand: ${JSON.stringify(r)}`);
      assert.deepEqual(r.locks, []);
      // The address the dead worker never received is free: a free of it is a double free.
      assert.throws(() => heap.freePages(w.addr, order), /EDOUBLEFREE/);
      heap.shrink();
      heap.validate();
      const st = heap.stats();
      assert.equal(st.totalPages, total);
      assert.equal(st.freePages, total, "every page is free again");
    } finally {
      await w.worker.terminate();
      heap.detach();
    }
  });
}
