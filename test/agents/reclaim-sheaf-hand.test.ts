/*
 * A worker killed while it allocates or frees a sheaf object (issue 11, finding 3: "0 objects, 1
 * page" lost in kmalloc, kfree and shrink, the report naming the kmem_cache_sheaf list lock): the
 * sheaf object is in the slot's sheaf hand from before it leaves its freelist or its pcs line
 * until a pcs line or its freelist has it, so reclaimSlot frees it (inHand 1) and every page
 * comes back. Until the fix the object stayed allocated for good, holding a page of the sheaf
 * cache.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap, type KmemCache } from "../../src/index.js";
import type { SheafScenario } from "./workers/sheaf-hand.js";
import { firstMessage } from "../support/util.js";
import { sheafCapacity } from "../../src/slab/sizes.js";

/** Objects in a full sheaf of a 64-byte cache. */
const CAP = sheafCapacity(64);

/** After the reclaim: no cache holds an object, every page is free, the cache can be destroyed. */
function nothingLeft(heap: Heap, total: number, cache: KmemCache): void {
  heap.rcuBarrier();
  heap.shrink();
  heap.validate();
  const st = heap.stats();
  for (const s of st.slabs) assert.equal(s.activeObjects, 0, `${s.name} holds no object`);
  assert.equal(st.freePages, total, "every page is free again");
  cache.destroy();
}

async function stopAt(heap: Heap, scenario: SheafScenario, point: string, nth: number, objs: number[] = []): Promise<{ worker: Worker; cpu: number; parked: string | null }> {
  const worker = new Worker(new URL("./workers/sheaf-hand.js", import.meta.url), { workerData: { buffer: heap.buffer, scenario, point, nth, objs } });
  const m = await firstMessage<{ parked: string | null; cpu: number }>(worker, `the ${scenario} worker never reached ${point} #${nth}`);
  return { worker, ...m };
}

// alloc: the first alloc of a new heap makes a sheaf: the sheaf cache has no partial slab (its
// first list lock), so the object comes from a new slab (its second); at that release the new sheaf
// object is off its freelist. shrink: the first list lock is the named cache's (the flush of the
// main sheaf), the second the sheaf cache's (the emptied sheaf freed); at its release the sheaf
// object is back on its freelist, not in hand (a second free of it would be a double free).
for (const [scenario, point, nth, inHand] of [
  ["alloc", "list:release", 2, 1],
  ["shrink", "list:acquire", 2, 1],
  ["shrink", "list:release", 2, 0],
] as const) {
  for (const debug of [false, true]) {
    test(`a worker killed at ${point} #${nth} of a cache ${scenario} (debug ${debug}): reclaimSlot frees the sheaf object it held (inHand ${inHand}) and every page is free again`, async () => {
      const heap = Heap.create({ size: 8 << 20, cpus: 4, debug });
      const cache = heap.createCache("hand-64", 64);
      const total = heap.stats().totalPages;
      const w = await stopAt(heap, scenario, point, nth);
      try {
        assert.equal(w.parked, point, `the worker stopped at ${point} #${nth}`);
        await w.worker.terminate();
        const r = heap.reclaimSlot(w.cpu);
        assert.equal(r.inHand, inHand, `the sheaf object in its hand is counted: ${JSON.stringify(r)}`);
        assert.ok(r.locks.includes("list kmem_cache_sheaf"), `it held the sheaf cache's list lock: ${JSON.stringify(r)}`);
        nothingLeft(heap, total, cache);
      } finally {
        await w.worker.terminate();
        heap.detach();
      }
    });
  }
}

test("a worker killed inside the barn lock while it trades its full remote sheaf for an empty one: the empty sheaf is in its hand, and every page comes back", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const cache = heap.createCache("hand-64", 64);
  const total = heap.stats().totalPages;
  // Empty sheaves in the barn: the allocations of a round larger than a sheaf leave them there.
  for (let r = 0; r < 2; r++) {
    const xs: number[] = [];
    for (let i = 0; i < 3 * CAP; i++) xs.push(cache.alloc());
    for (const x of xs) cache.free(x);
  }
  const objs: number[] = [];
  for (let i = 0; i < 3 * CAP; i++) objs.push(cache.alloc());
  assert.ok(heap.stats().slabs.find((s) => s.name === "hand-64")!.barnEmpty > 0, "the barn holds empty sheaves");
  // The remote free after CAP finds the remote sheaf full: the barn takes it and pops an empty
  // one, and the worker stops at the release of that barn lock.
  const w = await stopAt(heap, "remote", "barn:release", 1, objs.slice(0, 2 * CAP));
  try {
    assert.equal(w.parked, "barn:release");
    await w.worker.terminate();
    heap.reclaimSlot(w.cpu);
    for (const o of objs.slice(CAP)) cache.free(o); // the one after CAP was being freed: still the host's
    nothingLeft(heap, total, cache);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});
